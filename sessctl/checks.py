"""Every setting checked for its type, its range and its characters, wherever it came from.

A value that reaches :class:`~sessctl.config.Settings` from a TOML file, the environment or an
app's code is checked here once, so nothing later (the app's constructor, a request, a
``Set-Cookie`` header) meets a wrong type or a character that could end a header or start
another cookie attribute. Errors name the setting, never echo a secret, and show other values
with their control characters escaped.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError
from .policy import MAX_LIFETIME

TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_COOKIE_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 6265 token
# A host name or IPv4 address, optionally with the leading dot older browsers wanted.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"\.?{_LABEL}(?:\.{_LABEL})*\.?")
# RFC 6265 path-value: any CHAR except CTLs or ";" (and only ASCII: a header is latin-1 at best).
_PATH_RE = re.compile(r"/[\x20-\x3a\x3c-\x7e]*")
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
_FLAGS = ("cookie_secure", "cookie_httponly", "expire_at_browser_close", "save_every_request")


def shown(value: Any, limit: int = 60) -> str:
    """``value`` for a message: repr (control characters escaped), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def _text(name: str, value: Any, *, secret: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be text, not {_type_name(value)}" + ("" if secret else f" ({shown(value)})"))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, from the environment or a file name
        raise ConfigError(f"{name} holds bytes that are not UTF-8 text") from None
    return value


def normalised(settings: Any) -> dict[str, Any]:
    """The values of ``settings`` that need normalising; raises ConfigError on any bad one."""
    out: dict[str, Any] = {}
    url = settings.database_url
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("the database URL (db / database_url / --db / SESSCTL_DB) must be non-empty text")
    _text("the database URL", url)
    if not url.isprintable():
        raise ConfigError("the database URL contains control characters (a stray newline?)")

    key = settings.secret_key
    if key is not None:
        _text("secret_key", key, secret=True)
        if not key:
            out["secret_key"] = None
    fallbacks = settings.secret_key_fallbacks
    if isinstance(fallbacks, str) or not isinstance(fallbacks, (list, tuple)):
        raise ConfigError("secret_key_fallbacks must be a list of keys")
    for item in fallbacks:
        _text("each of secret_key_fallbacks", item, secret=True)
    out["secret_key_fallbacks"] = tuple(k for k in fallbacks if k)

    table = _text("table", settings.table)
    if not TABLE_RE.fullmatch(table):
        raise ConfigError(f"table name {shown(table)} is not a plain SQL identifier (letters, digits, _; at most 63)")

    age = settings.cookie_age
    if isinstance(age, bool) or not isinstance(age, int) or not 0 < age <= MAX_LIFETIME:
        raise ConfigError(
            f"cookie_age must be a positive whole number of seconds, at most {MAX_LIFETIME} (100 years), "
            f"not {shown(age)}"
        )

    name = _text("cookie_name", settings.cookie_name)
    if not _COOKIE_NAME_RE.fullmatch(name):
        raise ConfigError(f"cookie_name {shown(name)} is not a valid cookie name (letters, digits, !#$%&'*+-.^_`|~)")

    domain = settings.cookie_domain
    if domain is not None:
        _text("cookie_domain", domain)
        if domain == "":
            out["cookie_domain"] = None
        elif len(domain) > 253 or not _DOMAIN_RE.fullmatch(domain):
            raise ConfigError(f"cookie_domain {shown(domain)} is not a host name (like example.com or .example.com)")

    path = _text("cookie_path", settings.cookie_path)
    if not _PATH_RE.fullmatch(path):
        raise ConfigError(
            f"cookie_path {shown(path)} must start with / and hold no ';' and no control or non-ASCII character"
        )

    samesite = settings.cookie_samesite
    if samesite is False or samesite is None:
        out["cookie_samesite"] = None
    else:
        norm = _SAMESITE.get(samesite.lower()) if isinstance(samesite, str) else None
        if norm is None:
            raise ConfigError(f"cookie_samesite must be Lax, Strict, None or unset, not {shown(samesite)}")
        out["cookie_samesite"] = norm

    for flag in _FLAGS:
        if not isinstance(getattr(settings, flag), bool):
            raise ConfigError(f"{flag} must be true or false, not {shown(getattr(settings, flag))}")
    return out


# The TOML type of each config file key (a key another part adds without an entry here is
# checked by Settings itself).
_FILE_TYPES: dict[str, tuple[type, ...]] = {
    "db": (str,), "database_url": (str,), "table": (str,), "secret_key": (str,), "secret_key_file": (str,),
    "secret_key_fallbacks": (list,), "cookie_age": (int,), "cookie_name": (str,), "cookie_domain": (str,),
    "cookie_path": (str,), "cookie_secure": (bool,), "cookie_httponly": (bool,), "cookie_samesite": (str, bool),
    "expire_at_browser_close": (bool,), "save_every_request": (bool,),
}
_TOML_NAMES = {str: "text", int: "a whole number", bool: "true or false", list: "a list"}


def check_file_types(raw: dict[str, Any], where: str) -> None:
    """Each key of a config file holds the TOML type it takes (even if the environment overrides it)."""
    for name, value in raw.items():
        types = _FILE_TYPES.get(name)
        if types is None:
            continue
        ok = isinstance(value, types) and not (bool not in types and isinstance(value, bool))
        if not ok:
            wanted = " or ".join(_TOML_NAMES[t] for t in types)
            secret = name in ("secret_key", "secret_key_fallbacks")
            got = _type_name(value) + ("" if secret else f" ({shown(value)})")
            raise ConfigError(f"config file {where}: {name} must be {wanted}, not {got}")
