"""SQLite purge and the write-ahead log: the purge checkpoints on its own terms, the app's
commits never do the purge's checkpointing, the log is handed back when it ends, and a
maintenance-window purge says so. Speed is measured in benchmarks/, not here.

The WAL's state is read from the ``-shm`` wal-index header (https://sqlite.org/walformat.html):
``mxFrame`` (frames in the log) at byte 16, ``nBackfill`` (frames already copied into the
database) at byte 96.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time

import pytest

from helpers import fill, invoke, sqlite_file_store
from sessctl import SessionStore, Settings, sqlitewal
from sessctl.session import Session


def _wal_state(path: str) -> tuple[int, int]:
    """(mxFrame, nBackfill) as the wal-index says now."""
    with open(f"{path}-shm", "rb") as fh:
        head = fh.read(104)
    return struct.unpack_from("=I", head, 16)[0], struct.unpack_from("=I", head, 96)[0]


@pytest.fixture
def sq(tmp_path):
    path = str(tmp_path / "s.db")
    store = SessionStore(Settings(database_url=f"sqlite:///{path}", secret_key="k"))
    store.create_table()
    yield store, path
    store.close()


def test_the_app_does_not_checkpoint_the_purges_pages_while_it_runs(sq, monkeypatch):
    store, path = sq
    monkeypatch.setattr(sqlitewal, "WAL_BOUND", 1 << 40)  # the purge never checkpoints mid-way here
    live = fill(store, expired=30_000, live=50)
    key = next(iter(live))
    app = SessionStore(store.settings)  # the app: another store on the same file (own connections)
    seen = []

    def during(_deleted):
        if seen:
            return
        frames, _ = _wal_state(path)
        if frames < 2000:  # past the app's own auto-checkpoint threshold (1,000 pages)
            return
        session = Session(app, key)
        session["n"] = 1
        session.save()  # an app commit while the purge's frames sit in the log
        seen.append((frames, *_wal_state(path)))

    result = store.purge_expired(on_batch=during)
    assert result.complete and result.deleted == 30_000
    assert seen, "the purge never wrote 2,000 frames of WAL"
    frames_before, frames, backfilled = seen[0]
    assert frames > frames_before  # the app's commit went into the log...
    assert backfilled < frames_before  # ...and did not copy the purge's pages into the database
    app.close()


def test_purge_leaves_the_log_checkpointed_and_empty(sq):
    store, path = sq
    fill(store, expired=20_000, live=100)
    result = store.purge_expired()
    assert result.complete and result.deleted == 20_000
    # TRUNCATE at the end (or SQLite removed the log with the last connection): nothing left to copy.
    assert not os.path.exists(f"{path}-wal") or os.path.getsize(f"{path}-wal") == 0
    assert store.counts()["total"] == 100


def test_the_log_stays_near_its_bound_during_a_purge(sq, monkeypatch):
    store, path = sq
    monkeypatch.setattr(sqlitewal, "WAL_BOUND", 1 << 20)  # 1 MiB: many checkpoints on a small table
    fill(store, expired=30_000, live=100)
    peak = []
    result = store.purge_expired(on_batch=lambda _n: peak.append(_wal_state(path)[0]))
    assert result.complete and result.deleted == 30_000
    page = 4096
    # The bound, plus the batches it takes to learn how many batches make the bound (at most 4).
    assert max(peak) * page < 16 * (1 << 20), max(peak) * page


def test_the_log_is_copied_in_the_background_before_it_starts_over(sq, monkeypatch):
    """Past COPY_BOUND of uncopied log a copy runs beside the batches: the database file gets the
    pages while the log keeps growing (it starts over only at WAL_BOUND), and the copy's thread
    and connection are gone when the purge returns."""
    store, path = sq
    monkeypatch.setattr(sqlitewal, "WAL_BOUND", 1 << 40)
    monkeypatch.setattr(sqlitewal, "COPY_BOUND", 1 << 20)
    fill(store, expired=30_000, live=100)
    seen = []
    result = store.purge_expired(on_batch=lambda _n: seen.append(_wal_state(path)))
    assert result.complete and result.deleted == 30_000
    frames = [f for f, _ in seen]
    assert frames == sorted(frames), "the log started over below its bound"
    copied = [b for _, b in seen]
    assert max(copied) > 0, "nothing was copied while the batches ran"
    # Never more than a bound's worth (plus the batches of one copy) left uncopied.
    assert max(f - b for f, b in seen) * 4096 < 12 * (1 << 20), seen
    assert not [t for t in threading.enumerate() if t.name == "sessctl-wal-copy"]
    assert store.engine.pool.checkedout() == 0
    assert store.counts()["total"] == 100


def test_a_busy_app_keeps_the_logs_file_and_has_nothing_left_to_copy(sq, monkeypatch):
    """Beside an app that writes, the purge ends with the log started over (nothing for the app's
    commits to copy) but leaves the file's size for the app's writes to reuse; an idle one gets
    it truncated (test above)."""
    store, path = sq
    monkeypatch.setattr(sqlitewal, "TRUNCATE_BELOW", 1 << 20)
    live = fill(store, expired=30_000, live=40)
    app = SessionStore(store.settings)
    done = threading.Event()
    ends = []

    def writer():
        while not done.is_set():
            for key in live:
                s = Session(app, key)
                s["n"] = s.get("n", 0) + 1
                s.save()

    t = threading.Thread(target=writer)
    t.start()
    try:
        result = store.purge_expired()
        ends.append((os.path.getsize(f"{path}-wal"), _wal_state(path)))
    finally:
        done.set()
        t.join(60)
    assert result.complete and result.deleted == 30_000
    size, (frames, copied) = ends[0]
    assert size > (1 << 20), "the file was truncated under a busy app"
    # The log started over: the app's writes since the purge's last checkpoint are all it holds.
    assert frames < 1_000 and frames - copied < 1_000, ends
    app.close()


def test_app_connections_checkpoint_again_after_the_purge(sq):
    store, path = sq
    live = fill(store, expired=5_000, live=700)
    app = SessionStore(store.settings)
    s = Session(app, next(iter(live)))
    s["n"] = 1
    s.save()  # the app's connection exists before the purge, and is used after it
    store.purge_expired()
    time.sleep(sqlitewal.PROBE_SECONDS + 0.05)  # the app notices within PROBE_SECONDS that it ended
    peak = 0
    for key in live:
        s = Session(app, key)
        s["n"] = 2
        s.save()
        peak = max(peak, _wal_state(path)[0])
    # ~3 frames per write, 2,100 in all: SQLite's auto-checkpoint (1,000 pages) restarted the log.
    assert peak < 1_500, peak
    app.close()


def test_app_writes_get_through_while_a_purge_runs(sq):
    store, _path = sq
    live = fill(store, expired=40_000, live=40)
    app = SessionStore(store.settings)
    errors, done = [], threading.Event()

    def writer():
        n = 0
        while not done.is_set():
            for key in live:
                try:
                    s = Session(app, key)
                    s["n"] = s.get("n", 0) + 1
                    s.save()
                    n += 1
                except Exception as exc:  # noqa: BLE001 - any failure is the finding
                    errors.append(repr(exc))
        return n

    t = threading.Thread(target=writer)
    t.start()
    try:
        result = store.purge_expired()
    finally:
        done.set()
        t.join(60)
    assert errors == []
    assert result.complete and result.deleted == 40_000
    assert store.counts()["total"] == 40
    app.close()


def test_maintenance_purge_says_so_and_deletes_the_same_rows(tmp_path):
    path = tmp_path / "m.db"
    settings, store = sqlite_file_store(path)
    fill(store, expired=3_000, live=7)
    r = invoke(settings, "purge", "--expired", "--maintenance", "--json", code=0)
    out = json.loads(r.stdout)
    assert out["deleted"] == 3_000 and out["maintenance"] is True
    assert "maintenance" in r.stderr.lower() and "lock" in r.stderr.lower()
    assert store.counts() == {**store.counts(), "total": 7, "expired": 0}
    store.close()


@pytest.mark.backends
def test_maintenance_purge_on_every_backend(store, settings):
    fill(store, expired=500, live=5)
    result = store.purge_expired(maintenance=True)
    assert result.complete and result.deleted == 500
    assert store.counts()["total"] == 5


def test_a_reader_holding_the_log_stops_the_purge_before_the_log_outgrows_its_bound(sq, monkeypatch):
    # A read transaction left open keeps every checkpoint from letting the log start over: the
    # purge waits for it past PINNED_FACTOR times the bound, then stops and says why (before, it
    # kept appending: ~1 GB of log for a 32 MB bound). Once the reader ends, a re-run finishes.
    import sqlite3
    import threading

    store, path = sq
    monkeypatch.setattr(sqlitewal, "WAL_BOUND", 1 << 20)
    monkeypatch.setattr(sqlitewal, "PINNED_WAIT", 1.0)
    fill(store, expired=40_000, live=100)
    holding, release = threading.Event(), threading.Event()

    def reader():
        with sqlite3.connect(path) as raw:
            raw.execute("BEGIN")
            raw.execute("SELECT count(*) FROM django_session").fetchone()  # a snapshot from before the purge
            holding.set()
            release.wait(30)
            raw.rollback()

    t = threading.Thread(target=reader)
    t.start()
    holding.wait(5)
    peak = []
    try:
        result = store.purge_expired(on_batch=lambda _n: peak.append(_wal_state(path)[0]))
    finally:
        release.set()
        t.join()
    assert not result.complete and "reader" in (result.stopped or "")
    assert 0 < result.deleted < 40_000 and result.remaining == 40_000 - result.deleted
    page = 4096
    # PINNED_FACTOR bounds, plus the batches it takes to learn how many batches make the bound.
    assert max(peak) * page < (sqlitewal.PINNED_FACTOR + 12) * (1 << 20), max(peak) * page
    again = store.purge_expired()
    assert again.complete and again.deleted == 40_000 - result.deleted
    assert store.counts()["total"] == 100


def test_max_seconds_bounds_a_batch_waiting_for_the_write_lock(sq):
    # The batches run on a connection of their own, which waited the store's whole timeout for a
    # writer that held the lock: --max-seconds 2 took 11 s beside a 10 s writer.
    import sqlite3
    import threading

    store, path = sq
    fill(store, expired=20_000, live=10)
    holding, release = threading.Event(), threading.Event()

    def writer():
        with sqlite3.connect(path, timeout=30) as raw:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("UPDATE django_session SET session_data = session_data WHERE 0")
            holding.set()
            release.wait(20)
            raw.rollback()

    t = threading.Thread(target=writer)
    t.start()
    holding.wait(5)
    began = time.monotonic()
    try:
        result = store.purge_expired(max_seconds=2.0)
    finally:
        took = time.monotonic() - began
        release.set()
        t.join()
    assert not result.complete and result.deleted == 0
    assert 1.5 < took < 3.0, took  # the store's own timeout is 5 s
    assert store.purge_expired().deleted == 20_000


def _interrupt_at(monkeypatch, fragment: str) -> list:
    """Ctrl-C as the purge's own connection runs the first statement containing ``fragment``:
    raised inside SQLAlchemy's execution, which then invalidates the connection, as a real
    SIGINT arriving mid-statement does."""
    from sqlalchemy import event

    hit = []
    init = sqlitewal.PurgeConnection.__init__

    def patched(self, store, maintenance):
        real_connect = store.engine.connect

        def connect():
            conn = real_connect()

            @event.listens_for(conn, "before_cursor_execute")
            def _ctrl_c(_conn, _cur, statement, *_args):
                if fragment in statement and not hit:
                    hit.append(statement)
                    raise KeyboardInterrupt

            return conn

        monkeypatch.setattr(store.engine, "connect", connect)
        try:
            init(self, store, maintenance)
        finally:
            monkeypatch.setattr(store.engine, "connect", real_connect)

    monkeypatch.setattr(sqlitewal.PurgeConnection, "__init__", patched)
    return hit


@pytest.mark.parametrize("fragment", ["PRAGMA page_size", "wal_checkpoint(PASSIVE)", "wal_checkpoint(TRUNCATE)"])
def test_ctrl_c_in_the_purges_pragmas_stays_ctrl_c(sq, monkeypatch, fragment):
    """Setting up, checkpointing, or truncating: the interrupt comes out as itself (the CLI prints
    "Aborted!"), not as an error about the connection it left invalid, and nothing is lost."""
    store, path = sq
    live = fill(store, expired=3_000, live=20)
    hit = _interrupt_at(monkeypatch, fragment)
    with pytest.raises(KeyboardInterrupt):
        store.purge_expired()
    assert hit
    assert not [t for t in threading.enumerate() if t.name == "sessctl-wal-copy"]
    monkeypatch.undo()
    assert store.purge_expired().complete
    assert store.counts()["total"] == len(live)


def test_ctrl_c_in_a_checkpoint_through_the_cli_says_aborted(tmp_path, monkeypatch):
    settings, store = sqlite_file_store(tmp_path / "s.db")
    fill(store, expired=3_000, live=20)
    hit = _interrupt_at(monkeypatch, "wal_checkpoint(PASSIVE)")
    r = invoke(settings, "purge", "--expired", code=1)
    assert hit
    assert r.output.strip().splitlines()[-1] == "Aborted!", r.output
    assert "Error" not in r.output and "Traceback" not in r.output
    store.close()


def test_ctrl_c_while_a_budgeted_purge_counts_what_is_left_says_aborted(tmp_path, monkeypatch):
    """Under --max-seconds the purge lock's statements run with a shortened busy timeout, put
    back after each: Ctrl-C during one must come out as "Aborted!", not as the put-back's error
    on the connection the interrupt invalidated."""
    from sqlalchemy import event

    from sessctl import store as store_module

    settings, store = sqlite_file_store(tmp_path / "s.db")
    fill(store, expired=30_000, live=20)
    real_init = store_module.SessionStore.__init__
    hit = []

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)

        @event.listens_for(self.engine, "before_cursor_execute")
        def _ctrl_c(_conn, _cur, statement, *_args):
            if "count(" in statement and self._pin is not None and not hit:
                hit.append(statement)
                raise KeyboardInterrupt

    monkeypatch.setattr(store_module.SessionStore, "__init__", init)
    r = invoke(settings, "purge", "--expired", "--max-seconds", "0.001", code=1)
    assert hit
    assert r.output.strip().splitlines()[-1] == "Aborted!", r.output
    assert "Error" not in r.output
    monkeypatch.undo()
    assert store.counts()["total"] >= 20
    store.close()
