"""The runtime's per-request statements: fixed SQL on raw driver connections.

The four statements a request runs (load, insert, swap, delete) skip
SQLAlchemy's statement compilation and its pool: they are fixed strings
prepared once per store, run on connections kept in a lock-free LIFO of idle
ones (``deque.pop``/``append`` are atomic). Each connection is made by the
engine, so it has the engine's settings (isolation level, SQLite pragmas).
Every statement is its own transaction, so an idle connection never holds
one open. On PostgreSQL and MariaDB the connections run in autocommit: a
statement is then one round trip to the server instead of two (statement,
then COMMIT), which is most of a request's cost there.
"""

from __future__ import annotations

import collections
import contextlib
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from .db import is_deadlock, sqlite_path
from .errors import StoreError
from .sqlitewal import AppSignals

UTC = timezone.utc
MAX_IDLE = 32  # idle per-request connections kept per store
BUSY_TIMEOUT = 10.0  # seconds a SQLite writer keeps retrying a locked database


class FastPath:
    """The per-request SQL of one table, as driver strings with driver-native values."""

    __slots__ = (
        "load", "insert", "swap", "delete", "delete_if", "bind", "result",
        "dbapi_error", "integrity_error", "operational_error", "retry_busy", "autocommit",
        "wal", "_engine", "_translate", "_idle", "__weakref__",
    )

    def __init__(self, engine: Engine, table: str, translate: Callable[[sa_exc.DBAPIError], StoreError]) -> None:
        dialect = engine.dialect
        self._engine = engine
        self._translate = translate
        self._idle: collections.deque = collections.deque()
        weakref.finalize(self, _drain, self._idle)  # a store dropped without close() closes them too
        self.dbapi_error = dialect.loaded_dbapi.Error
        self.integrity_error = dialect.loaded_dbapi.IntegrityError
        self.operational_error = dialect.loaded_dbapi.OperationalError
        self.retry_busy = dialect.name == "sqlite"
        self.autocommit = dialect.name in ("postgresql", "mysql", "mariadb")
        path = sqlite_path(engine.url.render_as_string(hide_password=False)) if self.retry_busy else None
        self.wal = AppSignals(path) if path is not None else None  # see sessctl.sqlitewal
        q = dialect.identifier_preparer.quote_identifier
        t, key, data, exp = q(table), q("session_key"), q("session_data"), q("expire_date")
        p = "?" if dialect.paramstyle == "qmark" else "%s"
        self.load = f"SELECT {data}, {exp} FROM {t} WHERE {key} = {p} AND {exp} > {p}"
        if dialect.name in ("postgresql", "sqlite"):
            self.insert = f"INSERT INTO {t} ({key}, {data}, {exp}) VALUES ({p}, {p}, {p}) ON CONFLICT DO NOTHING"
        else:
            self.insert = f"INSERT INTO {t} ({key}, {data}, {exp}) VALUES ({p}, {p}, {p})"
        self.swap = f"UPDATE {t} SET {data} = {p}, {exp} = {p} WHERE {key} = {p} AND {data} = {p}"
        self.delete = f"DELETE FROM {t} WHERE {key} = {p}"
        self.delete_if = f"DELETE FROM {t} WHERE {key} = {p} AND {data} = {p}"
        # The same conversions as model.UTCDateTime, without its per-call dispatch.
        if dialect.name == "sqlite":
            self.bind = lambda dt: str(dt.astimezone(UTC).replace(tzinfo=None))
            self.result = lambda v: datetime.fromisoformat(v).replace(tzinfo=UTC)
        elif dialect.name in ("mysql", "mariadb"):
            self.bind = lambda dt: dt.astimezone(UTC).replace(tzinfo=None)
            self.result = lambda v: v.replace(tzinfo=UTC)
        else:
            self.bind = lambda dt: dt.astimezone(UTC)
            self.result = lambda v: v.astimezone(UTC)

    def close(self) -> None:
        """Close the idle connections (the path can still be used after)."""
        _drain(self._idle)
        if self.wal is not None:
            self.wal.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """A DBAPI connection from the idle LIFO (or a new one), given back after use."""
        idle = self._idle
        try:
            conn = idle.pop()
        except IndexError:
            conn = self._new()
        try:
            yield conn
        except self.dbapi_error as exc:
            disconnect = self._engine.dialect.is_disconnect(exc, conn, None)
            try:
                conn.rollback()
            except Exception:
                disconnect = True
            if disconnect:
                _close_quietly(conn)
            elif len(idle) < MAX_IDLE:
                idle.append(conn)
            else:
                _close_quietly(conn)
            wrapped = sa_exc.DBAPIError.instance(None, None, exc, self.dbapi_error, connection_invalidated=disconnect)
            raise self._translate(wrapped) from exc
        except BaseException:
            _close_quietly(conn)  # state unknown (e.g. KeyboardInterrupt mid-statement)
            raise
        else:
            if len(idle) < MAX_IDLE:
                idle.append(conn)
            else:
                conn.close()

    def _new(self) -> Any:
        try:
            proxied = self._engine.raw_connection()
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc) from exc
        proxied.detach()  # ours from now on: the engine's pool forgets it
        conn = proxied.dbapi_connection
        if self.retry_busy:
            conn.execute("PRAGMA busy_timeout = 0")  # run() waits in 1 ms steps instead
            if self.wal is not None:
                self.wal.new_connection(conn)
        elif self.autocommit:
            conn.rollback()  # whatever the dialect's first-connect queries left open
            if callable(getattr(conn, "get_autocommit", None)):
                conn.autocommit(True)  # PyMySQL
            else:
                conn.autocommit = True  # psycopg
        return conn

    def run(self, sql: str, params: tuple, *, fetch: bool = False) -> Any:
        """Run one statement in its own transaction; rowcount, or the row with ``fetch``.

        On SQLite a writer that finds the database locked (a purge batch,
        another app write) retries every millisecond rather than through
        SQLite's busy handler, whose sleeps grow to 25-100 ms and keep
        missing the short gaps between purge batches. Meanwhile it tells a
        running purge that a writer waits (:mod:`sessctl.sqlitewal`).
        """
        wal = self.wal if sql is not self.load else None
        if wal is None:
            return self._run(sql, params, fetch, None, None)
        with contextlib.ExitStack() as waiting:
            return self._run(sql, params, fetch, wal, waiting)

    def _run(self, sql: str, params: tuple, fetch: bool, wal: Any, waiting: Any) -> Any:
        deadline = None
        while True:
            with self.connection() as conn:
                if wal is not None:
                    wal.before_write(conn)
                cur = conn.cursor()
                try:
                    cur.execute(sql, params)
                except self.operational_error as exc:
                    busy = self.retry_busy and "locked" in str(exc)
                    if not busy and not is_deadlock(exc):
                        raise
                    conn.rollback()
                    now = time.monotonic()
                    if deadline is None and wal is not None:
                        waiting.enter_context(wal.waiting())
                    deadline = deadline or now + BUSY_TIMEOUT
                    if now > deadline:
                        raise
                    time.sleep(0.001)
                    continue
                result = cur.fetchone() if fetch else cur.rowcount
                cur.close()
                if not self.autocommit:
                    conn.commit()  # also ends a read's transaction, so an idle connection holds none
                return result


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        pass


def _drain(idle: Any) -> None:
    while idle:
        try:
            _close_quietly(idle.pop())
        except IndexError:
            break
