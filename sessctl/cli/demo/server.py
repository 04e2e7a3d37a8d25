"""The demo's server on 127.0.0.1, its throwaway database and secret, and simulated browsers."""

from __future__ import annotations

import contextlib
import html
import re
import secrets
import shutil
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from sessctl.config import Settings
from sessctl.store import SessionStore

from .app import HOST, make_app


# -- a small threaded server ----------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    block_on_close = True  # server_close() waits for the request threads (each ends within its timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(WSGIRequestHandler):
    timeout = 5  # browsers open spare connections and may never use them
    quiet = True

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if not self.quiet:
            super().log_message(format, *args)


class _LoggingHandler(_Handler):
    quiet = False


@contextlib.contextmanager
def _serve(app: Callable[..., Any], port: int, *, log: bool) -> Iterator[str]:
    try:
        handler = _LoggingHandler if log else _Handler
        server = make_server(HOST, port, app, server_class=_Server, handler_class=handler)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {HOST}:{port}: {exc.strerror or exc}; choose another --port (0: any free port)"
        ) from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sessctl-demo")
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


# -- the demo's database, secret and app ----------------------------------------------------------


@dataclass
class Demo:
    folder: Path
    settings: Settings
    store: SessionStore  # the app's
    url: str  # http://127.0.0.1:PORT/

    @property
    def config(self) -> Path:
        return self.folder / "sessctl.toml"

    @property
    def cli_args(self) -> list[str]:
        """Global options that point the command line at this demo, whatever the environment says."""
        return [
            "--config", str(self.config), "--db", self.settings.database_url,
            "--table", self.settings.table, "--secret-key-file", str(self.folder / "secret_key"),
        ]

    @property
    def command(self) -> str:
        """The command line a person can paste: every setting explicit, so that no SESSCTL_*
        variable or sessctl.toml of theirs points it at another database."""
        import shlex

        return shlex.join(["sessctl", *self.cli_args[2:]])

    def sessctl(self, *args: str) -> None:
        """Run the real command line in-process; its messages (stderr) go to stdout, in order.

        The command line is the one running the demo (the root of the current click context).
        """
        cli = click.get_current_context().find_root().command
        with contextlib.redirect_stderr(sys.stdout):
            cli.main([*self.cli_args, *args], prog_name="sessctl", standalone_mode=False)


@contextlib.contextmanager
def running(*, port: int = 0, keep: bool = False, init: bool = True, log: bool = False) -> Iterator[Demo]:
    """The example app on 127.0.0.1:``port`` (0: any free port), on a fresh SQLite file in a temporary
    folder with a generated secret key; the folder is removed at the end unless ``keep``."""
    folder = Path(tempfile.mkdtemp(prefix="sessctl-demo-"))
    try:
        secret = secrets.token_urlsafe(50)
        key_file = folder / "secret_key"
        key_file.touch(mode=0o600)
        key_file.write_text(secret + "\n")
        (folder / "sessctl.toml").write_text('db = "sqlite:///sessions.db"\nsecret_key_file = "secret_key"\n')
        settings = Settings(database_url=f"sqlite:///{folder / 'sessions.db'}", secret_key=secret)
        store = SessionStore(settings)
        try:
            if init:
                store.create_table()
            with _serve(make_app(store=store), port, log=log) as url:
                yield Demo(folder, settings, store, url)
        finally:
            store.close()
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


# -- simulated browsers -------------------------------------------------------------------------

_STATUS = re.compile(r'<p id="status">(.*?)</p>', re.S)


class Browser:
    """A simulated browser: urllib with a real ``http.cookiejar.CookieJar`` (none if ``cookies=False``)."""

    def __init__(self, name: str, url: str, *, cookies: bool = True) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.jar = CookieJar()
        handlers: list[Any] = [urllib.request.ProxyHandler({})]  # 127.0.0.1 only, never through a proxy
        if cookies:
            handlers.append(urllib.request.HTTPCookieProcessor(self.jar))
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, path: str = "/", *, cookie: str | None = None) -> str:
        headers = {"Cookie": cookie} if cookie else {}
        return self._open(urllib.request.Request(self.url + path, headers=headers))

    def post(self, path: str, **form: str) -> str:
        return self._open(urllib.request.Request(self.url + path, data=urlencode(form).encode()))

    def _open(self, request: urllib.request.Request) -> str:
        """The page's status line."""
        try:
            response = self._opener.open(request, timeout=10)
        except urllib.error.HTTPError as err:
            response = err
        with response:
            match = _STATUS.search(response.read().decode())
        return html.unescape(match.group(1)) if match else "(no status on the page)"

    @property
    def session_key(self) -> str | None:
        return next((c.value for c in self.jar if c.name == "sessionid"), None)

    def restart(self) -> None:
        """Quit and start again: a browser forgets its session cookies, keeps the persistent ones."""
        self.jar.clear_session_cookies()
