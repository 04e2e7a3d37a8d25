"""The purge lock: one purge per table at a time, held where it cannot be lost unnoticed.

The lock's identity is the table itself, not its name: PostgreSQL's advisory key is built from
the table's OID (advisory locks are per database, and the OID tells schemas apart); MariaDB's
``GET_LOCK`` names are server-wide and at most 64 characters, so the name is a hash of the
database and the table; SQLite's is a file beside the database's real path.

While it is held, the store runs every statement of the purge on the lock's own connection
(:meth:`PurgeLock.use`), and checks before each batch that the lock is still there (the
connection could have been closed by the server, an administrator or a failover; SQLite's lock
file could have been removed). If it is not, :class:`LockLost` stops the purge: two purges
must never run at once believing each is alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from . import lifecycle
from .db import redact_url, sqlite_path, then
from .errors import DatabaseUnavailable, StoreError

WAIT_STEP = 0.2  # seconds between tries of a waiting purge (each try is a short statement)


class LockLost(StoreError):
    """The purge lock is gone while the purge ran: it stopped."""


class ConnectionLost(LockLost, DatabaseUnavailable):
    """The purge lock's connection ended (the server went away, or closed or killed it)."""


class PurgeLock:
    """A held lock, and the connection (PostgreSQL, MariaDB) that holds it."""

    def __init__(self, store: Any, conn: Any, verify: Any, release: Any) -> None:
        self.store, self.conn, self._verify, self._release = store, conn, verify, release
        self.thread = threading.get_ident()
        self.budget: float | None = None  # seconds the next statement may take (purge --max-seconds)

    def lost(self, why: str) -> LockLost:
        return LockLost(
            f"the purge lock was lost ({why}); the purge stopped so that two never run at once: run it again to go on"
        )

    def gone(self, exc: sa_exc.DBAPIError) -> LockLost:
        url = redact_url(self.store.settings.database_url)
        return ConnectionLost(
            f"cannot reach the database {url}: {_first_line(exc.orig)}; the purge lock went with the connection, "
            "so the purge stopped (two must never run at once): run it again to go on"
        )

    def verify(self) -> None:
        try:
            ok = self._verify()
        except sa_exc.DBAPIError as exc:
            raise self.gone(exc) from exc
        if not ok:
            raise self.lost("the database no longer shows it held")

    @contextlib.contextmanager
    def use(self, *, write: bool) -> Iterator[Any]:
        """The connection for one of the purge's statements (a transaction with ``write``)."""
        if write:
            self.verify()
        if self.conn is None:  # SQLite: the lock is a file; statements use the store's engine
            with self.store.engine.connect() as conn:
                budget = self.budget
                if budget is not None:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout = {max(1, int(budget * 1000))}")
                with then(lambda: budget is None or conn.exec_driver_sql(
                        f"PRAGMA busy_timeout = {int(self.store.timeout * 1000)}")):
                    yield conn
                    conn.commit()
            return
        conn = self.conn
        try:
            self._bound(conn)
            yield conn
            conn.commit()
        except sa_exc.DBAPIError as exc:
            if exc.connection_invalidated or conn.invalidated or conn.closed:
                raise self.gone(exc) from exc
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise

    def _bound(self, conn: Any) -> None:
        """Cap this statement's lock waits and run time at what the purge has left (--max-seconds)."""
        dbapi = conn.connection.dbapi_connection
        if self.budget is None:
            lifecycle.set_bound(dbapi, self.store.timeout + lifecycle.READ_MARGIN)
            return
        budget = self.budget
        lifecycle.set_bound(dbapi, budget + lifecycle.READ_MARGIN)
        if self.store.dialect == "postgresql":
            ms = max(1, int(budget * 1000))
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}")
        else:
            secs = max(1, int(budget + 0.999))
            sets = f"innodb_lock_wait_timeout = {secs}, lock_wait_timeout = {secs}"
            if getattr(conn.dialect, "is_mariadb", False):
                sets += f", max_statement_time = {budget:.3f}"
            conn.exec_driver_sql(f"SET SESSION {sets}")

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self._release()


@contextlib.contextmanager
def exclusive(store: Any, name: str = "purge", *, wait: bool = False) -> Iterator[bool]:
    """Hold a lock named ``name`` for ``store``'s table across processes; yields whether it was got.

    Each is released when the holder exits, even by ``kill -9``, so a crashed run never blocks
    the next one. With ``wait`` it tries again every ``WAIT_STEP`` seconds until it is free.
    """
    dialect = store.dialect
    if dialect == "sqlite":
        with _sqlite_lock(store, name, wait) as held:
            yield held
        return
    if dialect not in ("postgresql", "mysql", "mariadb"):
        yield True
        return
    with store.connect() as conn:  # the lock's connection: it runs the whole purge
        if dialect == "postgresql":
            # The table's OID (a table not made yet: its schema-qualified name, hashed).
            key = conn.execute(text(
                "SELECT (hashtext(:ns)::bigint << 32) | COALESCE(to_regclass(:t)::oid::bigint, "
                "hashtext(current_database() || '.' || current_schema() || '.' || :t)::bigint & 4294967295)"
            ), {"ns": f"sessctl.{name}", "t": _quoted(store)}).scalar_one()
            take = lambda: conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()  # noqa: E731
            check = (lambda: conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
            )).scalar() > 0)
            free = lambda: conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})  # noqa: E731
        else:
            lock_name = conn.execute(text(
                "SELECT CONCAT('sessctl.', :n, '.', LEFT(SHA2(CONCAT_WS('.', DATABASE(), :t), 256), 40))"
            ), {"n": name[:8], "t": store.settings.table}).scalar_one()
            take = lambda: conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": lock_name}).scalar() == 1  # noqa: E731
            check = lambda: conn.execute(  # noqa: E731
                text("SELECT IS_USED_LOCK(:n) = CONNECTION_ID()"), {"n": lock_name}).scalar() == 1
            free = lambda: conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": lock_name})  # noqa: E731
        got = _take(conn, take, wait)
        if not got:
            yield False
            return
        lock = PurgeLock(store, conn, lambda: _committed(conn, check), lambda: _committed(conn, free))
        store._pin = lock
        try:
            yield True
        finally:
            store._pin = None
            if not conn.invalidated:
                lock.release()


def _take(conn: Any, take: Any, wait: bool) -> bool:
    while True:
        got = bool(take())
        conn.commit()
        if got or not wait:
            return got
        time.sleep(WAIT_STEP)


def _committed(conn: Any, fn: Any) -> Any:
    result = fn()
    conn.commit()
    return result


@contextlib.contextmanager
def _sqlite_lock(store: Any, name: str, wait: bool) -> Iterator[bool]:
    import fcntl

    path = sqlite_path(store.settings.database_url)
    if path is None:
        yield True
        return
    from .purge import open_sqlite_lock

    # From the database's real path: two paths to one file (a symlink) are one lock.
    fd, lock_path = open_sqlite_lock(os.path.realpath(path), name, store.settings.table)
    store.lock_path = lock_path
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                time.sleep(WAIT_STEP)
        mine = os.fstat(fd)

        def check() -> bool:
            try:
                now = os.stat(lock_path)
            except FileNotFoundError:
                return False
            return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

        store._pin = PurgeLock(store, None, check, lambda: None)
        try:
            yield True
        finally:
            store._pin = None
    finally:
        os.close(fd)  # releases the flock


def _quoted(store: Any) -> str:
    return store.engine.dialect.identifier_preparer.quote_identifier(store.settings.table)


def _first_line(exc: BaseException | None) -> str:
    text_ = str(exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__
