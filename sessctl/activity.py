"""Logging in, and the activity touch: what a session does about its user and about being used.

``login(session, user_id)`` records the user under ``Settings.user_key``,
always with a new key (and an empty session when another user was logged in
there, as Django does), after enforcing ``max_sessions_per_user``.

``touch(session)`` runs when a response leaves with a session that was read
but not changed. An idle deadline (or the global policy's) slides on any
access, not only on saves, through one small write per ``touch_interval``:
the row's ``expire_date`` only (never the data, never past an absolute
deadline, never on a deleted or expired row), plus "last seen" of a user's
session. A burst of requests within the interval writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import policy
from .errors import Conflict, SessionGone
from .model import MAX_KEY_ATTEMPTS, new_key
from .userindex import USER_ID_LENGTH, SideRow, user_of
from .userlimit import INSERTED, TAKEN, admit, eviction, refusal
from .users import LoginResult, SessionLimitReached

if TYPE_CHECKING:
    from .session import Session

MAX_INTERVAL = 3600.0  # the default interval never exceeds an hour ("last seen" stays useful)
GONE = "gone"
TOUCHED = "touched"
LATER = "later"  # Session._seen: the user index's "last seen" was not read with the row


def interval_for(settings: Any, window: float | None) -> float:
    """Seconds between two touches of a session whose deadline slides by ``window`` (None: it does not slide)."""
    if settings.touch_interval is not None:
        return float(settings.touch_interval)
    if window is None:
        return MAX_INTERVAL
    return min(window / 10.0, MAX_INTERVAL)


def window_of(settings: Any, lifetime: policy.Lifetime) -> float | None:
    """How far a save moves this lifetime's deadline past now (None for a fixed deadline)."""
    if lifetime.kind == policy.IDLE:
        return float(lifetime.seconds or 0)
    if lifetime.kind == policy.ABSOLUTE:
        return None if lifetime.seconds is None else float(lifetime.seconds)
    return float(settings.cookie_age)


def side_row(session: Session, user_id: str, now: datetime) -> SideRow:
    device = session.device()
    return SideRow(
        user_id, now, now, None if device is None else device.ip, None if device is None else device.user_agent
    )


def seen_due(session: Session, now: datetime, lifetime: policy.Lifetime) -> bool:
    """A user's session whose "last seen" is older than the touch interval."""
    seen = session._seen
    if seen is None:
        return False
    settings = session._store.settings
    interval = interval_for(settings, window_of(settings, lifetime))
    if seen is LATER:  # not read with the row (SQLite): read it now, unless this process knows it is recent
        seen = session._seen = session._store.last_seen_of(session._row.key, after=policy._add(now, -interval))
        if seen is None:
            return False
    return (now - seen).total_seconds() >= interval


def due(session: Session) -> tuple[policy.Expiry, bool, bool, float] | None:
    """(expiry now, the deadline slides, "last seen" is stale, the interval) when a touch is due, else None.

    No query, except on SQLite for a user's session whose "last seen" this process has not
    seen or written within the interval (:meth:`~sessctl.storeusers.UserRows.last_seen_of`)."""
    store = session._store
    settings = store.settings
    row, data = session._row, session._data
    if not settings.touch or row is None or data is None or session.modified:
        return None
    now = store.now()
    expiry = policy.compute(settings, data, now)
    interval = interval_for(settings, window_of(settings, expiry.lifetime))
    slides = (expiry.expire_date - row.expire_date).total_seconds() >= interval
    seen = seen_due(session, now, expiry.lifetime)
    return (expiry, slides, seen, interval) if slides or seen else None


def touch(session: Session) -> str | None:
    """Slide a read-only session's deadline if due; TOUCHED (re-send the cookie), GONE (it was deleted) or None."""
    found = due(session)
    if found is None:
        return None
    expiry, slides, seen, interval = found
    store = session._store
    now = store.now()
    outcome = store.touch_row(
        session._row, expiry.expire_date if slides else None, now, seen=session._seen is not None,
        device=session.device(), interval=interval,
    )
    if outcome is None:
        session._forget()
        return GONE
    if outcome:
        if session._seen is not None:
            session._seen = now
            store.note_seen(session._row.key, now)
        if slides:
            session._touched(expiry)
            return TOUCHED
    return None


