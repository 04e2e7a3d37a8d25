"""Secrets out of every message: one redaction for database URLs, one scrubber for any text.

A database URL carries its password in the userinfo (``user:pass@host``, possibly with ``/``,
``?`` or ``#`` in it, possibly with a raw ``@`` that SQLAlchemy reads as part of the host) or in
the query (``?password=...``, ``?sslpassword=...``). :func:`redact_url` renders a URL for a
message with every one of those hidden, from SQLAlchemy's own parse of it; :func:`scrub` removes
each of those secrets (and the session secret keys), in every form they can take, from any text
(a driver's error, a traceback) as a last line of defence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, unquote_plus

HIDDEN = "***"
# Query parameters whose value is a credential, whatever the driver calls them.
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)
_MIN_SCRUB = 3  # shorter strings are too common to remove from text without garbling it


def _make_url(url: str):
    from sqlalchemy.engine import make_url

    return make_url(url)


def _raw_userinfo_password(url: str) -> str | None:
    """The password as typed: between ``user:`` and the LAST ``@`` of the authority."""
    _scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    # The authority ends at the first '/' or '?' after the last '@' (a password may hold both).
    userinfo = rest.rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    if not colon or "/" in user or "?" in user:
        return None
    return password


def url_secrets(url: str | None) -> list[str]:
    """Every secret a URL carries, raw and percent-encoded, longest first."""
    if not url or not isinstance(url, str):
        return []
    found: set[str] = set()
    raw = _raw_userinfo_password(url)
    if raw:
        found.add(raw)
    try:
        parsed = _make_url(url)
    except Exception:
        parsed = None
    if parsed is not None:
        if parsed.password:
            found.add(str(parsed.password))
        for name, value in parsed.query.items():
            if _SECRET_PARAM.search(name):
                found.update(value if isinstance(value, tuple) else (value,))
    for match in re.finditer(r"[?&]([^=&#]+)=([^&#]*)", url):
        if _SECRET_PARAM.search(unquote(match.group(1))):
            found.add(match.group(2))
    forms: set[str] = set()
    for secret in found:
        forms |= {secret, unquote(secret), _quote(secret, ""), _quote(secret, "/")}
        # SQLAlchemy renders query values form-encoded: a space becomes '+'.
        forms |= {quote_plus(unquote(secret), safe="", errors="surrogatepass"), unquote_plus(secret)}
    return sorted((f for f in forms if len(f) >= _MIN_SCRUB), key=len, reverse=True)


def redact_url(url: str | None) -> str:
    """``url`` for a message: the password and secret query values shown as ``***``."""
    if not url:
        return ""
    secrets = url_secrets(url)
    try:
        parsed = _make_url(url)
        if parsed.host and "@" in parsed.host:  # a raw '@' in the password: the rest is password too
            parsed = parsed.set(host=parsed.host.rpartition("@")[2], password=HIDDEN)
        elif parsed.password is None and not secrets:
            return url  # nothing to hide: the URL as the user wrote it
        hidden = {name: HIDDEN for name in parsed.query if _SECRET_PARAM.search(name)}
        if hidden:
            parsed = parsed.update_query_dict(hidden)
        text = parsed.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=" + HIDDEN)
    except Exception:
        # Not a URL SQLAlchemy can read: keep only the scheme; any of the rest may be a secret.
        scheme, sep, _rest = url.partition("://")
        text = f"{scheme}://..." if sep and re.fullmatch(r"[\w+.-]+", scheme) else "<unreadable URL>"
    return scrub(text, secrets)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SCRUB}, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def _quote(text: str, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogatepass")  # a key from the environment may hold any bytes


def settings_secrets(settings) -> list[str]:
    """Everything in ``settings`` that must never be printed: URL credentials and the secret keys."""
    if settings is None:
        return []
    keys = [getattr(settings, "secret_key", None), *getattr(settings, "secret_key_fallbacks", ())]
    out = url_secrets(getattr(settings, "database_url", None))
    for key in keys:
        if isinstance(key, str) and key:
            out += [key, _quote(key, "")]
    return out
