"""ASGI middleware for Starlette and FastAPI: ``request.session`` stored by sessctl.

::

    from fastapi import FastAPI, Request
    from sessctl import Settings
    from sessctl.asgi import SessionMiddleware

    app = FastAPI()
    app.add_middleware(SessionMiddleware, settings=Settings.load())

    @app.post("/login")
    async def login(request: Request):
        request.session.cycle_key()
        request.session["user"] = "alice"
        request.session.set_life(8 * 3600)

The session is at ``scope["session"]`` (where Starlette's ``request.session``
and ``websocket.session`` look), with the whole sessctl API. The response
follows the WSGI :class:`~sessctl.middleware.SessionMiddleware`'s rules (the
same code decides them).

No store call runs on the event loop:

* a request that carries a well-formed session cookie has its session loaded
  in a worker thread *before* the app is called (one SELECT, even if the
  endpoint never reads it), so ``request.session[...]`` never queries. A
  request without one costs no query at all;
* the save (or delete) runs in a worker thread when the app sends
  ``http.response.start``, which goes out once the cookie is known;
* ``flush()`` deletes the row from that same thread, before the response
  starts (and even if the app then fails, as in the WSGI middleware).

Store calls run on sessctl's own bounded pool of worker threads (under trio,
through anyio, a limiter of its own), never on the threads the app's own
``to_thread`` work uses. A websocket gets its session loaded, but
changes made during the connection are not saved (no cookie can be sent once
the handshake is done). Other scopes (lifespan) pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from . import devices
from .config import Settings
from .cookies import INTERRUPTED_BODY, INTERRUPTED_STATUS, CookieRules, build_store, interrupted_headers, parse_cookie
from .errors import SessionInterrupted
from .session import Session
from .store import SessionStore, valid_key

__all__ = ["ASGISession", "SessionMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")


STORE_THREADS = 16  # store calls of one process in flight at once (each bounded by the store's timeout)
_pool: dict[str, Any] = {"pid": None, "executor": None, "limiter": None}


def _executor() -> Any:
    """sessctl's own worker threads, made per process (threads do not survive a fork)."""
    pid = os.getpid()
    if _pool["pid"] != pid:
        from concurrent.futures import ThreadPoolExecutor

        _pool.update(pid=pid, limiter=None,
                     executor=ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="sessctl-store"))
    return _pool["executor"]


async def run_sync(fn: Callable[[], T]) -> T:
    """Run ``fn`` in one of sessctl's own worker threads, off the event loop.

    Not asyncio's default executor (nor anyio's default limiter): a database that hangs
    holds at most ``STORE_THREADS`` of sessctl's threads, each for at most the store's
    bound, and never the threads the app's own ``to_thread`` work needs.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio through anyio, Starlette's own dependency
        import anyio
        from anyio.to_thread import run_sync as anyio_run_sync

        _executor()
        if _pool["limiter"] is None:
            _pool["limiter"] = anyio.CapacityLimiter(STORE_THREADS)
        return await anyio_run_sync(fn, limiter=_pool["limiter"])
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(_executor(), functools.partial(ctx.run, fn))


class ASGISession(Session):
    """A :class:`~sessctl.session.Session` whose ``flush()`` leaves the deletes to the middleware (off the loop)."""

    def __init__(self, store: SessionStore, key: str | None = None) -> None:
        super().__init__(store, key)
        self.defer_deletes = True


class SessionMiddleware:
    """Give each HTTP request (and websocket) a session at ``scope["session"]``.

    ``SessionMiddleware(app, settings)``, or pass a ready ``store=`` to share
    one between apps; with Starlette/FastAPI,
    ``app.add_middleware(SessionMiddleware, settings=...)``.
    """

    def __init__(self, app: ASGIApp, settings: Settings | None = None, *, store: SessionStore | None = None) -> None:
        store = build_store("SessionMiddleware", settings, store)
        self.app = app
        self.store = store
        self.settings = store.settings
        self.rules = CookieRules(store.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookie = parse_cookie(_cookie_header(scope), self.settings.cookie_name)
        session = ASGISession(self.store, cookie)
        if self.settings.track_devices:
            session.device_source = lambda: devices.from_asgi(self.settings, scope)
        scope["session"] = session
        if valid_key(cookie):  # a well-formed key: load it off the loop (a malformed one is never looked up)
            await run_sync(session.preload)
        try:
            if kind == "websocket":
                await self.app(scope, receive, send)
                return
            had_cookie = cookie is not None
            started = interrupted = False

            async def send_with_session(message: Message) -> None:
                nonlocal started, interrupted
                if interrupted:
                    return  # the app's own body: replaced by the 400's
                if message["type"] == "http.response.start" and not started:
                    started = True
                    try:
                        message = await self._finish(session, had_cookie, message)
                    except SessionInterrupted:
                        # As Django: a 400 instead of the app's response, with no cookie (sessctl.cookies).
                        interrupted = True
                        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in interrupted_headers()]
                        await send({"type": "http.response.start", "status": INTERRUPTED_STATUS, "headers": headers})
                        await send({"type": "http.response.body", "body": INTERRUPTED_BODY, "more_body": False})
                        return
                await send(message)

            try:
                await self.app(scope, receive, send_with_session)
            except BaseException:
                if not started:  # the server answers 500 without us: no cookie leaves
                    await run_sync(session.abandon_unsent)
                raise
        finally:
            if session.pending_deletes:  # flushed, and the response never started
                await run_sync(session.delete_pending)

    async def _finish(self, session: ASGISession, had_cookie: bool, message: Message) -> Message:
        if not self.rules.needs_work(session, had_cookie):
            return message  # untouched: no header, no query
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
        status = str(message["status"])

        def finish() -> None:
            self.rules.finish(session, had_cookie, status, headers)

        every = self.settings.save_every_request
        if session.modified or every or session.pending_deletes or not session.is_loaded or session.touch_due():
            await run_sync(finish)  # a save or a delete
        else:
            finish()  # read only: headers alone, no query
        return {**message, "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]}


def _cookie_header(scope: Scope) -> str:
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"cookie"]
    return "; ".join(values)
