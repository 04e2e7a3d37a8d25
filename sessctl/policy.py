"""Lifetime policy: the one place that decides when a session dies.

A per-session lifetime is stored inside the session data under
``_session_expiry``, exactly as Django does, so Django reads our sessions and
we read Django's:

==================  ==========================  ==============================  ============================
kind                ``_session_expiry``         row ``expire_date``             cookie
==================  ==========================  ==============================  ============================
default             absent                      save time + ``cookie_age``      Max-Age=cookie_age (or a
                                                                                 browser-session cookie when
                                                                                 ``expire_at_browser_close``)
browser_close       ``0``                       save time + ``cookie_age``      browser-session cookie
absolute            ISO-8601 datetime string    that instant                    expires at that instant
idle                int N != 0                  save time + N (sliding)         Max-Age=N
==================  ==========================  ==============================  ============================

:func:`compute` turns (settings, stored value, now) into the row's
``expire_date`` and the cookie's Max-Age/Expires. The middleware and the
command line both call it; nothing else computes expiry.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, Protocol

from .tz import EARLIEST, LATEST, Zone, shift
from .tz import zone as tz_zone

UTC = timezone.utc
AWARE = tz_zone(None)
EXPIRY_KEY = "_session_expiry"
# Set by the command line when it changes a lifetime; the runtime sees it on
# the next load, re-sends the cookie so the browser matches, and drops it.
RESEND_KEY = "_sessctl_resend"
# An idle timeout that rides along an absolute deadline (both limits, the
# earlier wins). Django sees only the deadline under ``_session_expiry``.
IDLE_KEY = "_sessctl_idle"
# The farthest any session reaches, both ways: its row's expire_date and its cookie's Max-Age.
# 100 years outlives any user, and stays far from the end of every date type on every backend
# (year 9999 in UTC is year 10000 to a PostgreSQL session east of UTC, which psycopg cannot read).
MAX_LIFETIME = 100 * 365 * 86400

DEFAULT = "default"
BROWSER_CLOSE = "browser_close"
ABSOLUTE = "absolute"
IDLE = "idle"
KINDS = (DEFAULT, BROWSER_CLOSE, ABSOLUTE, IDLE)


class _TillBrowserClose:
    """Sentinel for ``set_life(TILL_BROWSER_CLOSE)``; stored as ``0``."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "TILL_BROWSER_CLOSE"

    def __reduce__(self):
        return "TILL_BROWSER_CLOSE"


TILL_BROWSER_CLOSE = _TillBrowserClose()


class PolicySettings(Protocol):
    cookie_age: int
    expire_at_browser_close: bool


def zone_of(settings: Any) -> Zone:
    """The Zone of a settings object (one without ``time_zone``: aware UTC)."""
    return tz_zone(getattr(settings, "time_zone", None))


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return shift(moment, UTC)


class Lifetime(NamedTuple):
    """A session's own lifetime, as read from its data."""

    kind: str
    seconds: int | float | None = None  # idle timeout (kind idle, or absolute with an idle limit too)
    deadline: datetime | None = None  # absolute, aware UTC

    def stored(self, zone: Zone | None = None) -> Any:
        """The value to keep under ``_session_expiry`` (None: remove the key).

        A deadline is written as the app writes one: aware UTC, or naive wall time in the
        ``zone`` of a project with USE_TZ = False.
        """
        if self.kind == BROWSER_CLOSE:
            return 0
        if self.kind == IDLE:
            return self.seconds
        if self.kind == ABSOLUTE:
            assert self.deadline is not None
            return (zone or AWARE).deadline_text(self.deadline)
        return None

    def apply(self, data: dict[str, Any], zone: Zone | None = None) -> bool:
        """Write this lifetime into session data; True if the data changed."""
        before = (data.get(EXPIRY_KEY, _ABSENT), data.get(IDLE_KEY, _ABSENT))
        stored = self.stored(zone)
        if stored is None:
            data.pop(EXPIRY_KEY, None)
        else:
            data[EXPIRY_KEY] = stored
        if self.kind == ABSOLUTE and self.seconds is not None:
            data[IDLE_KEY] = self.seconds
        else:
            data.pop(IDLE_KEY, None)
        return before != (data.get(EXPIRY_KEY, _ABSENT), data.get(IDLE_KEY, _ABSENT))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == IDLE:
            out["seconds"] = self.seconds
        elif self.kind == ABSOLUTE and self.deadline is not None:
            out["deadline"] = as_utc(self.deadline).isoformat()
            if self.seconds is not None:
                out["idle_seconds"] = self.seconds
        return out

    def describe(self) -> str:
        if self.kind == IDLE:
            return f"idle timeout {format_seconds(self.seconds or 0)}"
        if self.kind == ABSOLUTE and self.deadline is not None:
            text = f"absolute, until {as_utc(self.deadline).isoformat(sep=' ', timespec='seconds')[:19]} UTC"
            if self.seconds is not None:
                text += f", or after {format_seconds(self.seconds)} idle"
            return text
        if self.kind == BROWSER_CLOSE:
            return "until the browser closes"
        return "default (global policy)"


DEFAULT_LIFETIME = Lifetime(DEFAULT)
_ABSENT = object()


