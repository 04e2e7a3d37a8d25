"""Naive times: read and written as the Django project that owns the table does.

``Settings.time_zone`` None (the default) is Django's ``USE_TZ = True``: naive values in the
table (SQLite, MariaDB) are UTC and a deadline is written aware (``...+00:00``). A zone name
(``"UTC"`` included) is ``USE_TZ = False`` with that ``TIME_ZONE``, as Django then behaves:

- its clock is the zone's wall time, and durations are added to the wall time (2 hours from
  00:30 on the night clocks go back is 02:30, three real hours later);
- SQLite and MariaDB hold that wall time and compare wall times;
- PostgreSQL keeps instants (``timestamptz``): Django sends the wall time and the server reads
  it in the connection's zone, taking the later instant when the wall time is ambiguous (the
  repeated hour) or missing (the skipped hour);
- a deadline in ``_session_expiry`` is the naive ISO wall time (an aware one makes Django
  raise TypeError on every request that saves the session).

Values in that mode are aware datetimes whose tzinfo is the zone, so Python compares and
subtracts them in wall time, exactly as Django's naive values. Nothing here depends on the
host's or the server's own time zone.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from typing import Any

UTC = timezone.utc
# The first and last instants a datetime holds in UTC: where a value outside them lands.
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def shift(moment: datetime, tz: tzinfo) -> datetime:
    """``moment.astimezone(tz)``, except that a moment that would fall outside the range of
    datetime there (9999-12-31T23:00-05:00 is year 10000 in UTC) becomes the nearest bound
    (in UTC, the bounds' own zone) instead of raising OverflowError."""
    try:
        return moment.astimezone(tz)
    except OverflowError:
        return EARLIEST if moment.year < 5000 else LATEST


class UnknownTimeZone(ValueError):
    pass


@lru_cache(maxsize=16)
def zone(name: str | None) -> Zone:
    """The Zone for ``Settings.time_zone`` (None: aware UTC, as USE_TZ = True)."""
    return Zone(name)


class Zone:
    """Conversions between Python datetimes and a table's stored values, for one setting."""

    __slots__ = ("name", "naive", "tz")

    def __init__(self, name: str | None):
        self.name = name
        self.naive = name is not None  # deadlines are written naive (USE_TZ = False)
        self.tz: tzinfo = UTC if name is None else _zoneinfo(name)

    def __repr__(self) -> str:
        return f"Zone({self.name!r})"

    @property
    def label(self) -> str:
        """How output names the zone of naive values."""
        return "UTC" if self.name is None else self.name

    # -- the clock ------------------------------------------------------------

    def now(self, moment: datetime, dialect: str = "") -> datetime:
        """The clock's reading as the app reads it: aware UTC, or wall time in the zone."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if not self.naive:
            return moment.astimezone(UTC)
        wall = moment.astimezone(self.tz)
        if dialect == "postgresql":  # Django's naive now goes through the server's cast
            return self.postgres_instant(wall.replace(tzinfo=None)).astimezone(self.tz)
        return wall

    def local(self, moment: datetime) -> datetime:
        """A datetime in this zone (a naive one is taken to be in it already)."""
        if moment.tzinfo is None:
            return moment.replace(tzinfo=self.tz)
        return shift(moment, self.tz)

    def wall(self, moment: datetime) -> datetime:
        """The naive wall time of an aware moment in this zone; the first or last one there is
        when the moment is outside the zone's range (year 1 in UTC is year 0 in New York)."""
        local = shift(moment, self.tz)
        if local.tzinfo is not self.tz:  # shift() clamped it: no wall time here holds it
            return datetime.min if local.year < 5000 else datetime.max
        return local.replace(tzinfo=None)

    # -- the table --------------------------------------------------------------

    def bind(self, moment: datetime, dialect: str) -> Any:
        """The value to send for an ``expire_date`` (a column value or a cut-off)."""
        if moment.tzinfo is None:
            raise ValueError("expire_date must be an aware datetime")
        if not self.naive:
            utc = moment.astimezone(UTC)
            if dialect == "sqlite":
                return str(utc.replace(tzinfo=None))  # Django's text: fraction only when non-zero
            if dialect in ("mysql", "mariadb"):
                return utc.replace(tzinfo=None)
            return utc
        wall = self.wall(moment)
        if dialect == "sqlite":
            return str(wall)
        if dialect in ("mysql", "mariadb"):
            return wall
        return self.postgres_instant(wall)

    def result(self, value: Any, dialect: str = "") -> datetime | None:
        """A stored ``expire_date`` as an aware datetime."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is not None:  # PostgreSQL: an instant, compared as one
            return value.astimezone(UTC)
        return value.replace(tzinfo=self.tz)

    def postgres_instant(self, wall: datetime) -> datetime:
        """The instant PostgreSQL gives a naive wall time in this zone: of the two readings
        of an ambiguous or missing wall time, the later one (verified on PostgreSQL 15)."""
        first, second = wall.replace(tzinfo=self.tz, fold=0), wall.replace(tzinfo=self.tz, fold=1)
        return max(shift(first, UTC), shift(second, UTC))

    # -- deadlines in the session data -------------------------------------------

    def deadline_text(self, deadline: datetime) -> str:
        """The ``_session_expiry`` value for a deadline, in the form the app writes."""
        if self.naive:
            return self.wall(deadline if deadline.tzinfo else deadline.replace(tzinfo=self.tz)).isoformat()
        return deadline.astimezone(UTC).isoformat() if deadline.tzinfo else deadline.isoformat()

    def parse_deadline(self, text: str) -> datetime:
        """A ``_session_expiry`` string (naive: in this zone); ValueError if not ISO-8601."""
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=self.tz)
        return shift(moment, self.tz if self.naive else UTC)


def _zoneinfo(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise UnknownTimeZone(
            f"unknown time zone {name!r}: give an IANA name such as America/New_York or UTC"
        ) from None
