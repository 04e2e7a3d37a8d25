"""The user index: a side table ``<table>_user`` that finds a user's sessions without reading anyone else's.

Django's own session table is never changed. Beside it, one row per session
that has a user (anonymous sessions have none)::

    session_key  varchar(40) primary key   (the session's key)
    user_id      varchar(150), indexed     (the value under Settings.user_key)
    created_at   the login                 last_seen   the last save or touch
    ip, user_agent                         NULL unless device tracking is on

The runtime writes it in the same transaction as the session row, and only
when the user of a session changes (a login inserts it with the new key, a
logout deletes it), plus the throttled touch (``last_seen``). Every
transaction locks the session row first, then the side row, so no two of them
deadlock on the pair. Ending sessions (logout, ``sessctl delete``, ending a
user's sessions) deletes their index rows in the same transaction. On
PostgreSQL each purge batch does too (in the batch's one statement); on SQLite
and MariaDB/MySQL purge leaves its batches as they are (deleting the index rows
there made purge 1.5-2.6x slower on SQLite). Then it
sweeps, for a share of the batches' time (a tenth, at least 0.05 s; 3 % where the
batches deleted their index rows) and from a random point round the index, the index
rows whose session is gone (:func:`sessctl.users.sweep`), which also takes the
rows left behind by Django's own deletes (``clearsessions``). Until then such
rows are ignored, since every read joins the live session table.

The index is complete by construction: it is created only together with a
fresh session table. A table that existed before (one Django made) has no
side table, and a user's sessions are then found by decoding every live row,
until ``sessctl users --rebuild-index`` builds one (:mod:`sessctl.userrebuild`).
"""

from __future__ import annotations

import hashlib
import time
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Column, MetaData, String, Table

from .model import UTCDateTime, placeholder

USER_ID_LENGTH = 150
RECHECK_SECONDS = 60.0  # a store that found no index looks again after this long


def side_name(table: str) -> str:
    """``django_session`` -> ``django_session_user`` (shortened with a hash past 63 characters)."""
    name = f"{table}_user"
    if len(name) <= 63:
        return name
    digest = hashlib.md5(table.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{table[:49]}_{digest}_user"


def index_name(table: str) -> str:
    side = side_name(table)
    name = f"{side}_user_id"
    if len(name) <= 63:
        return name
    return f"{side[:52]}_user_id"[:63]


@lru_cache(maxsize=32)
def side_table(table: str) -> Table:
    return Table(
        side_name(table),
        MetaData(),
        Column("session_key", String(40), primary_key=True),
        Column("user_id", String(USER_ID_LENGTH), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("last_seen", UTCDateTime(), nullable=False),
        Column("ip", String(45)),
        Column("user_agent", String(256)),
    )


def index_ready(store: Any) -> bool:
    """True if the user index exists (checked once, again after a minute while missing)."""
    known = store.__dict__.get("_user_index")
    now = time.monotonic()
    if known is not None and (known[0] or now - known[1] < RECHECK_SECONDS):
        return known[0]
    p = placeholder(store.engine.dialect)
    dialect = store.dialect
    if dialect == "sqlite":
        sql = f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = {p}"
    elif dialect == "postgresql":
        sql = f"SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = ANY(current_schemas(false)) AND tablename = {p}"
    else:
        sql = f"SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = {p}"
    with store.connect() as conn:
        found = conn.exec_driver_sql(sql, (side_name(store.settings.table),)).first() is not None
    store.__dict__["_user_index"] = (found, now)
    return found


def create_statements(dialect: str, table: str, quote) -> list[str]:
    side = quote(side_name(table))
    ts = {"postgresql": "timestamp with time zone", "mysql": "datetime(6)", "mariadb": "datetime(6)"}.get(
        dialect, "datetime"
    )
    # On MariaDB/MySQL the table's default collation is case- and accent-insensitive: 'Alice' would
    # find (and end) alice's sessions. User ids compare byte for byte, as on the other backends.
    exact = " COLLATE utf8mb4_bin" if dialect in ("mysql", "mariadb") else ""
    cols = (
        f"{quote('session_key')} varchar(40) NOT NULL PRIMARY KEY, "
        f"{quote('user_id')} varchar({USER_ID_LENGTH}){exact} NOT NULL, "
        f"{quote('created_at')} {ts} NOT NULL, {quote('last_seen')} {ts} NOT NULL, "
        f"{quote('ip')} varchar(45) NULL, {quote('user_agent')} varchar(256) NULL"
    )
    charset = " CHARACTER SET utf8mb4" if dialect in ("mysql", "mariadb") else ""
    return [
        f"CREATE TABLE {side} ({cols}){charset}",
        f"CREATE INDEX {quote(index_name(table))} ON {side} ({quote('user_id')})",
    ]


def user_of(data: Any, user_key: str) -> str | None:
    """The user of decoded session data: the value under ``user_key`` as text, or None."""
    if not isinstance(data, dict):
        return None
    value = data.get(user_key)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, str)):
        text = str(value)
        if not text.strip() or len(text) > USER_ID_LENGTH or "\x00" in text:
            return None  # nobody: no backend's text column holds it as given, nor can an operator name it
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return None  # an unpaired surrogate
        return text
    return None