def _positive_seconds(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return value


def lifetime_of(data: dict[str, Any], zone: Zone | None = None) -> Lifetime:
    """Read a session's lifetime from its decoded data, as Django would.

    A naive deadline is wall time in ``zone`` (UTC by default). Values Django
    could not have written (an unparseable string, a list...) fall back to the
    global policy rather than failing the request.
    """
    value = data.get(EXPIRY_KEY)
    if value is None:
        return DEFAULT_LIFETIME
    if isinstance(value, str):
        try:
            deadline = (zone or AWARE).parse_deadline(value)
        except ValueError:
            return DEFAULT_LIFETIME
        return Lifetime(ABSOLUTE, seconds=_positive_seconds(data.get(IDLE_KEY)), deadline=deadline)
    if isinstance(value, (int, float)):
        # bool is an int, as in Django: False == 0 is browser-close, True == 1 second.
        if value == 0:
            return Lifetime(BROWSER_CLOSE)
        if isinstance(value, float) and not math.isfinite(value):
            return DEFAULT_LIFETIME
        return Lifetime(IDLE, seconds=int(value) if isinstance(value, bool) else value)
    return DEFAULT_LIFETIME


def requested(value: Any, *, idle: Any = False, now: datetime | None = None, zone: Zone | None = None) -> Lifetime:
    """Turn a ``set_life`` argument into a Lifetime (raising on nonsense).

    ``None``: the global policy. ``TILL_BROWSER_CLOSE``: browser close.
    seconds (int/float) or timedelta: an absolute deadline now + that, or an
    idle timeout of that many seconds with ``idle=True``. A datetime: that
    deadline. ``idle=`` a duration together with a deadline gives both
    limits (OWASP's idle + absolute); the earlier one wins. Zero, negative or
    non-finite durations raise ``ValueError``. ``now`` is the app's clock
    (wall time in ``zone`` under USE_TZ = False, where durations are added in
    wall time as Django adds them); a naive datetime is read in ``zone``.
    """
    if idle is not False and idle is not True:
        idle_seconds = _duration_seconds(idle, "idle")
        deadline = requested(value, now=now, zone=zone)
        if deadline.kind != ABSOLUTE:
            raise ValueError("an idle limit can only be combined with a deadline (seconds, timedelta or datetime)")
        return Lifetime(ABSOLUTE, seconds=idle_seconds, deadline=deadline.deadline)
    if value is None:
        if idle:
            raise ValueError("set_life(None, idle=True) makes no sense: None means the global policy")
        return DEFAULT_LIFETIME
    if value is TILL_BROWSER_CLOSE:
        if idle:
            raise ValueError("TILL_BROWSER_CLOSE cannot be an idle timeout")
        return Lifetime(BROWSER_CLOSE)
    z = zone or AWARE
    now = z.now(utcnow()) if now is None else z.local(now)
    if isinstance(value, datetime):
        if idle:
            raise ValueError("an idle timeout is a duration, not a datetime")
        deadline = z.local(value)
        if deadline <= now:
            raise ValueError(f"the deadline {deadline.isoformat()} is not in the future")
        return Lifetime(ABSOLUTE, deadline=deadline)
    seconds = _duration_seconds(value, "a lifetime")
    if idle:
        return Lifetime(IDLE, seconds=seconds)
    return Lifetime(ABSOLUTE, deadline=_add(now, seconds))


def _duration_seconds(value: Any, what: str) -> int | float:
    if isinstance(value, timedelta):
        seconds: float = value.total_seconds()
        if math.isfinite(seconds) and seconds == int(seconds):
            seconds = int(seconds)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value
    else:
        raise TypeError(
            f"set_life() takes seconds, a timedelta, a datetime, TILL_BROWSER_CLOSE or None, not {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
    return seconds


def _add(moment: datetime, seconds: float) -> datetime:
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return LATEST if seconds > 0 else EARLIEST


class Expiry(NamedTuple):
    """What a save writes: the row's ``expire_date``, and the cookie's lifetime.

    ``max_age`` None means a browser-session cookie (no Max-Age, no Expires).
    """

    expire_date: datetime
    max_age: int | None
    expires: datetime | None
    lifetime: Lifetime


def compute(settings: PolicySettings, data: dict[str, Any], now: datetime | None = None) -> Expiry:
    """The one function that decides a session's expiry at a save made at ``now``.

    ``now`` is the app's clock (see SessionStore.now): under USE_TZ = False the zone's wall
    time, so that durations are added as Django adds them.
    """
    z = zone_of(settings)
    now = z.now(utcnow()) if now is None else z.local(now)
    lifetime = lifetime_of(data, z)
    kind = lifetime.kind
    if kind == ABSOLUTE:
        assert lifetime.deadline is not None
        expire_date = lifetime.deadline
        if lifetime.seconds is not None:  # an idle limit too: the earlier one wins
            expire_date = min(expire_date, _add(now, lifetime.seconds))
        delta = expire_date - now
        age: int = delta.days * 86400 + delta.seconds  # floor, as Django
    elif kind == IDLE:
        assert lifetime.seconds is not None
        expire_date = _add(now, lifetime.seconds)
        age = int(lifetime.seconds)
    else:
        expire_date = _add(now, settings.cookie_age)
        age = int(settings.cookie_age)
    # Whatever the lifetime says, nothing reaches further than MAX_LIFETIME from now.
    furthest = _add(now, MAX_LIFETIME)
    if expire_date > furthest:
        expire_date = furthest
    age = max(min(age, MAX_LIFETIME), -MAX_LIFETIME)
    if ends_with_browser(kind, settings):
        return Expiry(expire_date, None, None, lifetime)
    return Expiry(expire_date, age, _add(now.astimezone(UTC), age), lifetime)  # the cookie: a real instant


def ends_with_browser(kind: str, settings: PolicySettings) -> bool:
    """A session of lifetime ``kind`` gets a browser-session cookie (no Max-Age) under ``settings``."""
    return kind == BROWSER_CLOSE or (kind == DEFAULT and settings.expire_at_browser_close)


def format_seconds(seconds: float) -> str:
    """``90`` -> ``1m30s``; ``86400`` -> ``1d``."""
    seconds = int(seconds)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    return sign + "".join(parts[:2])
