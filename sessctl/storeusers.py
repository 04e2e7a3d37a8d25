"""The store's side of users: the runtime's writes to the user index, the touch, and the user API.

:class:`UserRows` is mixed into :class:`~sessctl.store.SessionStore`. Its
writes run in one transaction with the session row's own statement, session
row first (see :mod:`sessctl.userindex`); without an index they are the plain
single statements of the fast path. The lookups are :mod:`sessctl.users`'.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .policy import _add as policy_add
from .userindex import SideRow, SideSQL, create_statements, index_ready, run_txn, side_name

if TYPE_CHECKING:
    from . import users as _users


SEEN_MEMO_SIZE = 10_000  # sessions whose "last seen" a process remembers (SQLite's runtime)


class UserRows:
    """User index writes and user lookups for a store (needs its ``_fast`` path, ``settings``, ``now()``)."""

    # -- the index ----------------------------------------------------------------

    @property
    def _side(self) -> SideSQL:
        side = self.__dict__.get("_side_sql")
        if side is None:
            side = self.__dict__["_side_sql"] = SideSQL(self.engine.dialect, self.settings.table)
            self._fast.reads.update((side.load, side.seen_of))  # reads: no SQLite writer bookkeeping
        return side

    @cached_property
    def seen_on_load(self) -> bool:
        """Whether :meth:`load_row` reads "last seen" with the row (a LEFT JOIN on the index).

        On PostgreSQL and MariaDB/MySQL the join costs the server a few microseconds of a
        round trip that dominates; a separate lookup would cost a round trip. On SQLite the
        join is a second b-tree search and a date parse on every load; there the touch asks
        :meth:`last_seen_of` instead, which reads the index once per session and interval
        at most, and not while this process knows "last seen" is recent.
        """
        return self.dialect != "sqlite"

    def last_seen_of(self, key: str, after: datetime | None = None) -> datetime | None:
        """The user index's "last seen" of session ``key`` (None: no index row).

        With ``after``: a moment this process saw or wrote for the key, if later than
        ``after``, instead of a read. "Last seen" only moves forward (the index rebuild
        aside, which may set it back: then the touch is late by an interval at most), so
        it is a lower bound that already answers the touch's question
        (:func:`sessctl.activity.seen_due`). Likewise "no index row" (a session Django
        wrote, or one from before the index), found later than ``after``.
        """
        memo = self._seen_memo
        if after is not None:
            known = memo.get(key)
            if known is not None:
                if type(known) is tuple:  # (when this process found no index row,)
                    if known[0] > after:
                        return None
                elif known > after:
                    return known
        if not self.user_index_ready():
            return None
        fast = self._fast
        found = fast.run(self._side.seen_of, (key,), fetch=True)
        if found is None:
            self._memo_put(key, (self.now(),))
            return None
        seen = fast.result(found[0])
        self.note_seen(key, seen)
        return seen

    @cached_property
    def _seen_memo(self) -> dict[str, datetime | tuple[datetime]]:
        return {}

    def note_seen(self, key: str, moment: datetime) -> None:
        """Remember that ``key``'s "last seen" is at least ``moment`` (see :meth:`last_seen_of`)."""
        if self.seen_on_load:
            return
        known = self._seen_memo.get(key)
        if known is None or type(known) is tuple or moment > known:
            self._memo_put(key, moment)

    def _memo_put(self, key: str, value: datetime | tuple[datetime]) -> None:
        memo = self._seen_memo
        if len(memo) >= SEEN_MEMO_SIZE:
            memo.clear()  # bounded; forgetting only costs a read
        memo[key] = value

    def user_index_ready(self) -> bool:
        """True if this table has its user index (``<table>_user``) beside it."""
        return index_ready(self)

    def _create_user_index(self, conn: Any) -> None:
        quote = self.engine.dialect.identifier_preparer.quote_identifier
        for stmt in create_statements(self.dialect, self.settings.table, quote):
            conn.exec_driver_sql(stmt)
        import time

        self.__dict__["_user_index"] = (True, time.monotonic())

    @property
    def user_index_name(self) -> str:
        return side_name(self.settings.table)

    # -- the runtime's writes ------------------------------------------------------------

    def _insert_steps(self, key: str, side: SideRow) -> list[tuple[str, tuple, bool]]:
        fast, sql = self._fast, self._side
        return [
            (sql.delete, (key,), False),  # a stale row of a key Django deleted behind our back
            (sql.insert, (key, side.user_id, fast.bind(side.created_at), fast.bind(side.last_seen), side.ip,
                          side.user_agent), False),
        ]

    def _side_steps(self, key: str, change: Any) -> list[tuple[str, tuple, bool]]:
        """The side-row statements of a save: ("set", SideRow), ("drop",) or ("seen", device)."""
        if change is None or not self.user_index_ready():
            return []
        sql = self._side
        if change[0] == "set":
            return self._insert_steps(key, change[1])
        if change[0] == "drop":
            return [(sql.delete, (key,), False)]
        return [self._seen_step(key, self.now(), change[1])]

    def _seen_step(self, key: str, now: datetime, device: Any) -> tuple[str, tuple, bool]:
        fast, sql = self._fast, self._side
        if device is None:
            return (sql.seen, (fast.bind(now), key), False)
        return (sql.seen_device, (fast.bind(now), device.ip, device.user_agent, key), False)

    def _insert_with_side(self, key: str, session_data: str, expire_date: datetime, side: SideRow) -> bool:
        fast = self._fast
        main = (fast.insert, (key, session_data, fast.bind(expire_date)), True)
        try:
            return run_txn(fast, [main, *self._insert_steps(key, side)]) is not None
        except Exception as err:
            if isinstance(err.__cause__, fast.integrity_error):
                return False  # MySQL/MariaDB: a duplicate key (the others say DO NOTHING)
            raise

    def _swap_with_side(self, old: Any, session_data: str, expire_date: datetime, steps: list) -> bool:
        fast = self._fast
        main = (fast.swap, (session_data, fast.bind(expire_date), old.key, old.session_data), True)
        return run_txn(fast, [main, *steps]) is not None

    def _delete_with_side(self, key: str, only_if: Any) -> bool:
        fast = self._fast
        if only_if is None:
            main = (fast.delete, (key,), False)
        else:
            main = (fast.delete_if, (key, only_if.session_data), True)
        counts = run_txn(fast, [main, (self._side.delete, (key,), False)])
        return counts is not None and counts[0] == 1

    def touch_row(self, row: Any, expire_date: datetime | None, now: datetime, *, seen: bool, device: Any,
                  interval: float = 0.0) -> bool | None:
        """The activity touch: move ``expire_date`` forward (and "last seen"); never the data, never a dead row.

        Each by ``interval`` seconds at least, checked in the statement: of requests that loaded
        the row at once, one writes. True if it wrote, False if another writer got there first
        (the session lives on), None if the session is gone (deleted or expired meanwhile).
        """
        fast, sql = self._fast, self._side
        steps = []
        if expire_date is not None:
            steps.append((sql.touch, (fast.bind(expire_date), row.key, row.session_data,
                                      fast.bind(policy_add(expire_date, -interval)), fast.bind(now)), True))
        if seen and self.user_index_ready():
            if expire_date is None:  # only "last seen": of a live session, checked in the same statement
                b_now, before = fast.bind(now), fast.bind(policy_add(now, -interval))
                if device is None:
                    steps.append((sql.seen_if_live, (b_now, row.key, before, row.key, b_now), True))
                else:
                    steps.append((sql.seen_device_if_live,
                                  (b_now, device.ip, device.user_agent, row.key, before, row.key, b_now), True))
            else:
                steps.append(self._seen_step(row.key, now, device))
        if not steps:
            return False
        if run_txn(fast, steps) is not None:
            return True
        return None if self.load_row(row.key, now) is None else False

    def touch_interval_for(self, window: float | None) -> float:
        """Seconds between two touches of a session whose deadline slides by ``window`` seconds."""
        from .activity import interval_for

        return interval_for(self.settings, window)

    # -- the user API ---------------------------------------------------------------------

    def user_sessions(self, user_id: Any) -> _users.Found:
        """The live sessions of ``user_id``, most recently active first (``.method``: "index" or "scan")."""
        from . import users as _users  # the user API's own module: not loaded by commands that need none

        return _users.sessions_of(self, str(user_id))

    def end_user_sessions(self, user_id: Any, *, keep: str | Iterable[str] = (), dry_run: bool = False) -> _users.Found:
        """Log ``user_id`` out everywhere except the sessions in ``keep``; the keys ended.

        A session ended this way is never re-created by a request of it in flight:
        its saves and touches are compare-and-swaps on a row that is gone.
        """
        from . import users as _users

        return _users.end_sessions_of(self, str(user_id), keep=keep, dry_run=dry_run)

    def users(self, *, limit: int | None = None) -> _users.Found:
        """Users with live sessions, most sessions first, with their last activity."""
        from . import users as _users

        return _users.users(self, limit=limit)

    def end_sessions(self, keys: Iterable[str]) -> int:
        """Delete these sessions (and their index rows) at once; how many sessions were deleted."""
        from . import users as _users

        keys = list(dict.fromkeys(keys))
        return _users._delete_keys(self, keys, keys)

    def device_of(self, key: str) -> dict[str, Any] | None:
        """The index row of a session (user, created, last seen, ip, user agent), or None."""
        if not self.user_index_ready():
            return None
        from .users import side_row_of

        return side_row_of(self, key)
