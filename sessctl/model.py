"""The session table, exactly as Django's migration makes it on each backend.

``session_key`` varchar(40) primary key, ``session_data`` text (``longtext``
on MySQL/MariaDB), ``expire_date`` (SQLite: ``datetime`` holding naive UTC
text ``YYYY-MM-DD HH:MM:SS[.ffffff]``; PostgreSQL: ``timestamp with time
zone``; MySQL/MariaDB: ``datetime(6)`` naive UTC), and an index on
``expire_date`` named as Django names it. Every timestamp is bound from
Python in UTC (or, for a project with USE_TZ = False, in its ``time_zone``:
see sessctl.tz), so no result depends on the server's or host's time zone.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime, timezone
from functools import lru_cache
from typing import NamedTuple

from sqlalchemy import Column, MetaData, String, Table, Text
from sqlalchemy.types import TypeDecorator, UserDefinedType

from .tz import zone

UTC = timezone.utc

# -- keys and rows ------------------------------------------------------------------

KEY_CHARS = string.ascii_lowercase + string.digits
KEY_LENGTH = 32
MAX_KEY_ATTEMPTS = 10


def new_key() -> str:
    """32 characters of [a-z0-9] from ``secrets``: about 165 bits."""
    return "".join(secrets.choice(KEY_CHARS) for _ in range(KEY_LENGTH))


def valid_key(key: object) -> bool:
    """A key we would ever look up: 8 to 40 characters of [a-z0-9] (Django's alphabet)."""
    return isinstance(key, str) and 8 <= len(key) <= 40 and key.isascii() and key.isalnum() and key.islower()


def placeholder(dialect: object) -> str:
    """The driver's positional placeholder in driver SQL: ``?`` (sqlite3) or ``%s`` (psycopg, PyMySQL)."""
    return "?" if getattr(dialect, "paramstyle", None) == "qmark" else "%s"


class Row(NamedTuple):
    key: str
    session_data: str
    expire_date: datetime
    last_seen: datetime | None = None  # of the session's user, from the user index (load_row, where seen_on_load)

    def expired(self, now: datetime) -> bool:
        # Live means expire_date > now (Django's load); anything else is expired.
        return self.expire_date <= now



class _SQLiteDateTimeText(UserDefinedType):
    """SQLite's ``datetime`` column holding Django's text form, no driver conversion."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "datetime"


class UTCDateTime(TypeDecorator):
    """An aware datetime in Python, Django's representation in each database.

    ``time_zone`` is ``Settings.time_zone``: None stores UTC (USE_TZ = True); a zone name
    stores that zone's wall time where Django stores naive times (see sessctl.tz).
    """

    impl = String
    cache_ok = True

    def __init__(self, time_zone: str | None = None):
        super().__init__()
        self.time_zone = time_zone

    def load_dialect_impl(self, dialect):
        # Dialect packages are imported here, not at module level: each costs
        # start-up time that a SQLite-only command line should not pay.
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SQLiteDateTimeText())
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import TIMESTAMP

            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        from sqlalchemy import DateTime

        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return zone(self.time_zone).bind(value, dialect.name)

    def process_result_value(self, value, dialect):
        return read_datetime(value, self.time_zone, dialect.name)


# What an unreadable stored expire_date means: long expired (so purge and the runtime agree it is dead).
UNREADABLE_DATE = datetime(1, 1, 1, tzinfo=UTC)


def read_datetime(value: object, time_zone: str | None = None, dialect: str = "") -> datetime:
    """A stored ``expire_date`` as an aware datetime (UTC, or wall time in ``time_zone``: see
    sessctl.tz); one that cannot be read is long expired.

    A row written by hand or by another program (SQLite's column holds any text; MariaDB may
    hand back a zero date) must not break every query that reads the table.
    """
    try:
        if not isinstance(value, (str, datetime)):
            return UNREADABLE_DATE
        return zone(time_zone).result(value, dialect)
    except (ValueError, TypeError, OverflowError):
        return UNREADABLE_DATE


class SessionText(TypeDecorator):
    """``text``; ``longtext`` on MySQL/MariaDB, whose ``text`` caps a session at 64 KiB."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import LONGTEXT

            return dialect.type_descriptor(LONGTEXT())
        return dialect.type_descriptor(Text())


def session_table(
    name: str = "django_session", metadata: MetaData | None = None, time_zone: str | None = None
) -> Table:
    """The SQLAlchemy Core table for a session table called ``name``."""
    return Table(
        name,
        metadata if metadata is not None else MetaData(),
        Column("session_key", String(40), primary_key=True),
        Column("session_data", SessionText(), nullable=False),
        Column("expire_date", UTCDateTime(time_zone), nullable=False),
    )


@lru_cache(maxsize=32)
def cached_table(name: str, time_zone: str | None = None) -> Table:
    return session_table(name, time_zone=time_zone)


def django_index_name(table: str, columns: tuple[str, ...], suffix: str = "", max_length: int = 200) -> str:
    """The index name Django's schema editor gives (``django_session_expire_date_a5c62663``)."""
    digest = hashlib.md5(usedforsecurity=False)
    for part in (table, *columns):
        digest.update(part.encode())
    hash_part = digest.hexdigest()[:8] + suffix
    joined = "_".join(columns)
    name = f"{table}_{joined}_{hash_part}"
    if len(name) <= max_length:
        return name
    if len(hash_part) > max_length / 3:
        hash_part = hash_part[: max_length // 3]
    other = (max_length - len(hash_part)) // 2 - 1
    name = f"{table[:other]}_{joined[:other]}_{hash_part}"
    if name[0] == "_" or name[0].isdigit():
        name = "D" + name[:-1]
    return name


def create_statements(dialect_name: str, table: str, quote) -> list[str]:
    """The DDL Django's ``migrate`` runs for the session table on this backend."""
    t = quote(table)
    key, data, exp = quote("session_key"), quote("session_data"), quote("expire_date")
    if dialect_name == "postgresql":
        return [
            f"CREATE TABLE {t} ({key} varchar(40) NOT NULL PRIMARY KEY, {data} text NOT NULL, "
            f"{exp} timestamp with time zone NOT NULL)",
            f"CREATE INDEX {quote(django_index_name(table, ('expire_date',), max_length=63))} ON {t} ({exp})",
            f"CREATE INDEX {quote(django_index_name(table, ('session_key',), '_like', max_length=63))} "
            f"ON {t} ({key} varchar_pattern_ops)",
        ]
    if dialect_name in ("mysql", "mariadb"):
        return [
            f"CREATE TABLE {t} ({key} varchar(40) NOT NULL PRIMARY KEY, {data} longtext NOT NULL, "
            f"{exp} datetime(6) NOT NULL)",
            f"CREATE INDEX {quote(django_index_name(table, ('expire_date',), max_length=64))} ON {t} ({exp})",
        ]
    return [
        f"CREATE TABLE {t} ({key} varchar(40) NOT NULL PRIMARY KEY, {data} text NOT NULL, {exp} datetime NOT NULL)",
        f"CREATE INDEX {quote(django_index_name(table, ('expire_date',)))} ON {t} ({exp})",
    ]
