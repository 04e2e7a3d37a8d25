"""Disk space: `stats` shows the table's size and its dead/free space on each backend, and
`purge --reclaim` hands space back only where that is safe beside a live app (plain VACUUM
on PostgreSQL, incremental vacuum on a SQLite file made for it), never VACUUM FULL.
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from sqlalchemy import text

from helpers import fill, invoke, sqlite_file_store


def _stats(settings) -> dict:
    return json.loads(invoke(settings, "stats", "--json", code=0).stdout)


@pytest.mark.backends
def test_stats_shows_the_tables_size_and_free_space(store, settings, backend):
    fill(store, expired=3_000, live=50)
    space = _stats(settings)["space"]
    assert space["table_bytes"] is None or space["table_bytes"] > 0
    assert space["free_bytes"] >= 0
    if backend == "sqlite":
        assert space["file_bytes"] > 0 and space["auto_vacuum"] == "none"
    elif backend == "postgres":
        assert space["heap_bytes"] > 0 and space["index_bytes"] > 0 and space["dead_rows"] >= 0
    else:
        assert space["data_bytes"] > 0 and space["index_bytes"] >= 0


def test_sqlite_free_pages_show_after_a_purge_and_stay_without_incremental_vacuum(tmp_path):
    path = tmp_path / "s.db"
    settings, store = sqlite_file_store(path)
    fill(store, expired=5_000, live=20)
    out = json.loads(invoke(settings, "purge", "--expired", "--reclaim", "--json", code=0).stdout)
    assert out["deleted"] == 5_000
    assert out["reclaim"]["done"] is False and "VACUUM" in out["reclaim"]["why"]
    space = _stats(settings)["space"]
    assert space["free_bytes"] > 100_000  # the freed pages stay in the file, ready for new rows
    store.close()


def test_sqlite_incremental_vacuum_hands_pages_back(tmp_path):
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as raw:  # a file made for it, before the table exists
        raw.execute("PRAGMA auto_vacuum = INCREMENTAL")
        raw.execute("VACUUM")
    settings, store = sqlite_file_store(path)
    fill(store, expired=5_000, live=20)
    before = _stats(settings)["space"]["file_bytes"]  # pages of the database (some may sit in the WAL yet)
    out = json.loads(invoke(settings, "purge", "--expired", "--reclaim", "--json", code=0).stdout)
    assert out["deleted"] == 5_000 and out["reclaim"]["done"] is True
    space = _stats(settings)["space"]
    assert space["free_bytes"] == 0 and space["auto_vacuum"] == "incremental"
    assert space["file_bytes"] < before / 2
    assert store.counts()["total"] == 20
    store.close()


def _walked_table_bytes(path, table: str) -> int:
    """The table's bytes the slow way: dbstat walks every page of the table and its indexes."""
    with sqlite3.connect(path) as raw:
        names = [table] + [n for (n,) in raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,))]
        marks = ", ".join("?" * len(names))
        return raw.execute(f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})", names).fetchone()[0]


@pytest.mark.parametrize("auto_vacuum", ["NONE", "INCREMENTAL", "FULL"])
def test_sqlite_table_bytes_match_a_walk_of_every_page(tmp_path, auto_vacuum):
    # stats reads the other b-trees and subtracts: beside a bigger app table, freed pages,
    # another index, the user index and, in an auto-vacuum file, pointer-map pages.
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA auto_vacuum = {auto_vacuum}")
        raw.execute("VACUUM")
        raw.execute("CREATE TABLE app_orders (id INTEGER PRIMARY KEY, note TEXT)")
        raw.execute("CREATE INDEX app_orders_note ON app_orders (note)")
        raw.executemany("INSERT INTO app_orders (note) VALUES (?)", [(f"order {i} " * 8,) for i in range(30_000)])
    settings, store = sqlite_file_store(path)
    fill(store, expired=4_000, live=300)
    with sqlite3.connect(path) as raw:
        raw.execute("DELETE FROM app_orders WHERE id % 2 = 0")
    store.close()
    invoke(settings, "purge", "--expired", code=0)
    space = _stats(settings)["space"]
    assert space["table_bytes"] == _walked_table_bytes(path, "django_session")
    assert space["table_bytes"] < space["file_bytes"] / 2


