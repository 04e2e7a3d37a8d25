"""SQLite's write-ahead log beside a live app: who checkpoints, and who waits for whom.

A purge on SQLite deletes in short batches, because each batch holds the
file's only write lock. Every batch dirties about one random page of each
index per deleted row, and a checkpoint copies those pages into the database
file; with the default auto-checkpoint (every 1,000 pages of WAL) nearly every
batch would checkpoint, and the next batch dirties the same pages again. So
the purge's own connection has no auto-checkpoint. Instead:

* every :data:`COPY_BOUND` bytes of log not yet copied, a PASSIVE checkpoint
  runs in a thread of its own, on a connection of its own, while the batches
  go on (it copies without blocking anyone; its fsyncs cost as much as the
  batches themselves on a slow disk);
* every :data:`WAL_BOUND` bytes of log, the log starts over: a PASSIVE that
  copies the rest, a second one for what the app wrote meanwhile, a sync of
  the database file by the purge itself (see :func:`_sync`), then a RESTART,
  which holds the write lock only to copy and sync the last few frames the
  app wrote;
* when the purge ends, the same, and the log's file is truncated: at once if
  it is small (:data:`TRUNCATE_BELOW`), else only if nobody writes for
  :data:`QUIET_SECONDS` after the log started over. Truncating holds the write
  lock about 0.8 ms per MB on a VM's ext4 (50 ms at the bound): beside a busy
  app the file keeps its size for the app's writes to reuse, as SQLite's own
  checkpoints leave it, and goes with the last connection.

Two things need the app's side, which lives in another process. Both are
``flock`` on a small empty file beside the database (released by the kernel
when the holder ends, even by ``kill -9``):

* ``<db>.sessctl-purging``: held (shared) by a running purge. The app's
  per-request connections, which would otherwise run a checkpoint of the
  purge's pages inside a request's commit, switch their auto-checkpoint off
  while it is held (checked at most every :data:`PROBE_SECONDS`).
* ``<db>.sessctl-waiting``: held (shared) by an app writer that found the
  database locked, while it retries. After each batch the purge yields only
  while someone holds it, instead of pausing after every batch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import exc as sa_exc

from .db import sqlite_path, then

# Bytes of log not yet copied into the database file before a purge starts copying them (in the
# background). A bigger stretch checkpoints less often (each checkpoint copies a page once however
# often the batches rewrote it), but every page a batch or the app reads that is not in its cache
# is looked up in the wal-index, one hash table per 4,096 frames, newest first, back to the last
# frame copied: measured without an app (200k rows, batches of 20 ms), the batches took 0.98 s at
# 32 MB, 1.6 s at 128 MB, 2.1 s at 256 MB, 4.0 s at 1 GB, the checkpoints 1.1 s at 16 MB, 0.7 s
# at 32 MB, 0.5 s from 64 MB up. 32 MB is the least of the sum.
COPY_BOUND = 32 * 2**20
# Bytes of log (copied or not) before it starts over: the file's size on disk. Each start-over
# costs the purge a checkpoint in the foreground, and the app a wait for one small copy and sync;
# truncating the file at the end costs the app about 0.8 ms per MB on a VM's ext4.
WAL_BOUND = 64 * 2**20
MAINTENANCE_WAL_BOUND = 1024 * 2**20
TRUNCATE_BELOW = 4 * 2**20
QUIET_SECONDS = 0.03
PURGE_CACHE_KIB = 48 * 1024  # page cache of the purge's connection (its RSS stays under 100 MB)
RESTART_BUSY_MS = 20  # how long a RESTART checkpoint may wait for readers (app writers wait meanwhile)
YIELD_CAP = 0.05  # longest a purge waits for the app's waiting writers after one batch
# A reader that holds an old snapshot keeps the log from starting over: past this many times its
# bound the purge writes nothing until the reader lets go, and stops after PINNED_WAIT seconds.
PINNED_FACTOR = 2
PINNED_WAIT = 10.0
PROBE_SECONDS = 0.2

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no signals, SQLite's defaults
    fcntl = None  # type: ignore[assignment]


def _open(path: str) -> int | None:
    if fcntl is None:
        return None
    try:
        return os.open(path, os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError:
        return None  # a read-only directory, another user's file: go without the signal


def _sync(path: str | None) -> None:
    """Flush what checkpoints copied into the database file, blocking nobody.

    SQLite syncs the file only when a checkpoint copied the whole log; beside an
    app that writes, a PASSIVE never does, and the RESTART that follows would
    sync all of it while it holds the write lock (measured: 93 ms of the app's
    writers waiting, against 1 ms once this has run).
    """
    if path is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        getattr(os, "fdatasync", os.fsync)(fd)
    except OSError:
        pass  # the checkpoint's own sync reports a failing disk
    finally:
        os.close(fd)


def _held(fd: int) -> bool:
    """Whether someone holds a lock on ``fd``'s file (probed with a non-blocking exclusive lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


