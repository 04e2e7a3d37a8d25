"""sessctl.asgi through Starlette and FastAPI, driven by httpx (ASGITransport, real cookie jar), on every backend.

Each test runs its requests on one event loop (``asyncio.Runner``) so that
the worker threads the middleware uses are real. Starlette's ``TestClient``
is not used: with httpx it raises a deprecation warning (an error here).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from werkzeug.test import Client as WSGIClient

from httpserver import StatementLog, cookie_attrs, routes_app
from sessctl import SessionMiddleware as WSGISessionMiddleware
from sessctl import SessionStore, Settings, TILL_BROWSER_CLOSE
from sessctl.asgi import ASGISession, SessionMiddleware
from sessctl.config import ConfigError
from sessctl.policy import EXPIRY_KEY, RESEND_KEY
from sessctl.store import new_key
from helpers import AGE, DELETION, KEY_RE, SECRET, Clock, save, load

UTC = timezone.utc





# -- the app ---------------------------------------------------------------------------------


def build_app(store: SessionStore) -> Starlette:
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
        import json

        return json.loads(self.body)


class Web:
    """An ASGI app, an event loop to run it on, and a browser (httpx with a cookie jar)."""

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

    def data(self, key: str | None = None) -> dict[str, Any] | None:
        row = self.store.get_row(key or self.key)
        return None if row is None else self.store.codec.decode(row.session_data)

    def rows(self) -> list[str]:
        return sorted(r.key for r in self.store.iter_rows("all"))


@pytest.fixture
def web(store):
    """``web(clock=..., app=builder, **settings)``: an ASGI app on its own store (sharing the test's engine)."""
    made: list[Web] = []

    def start(*, clock=None, app=build_app, **overrides: Any) -> Web:
        settings = store.settings.replace(**overrides) if overrides else store.settings
        st = SessionStore(settings, engine=store.engine, clock=clock)
        w = Web(app(st), st)
        made.append(w)
        return w

    yield start
    for w in made:
        w.close()
        w.store.close()


@pytest.fixture
def log(store):
    with StatementLog(store.engine, store.settings.table) as statements:
        yield statements


def login(w: Web, **data: str) -> str:
    for name, value in (data or {"user": "1"}).items():
        assert w.get(f"/write?{name}={value}").status == 200
    assert w.key and KEY_RE.fullmatch(w.key)
    return w.key


# -- untouched, read, write ----------------------------------------------------------------


def test_untouched_request_without_a_cookie_runs_no_query(web, log):
    w = web()
    r = w.get("/none")
    assert r.status == 200 and r.set_cookies == [] and r.vary == []
    r = w.raw("/none", cookie="sessionid=not/a-key")  # malformed: never looked up
    assert r.set_cookies == [] and r.vary == []
    assert log.kinds == []


def test_untouched_request_with_a_cookie_costs_only_the_preload(web, log):
    w = web()
    key = login(w)
    log.clear()
    r = w.get("/none")
    assert r.set_cookies == [] and r.vary == []
    assert log.kinds == ["SELECT"]  # loaded off the loop before the app ran
    log.clear()
    r = w.raw("/none", cookie=f"sessionid={new_key()}")  # unknown: one SELECT, then nothing
    assert r.set_cookies == [] and r.vary == []
    assert log.kinds == ["SELECT"]
    assert w.key == key


def test_create_read_modify_and_their_queries(web, log):
    w = web()
    log.clear()
    r = w.get("/write?user=1")
    assert log.kinds == ["INSERT"]
    header = r.cookie()
    assert re.fullmatch(
        r"sessionid=[a-z0-9]{32}; expires=\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT; HttpOnly; "
        r"Max-Age=1209600; Path=/; SameSite=Lax",
        header,
    ), header
    assert r.vary == ["cookie"]
    key = w.key
    assert cookie_attrs(header)[1] == key
    log.clear()
    r = w.get("/read")
    assert log.kinds == ["SELECT"]
    assert r.json() == {"data": {"user": "1"}, "key": key, "preloaded": True}
    assert r.set_cookies == [] and r.vary == ["cookie"]
    log.clear()
    r = w.get("/write?cart=2")
    assert log.kinds == ["SELECT", "UPDATE"]
    assert cookie_attrs(r.cookie())[1] == key
    assert w.data(key) == {"user": "1", "cart": "2"}
    r = w.get("/sync-write")
    assert cookie_attrs(r.cookie())[1] == key
    assert w.data(key) == {"user": "1", "cart": "2", "sync": "yes"}


def test_new_session_that_sets_nothing_gets_no_cookie_and_no_row(web, log):
    w = web()
    r = w.get("/read")
    assert r.json() == {"data": {}, "key": None, "preloaded": False}
    assert r.set_cookies == [] and r.vary == ["cookie"]
    assert log.kinds == [] and w.rows() == []


def test_vary_cookie_is_merged_into_an_existing_vary(web):
    w = web()
    r = w.get("/vary")
    assert r.vary == ["accept-encoding", "cookie"] and len(r.headers.get_list("vary")) == 1


def test_save_every_request_resaves_and_resends(web, log):
    clock = Clock()
    w = web(clock=clock, save_every_request=True)
    assert w.get("/none").set_cookies == []
    key = login(w)
    clock.advance(60)
    log.clear()
    r = w.get("/none")
    assert cookie_attrs(r.cookie())[1] == key and "cookie" in r.vary
    assert log.kinds == ["SELECT", "UPDATE"]
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=AGE)
    r = w.raw("/none", cookie=f"sessionid={new_key()}")
    assert r.cookie() == DELETION
    assert w.rows() == [key]


