"""``max_sessions_per_user``, kept under parallel logins: count, evict and insert as one step.

Counting a user's sessions and inserting the new one in two transactions lets
two logins of the same user both count ``limit - 1`` and both insert. Here the
insert of a session row that has a user runs in one transaction that first
takes a lock of that user, so logins of one user queue and each sees the
ones before it, while logins of other users never wait:

- PostgreSQL: ``pg_advisory_xact_lock`` on a 64-bit hash of table and user,
  released by the commit (bounded by the connection's ``lock_timeout``);
- MariaDB/MySQL: ``GET_LOCK`` on a hash of database, table and user (names
  are server-wide), released after the commit; its connections read
  committed, so InnoDB's gap locks would not do it;
- SQLite: ``BEGIN IMMEDIATE``, its one write lock.

Then the user's live sessions are read (ids compared byte for byte), the
least recently active evicted (or, with ``on_max_sessions = "refuse"``,
nothing written and :class:`~sessctl.users.SessionLimitReached` raised), and
the session row and its index row inserted, session row first as every
writer does (:mod:`sessctl.userindex`).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from .db import is_deadlock
from .userindex import SideRow, _end
from .users import CHUNK, SessionLimitReached, UserSession, _by_activity, _exact, _names, _p, _text


INSERTED, TAKEN, CHANGED, GONE = "inserted", "taken", "changed", "gone"


def admit(
    store: Any, key: str, session_data: str, expire_date: datetime, side: SideRow, *, now: datetime,
    retire: Any = None,
) -> tuple[str, list[str]]:
    """Insert a session row of ``side.user_id`` within the limit; (outcome, keys evicted).

    ``retire``: the row this session had before the login (cycle_key), deleted in the same
    transaction if it still holds the data it was read with. The outcome is INSERTED, TAKEN
    (the key exists: nothing written), CHANGED or GONE (the row to retire was changed by
    another writer, or deleted: nothing written). A refusal raises
    :class:`~sessctl.users.SessionLimitReached` and writes nothing, so the session before the
    login is still there.
    """
    fast, settings = store._fast, store.settings
    limit, refuse, uid = settings.max_sessions_per_user, settings.on_max_sessions == "refuse", side.user_id
    n, p = _names(store), _p(store)
    read = (
        f"SELECT u.{n['key']}, s.{n['data']}, s.{n['exp']}, u.{n['created']}, u.{n['seen']}, {_exact(store, 'u.' + n['uid'])} "
        f"FROM {n['u']} u JOIN {n['t']} s ON s.{n['key']} = u.{n['key']} WHERE u.{n['uid']} = {p} AND s.{n['exp']} > {p}"
    )
    inserts = [(fast.insert, (key, session_data, fast.bind(expire_date))), *[(s, a) for s, a, _ in store._insert_steps(key, side)]]
    deadline = None
    while True:
        with fast.connection() as conn:
            if fast.wal is not None:
                fast.wal.before_write(conn)
            cur = conn.cursor()
            explicit, held = fast.autocommit, False
            try:
                held = _lock(store, cur, uid)
                cur.execute("BEGIN IMMEDIATE" if fast.retry_busy else "BEGIN")
                if store.dialect == "postgresql":
                    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                (f"sessctl-user:{settings.table}:{uid}",))
                cur.execute(read, (uid, fast.bind(now)))
                mine = {key, retire.key if retire is not None else key}
                live = [
                    UserSession(k, uid, data, fast.result(exp), fast.result(created), fast.result(seen))
                    for k, data, exp, created, seen, found in cur.fetchall()
                    if _text(found) == uid and k not in mine
                ]
                evicted: list[str] = []
                if len(live) >= limit and refuse:
                    _end(cur, conn, explicit, commit=False)
                    raise SessionLimitReached(refusal(uid, len(live), limit), user_id=uid, limit=limit, sessions=live)
                if retire is not None:
                    cur.execute(fast.delete_if, (retire.key, retire.session_data))
                    if cur.rowcount != 1:
                        cur.execute(fast.load, (retire.key, fast.bind(now)))
                        outcome = CHANGED if cur.fetchone() is not None else GONE
                        _end(cur, conn, explicit, commit=False)
                        return outcome, []
                    cur.execute(store._side.delete, (retire.key,))
                if len(live) >= limit:
                    oldest = list(reversed(_by_activity(live)))
                    evicted = [s.key for s in oldest[: len(live) - limit + 1]]
                    for table in (n["t"], n["u"]):
                        for i in range(0, len(evicted), CHUNK):
                            chunk = evicted[i:i + CHUNK]
                            cur.execute(f"DELETE FROM {table} WHERE {n['key']} IN ({', '.join([p] * len(chunk))})", tuple(chunk))
                try:
                    cur.execute(*inserts[0])
                except fast.integrity_error:  # MariaDB/MySQL: a duplicate key (the others say DO NOTHING)
                    _end(cur, conn, explicit, commit=False)
                    return TAKEN, []
                if cur.rowcount != 1:
                    _end(cur, conn, explicit, commit=False)
                    return TAKEN, []
                for sql, params in inserts[1:]:
                    cur.execute(sql, params)
                _end(cur, conn, explicit, commit=True)
                return INSERTED, evicted
            except fast.operational_error as exc:
                _end(cur, conn, explicit, commit=False)
                if not (fast.retry_busy and "locked" in str(exc)) and not is_deadlock(exc):
                    raise
                moment = time.monotonic()
                deadline = deadline or moment + fast.busy_timeout
                if moment > deadline:
                    raise
            finally:
                if held:
                    _unlock(conn, uid, settings.table)
        time.sleep(0.001)


def refusal(uid: str, count: int, limit: int) -> str:
    """The reason a refused login gives the user."""
    return (
        f"user {uid} already has {count} active session{'s' if count != 1 else ''} "
        f"and at most {limit} {'are' if limit != 1 else 'is'} allowed: log out on another device first"
    )


def eviction(uid: str, evicted: list[str], limit: int) -> str:
    """The reason a login that signed older sessions out gives the user."""
    return (
        f"signed out {len(evicted)} older session{'s' if len(evicted) != 1 else ''} of user {uid}: "
        f"at most {limit} {'are' if limit != 1 else 'is'} allowed"
    )


_MYSQL_NAME = "CONCAT('sessctl-user:', SHA1(CONCAT(DATABASE(), ':', %s, ':', %s)))"


def _lock(store: Any, cur: Any, uid: str) -> bool:
    """MariaDB/MySQL: take the user's named lock (outside the transaction, so it outlives the commit)."""
    if store.dialect not in ("mysql", "mariadb"):
        return False
    wait = max(1, int(store._fast.busy_timeout))
    cur.execute(f"SELECT GET_LOCK({_MYSQL_NAME}, %s)", (store.settings.table, uid, wait))
    if cur.fetchone()[0] != 1:
        from .errors import Conflict

        raise Conflict(f"another login of user {uid} held its lock for over {wait} s; try again")
    return True


def _unlock(conn: Any, uid: str, table: str) -> None:
    try:
        cur = conn.cursor()  # the transaction's own cursor is closed by now
        cur.execute(f"SELECT RELEASE_LOCK({_MYSQL_NAME})", (table, uid))
        cur.fetchall()
        cur.close()
    except Exception:
        # Dead, or in a state we cannot trust: close it, which releases the lock either way
        # (a pooled connection must never keep a user's lock).
        try:
            conn.close()
        except Exception:
            pass
