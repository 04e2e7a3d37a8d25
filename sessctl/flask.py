"""Flask adapter: Flask's own ``session``, stored by sessctl.

::

    from flask import Flask, session
    from sessctl import Settings
    from sessctl.flask import install

    app = Flask(__name__)
    install(app, Settings.load())      # app.session_interface = SessctlSessionInterface(...)

    @app.post("/login")
    def login():
        session.cycle_key()            # new key, same data
        session["user"] = "alice"
        session.set_life(8 * 3600)     # or .permanent = False for a browser-session cookie
        return "ok"

``session`` is a :class:`FlaskSession`: a :class:`sessctl.session.Session`
(lazy, saved only when modified, ``set_life``, ``cycle_key``, ``flush``, the
expiry readers) that is also a Flask ``SessionMixin``. The response follows
exactly the rules of the WSGI :class:`~sessctl.middleware.SessionMiddleware`
(the same code decides it): cookie only when created or modified, row and
cookie deleted when the session is emptied or flushed, ``Vary: Cookie`` on
access, nothing saved on a 5xx, a session deleted meanwhile never re-created.

How Flask's knobs map:

* ``session.permanent`` is True when the session's cookie outlives the
  browser under our policy. ``permanent = False`` is
  ``set_life(TILL_BROWSER_CLOSE)``; ``permanent = True`` returns to the global
  policy (or, if that is ``expire_at_browser_close``, an idle timeout of
  ``cookie_age``). Setting the value it already has changes nothing, so the
  ``before_request`` idiom ``session.permanent = True`` costs no write.
* The cookie and lifetimes come from sessctl's :class:`~sessctl.Settings`
  (shared with the command line); Flask's ``SESSION_COOKIE_*``,
  ``PERMANENT_SESSION_LIFETIME`` and ``SESSION_REFRESH_EACH_REQUEST`` are
  not used (``save_every_request`` is the last one's equivalent).
* Values must be JSON (Django's format): a tuple comes back as a list,
  datetimes and bytes are refused at save time.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from flask.sessions import SessionInterface, SessionMixin

from . import devices
from .config import Settings
from .cookies import INTERRUPTED_BODY, INTERRUPTED_STATUS, CookieRules, build_store, interrupted_headers, parse_cookie
from .errors import SessionInterrupted
from .policy import TILL_BROWSER_CLOSE
from .session import Session
from .store import SessionStore

if TYPE_CHECKING:
    from flask import Flask
    from flask.wrappers import Request, Response

__all__ = ["FlaskSession", "SessctlSessionInterface", "install"]


class FlaskSession(Session, SessionMixin):
    """A sessctl session that is also Flask's ``session``."""

    had_cookie = False  # the request carried a session cookie (set by open_session)

    @property
    def permanent(self) -> bool:
        """True when the cookie outlives the browser (loads the session)."""
        return not self.get_expire_at_browser_close()

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if bool(value) == self.permanent:
            return
        if not value:
            self.set_life(TILL_BROWSER_CLOSE)
        elif self._store.settings.expire_at_browser_close:
            self.set_life(self._store.settings.cookie_age, idle=True)
        else:
            self.set_life(None)

    @property
    def new(self) -> bool:  # type: ignore[override]
        """True when no stored session backs this one (loads the session)."""
        self.preload()
        return self._row is None and self._old_row is None


class SessctlSessionInterface(SessionInterface):
    """``app.session_interface = SessctlSessionInterface(settings)`` (or a ready store)."""

    session_class = FlaskSession

    def __init__(self, settings: Settings | SessionStore | None = None, *, store: SessionStore | None = None) -> None:
        store = build_store("SessctlSessionInterface", settings, store)
        self.store = store
        self.settings = store.settings
        # The response rules (save, cookie, Vary) that every adapter shares (sessctl.cookies).
        self.rules = CookieRules(store.settings)

    # Flask extensions that ask about the cookie get sessctl's answers.
    def get_cookie_name(self, app: Flask) -> str:
        return self.settings.cookie_name

    def get_cookie_domain(self, app: Flask) -> str | None:
        return self.settings.cookie_domain

    def get_cookie_path(self, app: Flask) -> str:
        return self.settings.cookie_path

    def get_cookie_httponly(self, app: Flask) -> bool:
        return self.settings.cookie_httponly

    def get_cookie_secure(self, app: Flask) -> bool:
        return self.settings.cookie_secure

    def get_cookie_samesite(self, app: Flask) -> str | None:
        return self.settings.cookie_samesite

    def get_cookie_partitioned(self, app: Flask) -> bool:
        return False

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime | None:
        assert isinstance(session, Session)
        if session.get_expire_at_browser_close():
            return None
        return session.get_expiry_date()

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        return bool(session.modified or self.settings.save_every_request)

    def open_session(self, app: Flask, request: Request) -> FlaskSession:
        cookie = parse_cookie(request.environ.get("HTTP_COOKIE", ""), self.settings.cookie_name)
        session = self.session_class(self.store, cookie)
        session.had_cookie = cookie is not None
        if self.settings.track_devices:
            environ, settings = request.environ, self.settings
            session.device_source = lambda: devices.from_wsgi(settings, environ)
        return session  # nothing is loaded until the view uses it

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, FlaskSession)
        vary = session.accessed
        if not session.is_loaded and not session.modified:
            # Flask sets ``accessed`` whenever the ``session`` proxy is touched
            # (even ``session.session_key``); only a data access costs a query.
            session.accessed = False
        headers: list[tuple[str, str]] = []
        try:
            self.rules.finish(session, session.had_cookie, response.status_code, headers)
        except SessionInterrupted:
            # As Django: the whole response becomes a 400, with no cookie (see sessctl.cookies).
            from werkzeug.datastructures import Headers

            response.status_code = INTERRUPTED_STATUS
            response.headers = Headers(interrupted_headers())
            response.set_data(INTERRUPTED_BODY)
            return
        for name, value in headers:
            if name.lower() == "vary":
                vary = True
            else:
                response.headers.add(name, value)
        if vary:
            response.vary.add("Cookie")


def install(app: Flask, settings: Settings | SessionStore | None = None, *, store: SessionStore | None = None) -> SessctlSessionInterface:
    """Make ``app`` keep its sessions in sessctl; returns the interface.

    Without settings or a store, ``Settings.load()`` reads them as the
    command line does (``sessctl.toml``, ``SESSCTL_*``).
    """
    if settings is None and store is None:
        settings = Settings.load()
    interface = SessctlSessionInterface(settings, store=store)
    app.session_interface = interface
    app.extensions["sessctl"] = interface
    return interface
