"""The command line's context object, and the one place runtime errors become `Error: ...` lines."""

from __future__ import annotations

import logging
import os
import sys
from functools import cached_property

import click

# SQLAlchemy logs some failures itself (a pool that cannot roll back a connection the
# database dropped logs "Exception during reset" with a traceback). Python's last-resort
# handler would print that on stderr next to our one `Error: ...` line: without --debug,
# the library's own log records go nowhere (the error still reaches the user, once).
_QUIET_LIBRARY_LOGS = logging.NullHandler()
# Likewise a driver whose connection died mid-query may fail again when the interpreter
# finalises its cursor (PyMySQL's SSCursor/MySQLResult.__del__ read from the closed socket):
# Python prints that as "Exception ignored in ..." with a traceback, after our error line.
# Only that: errors (never warnings, so leaks still show) raised in PyMySQL's finalizers.
_quiet = {"drivers": True, "hooked": False}


def _quiet_driver_finalizers(quiet: bool) -> None:
    _quiet["drivers"] = quiet
    if _quiet["hooked"]:
        return
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        where = unraisable.object
        module = getattr(where, "__module__", None) or type(where).__module__ or ""
        noise = (
            module.split(".")[0] == "pymysql"
            and unraisable.exc_type is not None
            and not issubclass(unraisable.exc_type, Warning)
            and (issubclass(unraisable.exc_type, (AttributeError, OSError))
                 or unraisable.exc_type.__module__.startswith("pymysql"))
        )
        if noise and _quiet["drivers"]:
            return  # from a connection that is already gone; the error was reported once
        previous(unraisable)

    sys.unraisablehook = hook
    _quiet["hooked"] = True

SECRET_HINT = (
    "set SESSCTL_SECRET_KEY (or SESSCTL_SECRET_KEY_FILE, --secret-key-file) to the app's secret key"
)


class App:
    """Built by the root group from the global options; opens the database lazily."""

    def __init__(self, ctx: click.Context, *, db, table, secret_key_file, config, debug, quiet,
                 time_zone=None, django_settings=None, app=None, timeout=None):
        self.ctx = ctx
        self.options = {"database_url": db, "table": table, "time_zone": time_zone,
                        "django_settings": django_settings, "app": app, "timeout": timeout}
        self.secret_key_file = secret_key_file
        self.config = config
        self.debug = debug
        self.quiet = quiet
        self._store = None
        library = logging.getLogger("sqlalchemy")
        if debug:
            library.removeHandler(_QUIET_LIBRARY_LOGS)
        else:
            library.addHandler(_QUIET_LIBRARY_LOGS)
        _quiet_driver_finalizers(not debug)

    @property
    def database_url(self) -> str | None:
        """The database URL in use, if the settings were loaded (never loads them)."""
        settings = self.__dict__.get("settings")
        return None if settings is None else settings.database_url

    @cached_property
    def settings(self):
        """The settings, without reading a secret key file: commands that need no key never fail on one.

        :meth:`codec` reads the key (and from then on these are the settings with it).
        """
        return self._load(secrets=False)

    def _load(self, *, secrets: bool):
        from sessctl.config import load_reporting

        settings, conflicts = load_reporting(
            config=self.config, secret_key_file=self.secret_key_file, secrets=secrets, **self.options
        )
        self._loaded = settings
        if not getattr(self, "_said_conflicts", False):
            self._said_conflicts = True
            for line in conflicts:  # the environment and a config file disagree: say which one is used
                self.say(line)
        if settings.timeout is None:  # cron and operators can wait longer than a request
            from sessctl.lifecycle import CLI_TIMEOUT

            settings = settings.replace(timeout=CLI_TIMEOUT)
        if self.debug:
            secret = "set" if settings.secret_key else ("not set" if secrets else "not read (not needed yet)")
            zone = "UTC, deadlines aware (USE_TZ = True)" if settings.time_zone is None else (
                f"{settings.time_zone} wall time (USE_TZ = False)")
            self.say(
                f"debug: database {redact(settings.database_url)}, table {settings.table}, "
                f"secret key {secret} ({len(settings.secret_key_fallbacks)} fallback(s)), "
                f"naive times {zone}, served by {settings.app}"
                + (f" (settings {settings.django_settings})" if settings.django_settings else ""),
                force=True,
            )
        return settings

    def secrets(self) -> list[str]:
        """Every secret this run could print by accident: URL credentials, keys, a key put where its file goes."""
        import os

        from sessctl.redact import settings_secrets, url_secrets

        found = settings_secrets(getattr(self, "_loaded", None))
        for url in (self.options.get("database_url"), os.environ.get("SESSCTL_DB")):
            found += url_secrets(url)
        for value in (self.secret_key_file, os.environ.get("SESSCTL_SECRET_KEY_FILE")):
            if value and not os.path.isfile(value):  # not a file's name: perhaps the key itself
                found.append(str(value))
        if os.environ.get("SESSCTL_SECRET_KEY"):
            found.append(os.environ["SESSCTL_SECRET_KEY"])
        found += [k.strip() for k in os.environ.get("SESSCTL_SECRET_KEY_FALLBACKS", "").split(",") if k.strip()]
        return found

    @property
    def django(self) -> bool:
        """True when a Django app serves the table (the command then says what Django does)."""
        return self.settings.app == "django"

    @cached_property
    def read_lifetime(self):
        """data -> the lifetime as JSON, as the serving app reads and enforces it."""
        from sessctl import tz
        from sessctl.reports import lifetime_reader

        return lifetime_reader(tz.zone(self.settings.time_zone), django=self.django)

    @cached_property
    def _django_cache(self):
        from sessctl import djangoconf

        return djangoconf.cache_for(self.settings.django_settings)

    def forget(self, keys) -> None:
        """Drop Django's cache entries of these sessions (cached_db projects; else nothing)."""
        if self._django_cache is not None:
            self._django_cache.forget(keys)

    @property
    def caches_sessions(self) -> bool:
        """True for a cached_db project: changes must reach Django's cache too."""
        return self._django_cache is not None

    def store(self, *, check: bool = True, timeout: float | None = None):
        """The session store, closed with the command; ``check`` first makes sure the table is there.

        ``timeout`` caps the settings' bound on each database call (``purge --max-seconds``).
        """
        if self._store is None:
            from sessctl.store import SessionStore

            settings = self.settings
            if timeout is not None and timeout < settings.timeout:
                settings = settings.replace(timeout=max(timeout, 0.5))
            self._store = SessionStore(settings)
            self.ctx.call_on_close(self._store.close)
        if check:
            self._store.check()
        return self._store

    def journal_hint(self, store) -> None:
        """On a SQLite file in rollback-journal mode (as Django makes it), say once that WAL would help, and how."""
        from sessctl.db import sqlite_path

        path = sqlite_path(store.settings.database_url)
        if path is None or store.dialect != "sqlite":
            return
        with store.connect() as conn:
            mode = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower()
        if mode != "wal":
            self.say(
                f"note: {path} uses SQLite's rollback journal ({mode}): each app write waits for every reader "
                "to finish, and long reads (list, stats) delay the app. WAL lets readers and a writer work at "
                f"once and stays set in the file; switch once, at a quiet moment, with: sqlite3 {path} "
                "'PRAGMA journal_mode=WAL'"
            )

    def codec(self, why: str | None = None):
        """The codec; without a secret key, None, or with ``why`` an error saying why it is needed."""
        from sessctl.codec import from_settings

        if not getattr(self, "_with_secrets", False):
            assert self._store is None, "ask for the codec before the store"
            self.__dict__["settings"] = self._load(secrets=True)
            self._with_secrets = True
        codec = from_settings(self.settings)
        if codec is None and why is not None:
            raise click.ClickException(f"no secret key configured, and {why}: {SECRET_HINT}")
        return codec

    def say(self, message: str, *, force: bool = False) -> None:
        """A message for the person at the terminal (stderr; silenced by --quiet)."""
        if force or not self.quiet:
            from sessctl.redact import scrub

            click.echo(scrub(message, self.secrets()), err=True)


