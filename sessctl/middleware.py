"""WSGI middleware: a lazy server-side session per request, and its cookie.

Mount it around any WSGI app::

    app = SessionMiddleware(app, Settings.load())

and use ``environ["sessctl.session"]`` in the app. What a response does about
its session is :mod:`sessctl.cookies`' (shared with Flask and ASGI); storage is
the store's, expiry the policy's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import devices
from .config import Settings
from .cookies import INTERRUPTED_BODY, INTERRUPTED_STATUS, CookieRules, build_store, interrupted_headers, parse_cookie
from .errors import SessionInterrupted
from .session import Session
from .store import SessionStore

ENVIRON_KEY = "sessctl.session"

StartResponse = Callable[..., Any]


def get_session(environ: dict[str, Any]) -> Session:
    """The request's session; a clear error if the middleware is not installed."""
    try:
        return environ[ENVIRON_KEY]
    except KeyError:
        raise RuntimeError(
            "no session in this request: wrap the app in sessctl.SessionMiddleware(app, settings)"
        ) from None


class SessionMiddleware:
    """Give each request a session at ``environ["sessctl.session"]``.

    ``SessionMiddleware(app, settings)``, or pass a ready ``store=`` to share
    one between apps. A request that never touches the session costs no query
    and sends no cookie.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], settings: Settings | None = None, *, store: SessionStore | None = None):
        store = build_store("SessionMiddleware", settings, store)
        self.app = app
        self.store = store
        self.settings = store.settings
        self.rules = CookieRules(store.settings)
        self._name = store.settings.cookie_name

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        cookie = parse_cookie(environ.get("HTTP_COOKIE", ""), self._name)
        session = Session(self.store, cookie)
        if self.settings.track_devices:
            session.device_source = lambda: devices.from_wsgi(self.settings, environ)
        environ[ENVIRON_KEY] = session
        state = {"finished": False, "interrupted": False}

        def session_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            headers = list(headers)
            if not state["finished"]:  # an error page sent after a first start_response saves nothing more
                state["finished"] = True
                try:
                    self.rules.finish(session, cookie is not None, status, headers)
                except SessionInterrupted:
                    state["interrupted"] = True
                    start_response(f"{INTERRUPTED_STATUS} Bad Request", interrupted_headers(), exc_info)
                    return _discard
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, session_start_response)
        except BaseException:
            session.abandon_unsent()  # the server answers 500 without us: no cookie leaves
            raise
        if state["interrupted"]:
            _close(result)
            return [INTERRUPTED_BODY]
        if state["finished"]:
            return result
        return _answer_late(result, state)  # start_response comes with the first chunk


def _discard(_data: bytes) -> None:
    """The ``write()`` of a response replaced by the 400: the app's body goes nowhere."""


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _answer_late(result: Iterable[bytes], state: dict[str, bool]) -> Iterator[bytes]:
    """For an app that calls start_response only when asked for its first chunk (a generator)."""
    try:
        for chunk in result:
            if state["interrupted"]:
                yield INTERRUPTED_BODY
                return
            yield chunk
        if state["interrupted"]:
            yield INTERRUPTED_BODY
    finally:
        _close(result)