def test_sqlite_table_bytes_hold_while_the_app_writes_to_other_tables(tmp_path):
    # The table's bytes are a difference of page counts and walks of the other b-trees: all of
    # them must come from one snapshot, or another table's commits land in the sessions table's figure.
    import threading

    from sessctl.space import space

    path = tmp_path / "s.db"
    settings, store = sqlite_file_store(path)
    fill(store, expired=0, live=3_000)
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE app_log (id INTEGER PRIMARY KEY, line TEXT)")
    truth = _walked_table_bytes(path, "django_session")
    stop = threading.Event()

    def app_writes():
        with sqlite3.connect(path, timeout=5) as raw:
            while not stop.is_set():
                raw.executemany("INSERT INTO app_log (line) VALUES (?)", [("x" * 300,)] * 20)
                raw.commit()

    writer = threading.Thread(target=app_writes)
    writer.start()
    try:
        seen = [space(store)["table_bytes"] for _ in range(150)]
    finally:
        stop.set()
        writer.join()
        store.close()
    assert set(seen) == {truth}


def _relfilenode(store) -> int:
    with store.connect() as conn:
        return conn.execute(text("SELECT relfilenode FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                            {"t": store.settings.table}).scalar_one()


def test_postgres_reclaim_is_a_plain_vacuum(store, settings, backend):
    if backend != "postgres":
        pytest.skip("PostgreSQL's VACUUM")
    fill(store, expired=3_000, live=30)
    node = _relfilenode(store)
    out = json.loads(invoke(settings, "purge", "--expired", "--reclaim", "--json", code=0).stdout)
    assert out["deleted"] == 3_000 and out["reclaim"]["done"] is True and out["reclaim"]["how"] == "VACUUM"
    assert _relfilenode(store) == node  # not VACUUM FULL: that rewrites the table into a new file
    deadline = time.monotonic() + 10
    while True:  # the statistics reach pg_stat_* asynchronously
        space = _stats(settings)["space"]
        if space["last_vacuum"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert space["last_vacuum"] is not None
    assert store.counts()["total"] == 30


def test_ctrl_c_during_a_bounded_vacuum_says_aborted(store, settings, backend):
    """Ctrl-C mid-VACUUM leaves the connection invalid; putting statement_timeout back must not
    replace the interrupt with an error about that connection."""
    if backend != "postgres":
        pytest.skip("PostgreSQL's VACUUM")
    from sqlalchemy import event

    from sessctl import store as store_module

    fill(store, expired=300, live=3)
    real_init = store_module.SessionStore.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)

        @event.listens_for(self.engine, "before_cursor_execute")
        def _ctrl_c(_conn, _cur, statement, *_args):
            if statement.startswith("VACUUM"):
                raise KeyboardInterrupt

    store_module.SessionStore.__init__ = init
    try:
        r = invoke(settings, "purge", "--expired", "--reclaim", "--max-seconds", "30", code=1)
    finally:
        store_module.SessionStore.__init__ = real_init
    assert r.output.strip().splitlines()[-1] == "Aborted!", r.output
    assert "Error" not in r.output
    assert store.counts()["total"] == 3


def test_mariadb_reclaim_changes_nothing_and_says_why(store, settings, backend):
    if backend != "mysql":
        pytest.skip("MariaDB's InnoDB")
    fill(store, expired=2_000, live=10)
    out = json.loads(invoke(settings, "purge", "--expired", "--reclaim", "--json", code=0).stdout)
    assert out["deleted"] == 2_000
    assert out["reclaim"]["done"] is False and "OPTIMIZE TABLE" in out["reclaim"]["why"]
    assert store.counts()["total"] == 10
