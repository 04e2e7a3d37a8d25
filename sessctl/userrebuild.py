"""Build or repair the user index from the sessions themselves (``sessctl users --rebuild-index``).

For a table sessctl's runtime serves whose index is missing (created before
the index existed) or was bypassed (rows written by something else). The live
rows are read in key order, ``BATCH`` at a time, each session's user decoded
and its signature verified with the secret key, and the index rows of that
batch compared and corrected. The app may keep running: every correction is
conditional on the session row still holding the data that was decoded (one
transaction per session), so a session the app changed, logged in or out
meanwhile is left to the app's own index writes, never overwritten with
what was read before. Index rows of sessions that no longer exist are swept
last, as purge does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import codec as codecs
from . import userindex
from .errors import ConfigError
from .userindex import run_txn, user_of
from .users import _exact, _fetch, _names, _p, _text, index_ready, sweep

BATCH = 2000


@dataclass(frozen=True, slots=True)
class Rebuilt:
    created: bool  # the index table did not exist
    scanned: int  # live session rows read
    indexed: int  # live sessions with a verified user
    added: int  # index rows written (missing or naming another user)
    removed: int  # index rows deleted (their session has no user, or is gone)


def rebuild(store: Any, *, on_wait: Callable[[float], None] | None = None) -> Rebuilt:
    """Build the index if there is none, or repair it; see the module.

    A running app's store notices a new index only when it next looks (at most
    ``RECHECK_SECONDS`` later), and writes no index row for the logins it saves until then. So
    after a first pass this waits that long (``on_wait(seconds)`` is told first) and makes a
    second pass, which indexes those. One rebuild at a time per table (ConfigError otherwise),
    and never for a table Django serves (``app = "django"``).
    """
    if getattr(store.settings, "app", "sessctl") == "django":
        raise ConfigError(
            'this table is served by Django (app = "django"): its logins would not keep a user index up to date, '
            "so user commands decode every live session instead; nothing was changed"
        )
    with store.exclusive("user-index") as mine:
        if not mine:
            raise ConfigError("another rebuild of this table's user index is running; nothing was changed")
        created = not index_ready(store)
        if created:
            with store.connect(write=True) as conn:
                store._create_user_index(conn)
        first = _pass(store)
        # Also when the index was there: it may be younger than an app's last look (a rebuild
        # stopped during its wait), and a second pass of a complete index changes nothing.
        wait = userindex.RECHECK_SECONDS + 1.0
        if on_wait is not None:
            on_wait(wait)
        time.sleep(wait)
        second = _pass(store)
    return Rebuilt(created, second[0], second[1], first[2] + second[2], first[3] + second[3])


def _pass(store: Any) -> tuple[int, int, int, int]:
    """One pass over the live rows: (scanned, indexed, added, removed)."""
    n, p, fast = _names(store), _p(store), store._fast
    codec, user_key = store.codec, store.settings.user_key
    now = store.now()
    rows_sql = (
        f"SELECT {n['key']}, {n['data']} FROM {n['t']} WHERE {n['key']} > {p} AND {n['exp']} > {p} "
        f"ORDER BY {n['key']} LIMIT {BATCH}"
    )
    holds = f"EXISTS (SELECT 1 FROM {n['t']} s WHERE s.{n['key']} = {p} AND s.{n['data']} = {p})"
    drop = f"DELETE FROM {n['u']} WHERE {n['key']} = {p} AND {holds}"
    # PostgreSQL/MariaDB read committed: hold the session row while its index row is corrected, or
    # an app save committed in between (a logout) would leave the index naming the old user.
    # (SQLite's one writer already keeps them apart.)
    hold = None if store.dialect == "sqlite" else (
        f"SELECT 1 FROM {n['t']} WHERE {n['key']} = {p} AND {n['data']} = {p} FOR UPDATE"
    )
    add = (
        f"INSERT INTO {n['u']} ({n['key']}, {n['uid']}, {n['created']}, {n['seen']}, {n['ip']}, {n['ua']}) "
        f"SELECT {p}, {p}, {p}, {p}, NULL, NULL FROM {n['t']} s WHERE s.{n['key']} = {p} AND s.{n['data']} = {p}"
    )
    scanned = indexed = added = removed = 0
    last = ""
    while True:
        batch = _fetch(store, rows_sql, (last, fast.bind(now)))
        if not batch:
            break
        last = batch[-1][0]
        scanned += len(batch)
        keys = [k for k, _ in batch]
        have = dict(
            (k, _text(u)) for k, u in _fetch(
                store,
                f"SELECT {n['key']}, {_exact(store, n['uid'])} FROM {n['u']} WHERE {n['key']} IN ({', '.join([p] * len(keys))})",
                tuple(keys),
            )
        )
        for key, data in batch:
            user = _user(codec, data, user_key)
            indexed += user is not None
            if have.get(key) == user:
                continue
            steps = [(drop, (key, key, data), False)]
            if hold is not None:
                steps.insert(0, (hold, (key, data), True))  # gone or changed: leave it to the app
            if user is not None:
                stamp = fast.bind(_signed(data, now))
                steps.append((add, (key, user, stamp, stamp, key, data), False))
            counts = run_txn(fast, steps)
            if counts is not None:
                counts = counts[1:] if hold is not None else counts
                removed += counts[0] if key in have else 0
                added += counts[1] if len(counts) > 1 else 0
    swept, _ = sweep(store)
    return scanned, indexed, added, removed + swept


def _user(codec: Any, data: str, user_key: str) -> str | None:
    """The verified user of a stored session, or None (anonymous, unreadable, or a bad signature)."""
    try:
        return user_of(codec.decode(data), user_key)
    except codecs.CodecError:
        return None


def _signed(data: str, now: datetime) -> datetime:
    """When the session was last saved (its signing time): the index's created/last seen for it."""
    ts = codecs.signed_at(data)
    if ts is None:
        return now
    return datetime.fromtimestamp(ts, tz=timezone.utc)
