"""A real HTTP server and a real browser-like client for the middleware tests.

``serve(app)`` runs a WSGI app in wsgiref's server on 127.0.0.1 (an OS-chosen
port), with one thread per request (``ThreadingMixIn``) so that concurrent
requests really overlap. ``Client`` talks to it through ``urllib`` with a real
``http.cookiejar.CookieJar``; ``client.close_browser()`` is
``jar.clear_session_cookies()``, which is what a browser does on exit.

``routes_app({"/path": view})`` builds a small WSGI app: each view is called
as ``view(session, environ)`` and returns ``None`` (200, ``{}``), a payload
(200, JSON), an int status, or ``(status, payload)``. Exceptions raised by the
app are recorded on the server (``server.errors``) so a test can assert that
none happened instead of reading a traceback on stderr.

``StatementLog(engine, table)`` records the statements the runtime really
sends on the session table, below SQLAlchemy (the runtime's per-request
statements run on raw pooled DBAPI connections, which SQLAlchemy's
``before_cursor_execute`` event never sees).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.cookiejar import CookieJar
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

ENVIRON_KEY = "sessctl.session"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the request threads (views must not hang)
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@dataclass
class Server:
    url: str
    host: str
    port: int
    errors: list[BaseException] = field(default_factory=list)

    def assert_no_errors(self) -> None:
        if self.errors:
            raise AssertionError(f"the app raised: {self.errors!r}") from self.errors[0]


@contextlib.contextmanager
def serve(app: Callable[..., Any]) -> Iterator[Server]:
    """Serve ``app`` on 127.0.0.1:<free port> in a background thread."""
    errors: list[BaseException] = []

    def recording_app(environ, start_response):
        try:
            result = app(environ, start_response)
            try:
                return list(result)  # run generator apps here, so their errors are recorded too
            finally:
                if hasattr(result, "close"):
                    result.close()
        except BaseException as exc:
            errors.append(exc)
            raise

    server = make_server("127.0.0.1", 0, recording_app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    port = server.server_port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{port}", "127.0.0.1", port, errors)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    @property
    def set_cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []

    def cookie(self, name: str = "sessionid") -> str | None:
        """The one Set-Cookie header for ``name`` (None if absent; fails if sent twice)."""
        found = [c for c in self.set_cookies if c.split("=", 1)[0].strip() == name]
        assert len(found) <= 1, f"cookie {name} set more than once: {found}"
        return found[0] if found else None

    @property
    def vary(self) -> list[str]:
        values = self.headers.get_all("Vary") or []
        return [v.strip().lower() for value in values for v in value.split(",") if v.strip()]

    def json(self) -> Any:
        return json.loads(self.body.decode())


def cookie_attrs(header: str) -> tuple[str, str, dict[str, str | bool]]:
    """Split a Set-Cookie header into (name, value, {attribute-lowercased: value or True})."""
    first, *rest = [p.strip() for p in header.split(";")]
    name, _, value = first.partition("=")
    attrs: dict[str, str | bool] = {}
    for part in rest:
        key, sep, val = part.partition("=")
        attrs[key.strip().lower()] = val.strip() if sep else True
    return name, value, attrs


class Client:
    """A browser: urllib with a real cookie jar."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.jar = CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str = "/", headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
        request = urllib.request.Request(self.server.url + path, headers=headers or {})
        try:
            resp = self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as err:  # 4xx/5xx still carry headers (and cookies)
            with err:
                return Response(err.code, err.headers, err.read())
        with resp:
            return Response(resp.status, resp.headers, resp.read())

    def cookie_value(self, name: str = "sessionid") -> str | None:
        for c in self.jar:
            if c.name == name:
                return c.value
        return None

    def cookie(self, name: str = "sessionid"):
        for c in self.jar:
            if c.name == name:
                return c
        return None

    def close_browser(self) -> None:
        self.jar.clear_session_cookies()


def raw_get(server: Server, path: str = "/", cookie: str | bytes | None = None, timeout: float = 30) -> Response:
    """A request with exactly this Cookie header (bytes are sent as they are), no jar."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.putrequest("GET", path)
        if cookie is not None:
            conn.putheader("Cookie", cookie)
        conn.endheaders()
        resp = conn.getresponse()
        with resp:
            return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def routes_app(routes: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """A WSGI app dispatching on PATH_INFO to ``view(session, environ)``."""

    def app(environ, start_response):
        view = routes.get(environ.get("PATH_INFO", "/"))
        if view is None:
            status, payload = 404, {"error": "no such route"}
        else:
            result = view(environ[ENVIRON_KEY], environ)
            if result is None:
                status, payload = 200, {}
            elif isinstance(result, int):
                status, payload = result, {}
            elif isinstance(result, tuple):
                status, payload = result
            else:
                status, payload = 200, result
        body = json.dumps(payload, default=str).encode()
        start_response(
            f"{status} {_REASONS.get(status, 'Status')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


# -- counting the statements the runtime sends ---------------------------------------------


class _CountingCursor:
    """A real DBAPI cursor that notes each statement it executes."""

    def __init__(self, cursor: Any, log: list[str]) -> None:
        object.__setattr__(self, "_cursor", cursor)
        object.__setattr__(self, "_log", log)

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._log.append(str(statement))
        return self._cursor.execute(statement, *args, **kwargs)

    def executemany(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._log.append(str(statement))
        return self._cursor.executemany(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)

    def __iter__(self) -> Any:
        return iter(self._cursor)

    def __enter__(self) -> _CountingCursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cursor.close()


class _CountingConnection:
    """A real DBAPI connection whose cursors note their statements."""

    def __init__(self, conn: Any, log: list[str]) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_log", log)

    def cursor(self, *args: Any, **kwargs: Any) -> _CountingCursor:
        return _CountingCursor(self._conn.cursor(*args, **kwargs), self._log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)


class StatementLog:
    """Every statement sent on ``engine``'s connections that names ``table``.

    The runtime runs its per-request statements on raw pooled DBAPI
    connections (bypassing SQLAlchemy's execute events), so the log sits
    below both: each new pooled connection's cursors are wrapped. The pool is
    emptied on entry and exit so that every connection in use is wrapped.
    """

    def __init__(self, engine: Any, table: str) -> None:
        self.engine = engine
        self.table = table
        self._all: list[str] = []
        self._lock = threading.Lock()

    def _on_connect(self, dbapi_conn: Any, record: Any) -> None:
        record.dbapi_connection = _CountingConnection(dbapi_conn, self._all)

    def __enter__(self) -> StatementLog:
        from sqlalchemy import event

        self.engine.dispose()
        event.listen(self.engine, "connect", self._on_connect)
        return self

    def __exit__(self, *exc: Any) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "connect", self._on_connect)
        self.engine.dispose()

    @property
    def statements(self) -> list[str]:
        return [s for s in list(self._all) if self.table in s]

    @property
    def kinds(self) -> list[str]:
        """``["SELECT", "UPDATE"]``: the first keyword of each statement on the table."""
        return [s.split(None, 1)[0].upper() for s in self.statements]

    def clear(self) -> None:
        self._all.clear()
