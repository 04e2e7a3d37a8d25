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
import os
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from . import lifecycle
from .db import is_deadlock, sqlite_path
from .errors import RowTooLarge, StoreError
from .model import placeholder, read_datetime
from .sqlitewal import AppSignals

UTC = timezone.utc
MAX_IDLE = 32  # idle per-request connections kept per store
BUSY_TIMEOUT = 10.0  # seconds a SQLite writer keeps retrying a locked database


class FastPath:
    """The per-request SQL of one table, as driver strings with driver-native values."""

    __slots__ = (
        "load", "insert", "swap", "delete", "delete_if", "lock", "put", "bind", "result",
        "dbapi_error", "integrity_error", "operational_error", "retry_busy", "autocommit", "busy_timeout",
        "data_of", "reads", "wal", "_engine", "_translate", "_idle", "_packet", "_pid", "_alive", "__weakref__",
    )

    def __init__(
        self,
        engine: Engine,
        table: str,
        translate: Callable[[sa_exc.DBAPIError], StoreError],
        time_zone: str | None = None,
        timeout: float = lifecycle.APP_TIMEOUT,
    ) -> None:
        dialect = engine.dialect
        self._engine = engine
        self._translate = translate
        self._idle: collections.deque = collections.deque()
        self._pid = os.getpid()
        # Sockets only: a connection the server closed while idle is dropped before use.
        self._alive = None if dialect.name == "sqlite" else lifecycle.alive
        self.busy_timeout = timeout  # seconds a SQLite writer keeps retrying a locked database
        weakref.finalize(self, _drain, self._idle)  # a store dropped without close() closes them too
        self.dbapi_error = dialect.loaded_dbapi.Error
        self.integrity_error = dialect.loaded_dbapi.IntegrityError
        self.operational_error = dialect.loaded_dbapi.OperationalError
        self.retry_busy = dialect.name == "sqlite"
        self.autocommit = dialect.name in ("postgresql", "mysql", "mariadb")
        # MariaDB/MySQL refuse a statement over max_allowed_packet by dropping the connection:
        # read the limit (once) when a big write fails, to say "too large", not "unreachable".
        self._packet: int | None = 0 if dialect.name in ("mysql", "mariadb") else None
        path = sqlite_path(engine.url.render_as_string(hide_password=False)) if self.retry_busy else None
        self.wal = AppSignals(path) if path is not None else None  # see sessctl.sqlitewal
        q = dialect.identifier_preparer.quote_identifier
        t, key, data, exp = q(table), q("session_key"), q("session_data"), q("expire_date")
        p = placeholder(dialect)
        # Keys compare exactly: MariaDB's default collations ignore case and trailing spaces, and
        # CAST(... AS BINARY) still finds the row through the primary key (EXPLAIN: const).
        k = f"CAST({p} AS BINARY)" if dialect.name in ("mysql", "mariadb") else p
        self.load = f"SELECT {data}, {exp} FROM {t} WHERE {key} = {k} AND {exp} > {p}"
        self.reads = {self.load}  # statements that write nothing: no SQLite writer bookkeeping in _once()
        if dialect.name in ("postgresql", "sqlite"):
            self.insert = f"INSERT INTO {t} ({key}, {data}, {exp}) VALUES ({p}, {p}, {p}) ON CONFLICT DO NOTHING"
        else:
            self.insert = f"INSERT INTO {t} ({key}, {data}, {exp}) VALUES ({p}, {p}, {p})"
        self.swap = f"UPDATE {t} SET {data} = {p}, {exp} = {p} WHERE {key} = {k} AND {data} = {p}"
        self.delete = f"DELETE FROM {t} WHERE {key} = {k}"
        self.delete_if = f"DELETE FROM {t} WHERE {key} = {k} AND {data} = {p}"
        self.data_of = f"SELECT {data} FROM {t} WHERE {key} = {k}"
        # The retry after a lost compare-and-swap: read and write under the row's lock (SQLite
        # has no row locks; BEGIN IMMEDIATE takes its one write lock first).
        self.lock = self.load + ("" if dialect.name == "sqlite" else " FOR UPDATE")
        self.put = f"UPDATE {t} SET {data} = {p}, {exp} = {p} WHERE {key} = {k}"
        # The same conversions as model.UTCDateTime, without its per-call dispatch.
        # A value that does not convert (a row written by hand) goes the slow, forgiving way.
        if time_zone is not None:  # a project's naive wall times (sessctl.tz)
            from .tz import zone

            z, name = zone(time_zone), dialect.name
            self.bind = lambda dt: z.bind(dt, name)
            self.result = _forgiving(lambda v: z.result(v, name), time_zone)
        elif dialect.name == "sqlite":
            self.bind = lambda dt: str(dt.astimezone(UTC).replace(tzinfo=None))
            self.result = _forgiving(lambda v: datetime.fromisoformat(v).replace(tzinfo=UTC))
        elif dialect.name in ("mysql", "mariadb"):
            self.bind = lambda dt: dt.astimezone(UTC).replace(tzinfo=None)
            self.result = _forgiving(lambda v: v.replace(tzinfo=UTC))
        else:
            self.bind = lambda dt: dt.astimezone(UTC)
            self.result = _forgiving(lambda v: v.astimezone(UTC))

    def close(self) -> None:
        """Close the idle connections (the path can still be used after)."""
        _drain(self._idle)
        if self.wal is not None:
            self.wal.close()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections without closing them (they are its)."""
        idle = self._idle
        lifecycle.abandon(list(idle))
        idle.clear()
        self._pid = os.getpid()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """A DBAPI connection from the idle LIFO (or a new one), given back after use.

        A connection made by another process (we were forked) is never used; one the server has
        closed while it sat idle is dropped; both without a round trip. A failure raises the
        translated :class:`StoreError` with ``retry_safe`` set when the connection died before
        answering (and not for a timeout): the caller may then run its statement once more.
        """
        conn = self._take()
        try:
            yield conn
        except self.dbapi_error as exc:
            raise self._failed(conn, exc) from exc
        except BaseException:
            _close_quietly(conn)  # state unknown (e.g. KeyboardInterrupt mid-statement)
            raise
        else:
            self._give_back(conn)

    # connection() in three parts, for _run(): the per-request path spares the generator.
    def _take(self) -> Any:
        if self._pid != os.getpid():
            self.after_fork()
        idle, alive = self._idle, self._alive
        while True:
            try:
                conn = idle.pop()
            except IndexError:
                return self._new()
            if alive is None or alive(conn):
                return conn
            _close_quietly(conn)

    def _give_back(self, conn: Any) -> None:
        if len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    def _failed(self, conn: Any, exc: BaseException) -> StoreError:
        """The driver raised on ``conn``: keep or drop it, and the error to raise (translated)."""
        disconnect = self._engine.dialect.is_disconnect(exc, conn, None)
        try:
            conn.rollback()
        except Exception:
            disconnect = True
        if disconnect:
            _close_quietly(conn)
        else:
            self._give_back(conn)
        wrapped = sa_exc.DBAPIError.instance(None, None, exc, self.dbapi_error, connection_invalidated=disconnect)
        err = self._translate(wrapped)
        err.retry_safe = disconnect and not _timed_out(exc)
        return err

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

    def run(self, sql: str, params: tuple, *, fetch: bool = False, retry: bool = True) -> Any:
        """Run one statement in its own transaction; rowcount, or the row with ``fetch``.

        Every per-request statement is safe to run twice (a read, a compare-and-swap, a delete
        by key), so one that met a dead connection is run once more on a fresh one (``retry``).
        A COMMIT that finds readers of a rollback-journal SQLite file waits like a statement.
        """
        try:
            return self._once(sql, params, fetch)
        except StoreError as err:
            if not (retry and getattr(err, "retry_safe", False)):
                raise
        return self._once(sql, params, fetch)

    def insert_row(self, params: tuple) -> bool:
        """INSERT a fresh key; False if the key is taken. After a dead connection it is run once
        more, and a "taken" then is checked: the row holding exactly our data was our own first try."""
        try:
            return self._insert(params)
        except StoreError as err:
            if not getattr(err, "retry_safe", False):
                raise
        if self._insert(params):
            return True
        found = self._once(self.data_of, (params[0],), True)
        return found is not None and found[0] == params[1]

    def _insert(self, params: tuple) -> bool:
        try:
            return self.run(self.insert, params, retry=False) == 1
        except StoreError as err:
            if isinstance(err.__cause__, self.integrity_error):
                return False  # MySQL/MariaDB: a duplicate key (the others say DO NOTHING)
            raise

    def _once(self, sql: str, params: tuple, fetch: bool) -> Any:
        """One try of :meth:`run`.

        On SQLite a writer that finds the database locked (a purge batch,
        another app write) retries every millisecond rather than through
        SQLite's busy handler, whose sleeps grow to 25-100 ms and keep
        missing the short gaps between purge batches. Meanwhile it tells a
        running purge that a writer waits (:mod:`sessctl.sqlitewal`).
        """
        try:
            wal = self.wal if sql not in self.reads else None
            if wal is None:
                return self._run(sql, params, fetch, None, None)
            with contextlib.ExitStack() as waiting:
                return self._run(sql, params, fetch, wal, waiting)
        except StoreError as err:
            if self._packet is not None and _size(params) > 1 << 20:
                limit = self._max_packet()
                if limit and _size(params) + 1024 >= limit:
                    raise RowTooLarge(
                        f"the session is too large for this database: about {_size(params):,} bytes, and the "
                        f"server's max_allowed_packet is {limit:,} bytes; keep large data out of the session "
                        "(or raise max_allowed_packet on the server)"
                    ) from err
            raise

    def locked(self, key: str, now: datetime, rewrite: Callable[[Any, Any], tuple[str, datetime]]) -> Any:
        """Rewrite one live row under its lock, in one transaction: read it, ``rewrite(data, expire_date)``
        gives the new (data, expire_date), optionally with more ``(sql, params, _)`` steps for the same
        transaction (the user index row: :mod:`sessctl.userindex`), write it (a None data deletes
        the row instead). Returns the (data, expire_date) read, or None if
        there is no live row. Writers queue on the lock instead of racing, so this never loses.

        Its own transaction, also on an autocommit connection (the lock must outlive the SELECT);
        on SQLite, BEGIN IMMEDIATE takes the one write lock first, retried as :meth:`run` retries.
        """
        deadline = None
        while True:
            with self.connection() as conn:
                if self.wal is not None:
                    self.wal.before_write(conn)
                cur = conn.cursor()
                try:
                    cur.execute("BEGIN IMMEDIATE" if self.retry_busy else "BEGIN")
                    cur.execute(self.lock, (key, self.bind(now)))
                    found = cur.fetchone()
                    if found is not None:
                        data, expire_date, *more = rewrite(found[0], self.result(found[1]))
                        if data is None:  # the rewrite ends the session (cycle_key retiring its old key)
                            cur.execute(self.delete, (key,))
                        else:
                            cur.execute(self.put, (data, self.bind(expire_date), key))
                        for sql, params, _ in more[0] if more else ():  # e.g. the user index row
                            cur.execute(sql, params)
                except self.operational_error as exc:
                    busy = self.retry_busy and "locked" in str(exc)
                    if not busy and not is_deadlock(exc):
                        raise
                    conn.rollback()
                    moment = time.monotonic()
                    deadline = deadline or moment + self.busy_timeout
                    if moment > deadline:
                        raise
                    time.sleep(0.001)
                    continue
                except self.dbapi_error:
                    raise  # connection() rolls back, and drops a dead connection
                except BaseException:
                    _rollback_quietly(conn)  # rewrite() failed (data that cannot be encoded): write nothing
                    raise
                cur.close()
                conn.commit()
                return found

    def _max_packet(self) -> int | None:
        if not self._packet:
            try:
                with self.connection() as conn:
                    cur = conn.cursor()
                    cur.execute("SELECT @@max_allowed_packet")
                    self._packet = int(cur.fetchone()[0])
                    cur.close()
                    conn.commit()
            except (StoreError, TypeError, ValueError):
                return None
        return self._packet

    def _run(self, sql: str, params: tuple, fetch: bool, wal: Any, waiting: Any) -> Any:
        deadline = None
        while True:
            conn = self._take()  # as ``with self.connection()``, written out: this is every request's path
            try:
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
                    deadline = deadline or now + self.busy_timeout
                    if now > deadline:
                        raise
                    time.sleep(0.001)
                    self._give_back(conn)
                    continue
                result = cur.fetchone() if fetch else cur.rowcount
                cur.close()
                if not self.autocommit:
                    self._commit(conn)  # also ends a read's transaction, so an idle connection holds none
            except self.dbapi_error as exc:
                raise self._failed(conn, exc) from exc
            except BaseException:
                _close_quietly(conn)  # state unknown (e.g. KeyboardInterrupt mid-statement)
                raise
            self._give_back(conn)
            return result

    def _commit(self, conn: Any) -> None:
        """COMMIT; on SQLite a COMMIT that finds readers in a rollback-journal file waits for them.

        The transaction stays open (and keeps SQLite's PENDING lock, which lets no new reader
        in), so the retry is the COMMIT alone, every millisecond, until the bound.
        """
        if not self.retry_busy:
            conn.commit()
            return
        deadline = None
        while True:
            try:
                conn.commit()
                return
            except self.operational_error as exc:
                if "locked" not in str(exc):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.busy_timeout
                if now > deadline:
                    raise
                time.sleep(0.001)


def _timed_out(exc: BaseException) -> bool:
    """The bound ran out (ours, or the driver's read timeout): running it again would double it."""
    text = str(exc).lower()
    return "timed out" in text or "did not answer within" in text or "timeout" in text


def _size(params: tuple) -> int:
    return sum(len(p) for p in params if isinstance(p, (str, bytes)))


def _forgiving(convert: Callable[[Any], datetime], time_zone: str | None = None) -> Callable[[Any], datetime]:
    def result(value: Any) -> datetime:
        try:
            return convert(value)
        except (ValueError, TypeError, AttributeError, OverflowError):
            return read_datetime(value, time_zone)

    return result


def _rollback_quietly(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception:
        pass


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
