"""sessctl.asgi through Starlette and FastAPI, driven by httpx (ASGITransport, real cookie jar), on every backend.

Each test runs its requests on one event loop (``asyncio.Runner``) so that
the worker threads the middleware uses are real. Starlette's ``TestClient``
is not used: with httpx it raises a deprecation warning (an error here).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.requests import Request as StarletteRequest

from httpserver import cookie_attrs
from sessctl import SessionStore, Settings
from sessctl.asgi import ASGISession, SessionMiddleware
from sessctl.config import ConfigError
from sessctl.store import new_key
from adapters import AsgiWeb as Web, login
from adapters import build_asgi_app
from helpers import AGE, DELETION, SECRET, save, load

UTC = timezone.utc


# -- the app ---------------------------------------------------------------------------------


@pytest.fixture
def web(store):
    """``web(clock=..., app=builder, **settings)``: an ASGI app on its own store (sharing the test's engine)."""
    made: list[Web] = []

    def start(*, clock=None, app=build_asgi_app, **overrides: Any) -> Web:
        settings = store.settings.replace(**overrides) if overrides else store.settings
        st = SessionStore(settings, engine=store.engine, clock=clock)
        w = Web(app(st), st)
        made.append(w)
        return w

    yield start
    for w in made:
        w.close()
        w.store.close()


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


# -- lifetimes -----------------------------------------------------------------------------


# -- keys ----------------------------------------------------------------------------------


def test_flush_deletes_the_row_even_if_the_app_then_fails(web):
    w = web()
    key = login(w)
    r = w.get("/logout?crash=1")
    assert r.status == 500
    assert w.store.get_row(key) is None


# -- failures ------------------------------------------------------------------------------


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
    w = Web(build_asgi_app(store), store)

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
