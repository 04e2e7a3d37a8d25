"""A Django project's own settings, read the way ``manage.py`` reads them.

``read(module)`` imports Django and the settings module (the current directory first on
``sys.path``) and returns sessctl settings: the database (``DATABASES["default"]``, with its
OPTIONS), the keys, the ``SESSION_*`` settings, the zone of naive times (``USE_TZ`` /
``TIME_ZONE``) and the table of the session engine's model. It refuses, with the reason,
what sessctl cannot serve. Only this path imports Django; sessctl never depends on it.

``cache_for(module)`` gives, for a ``cached_db`` project, the object that drops Django's
cache entry of a session through Django's own cache API (any cache backend).
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import quote, urlencode

from .errors import ConfigError

BUILTIN = "django.contrib.sessions.backends."
REFUSED = {
    BUILTIN + "cache": "keeps sessions only in Django's cache, not in a database table",
    BUILTIN + "signed_cookies": "keeps each session in the browser's cookie; there is no server-side row to list, "
    "change or end",
    BUILTIN + "file": "keeps sessions in files under SESSION_FILE_PATH, not in a database table",
}
JSON_SERIALIZERS = {"django.contrib.sessions.serializers.JSONSerializer", "django.core.signing.JSONSerializer"}
POSTGRES = ("django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis",
            "django.db.backends.postgresql_psycopg2")
MYSQL = ("django.db.backends.mysql", "django.contrib.gis.db.backends.mysql")
SQLITE = ("django.db.backends.sqlite3", "django.contrib.gis.db.backends.spatialite")
# OPTIONS Django itself acts on; the rest go to the driver.
DJANGO_ONLY_OPTIONS = {"isolation_level", "server_side_binding", "assume_role", "pool", "cursor_factory",
                       "transaction_mode", "init_command_sql"}
MISSING_DJANGO = (
    "--django-settings needs Django importable from sessctl's own Python ({python}); "
    "install sessctl into the project's virtualenv (pip install sessctl there)"
)

_read: dict[str, dict[str, Any]] = {}


class Project:
    """What sessctl needs to know of the session engine beyond Settings."""

    def __init__(self, engine: str, cached: bool, cache_alias: str | None, cache_prefix: str | None):
        self.engine, self.cached, self.cache_alias, self.cache_prefix = engine, cached, cache_alias, cache_prefix


def read(module: str) -> dict[str, Any]:
    """sessctl Settings values from the Django settings ``module`` (cached per process)."""
    if module not in _read:
        _read[module] = _read_settings(module)
    return dict(_read[module]["values"])


def project(module: str) -> Project:
    read(module)
    return _read[module]["project"]


def _django_settings(module: str):
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as manage.py has it
    try:
        import django
        from django.conf import settings
    except ImportError:
        raise ConfigError(MISSING_DJANGO.format(python=sys.executable)) from None
    if settings.configured and getattr(settings, "SETTINGS_MODULE", None) not in (None, module):
        raise ConfigError(f"Django settings were already loaded from {settings.SETTINGS_MODULE!r} in this process")
    previous_tz = os.environ.get("TZ")
    os.environ["DJANGO_SETTINGS_MODULE"] = module
    try:
        settings.SECRET_KEY  # noqa: B018 -- imports the module
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise ConfigError(
                f"cannot import the Django settings module {module!r} from {os.getcwd()}: no module named "
                f"{exc.name!r}; run sessctl in the folder that holds manage.py, or put the project on PYTHONPATH"
            ) from None
        raise ConfigError(f"the Django settings module {module!r} failed to import: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- any error in the project's own code, one line
        raise ConfigError(f"the Django settings module {module!r} failed to load: {type(exc).__name__}: {exc}") from None
    finally:
        _restore_tz(previous_tz)  # Django sets TZ to TIME_ZONE; sessctl never reads the host's zone
    return django, settings


def _restore_tz(previous: str | None) -> None:
    import time

    if previous is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = previous
    if hasattr(time, "tzset"):
        time.tzset()


def _read_settings(module: str) -> dict[str, Any]:
    django, s = _django_settings(module)
    where = f"Django settings {module!r}"
    engine = s.SESSION_ENGINE
    if engine in REFUSED:
        raise ConfigError(f"{where}: SESSION_ENGINE {engine!r} {REFUSED[engine]}; sessctl serves the db and "
                          "cached_db engines (and subclasses of them)")
    serializer = s.SESSION_SERIALIZER if isinstance(s.SESSION_SERIALIZER, str) else repr(s.SESSION_SERIALIZER)
    if serializer not in JSON_SERIALIZERS:
        raise ConfigError(f"{where}: SESSION_SERIALIZER is {serializer!r}; sessctl reads and writes JSON "
                          "sessions only (Django's JSONSerializer), never pickle")
    table, proj = _engine_table(django, s, engine, where)
    default = (s.DATABASES or {}).get("default")
    if not default:
        raise ConfigError(f"{where}: DATABASES has no 'default' database")
    if s.USE_TZ:
        time_zone = None
        if default.get("TIME_ZONE") and default.get("ENGINE") not in POSTGRES:
            raise ConfigError(f"{where}: DATABASES['default']['TIME_ZONE'] with USE_TZ = True (naive times in "
                              "a zone of their own) is not supported by sessctl")
    else:
        if not s.TIME_ZONE:
            raise ConfigError(f"{where}: USE_TZ = False with TIME_ZONE = None (the host's zone) is not supported; "
                              "set TIME_ZONE to the zone the project runs in")
        time_zone = s.TIME_ZONE
    values = {
        "database_url": database_url(default, where),
        "table": table,
        "secret_key": s.SECRET_KEY or None,
        "secret_key_fallbacks": tuple(str(k) for k in getattr(s, "SECRET_KEY_FALLBACKS", ()) or ()),
        "cookie_age": s.SESSION_COOKIE_AGE,
        "cookie_name": s.SESSION_COOKIE_NAME,
        "cookie_domain": s.SESSION_COOKIE_DOMAIN,
        "cookie_path": s.SESSION_COOKIE_PATH,
        "cookie_secure": bool(s.SESSION_COOKIE_SECURE),
        "cookie_httponly": bool(s.SESSION_COOKIE_HTTPONLY),
        "cookie_samesite": s.SESSION_COOKIE_SAMESITE or None,
        "expire_at_browser_close": bool(s.SESSION_EXPIRE_AT_BROWSER_CLOSE),
        "save_every_request": bool(s.SESSION_SAVE_EVERY_REQUEST),
        "time_zone": time_zone,
    }
    return {"values": values, "project": proj}


def _engine_table(django, s, engine: str, where: str) -> tuple[str, Project]:
    alias = getattr(s, "SESSION_CACHE_ALIAS", "default")
    from django.contrib.sessions.backends.cached_db import KEY_PREFIX as prefix

    if engine == BUILTIN + "db":
        return "django_session", Project(engine, False, None, None)
    if engine == BUILTIN + "cached_db":
        return "django_session", Project(engine, True, alias, prefix)
    # A project's own engine: its model names the table (importing it needs the app registry).
    from importlib import import_module

    try:
        django.setup()
        store = import_module(engine).SessionStore
        from django.contrib.sessions.backends.cached_db import SessionStore as CachedDb
        from django.contrib.sessions.backends.db import SessionStore as Db
    except Exception as exc:  # noqa: BLE001 -- the project's code
        raise ConfigError(f"{where}: SESSION_ENGINE {engine!r} failed to import: {type(exc).__name__}: {exc}") from None
    if not (isinstance(store, type) and issubclass(store, Db)):
        raise ConfigError(f"{where}: SESSION_ENGINE {engine!r} does not keep sessions in a database table "
                          "(its SessionStore is not a subclass of Django's db engine)")
    if store.__qualname__ != "SessionStore":
        raise ConfigError(f"{where}: SESSION_ENGINE {engine!r} signs with the salt of a class named "
                          f"{store.__qualname__!r}; sessctl signs as django.contrib.sessions.SessionStore")
    cached = issubclass(store, CachedDb)
    table = store.get_model_class()._meta.db_table
    return table, Project(engine, cached, alias if cached else None,
                          getattr(store, "cache_key_prefix", prefix) if cached else None)


def _postgres_scheme() -> str:
    from importlib.util import find_spec

    return "postgresql+psycopg" if find_spec("psycopg") or not find_spec("psycopg2") else "postgresql+psycopg2"


def database_url(db: dict[str, Any], where: str = "Django settings") -> str:
    """A SQLAlchemy URL for a Django ``DATABASES`` entry (the password URL-quoted, never shown)."""
    engine = db.get("ENGINE", "")
    options = dict(db.get("OPTIONS") or {})
    if engine in SQLITE:
        name = str(db.get("NAME") or "")
        if not name or name == ":memory:":
            raise ConfigError(f"{where}: an in-memory SQLite database cannot be shared with sessctl")
        return f"sqlite:///{os.path.abspath(name)}"
    if engine in POSTGRES:
        scheme, query = _postgres_scheme(), {}
        for key, value in options.items():
            if key not in DJANGO_ONLY_OPTIONS and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                query[key] = value
    elif engine in MYSQL:
        scheme, query = "mysql+pymysql", {}
        for key, value in options.items():
            if key == "ssl" and isinstance(value, dict):
                query.update({f"ssl_{k}": v for k, v in value.items() if isinstance(v, (str, int))})
            elif key not in DJANGO_ONLY_OPTIONS and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                query[key] = value
    else:
        raise ConfigError(f"{where}: DATABASES['default'] ENGINE {engine!r} is not one sessctl can open "
                          "(SQLite, PostgreSQL and MySQL/MariaDB are)")
    user, password = str(db.get("USER") or ""), str(db.get("PASSWORD") or "")
    host, port = str(db.get("HOST") or ""), str(db.get("PORT") or "")
    if host.startswith("/"):  # a Unix socket folder (PostgreSQL) or file (MySQL)
        query["host" if engine in POSTGRES else "unix_socket"] = host
        host = ""
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    netloc = (auth + "@" if auth else "") + host + (f":{port}" if port and host else "")
    url = f"{scheme}://{netloc}/{quote(str(db.get('NAME') or ''), safe='')}"
    if query:
        url += "?" + urlencode(sorted(query.items()))
    return url


class DjangoCache:
    """Django's cache entries of sessions, dropped through Django's own cache API."""

    def __init__(self, module: str):
        proj = project(module)
        from django.core.cache import caches

        self.cache = caches[proj.cache_alias]
        self.prefix = proj.cache_prefix

    def forget(self, keys) -> int:
        """Drop the cache entries of ``keys`` (an iterable); how many keys were given."""
        batch: list[str] = []
        count = 0
        for key in keys:
            batch.append(self.prefix + key)
            count += 1
            if len(batch) >= 500:
                self.cache.delete_many(batch)
                batch = []
        if batch:
            self.cache.delete_many(batch)
        return count


def cache_for(module: str | None) -> DjangoCache | None:
    """The cache to keep coherent, for a cached_db project; else None."""
    if not module or not project(module).cached:
        return None
    return DjangoCache(module)