# -- lifetimes -----------------------------------------------------------------------------


def test_set_life_variants_and_their_cookies(web):
    clock = Clock()
    w = web(clock=clock)
    key = login(w)
    _, value, attrs = cookie_attrs(w.get("/life/browser-close").cookie())
    assert value == key and "max-age" not in attrs and "expires" not in attrs
    assert w.data() == {"user": "1", EXPIRY_KEY: 0}
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=AGE)
    assert w.get("/expiry").json()["browser_close"] is True
    _, _, attrs = cookie_attrs(w.get("/life/3600").cookie())
    assert attrs["max-age"] == "3600"
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=3600)
    clock.advance(600)
    assert w.get("/expiry").json() == {"age": 3000, "browser_close": False}
    _, _, attrs = cookie_attrs(w.get("/life/idle-3600").cookie())
    assert attrs["max-age"] == "3600"
    clock.advance(600)
    w.get("/write?touch=1")
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=3600)
    _, _, attrs = cookie_attrs(w.get("/life/none").cookie())
    assert attrs["max-age"] == str(AGE) and EXPIRY_KEY not in w.data()
    w.get("/life/3600")
    clock.advance(3601)
    assert w.get("/read").json()["data"] == {}


def test_lifetime_set_by_another_writer_reaches_the_next_cookie(web):
    w = web()
    key = login(w)
    w.store.update(key, lambda d: d.__setitem__(EXPIRY_KEY, 0), resend=True)  # as `sessctl till-browser-close`
    assert w.get("/none").set_cookies == []  # preloaded, but not used: the signal waits
    r = w.get("/read")
    assert r.json()["data"] == {"user": "1", EXPIRY_KEY: 0}
    _, value, attrs = cookie_attrs(r.cookie())
    assert value == key and "max-age" not in attrs and "expires" not in attrs
    assert RESEND_KEY not in w.data(key)
    assert w.get("/read").set_cookies == []


# -- keys ----------------------------------------------------------------------------------


def test_cycle_key_on_login(web):
    w = web()
    old = login(w, cart="x")
    r = w.get("/login?user=7")
    new = cookie_attrs(r.cookie())[1]
    assert new != old and KEY_RE.fullmatch(new) and w.key == new
    assert w.data(new) == {"cart": "x", "user": "7"}
    assert w.store.get_row(old) is None and w.rows() == [new]
    assert w.raw("/read", cookie=f"sessionid={old}").json()["data"] == {}


def test_flush_on_logout_deletes_row_and_cookie(web, log):
    w = web()
    key = login(w)
    log.clear()
    r = w.get("/logout")
    assert r.set_cookies == [DELETION] and r.vary == ["cookie"]
    assert log.kinds == ["SELECT", "DELETE"]
    assert w.store.get_row(key) is None and w.rows() == []
    assert w.key is None
    r = w.get("/logout")
    assert r.set_cookies == [] and r.vary == ["cookie"]


def test_flush_deletes_the_row_even_if_the_app_then_fails(web):
    w = web()
    key = login(w)
    r = w.get("/logout?crash=1")
    assert r.status == 500
    assert w.store.get_row(key) is None


def test_session_emptied_by_the_view_is_deleted_with_its_cookie(web):
    w = web()
    key = login(w, a="1", b="2")
    r = w.get("/clear")
    assert r.cookie() == DELETION and "cookie" in r.vary
    assert w.store.get_row(key) is None and w.key is None


