"""Sessions of a user: find them, end them, count users; from the user index or by decoding every row.

Every answer says how it was found (``method``: ``"index"`` or ``"scan"``),
so the command line can say it too. The index (:mod:`sessctl.userindex`) is
used when it exists and the table is served by sessctl's runtime; otherwise
(a table Django writes) every live row is read once, in storage order, its
payload decoded without verifying, and the signature verified for the rows
that matter: a row whose signature fails is no logged-in session for the app.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import codec as codecs
from .model import placeholder
from .userindex import index_ready, side_name, user_of

CHUNK = 500  # keys per IN (...) list


@dataclass(frozen=True, slots=True)
class UserSession:
    """One live session of a user, with its device when tracked."""

    key: str
    user_id: str
    session_data: str
    expire_date: datetime
    created_at: datetime | None = None
    last_seen: datetime | None = None
    ip: str | None = None
    user_agent: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expire_date <= now

    @property
    def last_activity(self) -> datetime | None:
        """When the session was last seen (index), or last saved (its signing time, on a scan)."""
        if self.last_seen is not None:
            return self.last_seen
        ts = codecs.signed_at(self.session_data)
        return None if ts is None else datetime.fromtimestamp(ts, tz=self.expire_date.tzinfo)


@dataclass(frozen=True, slots=True)
class UserSummary:
    user_id: str
    sessions: int
    last_activity: datetime | None


class SessionLimitReached(Exception):
    """A login refused by ``max_sessions_per_user`` (``on_max_sessions = "refuse"``); ``reason`` is for the user."""

    def __init__(self, reason: str, *, user_id: str, limit: int, sessions: list[UserSession]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_id = user_id
        self.limit = limit
        self.sessions = sessions


@dataclass(frozen=True, slots=True)
class LoginResult:
    """What ``session.login()`` did besides logging in: sessions it ended to stay within the limit, and why."""

    evicted: tuple[str, ...] = ()
    reason: str | None = None


class Found(list):
    """A list of results that also says how it was found: ``method`` ``"index"`` or ``"scan"``, and ``scanned`` rows."""

    def __init__(self, items: Iterable[Any] = (), *, method: str, scanned: int = 0) -> None:
        super().__init__(items)
        self.method = method
        self.scanned = scanned

    def describe(self) -> str:
        if self.method == "index":
            return "from the user index"
        return f"by decoding {self.scanned:,} live session{'' if self.scanned == 1 else 's'} (no user index)"


# -- which way ----------------------------------------------------------------------


def use_index(store: Any) -> bool:
    """The index answers unless Django serves the table (``Settings.app``) or there is none."""
    if getattr(store.settings, "app", "sessctl") == "django":
        return False
    return index_ready(store)


def _names(store: Any) -> dict[str, str]:
    q = store.engine.dialect.identifier_preparer.quote_identifier
    return {
        "t": q(store.settings.table), "u": q(side_name(store.settings.table)), "key": q("session_key"),
        "data": q("session_data"), "exp": q("expire_date"), "uid": q("user_id"), "created": q("created_at"),
        "seen": q("last_seen"), "ip": q("ip"), "ua": q("user_agent"),
    }


def _p(store: Any) -> str:
    return placeholder(store.engine.dialect)


def _exact(store: Any, column: str) -> str:
    """The user id column as it compares byte for byte: under MariaDB/MySQL's PAD SPACE collations
    (utf8mb4_bin included) 'ivan ' equals and groups with 'ivan'; its bytes do not."""
    return f"CAST({column} AS BINARY)" if store.dialect in ("mysql", "mariadb") else column


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _fetch(store: Any, sql: str, params: tuple) -> list[tuple]:
    """Run one read (driver SQL) on a pooled connection; its rows. Not the fast path: commands stay light."""
    with store.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql, params)]


# -- the index path ------------------------------------------------------------------


def _indexed(store: Any, user_id: str, now: datetime) -> tuple[list[UserSession], list[str]]:
    """(live sessions of the user, keys of side rows whose session is gone or expired)."""
    n, p, fast = _names(store), _p(store), store._fast
    sql = (
        f"SELECT u.{n['key']}, s.{n['data']}, s.{n['exp']}, u.{n['created']}, u.{n['seen']}, u.{n['ip']}, "
        f"u.{n['ua']}, {_exact(store, 'u.' + n['uid'])} FROM {n['u']} u LEFT JOIN {n['t']} s "
        f"ON s.{n['key']} = u.{n['key']} WHERE u.{n['uid']} = {p}"
    )
    live, dead = [], []
    for key, data, exp, created, seen, ip, ua, uid in _fetch(store, sql, (user_id,)):
        if _text(uid) != user_id:
            continue  # MariaDB/MySQL: 'ivan ' = 'ivan' under a PAD SPACE collation; ids match byte for byte
        expire = None if exp is None else fast.result(exp)
        if expire is None or expire <= now:
            dead.append(key)
        else:
            live.append(UserSession(key, user_id, data, expire, fast.result(created), fast.result(seen), ip, ua))
    return live, dead


def _delete_keys(store: Any, keys: list[str], side_keys: list[str]) -> int:
    """Delete session rows, then side rows, in one transaction (session row first, as every writer)."""
    from .userindex import run_txn

    n, p = _names(store), _p(store)
    deleted = 0
    with_side = index_ready(store)
    for i in range(0, max(len(keys), len(side_keys)), CHUNK):
        chunk, side_chunk = keys[i:i + CHUNK], side_keys[i:i + CHUNK]
        steps = []
        if chunk:
            steps.append((f"DELETE FROM {n['t']} WHERE {n['key']} IN ({', '.join([p] * len(chunk))})", tuple(chunk), False))
        if with_side and side_chunk:
            steps.append(
                (f"DELETE FROM {n['u']} WHERE {n['key']} IN ({', '.join([p] * len(side_chunk))})", tuple(side_chunk), False)
            )
        if steps:
            counts = run_txn(store._fast, steps)
            deleted += counts[0] if chunk and counts else 0
    return deleted


# -- the scan path --------------------------------------------------------------------


def scan(store: Any, now: datetime, user_id: str | None = None) -> Iterator[tuple[int, UserSession]]:
    """Every live session with a verified user (of ``user_id`` only, if given), in storage order.

    Yields ``(rows read so far, session)``; a final ``(rows read, None)`` says how many were read.
    """
    n, p, fast = _names(store), _p(store), store._fast
    codec = store.codec
    user_key = store.settings.user_key
    # Storage order, not the expire_date index: SQLite would fetch each live row at random otherwise.
    cond = f"+{n['exp']} > {p}" if store.dialect == "sqlite" else f"{n['exp']} > {p}"
    sql = f"SELECT {n['key']}, {n['data']}, {n['exp']} FROM {n['t']} WHERE {cond}"
    # A quick look at the JSON text first: most rows (anonymous, or other users) are never parsed.
    key_text = json.dumps(user_key).encode()
    value_text = None if user_id is None else json.dumps(user_id).encode()[1:-1]
    read = 0
    with store.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=2000).exec_driver_sql(sql, (fast.bind(now),))
        try:
            for key, data, exp in result:
                read += 1
                try:
                    raw = codecs.payload_json(data)
                    if key_text not in raw or (value_text is not None and value_text not in raw):
                        continue
                    found = user_of(json.loads(raw.decode("latin-1")), user_key)
                except (codecs.CodecError, ValueError, RecursionError):
                    continue
                if found is None or (user_id is not None and found != user_id):
                    continue
                if not codec.verify(data):
                    continue  # the app treats it as an empty session: nobody is logged in there
                yield read, UserSession(key, found, data, fast.result(exp))
        finally:
            result.close()
    yield read, None


def _scanned(store: Any, now: datetime, user_id: str | None) -> tuple[list[UserSession], int]:
    out, read = [], 0
    for read, item in scan(store, now, user_id):
        if item is not None:
            out.append(item)
    return out, read


# -- the operations --------------------------------------------------------------------


def sessions_of(store: Any, user_id: str, *, now: datetime | None = None) -> Found:
    """The live sessions of ``user_id``, most recently active first."""
    now = store.now() if now is None else now
    user_id = str(user_id)
    if use_index(store):
        live, dead = _indexed(store, user_id, now)
        if dead:
            _delete_keys(store, dead, dead)  # orphans (Django's clearsessions) and expired rows
        return Found(_by_activity(live), method="index")
    found, read = _scanned(store, now, user_id)
    return Found(_by_activity(found), method="scan", scanned=read)


def end_sessions_of(
    store: Any, user_id: str, *, keep: Iterable[str] = (), dry_run: bool = False, now: datetime | None = None
) -> Found:
    """End every session of ``user_id`` except those in ``keep``; returns the keys ended (or that would be)."""
    now = store.now() if now is None else now
    user_id = str(user_id)
    keep = {k for k in ([keep] if isinstance(keep, str) else keep) if k}
    if use_index(store):
        live, dead = _indexed(store, user_id, now)
        method, read = "index", 0
    else:
        live, read = _scanned(store, now, user_id)
        dead, method = [], "scan"
    doomed = [s.key for s in live if s.key not in keep]
    if not dry_run:
        _delete_keys(store, doomed + dead, doomed + dead)
    return Found(doomed, method=method, scanned=read)


def users(store: Any, *, limit: int | None = None, now: datetime | None = None) -> Found:
    """Users with live sessions: most sessions first, then the most recently active."""
    now = store.now() if now is None else now
    if use_index(store):
        n, p, fast = _names(store), _p(store), store._fast
        user = _exact(store, "u." + n["uid"])
        sql = (
            f"SELECT {user}, COUNT(*), MAX(u.{n['seen']}) FROM {n['u']} u JOIN {n['t']} s "
            f"ON s.{n['key']} = u.{n['key']} WHERE s.{n['exp']} > {p} GROUP BY {user}"
        )
        rows = _fetch(store, sql, (fast.bind(now),))
        summaries = [UserSummary(_text(uid), int(count), fast.result(seen)) for uid, count, seen in rows]
        method, read = "index", 0
    else:
        per: dict[str, list[Any]] = {}
        read = 0
        for read, item in scan(store, now):
            if item is None:
                continue
            entry = per.setdefault(item.user_id, [0, None])
            entry[0] += 1
            seen = item.last_activity
            if seen is not None and (entry[1] is None or seen > entry[1]):
                entry[1] = seen
        summaries = [UserSummary(uid, count, seen) for uid, (count, seen) in per.items()]
        method = "scan"
    floor = datetime.min.replace(tzinfo=now.tzinfo)
    summaries.sort(key=lambda s: (-s.sessions, -(s.last_activity or floor).timestamp(), s.user_id))
    if limit is not None:
        summaries = summaries[:limit]
    return Found(summaries, method=method, scanned=read)


def sweep(store: Any, *, max_seconds: float | None = None, step: int = 2000, start: str = "") -> tuple[int, bool]:
    """Delete the index rows whose session is gone (purged, or deleted by Django); (deleted, complete).

    It walks the index in key order from ``start`` (wrapping around to it), ``step`` rows per
    short transaction, and deletes only rows whose session row no longer exists, so it can
    never unindex a live session, whatever runs at the same time. It costs one primary-key
    probe of the session table per index row: in proportion to the logged-in sessions, not to
    the rows purged. Rows it has not reached yet are harmless (every read joins the live table).
    """
    if not index_ready(store):
        return 0, True
    n, p = _names(store), _p(store)
    bound_sql = f"SELECT {n['key']} FROM {n['u']} WHERE {n['key']} > {p} ORDER BY {n['key']} LIMIT 1 OFFSET {int(step) - 1}"
    gone = f"NOT EXISTS (SELECT 1 FROM {n['t']} s WHERE s.{n['key']} = {n['u']}.{n['key']})"
    deleted, started = 0, time.monotonic()
    # From start to the end, then from the beginning up to start.
    for last, end in ((start, None), ("", start)) if start else (("", None),):
        while True:
            found = _fetch(store, bound_sql, (last,))
            bound = found[0][0] if found else None
            if end is not None and (bound is None or bound >= end):
                bound = end
            if bound is None:
                sql, params = f"DELETE FROM {n['u']} WHERE {n['key']} > {p} AND {gone}", (last,)
            else:
                sql, params = f"DELETE FROM {n['u']} WHERE {n['key']} > {p} AND {n['key']} <= {p} AND {gone}", (last, bound)
            with store.connect(write=True) as conn:
                deleted += conn.exec_driver_sql(sql, params).rowcount
            if bound is None or bound == end:
                break
            last = bound
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                return deleted, False
    return deleted, True


def user_ids_with_prefix(store: Any, prefix: str, limit: int = 100) -> list[str]:
    """Users in the index whose id starts with ``prefix`` (shell completion; nothing without an index)."""
    if not index_ready(store):
        return []
    n, p = _names(store), _p(store)
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    sql = (
        f"SELECT DISTINCT {n['uid']} FROM {n['u']} WHERE {n['uid']} LIKE {p} ESCAPE '\\' "
        f"ORDER BY {n['uid']} LIMIT {int(limit)}"
    )
    if store.dialect in ("mysql", "mariadb"):
        sql = sql.replace("ESCAPE '\\'", "ESCAPE '\\\\'")
    return [str(uid) for (uid,) in _fetch(store, sql, (escaped + "%",))]


def side_row_of(store: Any, key: str) -> dict[str, Any] | None:
    """The index row of one session: user, created, last seen, ip, user agent (None if it has none)."""
    n, p, fast = _names(store), _p(store), store._fast
    sql = (
        f"SELECT {n['uid']}, {n['created']}, {n['seen']}, {n['ip']}, {n['ua']} FROM {n['u']} WHERE {n['key']} = {p}"
    )
    found = _fetch(store, sql, (key,))
    if not found:
        return None
    uid, created, seen, ip, ua = found[0]
    return {"user": str(uid), "created_at": fast.result(created), "last_seen": fast.result(seen), "ip": ip,
            "user_agent": ua}


def _by_activity(sessions: list[UserSession]) -> list[UserSession]:
    def when(s: UserSession) -> float:
        seen = s.last_activity
        return seen.timestamp() if seen is not None else 0.0

    return sorted(sessions, key=lambda s: (-when(s), s.key))