def where(settings) -> str:
    """The table and database a command acts on, for its message: a SQLite file by its absolute path."""
    return f"table {settings.table!r} in {database_label(settings.database_url)}"


def database_label(url: str) -> str:
    """The database URL as messages and JSON show it: password hidden, a SQLite path made absolute."""
    from sessctl.db import sqlite_path

    try:
        path = sqlite_path(url)
    except Exception:
        path = None
    if path is not None and not os.path.isabs(path):
        return f"{url.split(':', 1)[0]}:///{os.path.abspath(path)}"
    return redact(url)


def redact(url: str) -> str:
    """The URL with its password (and any secret in its query) hidden."""
    from sessctl.redact import redact_url

    return redact_url(url)


def bad_signature(then: str) -> str:
    """The one wording of a signature no configured key matches; ``then`` says what else to do."""
    return (
        "signature does not match the secret key or any fallback key (wrong secret key?); "
        f"{SECRET_HINT}{then}"
    )


def error_message(exc: Exception, database_url: str | None = None) -> str:
    """One line for a failure from the runtime: what went wrong and what to do."""
    from sessctl import errors

    if isinstance(exc, (errors.ConfigError, errors.SessionTooLarge)):
        return str(exc)
    if isinstance(exc, errors.BadSignature):
        return "session data " + bad_signature(", and list retired keys in SESSCTL_SECRET_KEY_FALLBACKS")
    if isinstance(exc, errors.CodecError):
        return f"session data cannot be decoded: {exc}"
    if isinstance(exc, errors.SessionGone):
        return f"{exc}; see the live sessions with: sessctl list"
    if isinstance(exc, errors.DatabaseUnavailable):
        if database_url is not None and database_url.split(":", 1)[0].split("+", 1)[0].lower() == "sqlite":
            return (
                f"{exc}; check --db / SESSCTL_DB, that the file and its folder are readable and writable "
                "(SQLite makes -wal and -shm files beside it), and that the disk is not full"
            )
        return f"{exc}; check --db / SESSCTL_DB and that the database server is running"
    if isinstance(exc, errors.Conflict):
        return f"{exc}; try again"
    if isinstance(exc, errors.StoreError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}; re-run with --debug to see the traceback"


def current_secrets() -> list[str]:
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(App) if ctx is not None else None
    return app.secrets() if app is not None else []


def one_line(message: str, secrets: list[str] | None = None) -> str:
    """``message`` as one line with no secret in it (the only form an error is printed in)."""
    from sessctl.redact import scrub

    return scrub(" ".join(str(message).split()), current_secrets() if secrets is None else secrets)


def fail(exc: Exception, debug: bool, database_url: str | None = None) -> click.ClickException:
    ctx = click.get_current_context(silent=True)
    if database_url is None:
        database_url = getattr(ctx.find_object(App), "database_url", None) if ctx is not None else None
    secrets = current_secrets()
    if debug:
        import traceback

        from sessctl.redact import scrub

        sys.stderr.write(scrub("".join(traceback.format_exception(exc)), secrets))
    return click.ClickException(one_line(error_message(exc, database_url), secrets))