@pytest.mark.parametrize("kind", ["unknown", "malformed", "tampered"])
def test_client_key_is_never_adopted(web, kind):
    w = web()
    sent = new_key()
    if kind == "malformed":
        sent = "../../etc/passwd"
    elif kind == "tampered":
        assert w.store.insert_row(sent, "not:a:signature", datetime.now(UTC) + timedelta(days=1))
    r = w.raw("/read", cookie=f"sessionid={sent}")
    assert r.json()["data"] == {} and r.json()["key"] is None
    assert r.cookie() == DELETION
    r = w.raw("/write?user=1", cookie=f"sessionid={sent}")
    new = cookie_attrs(r.cookie())[1]
    assert new != sent and KEY_RE.fullmatch(new)
    assert w.data(new) == {"user": "1"}
    if kind == "tampered":
        assert w.store.get_row(sent).session_data == "not:a:signature"


def test_session_deleted_during_the_request_is_not_recreated(web):
    w = web()
    key = login(w)
    r = w.get("/gone")
    assert r.status == 200 and r.cookie() == DELETION
    assert w.store.get_row(key) is None and w.rows() == []
    assert w.key is None


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/fail?status=500", "/fail?status=503", "/crash"])
def test_nothing_is_saved_on_a_5xx(web, path):
    w = web()
    key = login(w)
    before = w.store.get_row(key)
    r = w.get(path)
    assert r.status >= 500 and r.set_cookies == []
    assert w.store.get_row(key) == before
    r = w.raw(path)
    assert r.status >= 500 and r.set_cookies == []
    assert w.rows() == [key]


def test_missing_settings_or_secret_fail_at_construction(settings):
    async def app(scope, receive, send):  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(ConfigError, match="secret key"):
        SessionMiddleware(app, settings.replace(secret_key=None))
    with pytest.raises(TypeError):
        SessionMiddleware(app)


# -- the event loop is never blocked --------------------------------------------------------


def test_every_store_call_runs_off_the_event_loop(web):
    w = web()
    threads: dict[str, set[int]] = {}
    for name in ("load_row", "insert_row", "swap_row", "delete_row"):
        real = getattr(w.store, name)

        def recording(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            threads.setdefault(_name, set()).add(threading.get_ident())
            return _real(*args, **kwargs)

        setattr(w.store, name, recording)
    async def current_thread() -> int:
        return threading.get_ident()

    loop_thread = w.run(current_thread())
    login(w)  # insert
    w.get("/read")  # load
    w.get("/write?a=2")  # load + swap
    w.get("/login")  # load, delete the old row, insert
    w.get("/logout")  # load + delete
    login(w)
    w.get("/gone")  # load, a delete elsewhere, a swap that finds the row gone
    assert set(threads) == {"load_row", "insert_row", "swap_row", "delete_row"}
    assert all(loop_thread not in idents for idents in threads.values()), threads


def test_the_loop_keeps_ticking_while_a_save_waits_for_a_sqlite_lock(tmp_path):
    """A save blocked ~0.3 s by another connection's write lock runs in a worker thread."""
    path = tmp_path / "sessions.db"
    settings = Settings(database_url=f"sqlite:///{path}", secret_key=SECRET)
    store = SessionStore(settings)
    store.create_table()
    w = Web(build_app(store), store)

    def hold_write_lock(locked: threading.Event, seconds: float) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(seconds)
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def ticks_during(action: Any) -> tuple[int, float, Any]:
        locked = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(locked, 0.3))
        holder.start()
        locked.wait(5)
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = time.monotonic()
        try:
            result = await action()
        finally:
            elapsed = time.monotonic() - start
            stop.set()
            await task
            await asyncio.to_thread(holder.join)
        return ticks, elapsed, result

    try:
        login(w)
        # Through the middleware: the UPDATE waits for the lock in a worker thread.
        ticks, elapsed, r = w.run(ticks_during(lambda: w.aget("/write?cart=2")))
        assert r.status == 200 and r.cookie() is not None
        assert elapsed >= 0.2, elapsed
        assert ticks >= 10, (ticks, elapsed)
        assert w.data() == {"user": "1", "cart": "2"}

        # The control: the same wait on the loop itself freezes the ticker.
        async def blocking_save() -> str:
            return save(store, None, {"on": "the loop"})

        ticks, elapsed, key = w.run(ticks_during(blocking_save))
        assert elapsed >= 0.2 and ticks <= 2, (ticks, elapsed)
        assert load(store, key) == {"on": "the loop"}
    finally:
        w.close()
        store.close()


# -- websocket and lifespan -----------------------------------------------------------------


def _ws_scope(cookie: str | None) -> dict[str, Any]:
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return {
        "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "ws",
        "server": ("testserver", 80), "client": ("127.0.0.1", 50000), "root_path": "",
        "path": "/ws", "raw_path": b"/ws", "query_string": b"", "headers": headers, "subprotocols": [],
    }


