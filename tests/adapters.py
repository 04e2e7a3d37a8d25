"""The three adapters behind one driver, for the contract suite (test_adapters.py) and the
adapter files: ``web.get(path)`` / ``web.raw(path, cookie)`` return a :class:`Response`
(status, set_cookies, cookie(), vary, json()); ``web.key`` is the browser's cookie;
``web.data(key)`` and ``web.rows()`` read the table.

* wsgi: :class:`sessctl.SessionMiddleware` served over real HTTP (httpserver.serve), a
  urllib browser with a cookie jar;
* flask: ``sessctl.flask.install`` and Flask's test client (its cookie jar);
* asgi: :class:`sessctl.asgi.SessionMiddleware` in Starlette, httpx with a cookie jar, on
  one event loop per app.

Each app answers the same routes: /none, /read, /write?name=value, /clear, /login?user=,
/logout, /life/{browser-close,3600,idle-3600,none}, /expiry, /fail?status=, /crash, /abort,
/gone (the row is deleted while the request runs), /vary (the app sends its own Vary).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import httpx
from flask import Flask, abort, flash, get_flashed_messages, jsonify, request, session
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from helpers import KEY_RE
from httpserver import Client, raw_get, routes_app, serve
from sessctl import SessionMiddleware as WSGISessionMiddleware
from sessctl import SessionStore, TILL_BROWSER_CLOSE
from sessctl.asgi import SessionMiddleware
from sessctl.flask import install


class _Table:
    store: SessionStore

    def data(self, key: str | None = None) -> dict[str, Any] | None:
        row = self.store.get_row(key or self.key)
        return None if row is None else self.store.codec.decode(row.session_data)

    def rows(self) -> list[str]:
        return sorted(r.key for r in self.store.iter_rows("all"))


# -- ASGI ------------------------------------------------------------------------------------


def build_asgi_app(store: SessionStore) -> Starlette:
    def respond(payload: Any = None, status: int = 200) -> JSONResponse:
        return JSONResponse(payload if payload is not None else {}, status_code=status)

    async def none(request):
        return PlainTextResponse("untouched")

    async def read(request):
        preloaded = request.session.is_loaded
        return respond({"data": dict(request.session), "key": request.session.session_key, "preloaded": preloaded})

    async def write(request):
        session = request.session
        for name, value in request.query_params.items():
            session[name] = value
        if not request.query_params:
            session["n"] = session.get("n", 0) + 1
        return respond({"key": session.session_key})

    def sync_write(request):  # a plain def endpoint: Starlette runs it in its thread pool
        request.session["sync"] = "yes"
        return respond()

    async def clear(request):
        request.session.clear()
        return respond()

    async def login(request):
        request.session.cycle_key()
        request.session["user"] = request.query_params.get("user", "alice")
        return respond()

    async def logout(request):
        request.session.flush()
        if "crash" in request.query_params:
            raise RuntimeError("boom after logout")
        return respond()

    async def set_life(request):
        kind = request.path_params["kind"]
        session = request.session
        if kind == "browser-close":
            session.set_life(TILL_BROWSER_CLOSE)
        elif kind == "3600":
            session.set_life(3600)
        elif kind == "idle-3600":
            session.set_life(3600, idle=True)
        else:
            session.set_life(None)
        return respond()

    async def expiry(request):
        s = request.session
        return respond({"age": s.get_expiry_age(), "browser_close": s.get_expire_at_browser_close()})

    async def fail(request):
        request.session["user"] = "changed"
        return respond(status=int(request.query_params.get("status", 500)))

    async def crash(request):
        request.session["user"] = "changed"
        raise RuntimeError("boom")

    async def aborted(request):
        request.session["user"] = "changed"
        raise HTTPException(503)

    async def gone(request):
        key = request.session.session_key
        request.session.get("user")
        await asyncio.to_thread(store.delete, key)  # logout elsewhere, `sessctl delete`, purge...
        request.session["user"] = "resurrected?"
        return respond()

    async def vary(request):
        request.session.get("x")
        return PlainTextResponse("ok", headers={"Vary": "Accept-Encoding"})

    async def ws(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_json({"data": dict(websocket.session), "preloaded": websocket.session.is_loaded})
        websocket.session["from_ws"] = True  # not saved: no cookie can follow a handshake
        await websocket.close()

    routes = [
        Route("/none", none),
        Route("/read", read),
        Route("/write", write),
        Route("/sync-write", sync_write),
        Route("/clear", clear),
        Route("/login", login),
        Route("/logout", logout),
        Route("/life/{kind}", set_life),
        Route("/expiry", expiry),
        Route("/fail", fail),
        Route("/crash", crash),
        Route("/abort", aborted),
        Route("/gone", gone),
        Route("/vary", vary),
        WebSocketRoute("/ws", ws),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, store=store)])


@dataclass
class Response:
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def set_cookies(self) -> list[str]:
        return self.headers.get_list("set-cookie")

    def cookie(self, name: str = "sessionid") -> str | None:
        found = [c for c in self.set_cookies if c.split("=", 1)[0] == name]
        assert len(found) <= 1, found
        return found[0] if found else None

    @property
    def vary(self) -> list[str]:
        return [v.strip().lower() for value in self.headers.get_list("vary") for v in value.split(",") if v.strip()]

    def json(self) -> Any:
        return json.loads(self.body)


class AsgiWeb(_Table):
    """An ASGI app, an event loop to run it on, and a browser (httpx with a cookie jar)."""

    kind = "asgi"

    def __init__(self, app: Any, store: SessionStore) -> None:
        self.app = app
        self.store = store
        self.runner = asyncio.Runner()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        self._raw = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.run(self._raw.aclose())
        self.runner.close()

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    async def aget(self, path: str, client: httpx.AsyncClient | None = None, **kw: Any) -> Response:
        r = await (client or self.client).get(path, **kw)
        return Response(r.status_code, r.headers, r.content)

    def get(self, path: str = "/") -> Response:
        return self.run(self.aget(path))

    def raw(self, path: str = "/", cookie: str | None = None) -> Response:
        """A request with exactly this Cookie header, outside the jar."""
        self._raw.cookies.clear()
        return self.run(self.aget(path, self._raw, headers={"Cookie": cookie} if cookie is not None else {}))

    @property
    def key(self) -> str | None:
        return self.client.cookies.get("sessionid")


# -- Flask -----------------------------------------------------------------------------------


def build_flask_app(store: SessionStore) -> Flask:
    app = Flask("sessctl_flask_test")
    install(app, store=store)

    @app.get("/none")
    def none():
        return "untouched"

    @app.get("/touch")
    def touch():
        return {"modified": session.modified}  # the proxy is touched, the data is not

    @app.get("/read")
    def read():
        return jsonify(data=dict(session), key=session.session_key)

    @app.get("/write")
    def write():
        for name, value in request.args.items():
            session[name] = value
        if not request.args:
            session["n"] = session.get("n", 0) + 1
        return {"key": session.session_key}

    @app.get("/clear")
    def clear():
        session.clear()
        return "cleared"

    @app.get("/login")
    def login():
        session.cycle_key()
        session["user"] = request.args.get("user", "alice")
        return "in"

    @app.get("/logout")
    def logout():
        session.flush()
        return "out"

    @app.get("/browser-close")
    def browser_close():
        session.set_life(TILL_BROWSER_CLOSE)
        return "ok"

    @app.get("/life-3600")
    def life_3600():
        session.set_life(3600)
        return "ok"

    @app.get("/idle-3600")
    def idle_3600():
        session.set_life(3600, idle=True)
        return "ok"

    @app.get("/life/<kind>")
    def life(kind):
        lives = {"browser-close": TILL_BROWSER_CLOSE, "3600": 3600, "none": None}
        if kind == "idle-3600":
            session.set_life(3600, idle=True)
        else:
            session.set_life(lives[kind])
        return "ok"

    @app.get("/vary")
    def with_vary():
        session.get("x")
        return "ok", 200, {"Vary": "Accept-Encoding"}

    @app.get("/life-none")
    def life_none():
        session.set_life(None)
        return "ok"

    @app.get("/permanent/<state>")
    def permanent(state):
        session.permanent = state == "on"
        return {"permanent": session.permanent}

    @app.get("/expiry")
    def expiry():
        return {
            "age": session.get_expiry_age(),
            "date": session.get_expiry_date().isoformat(),
            "browser_close": session.get_expire_at_browser_close(),
            "permanent": session.permanent,
            "new": session.new,
        }

    @app.get("/fail")
    def fail():
        session["user"] = "changed"
        return "failed", int(request.args.get("status", 500))

    @app.get("/crash")
    def crash():
        session["user"] = "changed"
        raise RuntimeError("boom")

    @app.get("/abort")
    def aborted():
        session["user"] = "changed"
        abort(503)

    @app.get("/gone")
    def gone():
        key = session.session_key
        session.get("user")  # loaded
        store.delete(key)  # logout elsewhere, `sessctl delete`, purge...
        session["user"] = "resurrected?"
        return "ok"

    @app.get("/flash")
    def do_flash():
        flash("saved")
        return "ok"

    @app.get("/flashes")
    def flashes():
        return {"messages": get_flashed_messages()}

    return app

class FlaskWeb(_Table):
    """The Flask app and its test client; responses as :class:`Response`."""

    kind = "flask"

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.app = build_flask_app(store)
        self.client = self.app.test_client()

    def close(self) -> None:
        pass

    @staticmethod
    def _response(r: Any) -> Response:
        return Response(r.status_code, httpx.Headers(list(r.headers.items())), r.get_data())

    def get(self, path: str = "/") -> Response:
        return self._response(self.client.get(path))

    def raw(self, path: str = "/", cookie: str | None = None) -> Response:
        """A request with exactly this Cookie header, outside the jar."""
        headers = {"Cookie": cookie} if cookie is not None else {}
        return self._response(self.app.test_client(use_cookies=False).get(path, headers=headers))

    @property
    def key(self) -> str | None:
        c = self.client.get_cookie("sessionid")
        return None if c is None else c.value


# -- WSGI ------------------------------------------------------------------------------------


def _wsgi_life(session, environ):
    kind = environ["PATH_INFO"].rsplit("/", 1)[1]
    if kind == "idle-3600":
        session.set_life(3600, idle=True)
    else:
        session.set_life({"browser-close": TILL_BROWSER_CLOSE, "3600": 3600, "none": None}[kind])


def _wsgi_write(session, environ):
    pairs = [p.partition("=") for p in environ.get("QUERY_STRING", "").split("&") if p]
    for name, _, value in pairs:
        session[name] = value
    if not pairs:
        session["n"] = session.get("n", 0) + 1
    return {"key": session.session_key}


def _wsgi_login(session, environ):
    session.cycle_key()
    session["user"] = environ.get("QUERY_STRING", "").partition("user=")[2] or "alice"


def _wsgi_fail(session, environ):
    session["user"] = "changed"
    return int(environ.get("QUERY_STRING", "").partition("status=")[2] or 500)


def _wsgi_crash(session, environ):
    session["user"] = "changed"
    raise RuntimeError("boom")


def _wsgi_abort(session, environ):
    session["user"] = "changed"
    return 503


def wsgi_routes(store: SessionStore) -> dict:
    def gone(session, environ):
        key = session.session_key
        session.get("user")
        store.delete(key)  # logout elsewhere, `sessctl delete`, purge...
        session["user"] = "resurrected?"

    routes = {
        "/none": lambda s, e: {"untouched": True},
        "/read": lambda s, e: {"data": dict(s.items()), "key": s.session_key},
        "/write": _wsgi_write,
        "/clear": lambda s, e: s.clear(),
        "/login": _wsgi_login,
        "/logout": lambda s, e: s.flush(),
        "/expiry": lambda s, e: {"age": s.get_expiry_age(), "browser_close": s.get_expire_at_browser_close()},
        "/fail": _wsgi_fail,
        "/crash": _wsgi_crash,
        "/abort": _wsgi_abort,
        "/gone": gone,
    }
    routes.update({f"/life/{kind}": _wsgi_life for kind in ("browser-close", "3600", "idle-3600", "none")})
    return routes


def build_wsgi_app(store: SessionStore) -> Any:
    dispatch = routes_app(wsgi_routes(store))

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/vary":  # routes_app sends no Vary of its own
            environ["sessctl.session"].get("x")
            start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", "Accept-Encoding")])
            return [b"ok"]
        return dispatch(environ, start_response)

    return WSGISessionMiddleware(app, store=store)


class WsgiWeb(_Table):
    """The WSGI middleware served over real HTTP, and a browser with a cookie jar."""

    kind = "wsgi"

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._stack = contextlib.ExitStack()
        self.server = self._stack.enter_context(serve(build_wsgi_app(store)))
        self.client = Client(self.server)

    def close(self) -> None:
        self._stack.close()
        self.server.assert_no_errors()

    def get(self, path: str = "/") -> Any:
        return self.client.get(path)

    def raw(self, path: str = "/", cookie: str | None = None) -> Any:
        return raw_get(self.server, path, cookie)

    @property
    def key(self) -> str | None:
        return self.client.cookie_value()


def login(w, **data: str) -> str:
    """Create a session holding ``data`` through the app (user=1 by default); returns its key."""
    for name, value in (data or {"user": "1"}).items():
        r = w.get(f"/write?{name}={value}")
        assert (r.status_code if hasattr(r, "status_code") else r.status) == 200  # Flask's own: status_code
    assert w.key and KEY_RE.fullmatch(w.key)
    return w.key


DRIVERS = {"wsgi": WsgiWeb, "flask": FlaskWeb, "asgi": lambda store: AsgiWeb(build_asgi_app(store), store)}
