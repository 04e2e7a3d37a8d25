"""The response rules every adapter follows (WSGI, Flask, ASGI), and the one way each builds its store.

:class:`CookieRules` decides, once a response starts, whether the session is
saved and which ``Set-Cookie`` and ``Vary`` headers go out, so every framework
follows exactly the same rules. :func:`build_store` gives each adapter its
store from settings (or takes a ready one) and checks the secret key at once.
"""

from __future__ import annotations

from email.utils import format_datetime
from typing import TYPE_CHECKING

from .config import Settings
from .errors import SessionGone, SessionInterrupted
from .store import SessionStore

if TYPE_CHECKING:
    from .session import Session

_DELETED = 'expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0'
# What a request whose session ended while it ran answers instead of its own response.
INTERRUPTED_STATUS = 400
INTERRUPTED_BODY = (
    b"Bad Request: this request's session ended while it ran (a login or logout in another request?). "
    b"Nothing was saved; try again.\n"
)


def interrupted_headers() -> list[tuple[str, str]]:
    """The headers of that 400: no Set-Cookie at all (the cookie a concurrent login set must stay)."""
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(INTERRUPTED_BODY))),
        ("Cache-Control", "private, no-store"),
        ("Vary", "Cookie"),
    ]


def build_store(owner: str, settings: Settings | SessionStore | None, store: SessionStore | None) -> SessionStore:
    """The adapter's store: ``store`` if given (also as ``settings``), else one built from ``settings``.

    Fails now, not on the first request, when there is no secret key.
    """
    if isinstance(settings, SessionStore):
        settings, store = None, settings
    if store is None:
        if settings is None:
            raise TypeError(f"{owner} needs settings (or a store)")
        store = SessionStore(settings)
    store.codec  # no secret key: fail now, not on the first request
    return store


def parse_cookie(header: str, name: str) -> str | None:
    """The first value of cookie ``name`` in a Cookie header, or None. Never raises."""
    if not header or name not in header:
        return None
    for part in header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


_last_date: tuple[object, str] = (None, "")


def http_date(moment) -> str:
    """``moment`` (aware, UTC) as an HTTP date; the text is kept for the rest of its second."""
    global _last_date
    second = moment.replace(microsecond=0)
    last, text = _last_date
    if second != last:
        text = format_datetime(second, usegmt=True)
        _last_date = (second, text)
    return text


class CookieRules:
    """What a response does about its session: save it, and which headers to add.

    Shared by the WSGI middleware and the Flask and ASGI adapters, so every
    framework follows exactly the same rules.
    """

    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self._name = s.cookie_name
        # The attributes that follow the value, in the order Django writes them.
        self._domain = [f"Domain={s.cookie_domain}"] if s.cookie_domain else []
        after = [f"Path={s.cookie_path}"]
        if s.cookie_samesite:
            after.append(f"SameSite={s.cookie_samesite}")
        self._after = after
        self._secure = ["Secure"] if s.cookie_secure else []
        deletion = [f'{self._name}=""', *self._domain, _DELETED, *after]
        if s.cookie_secure or s.cookie_samesite == "None" or self._name.startswith(("__Secure-", "__Host-")):
            deletion.append("Secure")
        self.delete_header = ("Set-Cookie", "; ".join(deletion))

    def cookie_header(self, key: str, max_age: int | None, expires) -> tuple[str, str]:
        parts = [f"{self._name}={key}", *self._domain]
        if max_age is not None:
            parts.append(f"expires={http_date(expires)}")
        if self.settings.cookie_httponly:
            parts.append("HttpOnly")
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        parts.extend(self._after)
        parts.extend(self._secure)
        return ("Set-Cookie", "; ".join(parts))

    def needs_work(self, session: Session, had_cookie: bool) -> bool:
        """False for a session the request never touched: no query, no header."""
        return session.accessed or session.pending_deletes or (self.settings.save_every_request and had_cookie)

    def finish(self, session: Session, had_cookie: bool, status: int | str, headers: list[tuple[str, str]]) -> None:
        """Save the session if needed and add its cookie and ``Vary`` headers.

        Raises :class:`SessionInterrupted` when the session ended while the request ran: the
        adapter then answers 400 with :func:`interrupted_headers` and no cookie.
        """
        session.delete_pending()
        try:
            code = int(str(status)[:3])
        except ValueError:
            code = 500
        failed = code >= 500
        if failed:
            session.abandon_unsent()  # a login saved at once whose cookie will not leave
        if not self.needs_work(session, had_cookie):
            return
        if session.is_empty():  # loads the session when save_every_request renews it
            if session.modified and not failed:
                session.save()  # an emptied stored session: delete its row
            if had_cookie:
                headers.append(self.delete_header)
        elif (session.modified or self.settings.save_every_request) and not failed:
            try:
                key = session.save()
            except SessionGone as exc:
                # As Django (SessionInterrupted, a 400): a deletion cookie here could reach the
                # browser after the cookie of the login that ended this session, and log it out.
                raise SessionInterrupted(str(exc)) from exc
            else:
                exp = session.expiry
                assert key is not None and exp is not None
                headers.append(self.cookie_header(key, exp.max_age, exp.expires))
                session._unsent = None
        elif not failed:
            # Read, not changed: an idle deadline slides through the throttled touch (sessctl.activity).
            touched = session.touch()
            if touched == "gone":
                headers.append(self.delete_header)
            elif touched == "touched":
                exp = session.expiry
                assert exp is not None and session.stored_key is not None
                headers.append(self.cookie_header(session.stored_key, exp.max_age, exp.expires))
        vary_cookie(headers)


def vary_cookie(headers: list[tuple[str, str]]) -> None:
    """Add ``Cookie`` to the response's ``Vary`` header (once)."""
    for i, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            fields = [v.strip().lower() for v in value.split(",")]
            if "cookie" not in fields and "*" not in fields:
                headers[i] = (name, f"{value}, Cookie" if value.strip() else "Cookie")
            return
    headers.append(("Vary", "Cookie"))
