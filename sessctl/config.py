"""Settings: one immutable object that the app and the command line both build.

``Settings.load()`` reads the same sources as the ``sessctl`` command, in the
same order (argument > a TOML file named explicitly > environment > the Django
settings module, when one is named > a TOML file found through ``$SESSCTL_CONFIG``
or ``./sessctl.toml`` > default), so an app and its cron job share one
``sessctl.toml``::

    db = "postgresql://app@db.internal/app"   # or database_url
    table = "django_session"
    secret_key_file = "/etc/app/secret_key"   # first line: the key; more lines: fallbacks
    cookie_age = 1209600
    expire_at_browser_close = false
    time_zone = "Europe/Paris"                # only for a Django project with USE_TZ = False
    # django_settings = "mysite.settings"     # or read all of it from the project (sessctl.djangoconf)

Relative paths in the file (``secret_key_file``, a SQLite database) are taken
relative to the file's own folder, so cron and the app agree whatever their
working directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_DB = "sqlite:///sessions.db"
DEFAULT_CONFIG = "sessctl.toml"
ENV = {
    "database_url": "SESSCTL_DB",
    "table": "SESSCTL_TABLE",
    "secret_key_file": "SESSCTL_SECRET_KEY_FILE",
    "secret_key": "SESSCTL_SECRET_KEY",
    "secret_key_fallbacks": "SESSCTL_SECRET_KEY_FALLBACKS",
    "config": "SESSCTL_CONFIG",
    "time_zone": "SESSCTL_TIME_ZONE",
    "django_settings": "SESSCTL_DJANGO_SETTINGS",
    "app": "SESSCTL_APP",
    "timeout": "SESSCTL_TIMEOUT",
}
APPS = ("sessctl", "django")
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


@dataclass(frozen=True, repr=False)  # its own __repr__ below hides the secrets
class Settings:
    """Everything the runtime and the command line need to know.

    The cookie settings carry Django's names and defaults (without the
    ``SESSION_`` prefix). The secret key never appears in ``repr``.
    """

    database_url: str = DEFAULT_DB
    secret_key: str | None = field(default=None, repr=False)
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    table: str = "django_session"
    cookie_age: int = 1209600
    cookie_name: str = "sessionid"
    cookie_domain: str | None = None
    cookie_path: str = "/"
    cookie_secure: bool = False
    cookie_httponly: bool = True
    cookie_samesite: str | None = "Lax"
    expire_at_browser_close: bool = False
    save_every_request: bool = False
    # Sessions of a user, devices, the activity touch: see sessctl.users and sessctl.activity.
    user_key: str = "_auth_user_id"
    touch: bool = True
    touch_interval: float | None = None
    track_devices: bool = False
    trusted_proxies: tuple[str, ...] = ()
    truncate_ip: bool = False
    max_sessions_per_user: int | None = None
    on_max_sessions: str = "evict"
    # None: naive times are UTC and deadlines are written aware (Django's USE_TZ = True). A zone
    # name: Django's USE_TZ = False with that TIME_ZONE (naive wall times; see sessctl.tz).
    time_zone: str | None = None
    # Which app serves the table: sessctl's runtime, or Django (implied by django_settings).
    app: str = "sessctl"
    django_settings: str | None = None
    # Seconds any one database call may take (connect, statement, lock wait, the server's
    # answer); None: the caller's default (the app 5 s, the command line 60 s).
    timeout: float | None = None

    def __post_init__(self) -> None:
        from . import usersettings
        from .checks import normalised

        for name, value in normalised(self).items():
            object.__setattr__(self, name, value)
        for name in ("touch", "track_devices", "truncate_ip"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, not {getattr(self, name)!r}")
        usersettings.check(self)
        if self.time_zone is not None:
            from .tz import UnknownTimeZone, zone

            try:
                zone(str(self.time_zone))
            except UnknownTimeZone as exc:
                raise ConfigError(str(exc)) from None
        if self.app not in APPS:
            raise ConfigError(f"app must be sessctl or django, not {self.app!r}")
        if self.timeout is not None:
            t = self.timeout
            if isinstance(t, bool) or not isinstance(t, int | float) or not (0 < t <= 86400):
                raise ConfigError(f"timeout must be a number of seconds above 0 (at most 86400), not {t!r}")
            object.__setattr__(self, "timeout", float(t))

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr
        )
        secret = "set" if self.secret_key else "unset"
        return f"Settings({shown}, secret_key=<{secret}>)"

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def load(
        cls,
        config: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        secret_key_file: str | os.PathLike[str] | None = None,
        secrets: bool = True,
        **overrides: Any,
    ) -> Settings:
        """Build Settings from arguments > explicit ``config`` file > environment > the file named
        by ``$SESSCTL_CONFIG`` or ``./sessctl.toml`` > defaults.

        A file named here (as ``sessctl --config`` does) outranks the environment; one found
        through ``$SESSCTL_CONFIG`` or the current folder does not. Each setting that the
        environment and the file give differently is logged as one warning (logger
        ``sessctl.config``). Arguments that are None are treated as not given. Without
        ``secrets`` no secret key file is read (for work that needs no key).
        """
        settings, conflicts = load_reporting(
            cls, config, environ=environ, secret_key_file=secret_key_file, secrets=secrets, **overrides
        )
        for line in conflicts:
            logging.getLogger("sessctl.config").warning(line)
        return settings


_LABELS = {"database_url": "database", "table": "table", "secret_key": "secret key",
           "secret_key_fallbacks": "fallback keys"}


def load_reporting(
    cls: type[Settings] = Settings,
    config: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    secret_key_file: str | os.PathLike[str] | None = None,
    secrets: bool = True,
    **overrides: Any,
) -> tuple[Settings, list[str]]:
    """:meth:`Settings.load`, returning the conflict warnings instead of logging them."""
    env = os.environ if environ is None else environ
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in fields(cls)}
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")

    explicit = config is not None
    path = config or env.get(ENV["config"]) or None
    from_file = _read_file(path or DEFAULT_CONFIG, required=bool(path), secrets=secrets)
    from_env, env_names = _from_environment(
        env, secret=not secret_key_file and "secret_key" not in given, files=secrets
    )
    if secret_key_file and secrets:
        given = {**_read_secret_file(secret_key_file, "--secret-key-file"), **given}

    # A Django project's own settings (sessctl.djangoconf): below the environment and a file named
    # explicitly, above a file found on the way.
    module = given.get("django_settings") or from_env.get("django_settings") or from_file.get("django_settings")
    from_django: dict[str, Any] = {}
    if module:
        from .djangoconf import read

        from_django = {**read(str(module)), "django_settings": str(module), "app": "django"}
    if explicit:
        values = {**from_django, **from_env, **from_file}
    else:
        values = {**from_file, **from_django, **from_env}
    values.update(given)
    where = f"the config file {str(path or DEFAULT_CONFIG)!r}"
    conflicts = []
    for name, env_value in from_env.items():
        if name in from_file and name not in given and from_file[name] != env_value:
            if explicit:
                winner = "the config file (named explicitly, it outranks the environment)"
            else:
                winner = f"{env_names[name]} (the environment outranks a config file found through " \
                         f"{ENV['config']} or the current folder)"
            conflicts.append(f"warning: {_LABELS.get(name, name)}: {env_names[name]} and {where} differ; using {winner}")
    try:
        return cls(**values), conflicts
    except TypeError as exc:  # a wrong type in the file
        raise ConfigError(str(exc)) from None


def _from_environment(
    env: Mapping[str, str], *, secret: bool = True, files: bool = True
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the environment gives, and the variable each came from (the secret key only
    if ``secret``: an argument that gives it leaves a broken variable unread, as it always did)."""
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name in ("database_url", "table", "time_zone", "app", "django_settings"):
        if env.get(ENV[name]):
            values[name], names[name] = env[ENV[name]], ENV[name]
    if env.get(ENV["timeout"]):
        try:
            values["timeout"], names["timeout"] = float(env[ENV["timeout"]]), ENV["timeout"]
        except ValueError:
            raise ConfigError(f"{ENV['timeout']} must be a number of seconds, not {env[ENV['timeout']]!r}") from None
    # The secret: a file, or the key itself.
    if not secret:
        pass
    elif env.get(ENV["secret_key_file"]):
        if files:  # work that needs no key does not read (or fail on) its file
            secret = _read_secret_file(env[ENV["secret_key_file"]], ENV["secret_key_file"])
            values.update(secret)
            names.update(dict.fromkeys(secret, ENV["secret_key_file"]))
    elif env.get(ENV["secret_key"]):
        values["secret_key"], names["secret_key"] = env[ENV["secret_key"]], ENV["secret_key"]
    if env.get(ENV["secret_key_fallbacks"]):
        values["secret_key_fallbacks"] = _fallbacks(env[ENV["secret_key_fallbacks"]])
        names["secret_key_fallbacks"] = ENV["secret_key_fallbacks"]
    return values, names


