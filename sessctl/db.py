"""The database connection: URLs, the engine, and database errors in plain words.

Nothing here knows the session table's rows; :mod:`sessctl.store` and
:mod:`sessctl.fastpath` build on it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from .errors import Conflict, ConfigError, DatabaseUnavailable, StoreError, TableMissing
from .redact import redact_url, scrub, url_secrets


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


def parse_url(url: str) -> Any:
    """SQLAlchemy's URL object for ``url``, or a ConfigError that says what is wrong (never shows a secret)."""
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        hint = "expected e.g. sqlite:///sessions.db or postgresql://user@host/db"
        if "[" in url and "]" not in url.partition("://")[2].split("/")[0]:
            hint = "an IPv6 host goes in brackets: postgresql://user@[::1]:5432/db"
        elif isinstance(exc, ValueError):
            hint = "the port must be a number"
        raise ConfigError(f"database URL {redact_url(url)!r} is not valid ({hint})") from None
    if parsed.host and "@" in parsed.host:
        raise ConfigError(
            f"database URL {redact_url(url)!r} is not valid: the password holds a raw '@'; "
            "percent-encode it (@ is %40, / is %2F, : is %3A)"
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigError(f"database URL {redact_url(url)!r} is not valid: port {parsed.port} is out of range")
    return parsed


def make_engine(url: str, *, timeout: float | None = None) -> Engine:
    """The engine for ``url``; every call on its connections is bounded by ``timeout`` seconds.

    See :mod:`sessctl.lifecycle` for what the bound covers, and for the host settings, fork
    safety and dead-connection checks installed on every connection.
    """
    from . import lifecycle

    timeout = lifecycle.APP_TIMEOUT if timeout is None else timeout
    url = normalize_url(url)
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb") and not parsed.database:
        raise ConfigError(f"database URL {redact_url(url)!r} names no database: add it, as in mysql://user@host/DBNAME")
    kwargs: dict[str, Any] = {"connect_args": lifecycle.connect_args(backend, timeout)}
    if backend in ("mysql", "mariadb"):
        kwargs["connect_args"]["charset"] = "utf8mb4"
        # Purge and CAS never need gap locks; REPEATABLE READ would take them.
        kwargs["isolation_level"] = "READ COMMITTED"
    try:
        import warnings

        with warnings.catch_warnings():
            # A URL option the dialect ignores (SQLite's ?mode=ro without uri=true) is an error: an
            # ignored option is a setting the user believes in that does not hold.
            warnings.simplefilter("error", sa_exc.SAWarning)
            try:
                engine = create_engine(parsed, **kwargs)
            except sa_exc.SAWarning as warning:
                raise ConfigError(
                    f"database URL {redact_url(url)!r} is not usable: {str(warning).split(' (Background')[0]}"
                ) from None
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        extra = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}.get(backend, backend)
        raise ConfigError(
            f"the driver for {backend} is not installed ({exc.name}); install it with: pip install 'sessctl[{extra}]'"
        ) from None
    except (sa_exc.ArgumentError, TypeError, ValueError) as exc:
        raise ConfigError(f"database URL {redact_url(url)!r} is not usable: {scrub(str(exc), url_secrets(url))}") from None
    lifecycle.install(engine, backend, timeout)
    _checked_connect(engine, url, backend)
    if backend == "postgresql":
        from . import pgtypes

        @event.listens_for(engine, "connect")
        def _pg_ranges(dbapi_conn, _record):  # pragma: no branch
            pgtypes.install(dbapi_conn)  # infinity, year 10000 in the session's zone: read, never raise

    if backend == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no branch
            cur = dbapi_conn.cursor()
            # NORMAL is durable in WAL mode and costs far less than FULL.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def _checked_connect(engine: Engine, url: str, backend: str) -> None:
    """Connect through the driver, with two guards.

    * A URL option the driver does not take (``?bogus=1`` on PyMySQL) is a TypeError from deep
      in the driver: it becomes a ConfigError naming the URL's options.
    * A SQLite database file is created readable by its owner only (0600, whatever the umask),
      before SQLite opens it; SQLite gives its -wal, -shm and -journal files the same mode.
    """
    path = sqlite_path(url) if backend == "sqlite" else None

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):  # pragma: no branch
        if path is not None:
            _create_private(path)
        try:
            from .lifecycle import driver_connect

            return driver_connect(dialect, cargs, cparams)
        except TypeError as exc:
            import re

            named = re.search(r"argument '([^']+)'", str(exc))
            option = f"the option {named.group(1)!r}" if named else "one of its options"
            raise ConfigError(
                f"database URL {redact_url(url)!r} is not usable: the {dialect.driver} driver does not take "
                f"{scrub(option, url_secrets(url))}; check the part after '?'"
            ) from None


