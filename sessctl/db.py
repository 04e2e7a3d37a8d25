"""The database connection: URLs, the engine, and database errors in plain words.

Nothing here knows the session table's rows; :mod:`sessctl.store` and
:mod:`sessctl.fastpath` build on it.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from .errors import Conflict, ConfigError, DatabaseUnavailable, StoreError, TableMissing


def normalize_url(url: str) -> str:
    """Pick our drivers for bare scheme names: psycopg 3 and PyMySQL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    mapped = {
        "postgres": "postgresql+psycopg",
        "postgresql": "postgresql+psycopg",
        "mysql": "mysql+pymysql",
        "mariadb": "mariadb+pymysql",
    }.get(scheme.lower())
    return f"{mapped}://{rest}" if mapped else url


def redact_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def make_engine(url: str, *, timeout: float = 5.0) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise ConfigError(
            f"database URL {redact_url(url)!r} is not valid (expected e.g. sqlite:///sessions.db)"
        ) from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": 10.0}
    elif backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": max(1, int(timeout))}
    elif backend in ("mysql", "mariadb"):
        kwargs["connect_args"] = {"connect_timeout": max(1, int(timeout)), "charset": "utf8mb4"}
        # Purge and CAS never need gap locks; REPEATABLE READ would take them.
        kwargs["isolation_level"] = "READ COMMITTED"
    try:
        engine = create_engine(parsed, **kwargs)
    except ModuleNotFoundError as exc:
        extra = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}.get(backend, backend)
        raise ConfigError(
            f"the driver for {backend} is not installed ({exc.name}); install it with: pip install 'sessctl[{extra}]'"
        ) from None
    except sa_exc.ArgumentError as exc:
        raise ConfigError(f"database URL is not usable: {exc}") from None
    if backend == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no branch
            cur = dbapi_conn.cursor()
            # NORMAL is durable in WAL mode and costs far less than FULL.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL; None for another database, memory or a ``file:`` URI."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return db


def file_missing(path: str) -> TableMissing:
    """A SQLite file that is not there; a relative path (``sqlite:///`` and three slashes) is the
    classic slip for an absolute one, so say where it was looked for and how to write the other."""
    if os.path.isabs(path):
        return TableMissing(f"database file {path!r} does not exist; create it with: sessctl init")
    return TableMissing(
        f"database file {os.path.abspath(path)!r} does not exist: sqlite:///{path} (three slashes) is a path "
        f"relative to the current folder; for /{path} write sqlite:////{path} (four slashes), "
        "or create a new database here with: sessctl init"
    )


def table_missing(table: str, url: str) -> TableMissing:
    return TableMissing(f"table {table!r} does not exist in {redact_url(url)}; create it with: sessctl init")


def translate(exc: sa_exc.DBAPIError, dialect: str, url: str, table: str) -> StoreError:
    """The :class:`StoreError` that says in one line what went wrong and what to do."""
    orig = exc.orig
    msg = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    low = msg.lower()
    code = getattr(orig, "args", [None])[0] if dialect in ("mysql", "mariadb") else None
    sqlstate = getattr(orig, "sqlstate", None)
    if "no such table" in low or sqlstate == "42P01" or code == 1146:
        return table_missing(table, url)
    if "readonly" in low or "read-only" in low:
        return StoreError(f"the database is read-only ({msg}); check the file's permissions")
    if "disk is full" in low or "no space" in low:
        return StoreError(f"the disk is full ({msg}); free space and re-run")
    if is_deadlock(orig):
        return Conflict(f"the database chose this statement as a deadlock victim ({msg}); try again")
    if isinstance(exc, sa_exc.OperationalError) or exc.connection_invalidated:
        if "locked" in low:
            return StoreError(f"the database is locked by another writer ({msg}); try again")
        return DatabaseUnavailable(f"cannot reach the database {redact_url(url)}: {msg}")
    return StoreError(f"database error: {msg}")


def is_deadlock(exc: BaseException | None) -> bool:
    """A deadlock or lock-wait timeout: the statement's transaction was rolled back, retrying is safe."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) in ("40P01", "40001", "55P03"):
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in (1213, 1205)