class SideRow(NamedTuple):
    user_id: str
    created_at: Any
    last_seen: Any
    ip: str | None = None
    user_agent: str | None = None


class SideSQL:
    """The runtime's statements on the side table, as driver strings (like :class:`FastPath`'s)."""

    __slots__ = ("load", "seen_of", "insert", "delete", "seen", "seen_device", "touch", "seen_if_live",
                 "seen_device_if_live")

    def __init__(self, dialect: Any, table: str) -> None:
        q = dialect.identifier_preparer.quote_identifier
        p = placeholder(dialect)
        t, u = q(table), q(side_name(table))
        key, data, exp = q("session_key"), q("session_data"), q("expire_date")
        self.load = (
            f"SELECT s.{data}, s.{exp}, u.{q('last_seen')} FROM {t} s LEFT JOIN {u} u ON u.{key} = s.{key} "
            f"WHERE s.{key} = {p} AND s.{exp} > {p}"
        )
        self.seen_of = f"SELECT {q('last_seen')} FROM {u} WHERE {key} = {p}"
        self.insert = (
            f"INSERT INTO {u} ({key}, {q('user_id')}, {q('created_at')}, {q('last_seen')}, {q('ip')}, "
            f"{q('user_agent')}) VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
        )
        self.delete = f"DELETE FROM {u} WHERE {key} = {p}"
        self.seen = f"UPDATE {u} SET {q('last_seen')} = {p} WHERE {key} = {p}"
        self.seen_device = f"UPDATE {u} SET {q('last_seen')} = {p}, {q('ip')} = {p}, {q('user_agent')} = {p} WHERE {key} = {p}"
        # The touch: moves expire_date forward by an interval at least, on the very data it loaded,
        # of a live row (a request that loaded the row with others at once finds it moved: no write).
        self.touch = f"UPDATE {t} SET {exp} = {p} WHERE {key} = {p} AND {data} = {p} AND {exp} <= {p} AND {exp} > {p}"
        # "Last seen" alone (a fixed deadline): of a live session, an interval old at least.
        live = f"AND {q('last_seen')} <= {p} AND EXISTS (SELECT 1 FROM {t} s WHERE s.{key} = {p} AND s.{exp} > {p})"
        self.seen_if_live = f"UPDATE {u} SET {q('last_seen')} = {p} WHERE {key} = {p} {live}"
        self.seen_device_if_live = (
            f"UPDATE {u} SET {q('last_seen')} = {p}, {q('ip')} = {p}, {q('user_agent')} = {p} WHERE {key} = {p} {live}"
        )


class Abort(Exception):
    """A step of :func:`run_txn` matched no row: the transaction was rolled back."""


def run_txn(fast: Any, steps: list[tuple[str, tuple, bool]]) -> list[int] | None:
    """Run ``(sql, params, must_match_one)`` steps in one transaction on the fast path's connections.

    Returns their row counts, or None (everything rolled back) when a step
    marked ``must_match_one`` matched no row. A locked SQLite database or a
    deadlock retries the whole transaction, as ``FastPath.run`` does. The fast
    path's PostgreSQL and MariaDB connections run in autocommit, so the
    transaction is opened and ended explicitly there.
    """
    import contextlib

    from .db import is_deadlock

    explicit = getattr(fast, "autocommit", False)
    wal = getattr(fast, "wal", None)  # SQLite: tell a running purge a writer waits, as FastPath.run does
    with contextlib.ExitStack() as waiting:
        return _txn(fast, steps, explicit, wal, waiting, is_deadlock)


def _txn(fast: Any, steps: list, explicit: bool, wal: Any, waiting: Any, is_deadlock: Any) -> list[int] | None:
    deadline = None
    while True:
        with fast.connection() as conn:
            if wal is not None:
                wal.before_write(conn)
            cur = conn.cursor()
            if explicit:
                cur.execute("BEGIN")
            try:
                counts = []
                for sql, params, must in steps:
                    cur.execute(sql, params)
                    counts.append(cur.rowcount)
                    if must and cur.rowcount != 1:
                        _end(cur, conn, explicit, commit=False)
                        return None
            except fast.operational_error as exc:
                _end(cur, conn, explicit, commit=False)
                busy = fast.retry_busy and "locked" in str(exc)
                if not busy and not is_deadlock(exc):
                    raise
                now = time.monotonic()
                if deadline is None and wal is not None:
                    waiting.enter_context(wal.waiting())
                deadline = deadline or now + 10.0
                if now > deadline:
                    raise
                time.sleep(0.001)
                continue
            except BaseException:
                _end(cur, conn, explicit, commit=False)
                raise
            _end(cur, conn, explicit, commit=True)
            return counts


def _end(cur: Any, conn: Any, explicit: bool, *, commit: bool) -> None:
    if explicit:  # an autocommit connection: COMMIT/ROLLBACK as statements (its commit() would do nothing)
        try:
            cur.execute("COMMIT" if commit else "ROLLBACK")
        except Exception:
            if commit:
                raise
    elif commit:
        conn.commit()
    else:
        conn.rollback()
    try:
        cur.close()
    except Exception:
        pass
