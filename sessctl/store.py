"""Persistence of session rows over SQLAlchemy 2 Core: the only module that speaks SQL.

The store never decides expiry (that is :mod:`sessctl.policy`) and never
touches HTTP (that is :mod:`sessctl.middleware`). Its writes are built so
that nothing is ever lost or resurrected under concurrency:

* a new session is a plain INSERT of a fresh random key (retried on the rare
  collision), never an upsert;
* every update is a compare-and-swap on the row's current ``session_data``,
  so a save cannot overwrite a change it has not seen, nor re-create a row
  that was deleted meanwhile;
* purge deletes in short batches whose DELETE itself re-checks
  ``expire_date < cutoff``, so a session refreshed meanwhile survives.
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import string
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, create_engine, delete, event, func, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from . import policy
from .codec import Codec
from .config import ConfigError, Settings
from .model import cached_table, create_statements

if TYPE_CHECKING:
    from .session import Session

KEY_CHARS = string.ascii_lowercase + string.digits
KEY_LENGTH = 32
MAX_KEY_ATTEMPTS = 10
MAX_CAS_ATTEMPTS = 50
UTC = timezone.utc
MAX_IDLE = 32  # idle per-request connections kept per store
DEADLOCK_RETRIES = 5
BUSY_TIMEOUT = 10.0  # seconds a SQLite writer keeps retrying a locked database
# Purge batch sizing: how long one batch should hold its locks, per dialect.
BATCH_SECONDS = {"sqlite": 0.02, "postgresql": 0.25, "mysql": 0.1, "mariadb": 0.1}
BATCH_PAUSE = {"sqlite": 0.002}
FIRST_BATCH, MIN_BATCH, MAX_BATCH = 500, 50, 50_000


def new_key() -> str:
    """32 characters of [a-z0-9] from ``secrets``: about 165 bits."""
    return "".join(secrets.choice(KEY_CHARS) for _ in range(KEY_LENGTH))


def valid_key(key: object) -> bool:
    """A key we would ever look up: 8 to 40 characters of [a-z0-9] (Django's alphabet)."""
    return isinstance(key, str) and 8 <= len(key) <= 40 and key.isascii() and key.isalnum() and key.islower()


class StoreError(Exception):
    """A database operation failed; the message says what to do."""


class DatabaseUnavailable(StoreError):
    pass


class TableMissing(StoreError):
    pass


class SessionGone(StoreError):
    """The session's row was deleted (or expired) while we were working on it."""


class Conflict(StoreError):
    """Too many concurrent writers: the compare-and-swap kept losing."""


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    session_data: str
    expire_date: datetime

    def expired(self, now: datetime) -> bool:
        # Live means expire_date > now (Django's load); anything else is expired.
        return self.expire_date <= now


@dataclass(slots=True)
class PurgeResult:
    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0
    complete: bool = True
    cutoff: datetime | None = None
    remaining: int | None = None


def normalize_url(url: str) -> str:
    """Pick our drivers for bare scheme names: psycopg 3 and PyMySQL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    mapped = {
        "postgres": "postgresql+psycopg",
        "postgresql": "postgresql+psycopg",
        "mysql": "mysql+pymysql",
        "mariadb": "mariadb+pymysql",
    }.get(scheme.lower())
    return f"{mapped}://{rest}" if mapped else url


def redact_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def make_engine(url: str, *, timeout: float = 5.0) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise ConfigError(
            f"database URL {redact_url(url)!r} is not valid (expected e.g. sqlite:///sessions.db)"
        ) from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": 10.0}
    elif backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": max(1, int(timeout))}
    elif backend in ("mysql", "mariadb"):
        kwargs["connect_args"] = {"connect_timeout": max(1, int(timeout)), "charset": "utf8mb4"}
        # Purge and CAS never need gap locks; REPEATABLE READ would take them.
        kwargs["isolation_level"] = "READ COMMITTED"
    try:
        engine = create_engine(parsed, **kwargs)
    except ModuleNotFoundError as exc:
        extra = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}.get(backend, backend)
        raise ConfigError(
            f"the driver for {backend} is not installed ({exc.name}); install it with: pip install 'sessctl[{extra}]'"
        ) from None
    except sa_exc.ArgumentError as exc:
        raise ConfigError(f"database URL is not usable: {exc}") from None
    if backend == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no branch
            cur = dbapi_conn.cursor()
            # NORMAL is durable in WAL mode and costs far less than FULL.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def _sqlite_path(url: str) -> str | None:
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return db


class SessionStore:
    """The session table: load, save, delete, iterate and purge rows.

    ``SessionStore(settings)`` opens its engine lazily, on first use.
    """

    def __init__(self, settings: Settings, *, engine: Engine | None = None, clock: Callable[[], datetime] | None = None):
        self.settings = settings
        self.table = cached_table(settings.table)
        self._engine = engine
        self._codec: Codec | None = None
        self.clock = clock or policy.utcnow

    def __repr__(self) -> str:
        return f"<SessionStore {redact_url(self.settings.database_url)} table={self.settings.table}>"

    # -- plumbing ---------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def codec(self) -> Codec:
        if self._codec is None:
            if not self.settings.secret_key:
                raise ConfigError(
                    "no secret key configured: set SESSCTL_SECRET_KEY, or give --secret-key-file / secret_key_file"
                )
            self._codec = Codec(self.settings.secret_key, self.settings.secret_key_fallbacks)
        return self._codec

    def now(self) -> datetime:
        return self.clock()

    def close(self) -> None:
        """Close every connection this store holds (the store can still be used after)."""
        _drain(self.__dict__.get("_idle"))
        if self._engine is not None:
            self._engine.dispose()

    @property
    def _hot(self) -> _HotPath:
        hot = self.__dict__.get("_hot_path")
        if hot is None:
            hot = self.__dict__["_hot_path"] = _HotPath(self.engine, self.settings.table)
        return hot

    @contextlib.contextmanager
    def _raw(self) -> Iterator[Any]:
        """A DBAPI connection for the per-request statements.

        The runtime's four statements (load, insert, swap, delete) skip
        SQLAlchemy's statement compilation and its pool: they are fixed
        strings prepared once per store, run on connections kept in a
        lock-free LIFO of idle ones (``deque.pop``/``append`` are atomic).
        Each connection is made by the engine, so it has the engine's
        settings (isolation level, SQLite pragmas). Every statement is
        committed before the connection goes back, so an idle connection
        never holds a transaction open.
        """
        idle = self.__dict__.get("_idle")
        if idle is None:
            idle = self.__dict__.setdefault("_idle", collections.deque())
            weakref.finalize(self, _drain, idle)  # a store dropped without close() closes them too
        try:
            conn = idle.pop()
        except IndexError:
            conn = self._new_raw()
        try:
            yield conn
        except self._hot.dbapi_error as exc:
            disconnect = self.engine.dialect.is_disconnect(exc, conn, None)
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
            wrapped = sa_exc.DBAPIError.instance(
                None, None, exc, self._hot.dbapi_error, connection_invalidated=disconnect
            )
            raise self._translate(wrapped) from exc
        except BaseException:
            _close_quietly(conn)  # state unknown (e.g. KeyboardInterrupt mid-statement)
            raise
        else:
            if len(idle) < MAX_IDLE:
                idle.append(conn)
            else:
                conn.close()

    def _new_raw(self) -> Any:
        try:
            proxied = self.engine.raw_connection()
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc) from exc
        proxied.detach()  # ours from now on: the engine's pool forgets it
        conn = proxied.dbapi_connection
        if self._hot.retry_busy:
            conn.execute("PRAGMA busy_timeout = 0")  # _run() waits in 1 ms steps instead
        return conn

    @contextlib.contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[Any]:
        try:
            if write:
                with self.engine.begin() as conn:
                    yield conn
            else:
                with self.engine.connect() as conn:
                    yield conn
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sa_exc.DBAPIError) -> StoreError:
        orig = exc.orig
        msg = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        low = msg.lower()
        table = self.settings.table
        code = getattr(orig, "args", [None])[0] if self.dialect in ("mysql", "mariadb") else None
        sqlstate = getattr(orig, "sqlstate", None)
        if "no such table" in low or sqlstate == "42P01" or code == 1146:
            return TableMissing(f"table {table!r} does not exist in {redact_url(self.settings.database_url)}; create it with: sessctl init")
        if "readonly" in low or "read-only" in low:
            return StoreError(f"the database is read-only ({msg}); check the file's permissions")
        if "disk is full" in low or "no space" in low:
            return StoreError(f"the disk is full ({msg}); free space and re-run")
        if _is_deadlock(orig):
            return Conflict(f"the database chose this statement as a deadlock victim ({msg}); try again")
        if isinstance(exc, sa_exc.OperationalError) or exc.connection_invalidated:
            if "locked" in low:
                return StoreError(f"the database is locked by another writer ({msg}); try again")
            return DatabaseUnavailable(
                f"cannot reach the database {redact_url(self.settings.database_url)}: {msg}"
            )
        return StoreError(f"database error: {msg}")

    # -- schema -----------------------------------------------------------

    def has_table(self) -> bool:
        from sqlalchemy import inspect

        with self._connect() as conn:
            try:
                return inspect(conn).has_table(self.settings.table)
            except sa_exc.DBAPIError as exc:
                raise self._translate(exc) from exc

    def check(self) -> None:
        """Raise a clear error if the database or table is not there (opens nothing new)."""
        path = _sqlite_path(self.settings.database_url)
        if path is not None and not os.path.exists(path):
            raise TableMissing(f"database file {path!r} does not exist; create it with: sessctl init")
        if not self.has_table():
            raise TableMissing(
                f"table {self.settings.table!r} does not exist in {redact_url(self.settings.database_url)}; "
                "create it with: sessctl init"
            )

    def create_table(self) -> bool:
        """Create the table and its index as Django's migration would; False if it existed."""
        if self.has_table():
            return False
        # Django quotes every identifier; so do we, so the stored DDL is identical.
        quote = self.engine.dialect.identifier_preparer.quote_identifier
        statements = create_statements(self.dialect, self.settings.table, quote)
        try:
            with self._connect(write=True) as conn:
                for stmt in statements:
                    conn.exec_driver_sql(stmt)
        except StoreError:
            if self.has_table():  # another process created it meanwhile
                return False
            raise
        if self.dialect == "sqlite":
            with self._connect() as conn:
                # WAL lets readers and one writer work at once; set once, kept in the file.
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        return True

    # -- rows ---------------------------------------------------------------

    def get_row(self, key: str) -> Row | None:
        """The row for ``key``, expired or not."""
        if not valid_key(key) and not (isinstance(key, str) and 0 < len(key) <= 40):
            return None
        t = self.table
        with self._connect() as conn:
            found = conn.execute(
                select(t.c.session_data, t.c.expire_date).where(t.c.session_key == key)
            ).first()
        return None if found is None else Row(key, found[0], found[1])

    def _run(self, sql: str, params: tuple, *, fetch: bool = False) -> Any:
        """Run one per-request statement in its own transaction; rowcount, or the row with ``fetch``.

        On SQLite a writer that finds the database locked (a purge batch,
        another app write) retries every millisecond rather than through
        SQLite's busy handler, whose sleeps grow to 25-100 ms and keep
        missing the short gaps between purge batches.
        """
        hot = self._hot
        deadline = None
        while True:
            with self._raw() as conn:
                cur = conn.cursor()
                try:
                    cur.execute(sql, params)
                except hot.operational_error as exc:
                    busy = hot.retry_busy and "locked" in str(exc)
                    if not busy and not _is_deadlock(exc):
                        raise
                    conn.rollback()
                    now = time.monotonic()
                    deadline = deadline or now + BUSY_TIMEOUT
                    if now > deadline:
                        raise
                    time.sleep(0.001)
                    continue
                result = cur.fetchone() if fetch else cur.rowcount
                cur.close()
                conn.commit()  # also ends a read's transaction, so an idle connection holds none
                return result

    def load_row(self, key: str, now: datetime | None = None) -> Row | None:
        """The row for ``key`` if it is live (``expire_date > now``), else None."""
        if not valid_key(key):
            return None
        hot = self._hot
        found = self._run(hot.load, (key, hot.bind(self.now() if now is None else now)), fetch=True)
        return None if found is None else Row(key, found[0], hot.result(found[1]))

    def insert_row(self, key: str, session_data: str, expire_date: datetime) -> bool:
        """INSERT a new row; False if the key is already taken (never overwrites)."""
        hot = self._hot
        try:
            return self._run(hot.insert, (key, session_data, hot.bind(expire_date))) == 1
        except StoreError as err:
            if isinstance(err.__cause__, hot.integrity_error):
                return False  # MySQL/MariaDB: a duplicate key (the others say DO NOTHING)
            raise

    def create_row(self, session_data: str | Callable[[str], str], expire_date: datetime) -> str:
        """Insert under a fresh random key and return it.

        ``session_data`` may be a function of the new key (rarely needed).
        """
        for _ in range(MAX_KEY_ATTEMPTS):
            key = new_key()
            data = session_data(key) if callable(session_data) else session_data
            if self.insert_row(key, data, expire_date):
                return key
        raise Conflict("could not find a free session key (is the random source broken?)")

    def swap_row(self, old: Row, session_data: str, expire_date: datetime) -> bool:
        """Compare-and-swap: rewrite the row only if it still holds ``old.session_data``."""
        hot = self._hot
        return self._run(hot.swap, (session_data, hot.bind(expire_date), old.key, old.session_data)) == 1

    def delete_row(self, key: str, *, only_if: Row | None = None) -> bool:
        """Delete one row; with ``only_if``, only while it still holds that data."""
        hot = self._hot
        if only_if is None:
            return self._run(hot.delete, (key,)) == 1
        return self._run(hot.delete_if, (key, only_if.session_data)) == 1

    # -- session-level operations (decode, policy, encode) -------------------

    def load(self, key: str) -> dict[str, Any] | None:
        """The decoded data of a live session, or None (missing, expired, or not verifiable)."""
        from .codec import CodecError

        row = self.load_row(key)
        if row is None:
            return None
        try:
            return self.codec.decode(row.session_data)
        except CodecError:
            return None

    def save(self, key: str | None, data: dict[str, Any]) -> str:
        """Write ``data`` as a whole session and return its key.

        With ``key`` None a new session is created. An existing key must be a
        live row (it is never re-created: :class:`SessionGone` otherwise).
        """
        now = self.now()
        exp = policy.compute(self.settings, data, now)
        encoded = self.codec.encode(data)
        if key is None:
            return self.create_row(encoded, exp.expire_date)
        for _ in range(MAX_CAS_ATTEMPTS):
            row = self.load_row(key, now)
            if row is None:
                raise SessionGone(f"session {key} does not exist or has expired")
            if self.swap_row(row, encoded, exp.expire_date):
                return key
        raise Conflict(f"session {key} kept changing; gave up after {MAX_CAS_ATTEMPTS} attempts")

    def update(
        self,
        key: str,
        mutate: Callable[[dict[str, Any]], None],
        *,
        resend: bool = False,
    ) -> tuple[dict[str, Any], policy.Expiry]:
        """Apply ``mutate`` to a live session's data atomically (compare-and-swap, retried).

        The row's ``expire_date`` is recomputed by the policy. With ``resend``
        the data carries a marker telling the runtime to re-send the cookie on
        the session's next response (used when a lifetime changes).
        Raises :class:`SessionGone` if the row is missing or expired, and the
        codec's errors if the stored data cannot be verified.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            now = self.now()
            row = self.get_row(key)
            if row is None:
                raise SessionGone(f"no session with key {key}")
            if row.expired(now):
                raise SessionGone(f"session {key} has expired")
            data = self.codec.decode(row.session_data)
            mutate(data)
            if resend:
                data[policy.RESEND_KEY] = True
            exp = policy.compute(self.settings, data, now)
            if self.swap_row(row, self.codec.encode(data), exp.expire_date):
                return data, exp
        raise Conflict(f"session {key} kept changing; gave up after {MAX_CAS_ATTEMPTS} attempts")

    def delete(self, key: str) -> bool:
        """End one session now. True if a row was deleted."""
        return self.delete_row(key)

    def session(self, key: str | None = None) -> Session:
        """A :class:`~sessctl.session.Session` bound to this store (lazy)."""
        from .session import Session

        return Session(self, key)

    # -- iteration and reports -------------------------------------------------

    def iter_rows(
        self,
        state: str = "all",
        *,
        now: datetime | None = None,
        limit: int | None = None,
        batch: int = 1000,
    ) -> Iterator[Row]:
        """Rows ordered by ``expire_date``, streamed; ``state`` is active, expired or all."""
        now = self.now() if now is None else now
        t = self.table
        stmt = select(t.c.session_key, t.c.session_data, t.c.expire_date)
        if state == "active":
            stmt = stmt.where(t.c.expire_date > now)
        elif state == "expired":
            stmt = stmt.where(t.c.expire_date <= now)
        elif state != "all":
            raise ValueError(f"state must be active, expired or all, not {state!r}")
        stmt = stmt.order_by(t.c.expire_date, t.c.session_key)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._connect() as conn:
            try:
                result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
                try:
                    for key, data, exp in result:
                        yield Row(key, data, exp)
                finally:
                    result.close()  # also when the caller stops early (a server-side cursor)
            except sa_exc.DBAPIError as exc:
                raise self._translate(exc) from exc

    def sample_rows(self, size: int, *, now: datetime | None = None) -> list[Row]:
        """About ``size`` live rows from a random point of the key space (for estimates).

        Keys are random, so a run of consecutive keys is an unbiased sample;
        it costs one index range scan, not a pass over the table.
        """
        now = self.now() if now is None else now
        t = self.table
        start = new_key()
        out: list[Row] = []
        for cond in (t.c.session_key >= start, t.c.session_key < start):
            stmt = (
                select(t.c.session_key, t.c.session_data, t.c.expire_date)
                .where(cond, t.c.expire_date > now)
                .order_by(t.c.session_key)
                .limit(size - len(out))
            )
            with self._connect() as conn:
                out.extend(Row(*r) for r in conn.execute(stmt))
            if len(out) >= size:
                break
        return out

    def keys_with_prefix(self, prefix: str, limit: int = 100) -> list[str]:
        """Keys starting with ``prefix`` (for shell completion)."""
        t = self.table
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = (
            select(t.c.session_key)
            .where(t.c.session_key.like(escaped + "%", escape="\\"))
            .order_by(t.c.session_key)
            .limit(limit)
        )
        with self._connect() as conn:
            return [k for (k,) in conn.execute(stmt)]

    def counts(self, now: datetime | None = None) -> dict[str, int]:
        """Total, active and expired rows, and live rows expiring within 1 h, 1 d and 7 d."""
        now = self.now() if now is None else now
        t = self.table
        exp = t.c.expire_date

        def within(delta: timedelta):
            return func.coalesce(func.sum(_case((exp > now) & (exp <= now + delta), 1)), 0)

        stmt = select(
            func.count(),
            func.coalesce(func.sum(_case(exp > now, 1)), 0),
            within(timedelta(hours=1)),
            within(timedelta(days=1)),
            within(timedelta(days=7)),
        ).select_from(t)
        with self._connect() as conn:
            total, active, h1, d1, d7 = (int(v) for v in conn.execute(stmt).one())
        return {
            "total": total,
            "active": active,
            "expired": total - active,
            "expiring_1h": h1,
            "expiring_1d": d1,
            "expiring_7d": d7,
        }

    def count_expired(self, cutoff: datetime | None = None) -> int:
        cutoff = self.now() if cutoff is None else cutoff
        t = self.table
        with self._connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t).where(t.c.expire_date < cutoff)).scalar_one())

    # -- purge ---------------------------------------------------------------------

    def _batch_delete(self, conn: Any, cutoff: datetime, batch_size: int) -> tuple[int, bool]:
        """Delete up to ``batch_size`` rows expired before ``cutoff``; the DELETE re-checks expiry."""
        t = self.table
        q = self.engine.dialect.identifier_preparer.quote
        name, exp = q(self.settings.table), q("expire_date")
        params = {"cutoff": cutoff, "n": batch_size}
        typed = [bindparam("cutoff", type_=t.c.expire_date.type), bindparam("n")]
        if self.dialect == "sqlite":
            sql = (
                f"DELETE FROM {name} WHERE rowid IN (SELECT rowid FROM {name} WHERE {exp} < :cutoff "
                f"ORDER BY {exp} LIMIT :n) AND {exp} < :cutoff"
            )
        elif self.dialect == "postgresql":
            sql = (
                f"DELETE FROM {name} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {name} WHERE {exp} < :cutoff "
                f"ORDER BY {exp} LIMIT :n FOR UPDATE SKIP LOCKED)) AND {exp} < :cutoff"
            )
        elif self.dialect in ("mysql", "mariadb"):
            # Find the keys first, then delete by key: a DELETE that walks the
            # expire_date index locks index-then-row, the app's UPDATE by key
            # row-then-index, and InnoDB deadlocks on the opposite orders.
            keys = [k for (k,) in conn.execute(
                select(t.c.session_key).where(t.c.expire_date < cutoff).order_by(t.c.expire_date).limit(batch_size)
            )]
            if not keys:
                return 0, False
            deleted = conn.execute(delete(t).where(t.c.session_key.in_(keys), t.c.expire_date < cutoff)).rowcount
            return deleted, len(keys) == batch_size
        else:
            keys = select(t.c.session_key).where(t.c.expire_date < cutoff).limit(batch_size).scalar_subquery()
            stmt = delete(t).where(t.c.session_key.in_(keys), t.c.expire_date < cutoff)
            deleted = conn.execute(stmt).rowcount
            return deleted, deleted == batch_size
        deleted = conn.execute(text(sql).bindparams(*typed), params).rowcount
        return deleted, deleted == batch_size

    def purge_expired(
        self,
        *,
        batch_size: int | None = None,
        max_seconds: float | None = None,
        cutoff: datetime | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> PurgeResult:
        """Delete rows whose ``expire_date`` is before ``cutoff`` (default: now), batch by batch.

        Each batch is its own short transaction whose DELETE re-checks
        ``expire_date < cutoff``, so a session refreshed meanwhile survives
        and the purge may be killed at any moment and re-run. Without
        ``batch_size`` the batches are sized to last about
        ``BATCH_SECONDS[dialect]``: short on SQLite, where a batch holds the
        only write lock and the app waits for it; longer elsewhere, where
        it locks only the rows it deletes. ``max_seconds`` stops cleanly after
        that budget (``complete`` is then False, ``remaining`` says how many
        expired rows are left).
        """
        if batch_size is not None and batch_size <= 0:
            raise ValueError("batch_size must be positive")
        cutoff = self.now() if cutoff is None else cutoff
        target = BATCH_SECONDS.get(self.dialect, 0.1)
        pause = BATCH_PAUSE.get(self.dialect, 0.0)
        size = batch_size or FIRST_BATCH
        result = PurgeResult(cutoff=cutoff)
        start = time.monotonic()
        if batch_size is None and self.dialect in _WALKS:
            _WALKS[self.dialect](self, cutoff, target, max_seconds, on_batch, result, start)
            result.seconds = time.monotonic() - start
            return result
        while True:
            began = time.monotonic()
            deleted, full = self._retrying(lambda: self._batch(cutoff, size))
            took = time.monotonic() - began
            result.batches += 1
            result.deleted += deleted
            if on_batch is not None and deleted:
                on_batch(deleted)
            if not full:
                if self.dialect == "postgresql":  # SKIP LOCKED may have passed rows by
                    result.remaining = self.count_expired(cutoff)
                    result.complete = result.remaining == 0
                break
            if max_seconds is not None and time.monotonic() - start >= max_seconds:
                result.complete = False
                result.remaining = self.count_expired(cutoff)
                break
            if batch_size is None:
                # Aim the next batch at the target duration, changing by at most 4x at a time.
                rate = deleted / max(took, 1e-4)
                size = int(min(max(rate * target, size / 4, MIN_BATCH), size * 4, MAX_BATCH))
            if pause:
                time.sleep(pause)  # a gap for the app's writers (SQLite has one write lock)
        result.seconds = time.monotonic() - start
        return result

    def _exec_count(self, stmt: Any, params: dict | None = None) -> int:
        with self._connect(write=True) as conn:
            return conn.execute(stmt, params or {}).rowcount

    def _batch(self, cutoff: datetime, size: int) -> tuple[int, bool]:
        with self._connect(write=True) as conn:
            return self._batch_delete(conn, cutoff, size)

    def _retrying(self, work: Callable[[], Any]) -> Any:
        """Run one purge batch, again after a deadlock or lock timeout (its transaction was rolled back)."""
        for attempt in range(DEADLOCK_RETRIES):
            try:
                return work()
            except StoreError as err:
                if attempt + 1 == DEADLOCK_RETRIES or not _is_deadlock(err.__cause__):
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def _walk_heap(self, cutoff, target, max_seconds, on_batch, result, start) -> None:
        """PostgreSQL: delete the expired rows of one range of heap pages at a time.

        A TID range scan reads the pages in physical order and touches no
        index to find its rows; each DELETE still re-checks the cutoff, and
        a row being updated meanwhile is re-checked on its new version.
        """
        t = self.table
        q = self.engine.dialect.identifier_preparer.quote_identifier
        name, exp = q(self.settings.table), q("expire_date")
        with self._connect() as conn:
            pages = conn.execute(
                text("SELECT pg_relation_size(CAST(:t AS regclass)) / current_setting('block_size')::int"),
                {"t": name},
            ).scalar_one()
        stmt = text(
            f"DELETE FROM {name} WHERE ctid >= CAST(:lo AS tid) AND ctid < CAST(:hi AS tid) AND {exp} < :cutoff"
        ).bindparams(bindparam("cutoff", type_=t.c.expire_date.type))
        pos, step = 0, 64
        while pos < pages:
            began = time.monotonic()
            deleted = self._retrying(lambda: self._exec_count(
                stmt, {"lo": f"({pos},0)", "hi": f"({pos + step},0)", "cutoff": cutoff}))
            took = time.monotonic() - began
            pos += step
            result.batches += 1
            result.deleted += deleted
            if on_batch is not None and deleted:
                on_batch(deleted)
            if pos < pages and max_seconds is not None and time.monotonic() - start >= max_seconds:
                result.complete = False
                result.remaining = self.count_expired(cutoff)
                return
            step = int(min(max(step * target / max(took, 1e-4), step / 4, 8), step * 4, 1 << 20))

    def _walk_rowids(self, cutoff, target, max_seconds, on_batch, result, start) -> None:
        """SQLite: delete the expired rows of one rowid range at a time.

        Rowid order is the table's storage order, so a batch rewrites a run
        of neighbouring table pages (the indexes are touched at random
        whatever the order). Batches are short, with a gap after each, since
        each holds SQLite's one write lock while the app waits.
        """
        t = self.table
        q = self.engine.dialect.identifier_preparer.quote_identifier
        name, exp = q(self.settings.table), q("expire_date")
        with self._connect() as conn:
            top = conn.execute(text(f"SELECT max(rowid) FROM {name}")).scalar() or 0
        stmt = text(f"DELETE FROM {name} WHERE rowid >= :lo AND rowid < :hi AND {exp} < :cutoff").bindparams(
            bindparam("cutoff", type_=t.c.expire_date.type)
        )
        pause = BATCH_PAUSE.get("sqlite", 0.0)
        pos, step = 0, 1000
        while pos <= top:
            began = time.monotonic()
            deleted = self._retrying(lambda: self._exec_count(stmt, {"lo": pos, "hi": pos + step, "cutoff": cutoff}))
            took = time.monotonic() - began
            pos += step
            result.batches += 1
            result.deleted += deleted
            if on_batch is not None and deleted:
                on_batch(deleted)
            if pos <= top and max_seconds is not None and time.monotonic() - start >= max_seconds:
                result.complete = False
                result.remaining = self.count_expired(cutoff)
                return
            step = int(min(max(step * target / max(took, 1e-4), step / 4, 50), step * 4, 1 << 22))
            time.sleep(pause)  # a gap for the app's writers

    def _walk_keys(self, cutoff, target, max_seconds, on_batch, result, start) -> None:
        """MySQL/MariaDB: delete the expired rows of one primary-key range at a time.

        InnoDB keeps rows in primary-key order, so each batch reads a run of
        neighbouring pages instead of one random page per row (which is what
        walking the expire_date index costs with a small buffer pool).
        """
        t = self.table
        key, exp = t.c.session_key, t.c.expire_date
        last, step = "", 1000
        while True:
            began = time.monotonic()
            with self._connect() as conn:
                bound = conn.execute(
                    select(key).where(key > last).order_by(key).limit(1).offset(step - 1)
                ).scalar()
            cond = [key > last, exp < cutoff] + ([key <= bound] if bound is not None else [])
            deleted = self._retrying(lambda: self._exec_count(delete(t).where(*cond)))
            took = time.monotonic() - began
            result.batches += 1
            result.deleted += deleted
            if on_batch is not None and deleted:
                on_batch(deleted)
            if bound is None:
                return
            last = bound
            if max_seconds is not None and time.monotonic() - start >= max_seconds:
                result.complete = False
                result.remaining = self.count_expired(cutoff)
                return
            step = int(min(max(step * target / max(took, 1e-4), step / 4, 100), step * 4, 200_000))

    @contextlib.contextmanager
    def exclusive(self, name: str = "purge", *, wait: bool = False) -> Iterator[bool]:
        """Hold a lock named ``name`` for this table across processes; yields whether it was got.

        PostgreSQL: a session advisory lock; MySQL/MariaDB: ``GET_LOCK``;
        SQLite: ``flock`` on a file beside the database. Each is released
        when the holder exits, even by ``kill -9``, so a crashed run never
        blocks the next one. With ``wait`` it blocks until the lock is free.
        """
        lock_name = f"sessctl.{name}.{self.settings.table}"
        if self.dialect == "sqlite":
            path = _sqlite_path(self.settings.database_url)
            if path is None:
                yield True
                return
            import fcntl

            fd = os.open(f"{path}.sessctl-{name}-{self.settings.table}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    yield False
                    return
                yield True
            finally:
                os.close(fd)  # releases the flock
            return
        with self._connect() as conn:
            if self.dialect == "postgresql":
                import zlib

                lock_id = zlib.crc32(lock_name.encode())
                fn = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
                got = conn.execute(text(f"SELECT {fn}(:k)"), {"k": lock_id}).scalar()
                got = True if wait else bool(got)
                conn.commit()
                try:
                    yield got
                finally:
                    if got:
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
                        conn.commit()
            elif self.dialect in ("mysql", "mariadb"):
                mysql_name = lock_name[:64]
                got = conn.execute(text("SELECT GET_LOCK(:n, :t)"), {"n": mysql_name, "t": 31536000 if wait else 0}).scalar()
                conn.commit()
                try:
                    yield got == 1
                finally:
                    if got == 1:
                        conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": mysql_name})
                        conn.commit()
            else:
                yield True

    def delete_all(self) -> int:
        """Delete every row (log everyone out)."""
        with self._connect(write=True) as conn:
            return conn.execute(delete(self.table)).rowcount


def _case(condition: Any, value: int) -> Any:
    from sqlalchemy import case

    return case((condition, value), else_=0)


class _HotPath:
    """The runtime's per-request SQL, as driver strings with driver-native values."""

    __slots__ = (
        "load", "insert", "swap", "delete", "delete_if", "bind", "result",
        "dbapi_error", "integrity_error", "operational_error", "retry_busy",
    )

    def __init__(self, engine: Engine, table: str) -> None:
        dialect = engine.dialect
        self.dbapi_error = dialect.loaded_dbapi.Error
        self.integrity_error = dialect.loaded_dbapi.IntegrityError
        self.operational_error = dialect.loaded_dbapi.OperationalError
        self.retry_busy = dialect.name == "sqlite"
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


# Dialects whose adaptive purge walks the table in storage order.
_WALKS = {
    "sqlite": SessionStore._walk_rowids,
    "postgresql": SessionStore._walk_heap,
    "mysql": SessionStore._walk_keys,
    "mariadb": SessionStore._walk_keys,
}


def _is_deadlock(exc: BaseException | None) -> bool:
    """A deadlock or lock-wait timeout: the statement's transaction was rolled back, retrying is safe."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) in ("40P01", "40001", "55P03"):
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in (1213, 1205)