def test_websocket_gets_the_session_loaded_but_never_saves(web, log):
    w = web()
    key = login(w)
    before = w.store.get_row(key)
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    log.clear()
    w.run(w.app(_ws_scope(f"sessionid={key}"), receive, send))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    import json

    assert json.loads(sent[1]["text"]) == {"data": {"user": "1"}, "preloaded": True}
    assert log.kinds == ["SELECT"]
    assert w.store.get_row(key) == before


def test_cookie_split_over_several_headers_is_found(web):
    """HTTP/2 may send one Cookie header per cookie."""
    w = web()
    key = login(w)
    seen: list[Any] = []

    async def app(scope, receive, send):
        seen.append(dict(scope["session"]))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "2", "method": "GET", "scheme": "http",
        "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
        "headers": [(b"cookie", b"theme=dark"), (b"cookie", f"sessionid={key}".encode())],
    }
    sent: list[dict[str, Any]] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    w.run(SessionMiddleware(app, store=w.store)(scope, receive, send))
    assert seen == [{"user": "1"}]
    assert sent[0]["headers"] == [(b"content-type", b"text/plain"), (b"vary", b"Cookie")]


def test_lifespan_passes_through_untouched(store):
    seen: list[dict[str, Any]] = []

    async def app(scope, receive, send):
        seen.append(dict(scope))
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})

    sent: list[dict[str, Any]] = []

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        sent.append(message)

    asyncio.run(SessionMiddleware(app, store=store)({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert seen == [{"type": "lifespan", "asgi": {"version": "3.0"}}]
    assert sent == [{"type": "lifespan.startup.complete"}]


# -- FastAPI, and the same sessions through every adapter -----------------------------------------


def build_fastapi(store: SessionStore) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store)

    @app.post("/login")
    async def login(request: Request, user: str):
        request.session.cycle_key()
        request.session["user"] = user
        request.session.set_life(3600, idle=True)
        return {"ok": True}

    @app.get("/me")
    def me(request: Request):  # a sync path operation, run in FastAPI's thread pool
        assert isinstance(request.session, ASGISession)
        return {"user": request.session.get("user"), "age": request.session.get_expiry_age()}

    @app.post("/logout")
    async def logout(request: Request):
        request.session.flush()
        return {"ok": True}

    return app


def test_fastapi_login_me_logout(web):
    w = web(app=build_fastapi)
    r = w.run(w.client.post("/login", params={"user": "ada"}))
    assert r.status_code == 200
    _, key, attrs = cookie_attrs(r.headers["set-cookie"])
    assert attrs["max-age"] == "3600" and w.key == key
    assert w.get("/me").json() == {"user": "ada", "age": 3600}
    r = w.run(w.client.post("/logout"))
    assert r.headers.get_list("set-cookie") == [DELETION]
    assert w.rows() == [] and w.key is None
    assert w.get("/me").json() == {"user": None, "age": AGE}


def test_sessions_are_shared_with_the_wsgi_middleware_and_the_store(web):
    w = web()
    wsgi = WSGISessionMiddleware(
        routes_app({
            "/read": lambda s, e: {"data": dict(s.items())},
            "/write": lambda s, e: s.__setitem__("from", "wsgi"),
        }),
        store=w.store,
    )
    key = login(w, user="asgi")
    assert load(w.store, key) == {"user": "asgi"}
    wc = WSGIClient(wsgi, use_cookies=False)
    assert wc.get("/read", headers={"Cookie": f"sessionid={key}"}).json == {"data": {"user": "asgi"}}
    r = wc.get("/write", headers={"Cookie": f"sessionid={key}"})
    assert cookie_attrs(r.headers["Set-Cookie"])[1] == key
    assert w.get("/read").json()["data"] == {"user": "asgi", "from": "wsgi"}
    other = cookie_attrs(WSGIClient(wsgi, use_cookies=False).get("/write").headers["Set-Cookie"])[1]
    assert w.raw("/read", cookie=f"sessionid={other}").json()["data"] == {"from": "wsgi"}
    third = save(w.store, None, {"from": "store"})
    assert w.raw("/read", cookie=f"sessionid={third}").json()["data"] == {"from": "store"}


# -- layering ------------------------------------------------------------------------------

FRAMEWORKS = ("flask", "werkzeug", "starlette", "fastapi", "anyio", "httpx", "django")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return out.split()


def test_the_runtime_imports_no_web_framework():
    runtime = (
        "import sessctl\n"
        "from sessctl import Settings, SessionMiddleware, SessionStore, Session, TILL_BROWSER_CLOSE\n"
        "import sessctl.config, sessctl.policy, sessctl.codec, sessctl.model, sessctl.store, sessctl.session, "
        "sessctl.middleware"
    )
    assert _imported_after(runtime) == []


def test_the_asgi_adapter_needs_neither_starlette_nor_anyio():
    assert _imported_after("import sessctl.asgi") == []
