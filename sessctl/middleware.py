"""WSGI middleware: a lazy server-side session per request, and its cookie.

Mount it around any WSGI app::

    app = SessionMiddleware(app, Settings.load())

and use ``environ["sessctl.session"]`` in the app. The middleware decides only
cookies and headers; storage is the store's, expiry the policy's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from email.utils import format_datetime
from typing import Any

from .config import Settings
from .session import Session
from .store import SessionGone, SessionStore

ENVIRON_KEY = "sessctl.session"
_DELETED = 'expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0'

StartResponse = Callable[..., Any]


def get_session(environ: dict[str, Any]) -> Session:
    """The request's session; a clear error if the middleware is not installed."""
    try:
        return environ[ENVIRON_KEY]
    except KeyError:
        raise RuntimeError(
            "no session in this request: wrap the app in sessctl.SessionMiddleware(app, settings)"
        ) from None


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


def http_date(moment) -> str:
    return format_datetime(moment, usegmt=True)


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
        """Save the session if needed and add its cookie and ``Vary`` headers."""
        session.delete_pending()
        if not self.needs_work(session, had_cookie):
            return
        try:
            code = int(str(status)[:3])
        except ValueError:
            code = 500
        failed = code >= 500
        if session.is_empty():  # loads the session when save_every_request renews it
            if session.modified and not failed:
                session.save()  # an emptied stored session: delete its row
            if had_cookie:
                headers.append(self.delete_header)
        elif (session.modified or self.settings.save_every_request) and not failed:
            try:
                key = session.save()
            except SessionGone:
                headers.append(self.delete_header)
            else:
                exp = session.expiry
                assert key is not None and exp is not None
                headers.append(self.cookie_header(key, exp.max_age, exp.expires))
        vary_cookie(headers)


class SessionMiddleware:
    """Give each request a session at ``environ["sessctl.session"]``.

    ``SessionMiddleware(app, settings)``, or pass a ready ``store=`` to share
    one between apps. A request that never touches the session costs no query
    and sends no cookie.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], settings: Settings | None = None, *, store: SessionStore | None = None):
        if store is None:
            if settings is None:
                raise TypeError("SessionMiddleware needs settings (or a store)")
            store = SessionStore(settings)
        self.app = app
        self.store = store
        self.settings = store.settings
        self.rules = CookieRules(store.settings)
        self._name = store.settings.cookie_name

    def cookie_header(self, key: str, max_age: int | None, expires) -> tuple[str, str]:
        return self.rules.cookie_header(key, max_age, expires)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        cookie = parse_cookie(environ.get("HTTP_COOKIE", ""), self._name)
        session = Session(self.store, cookie)
        environ[ENVIRON_KEY] = session
        finished = False

        def session_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            nonlocal finished
            headers = list(headers)
            if not finished:  # an error page sent after a first start_response saves nothing more
                finished = True
                self.rules.finish(session, cookie is not None, status, headers)
            return start_response(status, headers, exc_info)

        return self.app(environ, session_start_response)

    def finish(self, session: Session, had_cookie: bool, status: int | str, headers: list[tuple[str, str]]) -> None:
        self.rules.finish(session, had_cookie, status, headers)


def vary_cookie(headers: list[tuple[str, str]]) -> None:
    """Add ``Cookie`` to the response's ``Vary`` header (once)."""
    for i, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            fields = [v.strip().lower() for v in value.split(",")]
            if "cookie" not in fields and "*" not in fields:
                headers[i] = (name, f"{value}, Cookie" if value.strip() else "Cookie")
            return
    headers.append(("Vary", "Cookie"))