def login(session: Session, user_id: Any) -> LoginResult:
    """Log ``user_id`` in on this session: new key, the user recorded, the per-user limit kept.

    With ``max_sessions_per_user`` and the user index, the login is saved at once, as Django's
    ``login()`` saves its new key: counting, evicting (or refusing) and inserting the new row run
    in one transaction behind a lock of the user (:mod:`sessctl.userlimit`), so parallel logins
    cannot exceed the limit, a refusal changes nothing, and sessions are evicted only by a login
    that happened. Without the index the limit is checked here, without that lock.
    """
    uid = checked_user_id(user_id)
    store = session._store
    settings = store.settings
    current = session.user_id  # loads the session: a re-login must know its own row
    limit = settings.max_sessions_per_user
    atomic = bool(limit) and store.user_index_ready()
    result = LoginResult()
    if limit and not atomic:  # atomic: the save below counts, refuses or evicts under the user's lock
        mine = session._row.key if session._row is not None and current == uid else None
        others = [s for s in store.user_sessions(uid) if s.key != mine]
        if len(others) >= limit:
            if settings.on_max_sessions == "refuse":
                raise SessionLimitReached(refusal(uid, len(others), limit), user_id=uid, limit=limit, sessions=others)
            oldest = sorted(others, key=lambda s: (s.last_activity or s.expire_date).timestamp())
            victims = [s.key for s in oldest[: len(others) - limit + 1]]
            store.end_sessions(victims)
            result = LoginResult(tuple(victims), eviction(uid, victims, limit))
    before = session._state()
    if current is not None and current != uid:
        if atomic:  # another user's session: start from nothing, its row retired by the save below
            session._start_over()
        else:
            session.flush()  # another user's session: start from nothing, as Django does
    session.cycle_key()
    session[settings.user_key] = uid
    session.login_result = result
    if atomic:
        try:
            session.save()
        except SessionGone:
            # The session before the login ended meanwhile (sessctl delete, a double-submitted
            # login form): this is a login all the same, of a new session that carries nothing.
            session._start_over(forget_row=True)
            session.cycle_key()
            session[settings.user_key] = uid
            try:
                session.save()
            except BaseException:
                session._restore(before)
                raise
        except BaseException:
            session._restore(before)  # a refusal (or a failure) wrote nothing: the session is as it was
            raise
        session._unsent = session.stored_key  # deleted again if its cookie never leaves (sessctl.cookies)
    return session.login_result


def checked_user_id(user_id: Any) -> str:
    """The user id as stored (text), or TypeError/ValueError for one no backend stores as given."""
    if isinstance(user_id, bool) or not isinstance(user_id, (int, str)):
        raise TypeError(f"a user id is a string or an int, not {type(user_id).__name__}")
    uid = str(user_id)
    if user_of({"u": uid}, "u") is None:
        raise ValueError(
            f"a user id is 1 to {USER_ID_LENGTH} characters, not only spaces, without NUL or unpaired surrogates"
        )
    return uid


def create_within_limit(session: Session, encoded: str, expire_date: datetime, side: SideRow, now: datetime) -> tuple[str | None, str]:
    """Insert the new row of a session with a user within ``max_sessions_per_user``, retiring the
    row cycle_key() left behind in the same transaction; (key, INSERTED), or (None, CHANGED/GONE)
    when that old row was changed or deleted meanwhile (nothing written). Evictions are added to
    ``session.login_result``; a refusal raises :class:`~sessctl.users.SessionLimitReached`."""
    store = session._store
    key = session._key if session._fresh_key else None
    for _ in range(MAX_KEY_ATTEMPTS):
        key = key or new_key()
        outcome, evicted = admit(store, key, encoded, expire_date, side, now=now, retire=session._old_row)
        if outcome == TAKEN:
            key = None
            continue
        if outcome != INSERTED:
            return None, outcome
        if evicted:
            before = session.login_result
            keys = (*(before.evicted if before else ()), *evicted)
            session.login_result = LoginResult(keys, eviction(side.user_id, list(keys), store.settings.max_sessions_per_user))
        return key, outcome
    raise Conflict("could not find a free session key (is the random source broken?)")


def limited(session: Session, user: str | None) -> bool:
    """Whether a new row of this user goes through :func:`create_within_limit`."""
    store = session._store
    return user is not None and bool(store.settings.max_sessions_per_user) and store.user_index_ready()


def user_change(session: Session, row_user: str | None, data: dict[str, Any], now: datetime, lifetime,
                new_user: Any = False) -> Any:
    """What a save does to the side row: ("set", SideRow), ("drop",), ("seen", device) or None.

    ``new_user``: ``user_of(data)`` when the caller has it already."""
    if new_user is False:
        new_user = user_of(data, session._store.settings.user_key)
    if new_user != row_user:
        return ("set", side_row(session, new_user, now)) if new_user is not None else ("drop",)
    if new_user is not None and seen_due(session, now, lifetime):
        return ("seen", session.device())
    return None
