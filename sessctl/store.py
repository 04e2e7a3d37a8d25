"""The session table over SQLAlchemy 2 Core: its schema, its rows, and reading them back.

The store never decides expiry (that is :mod:`sessctl.policy`), never touches
HTTP (that is :mod:`sessctl.cookies` and the adapters) and never holds a whole
session (that is :mod:`sessctl.session`: ``Session(store, key)``). Its writes
are built so that nothing is ever lost or resurrected under concurrency:

* a new session is a plain INSERT of a fresh random key (retried on the rare
  collision), never an upsert;
* every update is a compare-and-swap on the row's current ``session_data``,
  so a save cannot overwrite a change it has not seen, nor re-create a row
  that was deleted meanwhile;
* purge (:mod:`sessctl.purge`) deletes in short batches whose DELETE itself
  re-checks ``expire_date < cutoff``, so a session refreshed meanwhile survives.

The per-request statements run on :mod:`sessctl.fastpath`; the engine, URLs
and error messages are :mod:`sessctl.db`'s; keys and rows are :mod:`sessctl.model`'s.
Reads of many rows (streaming, samples, counts) are :mod:`sessctl.storereads`', the
user index's writes and lookups :mod:`sessctl.storeusers`'.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from . import codec as codecs
from . import lifecycle, policy, tz
from .config import Settings
from .db import file_missing, make_engine, redact_url, sqlite_path, table_missing, translate
from .errors import Conflict, ConfigError, DatabaseUnavailable, SessionGone, StoreError, TableMissing
from .model import KEY_CHARS, MAX_KEY_ATTEMPTS, Row, cached_table, create_statements, new_key, valid_key
from .storereads import StoreReads
from .storeusers import UserRows

if TYPE_CHECKING:  # imported when first needed: a command that reads never loads the runtime or purge
    from .fastpath import FastPath
    from .purge import PurgeResult

__all__ = [
    "Conflict", "DatabaseUnavailable", "PurgeResult", "Row", "SessionGone", "SessionStore", "StoreError", "TableMissing",
    "KEY_CHARS", "make_engine", "new_key", "valid_key",
]

class SessionStore(StoreReads, UserRows):
    """The session table: create it, read, write, iterate and purge its rows.

    ``SessionStore(settings)`` opens its engine lazily, on first use.
    """

    def __init__(self, settings: Settings, *, engine: Engine | None = None, clock: Callable[[], datetime] | None = None):
        self.settings = settings
        self.table = cached_table(settings.table, settings.time_zone)
        self.zone = tz.zone(settings.time_zone)
        self._engine = engine
        self._codec: codecs.Codec | None = None
        self._fastpath: FastPath | None = None
        self.clock = clock or policy.utcnow
        # Seconds any one database call may take (see sessctl.lifecycle).
        self.timeout = settings.timeout or lifecycle.APP_TIMEOUT
        self._pin: Any = None  # the purge lock while held (sessctl.locks): its connection runs the purge
        self._purge_deadline: float | None = None
        lifecycle.on_fork(self)

    def __repr__(self) -> str:
        return f"<SessionStore {redact_url(self.settings.database_url)} table={self.settings.table}>"

    # -- plumbing ---------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url, timeout=self.timeout)
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def codec(self) -> codecs.Codec:
        if self._codec is None:
            codec = codecs.from_settings(self.settings)
            if codec is None:
                raise ConfigError(
                    "no secret key configured: set SESSCTL_SECRET_KEY, or give --secret-key-file / secret_key_file"
                )
            self._codec = codec
        return self._codec

    def now(self) -> datetime:
        """The app's clock: aware UTC, or wall time in ``time_zone`` (see sessctl.tz)."""
        if not self.zone.naive:
            return self.clock()
        return self.zone.now(self.clock(), self.dialect)

    def _after_fork(self) -> None:
        """In a forked child: drop the parent's connections without closing them (they are its)."""
        if self._engine is not None:
            self._engine.dispose(close=False)
        if self._fastpath is not None:
            self._fastpath.after_fork()

    def close(self) -> None:
        """Close every connection this store holds (the store can still be used after)."""
        if self._fastpath is not None:
            self._fastpath.close()
        if self._engine is not None:
            self._engine.dispose()

    @property
    def _fast(self) -> FastPath:
        fast = self._fastpath
        if fast is None:
            # Bound to values, not to the store, so no cycle keeps a dropped store's connections open.
            translator = functools.partial(
                translate, dialect=self.dialect, url=self.settings.database_url, table=self.settings.table
            )
            from .fastpath import FastPath

            fast = self._fastpath = FastPath(
                self.engine, self.settings.table, translator, self.settings.time_zone, self.timeout
            )
        return fast

    @contextlib.contextmanager
    def connect(self, *, write: bool = False) -> Iterator[Any]:
        """A SQLAlchemy connection; with ``write``, in a transaction committed at the end.

        While this thread holds the purge lock, it is the lock's own connection (checked
        before each write: :class:`sessctl.locks.LockLost` if the lock is gone).
        """
        pin = self._pin
        try:
            if pin is not None and pin.thread == threading.get_ident():
                with pin.use(write=write) as conn:
                    yield conn
            elif write:
                with self.engine.begin() as conn:
                    yield conn
            else:
                with self.engine.connect() as conn:
                    yield conn
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sa_exc.DBAPIError) -> StoreError:
        return translate(exc, self.dialect, self.settings.database_url, self.settings.table)

    # -- schema -----------------------------------------------------------

    def has_table(self) -> bool:
        with self.connect() as conn:
            try:
                if self.dialect == "sqlite":  # the inspector's question (a table or view it can read), without one
                    name = self.sql_names()[0]
                    return any(conn.exec_driver_sql(f"PRAGMA {schema}.table_info({name})").first() is not None
                               for schema in ("main", "temp"))
                from sqlalchemy import inspect

                return inspect(conn).has_table(self.settings.table)
            except sa_exc.DBAPIError as exc:
                raise self._translate(exc) from exc

    def check(self) -> None:
        """Raise a clear error if the database or table is not there (opens nothing new)."""
        path = sqlite_path(self.settings.database_url)
        if path is not None and not os.path.exists(path):
            raise file_missing(path)
        if not self.has_table():
            raise table_missing(self.settings.table, self.settings.database_url)

    def create_table(self) -> bool:
        """Create the table and its index as Django's migration would; False if it existed."""
        if self.has_table():
            return False
        # Django quotes every identifier; so do we, so the stored DDL is identical.
        quote = self.engine.dialect.identifier_preparer.quote_identifier
        statements = create_statements(self.dialect, self.settings.table, quote)
        try:
            with self.connect(write=True) as conn:
                for stmt in statements:
                    conn.exec_driver_sql(stmt)
                self._create_user_index(conn)  # a fresh table: its user index is complete from the start
        except StoreError:
            if self.has_table():  # another process created it meanwhile
                return False
            raise
        if self.dialect == "sqlite":
            with self.connect() as conn:
                # WAL lets readers and one writer work at once; set once, kept in the file.
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        return True

    # -- rows ---------------------------------------------------------------

    def get_row(self, key: str) -> Row | None:
        """The row for ``key``, expired or not."""
        if not valid_key(key) and not (isinstance(key, str) and 0 < len(key) <= 40):
            return None
        t = self.table
        with self.connect() as conn:
            found = conn.execute(
                select(t.c.session_key, t.c.session_data, t.c.expire_date).where(t.c.session_key == key)
            ).first()
        # Exactly this key: MariaDB's default collations also match KEY and "key ".
        return None if found is None or found[0] != key else Row(key, found[1], found[2])


    def load_row(self, key: str, now: datetime | None = None) -> Row | None:
        """The row for ``key`` if it is live (``expire_date > now``), else None."""
        if not valid_key(key):
            return None
        fast = self._fast
        now = self.now() if now is None else now
        bound = fast.bind(now)
        if self.seen_on_load and self.user_index_ready():  # with "last seen": one LEFT JOIN on the index's key
            found = fast.run(self._side.load, (key, bound), fetch=True)
            if found is None:
                return None
            row = Row(key, found[0], fast.result(found[1]), None if found[2] is None else fast.result(found[2]))
        else:
            found = fast.run(fast.load, (key, bound), fetch=True)
            if found is None:
                return None
            row = Row(key, found[0], fast.result(found[1]))
        # SQLite compares text: a row whose expire_date is not a date can pass the SQL's test.
        return None if row.expired(now) else row

    def insert_row(self, key: str, session_data: str, expire_date: datetime, *, side: Any = None) -> bool:
        """INSERT a new row; False if the key is already taken (never overwrites).

        ``side`` (a :class:`~sessctl.userindex.SideRow`): the session's user, indexed in the same transaction.
        """
        if side is not None and self.user_index_ready():
            return self._insert_with_side(key, session_data, expire_date, side)
        fast = self._fast
        return fast.insert_row((key, session_data, fast.bind(expire_date)))

    def create_row(
        self, session_data: str | Callable[[str], str], expire_date: datetime, *, key: str | None = None,
        side: Any = None, insert: Callable[[str, str], bool] | None = None,
    ) -> str:
        """Insert under a fresh random key (``key`` first, if given) and return it.

        ``session_data`` may be a function of the new key (rarely needed). ``insert(key, data)``,
        if given, does the insert instead of :meth:`insert_row` (False: the key is taken).
        """
        for _ in range(MAX_KEY_ATTEMPTS):
            key = key or new_key()
            data = session_data(key) if callable(session_data) else session_data
            if insert(key, data) if insert is not None else self.insert_row(key, data, expire_date, side=side):
                return key
            key = None
        raise Conflict("could not find a free session key (is the random source broken?)")

    def swap_row(self, old: Row, session_data: str, expire_date: datetime, *, side: Any = None) -> bool:
        """Compare-and-swap: rewrite the row only if it still holds ``old.session_data``.

        ``side``: what the save does to the user index ("set", "drop" or "seen"), in the same transaction.
        """
        steps = self._side_steps(old.key, side)
        if steps:
            return self._swap_with_side(old, session_data, expire_date, steps)
        fast = self._fast
        return fast.run(fast.swap, (session_data, fast.bind(expire_date), old.key, old.session_data)) == 1

    def rewrite_row(
        self, key: str, rewrite: Callable[[Row], tuple], now: datetime | None = None
    ) -> tuple[Row, Row] | None:
        """Rewrite a live row under its lock: ``rewrite(row)`` gives the new (session_data, expire_date),
        optionally with the user index steps of the same save (``_side_steps``) as a third item.

        For the retry after a lost compare-and-swap: the row cannot change between the read and
        the write, so this converges however many writers there are. Returns (the row read, the
        row written), or None if there is no live row (deleted or expired meanwhile).
        """
        if not valid_key(key):
            return None
        written: list[Row] = []

        def apply(data: str, expire_date: datetime) -> tuple:
            new = rewrite(Row(key, data, expire_date))
            written.append(Row(key, new[0], new[1]))
            return new

        found = self._fast.locked(key, self.now() if now is None else now, apply)
        if found is None:
            return None
        return Row(key, found[0], self._fast.result(found[1])), written[-1]

    def delete_row(self, key: str, *, only_if: Row | None = None, indexed: bool = True) -> bool:
        """Delete one row (and its user index row); with ``only_if``, only while it still holds that data.

        ``indexed=False``: the caller knows the row has no user, so no index row to delete with it.
        """
        if indexed and self.user_index_ready():
            return self._delete_with_side(key, only_if)
        fast = self._fast
        if only_if is None:
            return fast.run(fast.delete, (key,)) == 1
        return fast.run(fast.delete_if, (key, only_if.session_data)) == 1

    def delete(self, key: str) -> bool:
        """End one session now. True if a row was deleted."""
        return self.delete_row(key)

    # -- a session's lifetime, rewritten in place (the command line's set-life) -------

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
        now = self.now()
        row = self.get_row(key)
        if row is None:
            raise SessionGone(f"no session with key {key}")
        if row.expired(now):
            raise SessionGone(f"session {key} has expired")
        result: dict[str, Any] = {}

        def rewrite(current: Row) -> tuple[str, datetime]:
            data = self.codec.decode(current.session_data)
            mutate(data)
            if resend:
                data[policy.RESEND_KEY] = True
            result["data"], result["exp"] = data, policy.compute(self.settings, data, now)
            return self.codec.encode(data), result["exp"].expire_date

        encoded, expire_date = rewrite(row)
        if self.swap_row(row, encoded, expire_date):
            return result["data"], result["exp"]
        # Lost the race (an app request wrote meanwhile): again, under the row's lock.
        if self.rewrite_row(key, rewrite, now) is None:
            raise SessionGone(f"session {key} ended while its lifetime was being changed")
        return result["data"], result["exp"]

    # -- purge ---------------------------------------------------------------------

    def purge_expired(
        self,
        *,
        batch_size: int | None = None,
        max_seconds: float | None = None,
        cutoff: datetime | None = None,
        on_batch: Callable[[int], None] | None = None,
        maintenance: bool = False,
    ) -> PurgeResult:
        """Delete rows whose ``expire_date`` is before ``cutoff`` (default: now), batch by batch.

        Each batch is its own short transaction whose DELETE re-checks
        ``expire_date < cutoff``, so a session refreshed meanwhile survives
        and the purge may be killed at any moment and re-run. See
        :func:`sessctl.purge.purge_expired`.
        """
        from . import purge

        return purge.purge_expired(self, batch_size=batch_size, max_seconds=max_seconds, cutoff=cutoff,
                                   on_batch=on_batch, maintenance=maintenance)

    def exclusive(self, name: str = "purge", *, wait: bool = False) -> contextlib.AbstractContextManager[bool]:
        """Hold a lock named ``name`` for this table across processes (see :func:`sessctl.locks.exclusive`)."""
        from . import locks

        return locks.exclusive(self, name, wait=wait)

    def delete_all(self) -> int:
        """Delete every row, and the user index's (log everyone out)."""
        indexed = self.user_index_ready()
        with self.connect(write=True) as conn:
            count = conn.execute(delete(self.table)).rowcount
            if indexed:
                from .userindex import side_table

                conn.execute(delete(side_table(self.settings.table)))
            return count


def __getattr__(name: str) -> Any:
    if name == "PurgeResult":  # re-exported, imported when asked for
        from .purge import PurgeResult

        return PurgeResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