class PurgeSignals:
    """The purge's side: announce the purge; yield to app writers that are waiting."""

    def __init__(self, db_path: str) -> None:
        self._purging = _open(f"{db_path}.sessctl-purging")
        self._waiting = _open(f"{db_path}.sessctl-waiting")
        if self._purging is not None:
            try:
                fcntl.flock(self._purging, fcntl.LOCK_SH)  # an app's probe holds it for microseconds
            except OSError:
                pass

    def yield_to_writers(self, cap: float = YIELD_CAP) -> float:
        """Sleep while an app writer waits for the lock (at most ``cap`` s); the seconds slept."""
        if self._waiting is None:
            return 0.0
        start = time.monotonic()
        while _held(self._waiting):
            if time.monotonic() - start >= cap:
                break
            time.sleep(0.0005)
        return time.monotonic() - start

    def close(self) -> None:
        for fd in (self._purging, self._waiting):
            if fd is not None:
                os.close(fd)  # releases the flock
        self._purging = self._waiting = None


class AppSignals:
    """The app's side, one per store: no checkpoints during a purge; say when a writer waits."""

    def __init__(self, db_path: str) -> None:
        self._path = db_path
        self._purging_fd: int | None = None
        self._waiting_fd: int | None = None
        self._opened = False
        self._next_probe = 0.0
        self._purging = False
        self._default: int | None = None
        self._applied: dict[int, int] = {}  # id(connection) -> its wal_autocheckpoint
        self._lock = threading.Lock()
        self._waiters = 0

    def _fds(self) -> None:
        if not self._opened:
            self._opened = True
            self._purging_fd = _open(f"{self._path}.sessctl-purging")
            self._waiting_fd = _open(f"{self._path}.sessctl-waiting")

    def new_connection(self, conn: Any) -> None:
        if self._default is None:
            self._default = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        self._applied[id(conn)] = self._default

    def before_write(self, conn: Any) -> None:
        """Switch ``conn``'s auto-checkpoint off while a purge runs, back on after."""
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + PROBE_SECONDS
            self._fds()
            self._purging = self._purging_fd is not None and _held(self._purging_fd)
        want = 0 if self._purging else self._default
        if want is not None and self._applied.get(id(conn)) != want:
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(want)}")
            self._applied[id(conn)] = want

    def forget(self, conn: Any) -> None:
        self._applied.pop(id(conn), None)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Hold the "a writer is waiting" signal (shared by this process's waiting threads)."""
        self._fds()
        fd = self._waiting_fd
        if fd is None:
            yield
            return
        with self._lock:
            self._waiters += 1
            if self._waiters == 1:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)  # a purge's probe holds it for microseconds
                except OSError:
                    pass
        try:
            yield
        finally:
            with self._lock:
                self._waiters -= 1
                if self._waiters == 0:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    except OSError:
                        pass

    def close(self) -> None:
        for fd in (self._purging_fd, self._waiting_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._purging_fd = self._waiting_fd = None
        self._opened = False


class _Copier:
    """One PASSIVE checkpoint at a time, in a thread, on a connection of its own.

    A failure is dropped: the foreground checkpoint that starts the log over
    meets the same one and reports it.
    """

    def __init__(self, store: Any, path: str | None) -> None:
        self.store = store
        self.path = path
        self.thread: threading.Thread | None = None
        self.seconds = 1.0  # how long the last copy took (before the first, a cautious guess)

    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="sessctl-wal-copy", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        began = time.monotonic()
        try:
            with self.store.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                conn.commit()
            _sync(self.path)
        except Exception:  # noqa: BLE001 - see the class's docstring
            pass
        finally:
            self.seconds = time.monotonic() - began

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None


class PurgeConnection:
    """The SQLite purge's connection: no auto-checkpoint, a big page cache, the log copied in the
    background every ~COPY_BOUND and started over every ~WAL_BOUND."""

    def __init__(self, store: Any, maintenance: bool) -> None:
        self.store = store
        self.maintenance = maintenance
        self.conn = self.guarded(store.engine.connect)
        self.path = sqlite_path(store.settings.database_url)
        self.signals = PurgeSignals(self.path) if self.path is not None else None
        self._shm: int | None = None
        self.copier = _Copier(store, self.path)  # before anything can fail: close() joins it
        self.restart_seconds = 1.0  # how long the last start-over took (before the first, a cautious guess)
        try:
            run = self.conn.exec_driver_sql
            run("PRAGMA wal_autocheckpoint = 0")
            run(f"PRAGMA cache_size = -{PURGE_CACHE_KIB}")
            page = self.page = run("PRAGMA page_size").scalar() or 4096
            self.busy_ms = self.store_busy_ms = run("PRAGMA busy_timeout").scalar()
            self.conn.commit()
        except BaseException:
            self.close()
            raise
        bound = MAINTENANCE_WAL_BOUND if maintenance else WAL_BOUND
        self.bound_frames = max(1, bound // page)
        self.copy_frames = max(1, min(COPY_BOUND, bound // 2) // page)
        self.since = 0

    def guarded(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, with a driver error turned into the store's one-line error."""
        try:
            return fn()
        except sa_exc.DBAPIError as exc:
            raise self.store._translate(exc) from exc

    def delete(self, stmt: Any, params: dict) -> int:
        """One batch in one transaction; the rows it deleted."""
        try:
            with self.conn.begin():
                return self.conn.execute(stmt, params).rowcount
        except sa_exc.DBAPIError as exc:
            raise self.store._translate(exc) from exc

    def frames(self) -> tuple[int, int] | None:
        """Frames in the log now, and how many of them are copied into the database file:
        ``mxFrame`` of the wal-index header and ``nBackfill`` after it (https://sqlite.org/walformat.html)."""
        if self._shm is None and self.path is not None:
            try:
                self._shm = os.open(f"{self.path}-shm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self.path = None  # no shared wal-index (e.g. exclusive locking): count batches instead
        if self._shm is None:
            return None
        head = os.pread(self._shm, 100, 0)
        if len(head) < 100:
            return None
        return int.from_bytes(head[16:20], sys.byteorder), int.from_bytes(head[96:100], sys.byteorder)

    def checkpoint(self, final: bool = False) -> bool:
        """PASSIVE (copies without blocking anyone), then RESTART (or, at the end of a short purge,
        TRUNCATE) with a short wait; True once the log starts over.

        The RESTART holds the write lock only while it copies what the app
        wrote since the PASSIVE and waits (at most RESTART_BUSY_MS) for readers
        of the old log to finish; after it the log starts over from its beginning.
        If the PASSIVE could not copy every frame, a reader still holds an older
        snapshot and a RESTART would only keep the app's writers waiting: it is
        not tried (but always at the end, ``final``).
        """
        self.copier.join()  # one checkpoint at a time: a background copy finishes first
        began = time.monotonic()
        done = self._pragmas(lambda run: self._checkpoint(run, final))
        self.restart_seconds = time.monotonic() - began
        return done

    def _checkpoint(self, run: Callable[..., Any], final: bool) -> bool:
        """The steps of :meth:`checkpoint`, on ``run`` (the connection's ``exec_driver_sql``)."""
        before = self.frames()
        _busy, log, copied = run("PRAGMA wal_checkpoint(PASSIVE)").one()
        if not final and copied < log:
            return False
        now = self.frames()
        if now is not None and now[0] > log:  # the app wrote while it copied: copy that too, unblocked
            run("PRAGMA wal_checkpoint(PASSIVE)").one()
            now = self.frames()
        if before is None or now is None or now[1] != before[1]:
            _sync(self.path)  # something was copied since the last sync
        mode = "TRUNCATE" if final and self._wal_bytes() <= TRUNCATE_BELOW else "RESTART"
        return not self._briefly(run, f"PRAGMA wal_checkpoint({mode})")[0]

    def _briefly(self, run: Callable[..., Any], checkpoint: str) -> Any:
        """``checkpoint``'s row, with a busy timeout of RESTART_BUSY_MS while it runs."""
        run(f"PRAGMA busy_timeout = {RESTART_BUSY_MS}")
        with then(lambda: run(f"PRAGMA busy_timeout = {int(self.busy_ms)}")):
            return run(checkpoint).one()

    def _pragmas(self, fn: Callable[[Callable[..., Any]], Any]) -> Any:
        """``fn(run)`` on the purge's connection, then commit. If it fails (Ctrl-C mid-statement
        invalidates the connection) the failure propagates as it is: a commit or rollback that
        fails after it must not take its place."""
        try:
            result = fn(self.conn.exec_driver_sql)
        except BaseException:
            with contextlib.suppress(Exception):
                self.conn.rollback()
            raise
        self.conn.commit()
        return result

    def _truncate_if_quiet(self) -> None:
        """After the last RESTART: truncate the log's file if nobody wrote since (see the module's docstring)."""
        if self._wal_bytes() <= TRUNCATE_BELOW:
            return
        before = self.frames()  # a RESTART leaves the header as it is: the next writer starts over
        time.sleep(QUIET_SECONDS)
        if before is None or self.frames() != before:
            return  # an app writes: it reuses the file
        self._pragmas(lambda run: self._briefly(run, "PRAGMA wal_checkpoint(TRUNCATE)"))

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.path}-wal") if self.path is not None else 0
        except OSError:
            return 0

    def set_budget(self, seconds: float) -> None:
        """The most the next batch may wait for the write lock: what is left of --max-seconds."""
        ms = max(1, int(min(seconds * 1000, self.store_busy_ms)))
        if ms != self.busy_ms:
            self.guarded(lambda: self.conn.exec_driver_sql(f"PRAGMA busy_timeout = {ms}"))
            self.conn.commit()
            self.busy_ms = ms

    def after_batch(self) -> str | None:
        """Copy the log in the background, start it over past its bound, and yield to waiting app
        writers; a reason to stop, if any."""
        self.since += 1
        state = self.frames()
        frames = None if state is None else state[0]
        # Under --max-seconds, a start-over begins only with twice its last duration left, and a copy
        # (in the background, but the end waits for it) with its last duration left: the final
        # checkpoint (close) is then all that runs past the deadline.
        deadline = getattr(self.store, "_purge_deadline", None)
        left = float("inf") if deadline is None else deadline - time.monotonic()
        due = (frames is not None and frames >= self.bound_frames) or (frames is None and self.since >= 8)
        if due and (left > 2 * self.restart_seconds or (frames or 0) >= PINNED_FACTOR * self.bound_frames):
            if self.guarded(self.checkpoint):
                self.since = 0
            elif frames is not None and frames >= PINNED_FACTOR * self.bound_frames:
                why = self._wait_for_readers(frames)
                if why:
                    return why
        elif (not due and state is not None and frames - state[1] >= self.copy_frames
              and not self.copier.busy() and left > self.copier.seconds):
            self.copier.start()
        if self.signals is not None and not self.maintenance:
            self.signals.yield_to_writers()
        return None

    def _wait_for_readers(self, frames: int) -> str | None:
        """The log is PINNED_FACTOR times its bound and a reader keeps it from starting over:
        write nothing more until it can (checked every 0.1 s), for at most PINNED_WAIT seconds
        (and never past --max-seconds); then the reason to stop."""
        deadline = getattr(self.store, "_purge_deadline", None)
        until = time.monotonic() + PINNED_WAIT
        if deadline is not None:
            until = min(until, deadline)
        while time.monotonic() < until:
            time.sleep(0.1)
            if self.guarded(self.checkpoint):
                self.since = 0
                return None
        if deadline is not None and time.monotonic() >= deadline:
            return None  # the loop stops for --max-seconds
        size = frames * (self.page + 24) / 2**20
        return (f"a reader has kept SQLite's write-ahead log from starting over for {PINNED_WAIT:g} s "
                f"(an open read transaction; the log is at {size:.0f} MB): re-run once it ends")

    def close(self) -> None:
        conn, self.conn = self.conn, None
        try:
            self.copier.join()  # its connection must not outlive the purge's (nor the engine)
        finally:
            self._close(conn)

    def _close(self, conn: Any) -> None:
        try:
            if conn is not None and not conn.closed:
                try:
                    self.conn = conn
                    if self.checkpoint(final=True):  # leave nothing for the app's commits to copy
                        self._truncate_if_quiet()
                except Exception:
                    pass
                finally:
                    self.conn = None
                    conn.invalidate()  # its pragmas go with it, not back into the pool
                    conn.close()
        finally:
            if self.signals is not None:
                self.signals.close()
                self.signals = None
            if self._shm is not None:
                os.close(self._shm)
                self._shm = None