def _create_private(path: str) -> None:
    import os

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return  # it exists (or cannot be made: SQLite will say why)
    os.close(fd)


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL; None for another database, memory or a ``file:`` URI."""
    parsed = parse_url(normalize_url(url))
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
    msg = scrub(msg, url_secrets(url))
    low = msg.lower()
    code = getattr(orig, "args", [None])[0] if dialect in ("mysql", "mariadb") else None
    sqlstate = getattr(orig, "sqlstate", None)
    if "no such table" in low or sqlstate == "42P01" or code == 1146:
        return table_missing(table, url)
    if dialect == "sqlite" and "because it is a view" in low:
        return StoreError(f"{table!r} is a view, which sessctl reads but cannot write ({msg}); "
                          "point --table at the session table itself")
    if dialect == "sqlite" and "no such column: rowid" in low:
        return StoreError(f"the table {table!r} is a WITHOUT ROWID table, which purge cannot walk ({msg}); "
                          "Django's session table has a rowid: create it with `sessctl init`")
    if "no such column" in low or sqlstate == "42703" or code == 1054:
        return StoreError(f"the table {table!r} lacks a column of Django's session table ({msg}); "
                          "check --table, or create it with `sessctl init`")
    if "readonly" in low or "read-only" in low:
        return StoreError(f"the database is read-only ({msg}); check the file's permissions")
    if "disk is full" in low or "no space" in low:
        return StoreError(f"the disk is full ({msg}); free space and re-run")
    if "invalid connection option" in low or "invalid dsn" in low or "invalid integer value" in low:
        return StoreError(f"the database URL is not usable ({msg}); check the part after '?' in --db / SESSCTL_DB")
    if is_deadlock(orig):
        return Conflict(f"the database chose this statement as a deadlock victim ({msg}); try again")
    if dialect == "sqlite" and "unable to open database file" in low:
        hint = _sqlite_folder_hint(url)
        if hint:
            return StoreError(f"cannot open the SQLite database {sqlite_path(url)} ({msg}): {hint}")
    if isinstance(code, int) and 1000 <= code < 2000 and code not in _MYSQL_UNREACHABLE and not exc.connection_invalidated:
        # PyMySQL calls every server error from 1000 up "operational": an unknown column, a bad
        # value... The server answered: it is not out of reach.
        return StoreError(f"database error: {msg}")
    if isinstance(exc, sa_exc.OperationalError) or exc.connection_invalidated:
        if "locked" in low:
            return StoreError(f"the database is locked by another writer ({msg}); try again")
        return DatabaseUnavailable(f"cannot reach the database {redact_url(url)}: {msg}")
    return StoreError(f"database error: {msg}")


# MariaDB/MySQL server errors that do mean the database cannot be used from here: too many
# connections, access denied, unknown database, shutting down, network errors, killed, idle
# timeout, and a statement cut off by the time bound (max_statement_time: "did not answer in time").
_MYSQL_UNREACHABLE = frozenset({1040, 1044, 1045, 1049, 1053, 1129, 1130, 1152, 1153, 1154, 1155, 1156,
                                1157, 1158, 1159, 1160, 1161, 1203, 1226, 1927, 1931, 1969})


def _sqlite_folder_hint(url: str) -> str | None:
    """Why SQLite could not open an existing file it may read: its folder is not writable, and a
    write needs a journal file there (the rollback journal, or WAL's -wal/-shm)."""
    path = sqlite_path(url)
    if not path or not os.path.isfile(path):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.access(folder, os.W_OK) and _folder_writable(folder):
        return None
    return (
        f"the file and its folder must be readable and writable, and the folder {folder} is not "
        "writable by this user (SQLite creates its journal, -journal or -wal and -shm, beside the "
        "database); run as the app's user, or make the folder writable"
    )


def _folder_writable(folder: str) -> bool:
    """os.access says yes to root even on an immutable folder: try it."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def is_deadlock(exc: BaseException | None) -> bool:
    """A deadlock or lock-wait timeout: the statement's transaction was rolled back, retrying is safe."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) in ("40P01", "40001", "55P03"):
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in (1213, 1205)


@contextlib.contextmanager
def then(restore: Callable[[], Any]) -> Iterator[None]:
    """Run ``restore()`` (a session setting put back) after the block, whatever happens in it.

    If the block fails, ``restore()`` is still tried, but its own failure never takes the place of
    the block's: Ctrl-C mid-statement leaves the connection invalid, and the restore's
    "can't reconnect until invalid transaction is rolled back" would hide the interrupt.
    """
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            restore()
        raise
    restore()