def _fallbacks(text: str) -> tuple[str, ...]:
    """``SESSCTL_SECRET_KEY_FALLBACKS``: keys separated by commas, or a JSON array of strings
    (for keys that hold a comma or spaces at their ends): ``["old,key", "older"]``."""
    if not text.strip().startswith("["):
        return tuple(k.strip() for k in text.split(",") if k.strip())
    var = ENV["secret_key_fallbacks"]
    try:
        keys = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{var} starts with '[' but is not valid JSON ({exc}); "
                          'write a JSON array of strings, e.g. ["old,key", "older"]') from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f'{var} must be a JSON array of strings, e.g. ["old,key", "older"]')
    return tuple(keys)


_FILE_KEYS = {f.name for f in fields(Settings)} | {"db", "secret_key_file"}


def _read_file(name: str | os.PathLike[str], *, required: bool, secrets: bool = True) -> dict[str, Any]:
    path = Path(name)
    try:
        with path.open("rb") as fh:
            import tomllib  # only once there is a file: most commands run without one

            raw = tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        return {}
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name, or TOML's own error
        if type(exc).__name__ == "TOMLDecodeError":  # tomllib.TOMLDecodeError (tomllib may not be imported)
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        raise ConfigError(f"cannot read config file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if isinstance(raw.get("sessctl"), dict) and len(raw) == 1:
        raw = raw["sessctl"]
    unknown = sorted(set(raw) - _FILE_KEYS)
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown key(s) {', '.join(unknown)}; "
            f"known keys are {', '.join(sorted(_FILE_KEYS - {'database_url'}))}"
        )
    from .checks import check_file_types

    check_file_types(raw, repr(str(path)))
    values = dict(raw)
    if "db" in values:
        values["database_url"] = values.pop("db")
    base = path.resolve().parent
    if isinstance(values.get("database_url"), str):
        values["database_url"] = _anchor_sqlite(values["database_url"], base)
    if "secret_key_fallbacks" in values:
        fb = values["secret_key_fallbacks"]
        if not isinstance(fb, list) or not all(isinstance(k, str) for k in fb):
            raise ConfigError(f"config file {str(path)!r}: secret_key_fallbacks must be a list of strings")
        values["secret_key_fallbacks"] = tuple(fb)
    if isinstance(values.get("trusted_proxies"), list):
        values["trusted_proxies"] = tuple(values["trusted_proxies"])
    if "secret_key_file" in values:
        where = f"secret_key_file in config file {str(path)!r}"
        secret_path = Path(values.pop("secret_key_file"))  # text: check_file_types saw to it
        if secrets:
            values.update(_read_secret_file(secret_path if secret_path.is_absolute() else base / secret_path, where))
    return values


