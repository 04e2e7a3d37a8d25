"""Settings: one immutable object that the app and the command line both build.

``Settings.load()`` reads the same sources as the ``sessctl`` command, in the
same order (explicit argument > environment > TOML file > default), so an app
and its cron job share one ``sessctl.toml``::

    db = "postgresql://app@db.internal/app"   # or database_url
    table = "django_session"
    secret_key_file = "/etc/app/secret_key"   # first line: the key; more lines: fallbacks
    cookie_age = 1209600
    expire_at_browser_close = false

Relative paths in the file (``secret_key_file``, a SQLite database) are taken
relative to the file's own folder, so cron and the app agree whatever their
working directory.
"""

from __future__ import annotations

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
}
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


@dataclass(frozen=True)
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

    def __post_init__(self) -> None:
        if isinstance(self.secret_key_fallbacks, str):
            raise ConfigError("secret_key_fallbacks must be a list of keys, not one string")
        object.__setattr__(self, "secret_key_fallbacks", tuple(k for k in self.secret_key_fallbacks if k))
        if not isinstance(self.database_url, str) or not self.database_url:
            raise ConfigError("the database URL is empty")
        if not _TABLE_RE.match(str(self.table)):
            raise ConfigError(f"table name {self.table!r} is not a plain SQL identifier")
        if isinstance(self.cookie_age, bool) or not isinstance(self.cookie_age, int) or self.cookie_age <= 0:
            raise ConfigError(f"cookie_age must be a positive whole number of seconds, not {self.cookie_age!r}")
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", str(self.cookie_name)):
            raise ConfigError(f"cookie_name {self.cookie_name!r} is not a valid cookie name")
        samesite = self.cookie_samesite
        if samesite is not None and samesite is not False:
            norm = _SAMESITE.get(str(samesite).lower())
            if norm is None:
                raise ConfigError(f"cookie_samesite must be Lax, Strict, None or unset, not {samesite!r}")
            object.__setattr__(self, "cookie_samesite", norm)
        elif samesite is False:
            object.__setattr__(self, "cookie_samesite", None)
        for name in ("cookie_secure", "cookie_httponly", "expire_at_browser_close", "save_every_request"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, not {getattr(self, name)!r}")

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
        **overrides: Any,
    ) -> Settings:
        """Build Settings from arguments > environment > TOML file > defaults.

        ``config`` (or ``$SESSCTL_CONFIG``) names the TOML file; without one,
        ``./sessctl.toml`` is read if it exists. Arguments that are None are
        treated as not given.
        """
        env = os.environ if environ is None else environ
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")

        path = config or env.get(ENV["config"]) or None
        values = _read_file(Path(path), required=True) if path else _read_file(Path(DEFAULT_CONFIG), required=False)

        for name in ("database_url", "table"):
            if env.get(ENV[name]):
                values[name] = env[ENV[name]]
        # The secret: a file (flag, env, config) or the key itself (env, config).
        if secret_key_file:
            values.update(_read_secret_file(Path(secret_key_file)))
        elif env.get(ENV["secret_key_file"]):
            values.update(_read_secret_file(Path(env[ENV["secret_key_file"]])))
        elif env.get(ENV["secret_key"]):
            values["secret_key"] = env[ENV["secret_key"]]
        if env.get(ENV["secret_key_fallbacks"]):
            values["secret_key_fallbacks"] = tuple(
                k.strip() for k in env[ENV["secret_key_fallbacks"]].split(",") if k.strip()
            )
        values.update(given)
        try:
            return cls(**values)
        except TypeError as exc:  # a wrong type in the file
            raise ConfigError(str(exc)) from None


_FILE_KEYS = {f.name for f in fields(Settings)} | {"db", "secret_key_file"}


def _read_file(path: Path, *, required: bool) -> dict[str, Any]:
    import tomllib

    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    if isinstance(raw.get("sessctl"), dict) and len(raw) == 1:
        raw = raw["sessctl"]
    unknown = sorted(set(raw) - _FILE_KEYS)
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown key(s) {', '.join(unknown)}; "
            f"known keys are {', '.join(sorted(_FILE_KEYS - {'database_url'}))}"
        )
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
    if "secret_key_file" in values:
        secret_path = Path(str(values.pop("secret_key_file")))
        if not secret_path.is_absolute():
            secret_path = base / secret_path
        values.update(_read_secret_file(secret_path))
    return values


def _anchor_sqlite(url: str, base: Path) -> str:
    """Make a relative SQLite path in a config file relative to that file."""
    prefix, sep, rest = url.partition(":///")
    if not sep or not prefix.startswith("sqlite") or not rest or rest.startswith("/") or rest.startswith(":memory:"):
        return url
    return f"{prefix}:///{base / rest}"


def _read_secret_file(path: Path) -> dict[str, Any]:
    """First non-empty line: the key. Further non-empty lines: fallback keys."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise ConfigError(f"secret key file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read secret key file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    keys = [line for line in lines if line]  # no comments: a Django key may start with "#"
    if not keys:
        raise ConfigError(f"secret key file {str(path)!r} is empty")
    return {"secret_key": keys[0], "secret_key_fallbacks": tuple(keys[1:])}