def _anchor_sqlite(url: str, base: Path) -> str:
    """Make a relative SQLite path in a config file relative to that file."""
    prefix, sep, rest = url.partition(":///")
    if not sep or not prefix.startswith("sqlite") or not rest or rest.startswith("/") or rest.startswith(":memory:"):
        return url
    return f"{prefix}:///{base / rest}"


def _read_secret_file(path: str | os.PathLike[str], source: str) -> dict[str, Any]:
    """First non-empty line: the key. Further non-empty lines: fallback keys. A line is taken
    as it is, spaces included (they may belong to the key); only its line ending is removed, and
    a UTF-8 byte order mark at the start of the file.

    Errors name where the file's name came from (``source``), never the name itself: the most
    common mistake is to put the key itself where its file's name goes.
    """
    what = f"the secret key file named by {source}"
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()  # a BOM is not part of the key
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist (to give the key itself, use SESSCTL_SECRET_KEY)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or (
            "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "bad file name"
        )
        raise ConfigError(f"cannot read {what}: {reason}") from None
    keys = [line for line in lines if line.strip()]  # no comments: a Django key may start with "#"
    if not keys:
        raise ConfigError(f"{what} is empty")
    # A file without fallback lines leaves fallbacks to the other sources (SESSCTL_SECRET_KEY_FALLBACKS).
    return {"secret_key": keys[0], **({"secret_key_fallbacks": tuple(keys[1:])} if keys[1:] else {})}
