"""`sessctl demo`: sessions born, given lives, expiring and purged, over real HTTP.

:func:`running` starts the example app (the seed's examples behind
:class:`~sessctl.SessionMiddleware`) on 127.0.0.1, on a fresh SQLite file in a
temporary folder with a throwaway secret key. :func:`tour` drives simulated
browsers (urllib with real ``http.cookiejar`` jars) through it and runs the
real command line in-process to show what an operator sees; :func:`serve`
leaves the app running for a person's browser.
"""

from __future__ import annotations

import contextlib
import html
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from .config import Settings
from .middleware import SessionMiddleware, get_session
from .policy import ABSOLUTE, BROWSER_CLOSE, IDLE, TILL_BROWSER_CLOSE, format_seconds
from .session import Session
from .store import SessionStore

HOST = "127.0.0.1"
REMEMBER_ME = 30 * 86400
LIVES = {
    "remember": "Remember me for 30 days",
    "public": "Public computer: forget me when the browser closes",
    "default": "Neither (the site default)",
}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,20}")

# -- the example app ------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessctl demo</title></head>
<body>
<h1><a href="/">sessctl demo</a></h1>
<p id="status">{status}</p>
{body}
<hr>
<nav><a href="/">Home</a> · <a href="/login">Log in</a> · <a href="/comment">Post a comment</a> ·
<form method="post" action="/logout" style="display:inline"><button>Log out</button></form></nav>
</body></html>
"""

_LOGIN_FORM = (
    '<form id="login" method="post" action="/login">\n'
    '<p><label>User name <input name="username" required maxlength="20"></label> (no password in this demo)</p>\n'
    + "".join(
        f'<p><label><input type="radio" name="life" id="{value}" value="{value}"'
        f'{" checked" if value == "default" else ""}> {text}</label></p>\n'
        for value, text in LIVES.items()
    )
    + "<p><button>Log in</button></p>\n</form>"
)
_COMMENT_FORM = (
    '<form id="comment" method="post" action="/comment">\n'
    '<p><textarea name="comment" rows="3" cols="40">Nice sessions.</textarea></p>\n'
    "<p><button>Post</button></p>\n</form>"
)


def lifetime_text(session: Session) -> str:
    """How long this session lives, in words, read back from the session itself."""
    lifetime = session.lifetime
    left = format_seconds(session.get_expiry_age())
    if lifetime.kind == BROWSER_CLOSE:
        return "this session ends when you close the browser"
    if lifetime.kind == ABSOLUTE and lifetime.deadline is not None:
        return f"this session ends {lifetime.deadline:%Y-%m-%d %H:%M} UTC (in {left})"
    if lifetime.kind == IDLE:
        return f"this session ends after {left} without a visit"
    return f"this session ends {left} after its last change (the site default)"


def home(session: Session, form: dict[str, str] | None) -> tuple[str, str]:
    member = session.get("member")
    if member is None:
        return "Not logged in.", '<p><a href="/login">Log in</a></p>'
    return f"Logged in as {member}; {lifetime_text(session)}.", ""


def login(session: Session, form: dict[str, str] | None) -> tuple[str, str]:
    if form is None:
        session.set_test_cookie()  # checked by the POST: the next request tells whether cookies work
        return "Log in.", _LOGIN_FORM
    if not session.test_cookie_worked():
        return "Please enable cookies and try again.", ""
    name = form.get("username", "").strip()
    if not _NAME.fullmatch(name):
        return "A user name is 1 to 20 letters, digits, - or _.", _LOGIN_FORM
    session.delete_test_cookie()
    session.cycle_key()  # a new key at login: a key known before it (session fixation) is worth nothing
    session["member"] = name
    life = form.get("life")
    session.set_life(REMEMBER_ME if life == "remember" else TILL_BROWSER_CLOSE if life == "public" else None)
    return f"You're logged in as {name}; {lifetime_text(session)}.", ""


def logout(session: Session, form: dict[str, str] | None) -> tuple[str, str]:
    session.flush()
    return "You're logged out.", ""


def comment(session: Session, form: dict[str, str] | None) -> tuple[str, str]:
    if form is None:
        return "Post a comment (only once per session).", _COMMENT_FORM
    if session.get("has_commented", False):
        return "You've already commented.", ""
    session["has_commented"] = True
    return "Thanks for your comment!", ""


ROUTES: dict[str, tuple[Callable[..., tuple[str, str]], tuple[str, ...]]] = {
    "/": (home, ("GET",)),
    "/login": (login, ("GET", "POST")),
    "/logout": (logout, ("POST",)),
    "/comment": (comment, ("GET", "POST")),
}


def _form(environ: dict[str, Any]) -> dict[str, str]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), 64 * 1024)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body).items()}


def example_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The seed's examples as a WSGI app; wrap it in SessionMiddleware (see :func:`make_app`)."""
    path = environ.get("PATH_INFO") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    view, methods = ROUTES.get(path, (None, ()))
    if view is None:
        status, text, body = "404 Not Found", "No such page.", ""
    elif method not in methods:
        status, text, body = "405 Method Not Allowed", f"Use {' or '.join(methods)} here.", ""
    else:
        status = "200 OK"
        text, body = view(get_session(environ), _form(environ) if method == "POST" else None)
    page = _PAGE.format(status=html.escape(text), body=body).encode()
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))]
    if status.startswith("405"):
        headers.append(("Allow", ", ".join(methods)))
    start_response(status, headers)
    return [page]


def make_app(settings: Settings | None = None, *, store: SessionStore | None = None) -> SessionMiddleware:
    return SessionMiddleware(example_app, settings, store=store)


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

    def sessctl(self, *args: str) -> None:
        """Run the real command line in-process; its messages (stderr) go to stdout, in order."""
        from .cli import cli

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


# -- the tour -----------------------------------------------------------------------------------


def _heading(text: str) -> None:
    click.echo()
    click.secho(text, bold=True)


def _say(who: str, action: str, page: str, note: str = "") -> None:
    click.echo(f"  {who:<8} {action:<26} {page}")
    if note:
        click.echo(f"  {'':<8} {'':<26} {note}")


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise click.ClickException(f"the demo did not go as expected: {what}")


def _log_in(browser: Browser, life: str) -> str:
    browser.get("/login")  # sets the test cookie
    return browser.post("/login", username=browser.name, life=life)


def tour(*, keep: bool = False) -> None:
    started = time.monotonic()
    with running(keep=keep, init=False) as demo:
        echo = click.echo
        click.secho("sessctl demo: sessions born, given lives, expiring and purged", bold=True)
        echo(f"  database  {demo.settings.database_url} (new; {'kept' if keep else 'removed at the end'})")
        echo(f"  secret    a throwaway key, generated for this run: {demo.folder / 'secret_key'}")
        echo(f"  app       {demo.url} (sessctl.SessionMiddleware around a small WSGI app)")
        echo(f"  operator  the real command line, as: sessctl --config {demo.config} ...")

        _heading("1. The operator creates the session table")
        echo("$ sessctl init")
        demo.sessctl("init")

        _heading("2. Browsers log in: GET /login sets a test cookie, POST /login checks it, then cycle_key()")
        alice, bob, carol = (Browser(name, demo.url) for name in ("alice", "bob", "carol"))
        dave = Browser("dave", demo.url, cookies=False)
        mallory = Browser("mallory", demo.url)
        _say("alice", "remember me", _log_in(alice, "remember"), "set_life(30 days): the cookie outlives the browser")
        _say("bob", "public computer", _log_in(bob, "public"), "set_life(TILL_BROWSER_CLOSE): a browser-session cookie")
        _say("carol", "(neither)", _log_in(carol, "default"), "the global policy: cookie_age, 14 days")
        _say("dave", "cookies turned off", _log_in(dave, "default"), "test_cookie_worked() was False")
        forged = "f0rgedbymall0ry" + "0" * 17
        page = mallory.get("/", cookie=f"sessionid={forged}")
        _say("mallory", "GET / with a forged id", page, f"she sent sessionid={forged}")
        _expect(page == "Not logged in.", "mallory's forged session id was accepted")

        _heading("3. Post a comment only once")
        _say("alice", "POST /comment", alice.post("/comment", comment="Hello"))
        _say("alice", "POST /comment again", alice.post("/comment", comment="Hello again"))
        page = mallory.post("/comment", comment="hi")
        key = mallory.session_key
        adopted = key == forged or demo.store.get_row(forged) is not None
        _expect(key is not None and not adopted, "mallory's forged session id was adopted")
        _say("mallory", "POST /comment", page, f"her forged id was not adopted: the server gave her {key}")

        _heading("4. What the operator sees")
        keys = {b.name: str(b.session_key) for b in (alice, bob, carol, mallory)}
        with contextlib.closing(demo.store.iter_rows("active")) as rows:
            keys.update(("dave", row.key) for row in rows if row.key not in keys.values())
        echo("$ sessctl list")
        demo.sessctl("list")
        for name, key in keys.items():
            echo(f"  {name:<8} {key}" + ("  (the test cookie his browser refused)" if name == "dave" else ""))
        echo("$ sessctl stats")
        demo.sessctl("stats")

        _heading("5. The operator gives carol's session 2 seconds")
        echo(f"$ sessctl set-life {keys['carol']} 2s")
        demo.sessctl("set-life", keys["carol"], "2s")
        echo("  ... 2.5 seconds later:")
        time.sleep(2.5)
        page = carol.get("/")
        _say("carol", "GET /", page, "logged out: her session expired on the server, whatever her cookie says")
        _expect(page == "Not logged in.", "carol's session outlived its 2 seconds")

        _heading("6. Browsers close and start again (jar.clear_session_cookies())")
        bob.restart()
        page = bob.get("/")
        _say("bob", "restarts, GET /", page, "logged out: his cookie ended with the browser")
        _expect(page == "Not logged in.", "bob's public-computer session survived his browser")
        alice.restart()
        page = alice.get("/")
        _say("alice", "restarts, GET /", page, "still logged in: remember me")
        _expect(page.startswith("Logged in as alice"), "alice's remember-me session did not survive her browser")
        page = alice.post("/comment", comment="Back again")
        _say("alice", "POST /comment", page, "her session's data came back too")

        _heading("7. Expired sessions are purged")
        echo("$ sessctl list --expired")
        demo.sessctl("list", "--expired")
        echo("$ sessctl purge --expired")
        demo.sessctl("purge", "--expired")
        _expect(demo.store.get_row(keys["carol"]) is None, "purge left carol's expired session")
        echo("  (bob's row stays until the server-side cap, cookie_age after its last save: his browser")
        echo("   forgot the cookie, so nobody can use it; purge removes it once it expires)")

        _heading("8. Logging out is flush(): the data and the row go, the cookie is deleted")
        page = alice.post("/logout")
        gone = demo.store.get_row(keys["alice"]) is None and alice.session_key is None
        _expect(gone, "alice's logout left her session behind")
        _say("alice", "POST /logout", page, "her row is gone, and her browser dropped the cookie")
        echo("$ sessctl list")
        demo.sessctl("list")

        _heading(f"Done in {time.monotonic() - started:.1f}s.")
        if keep:
            base = f"sessctl --config {demo.config}"
            echo(f"The database is kept in {demo.folder}; look around:")
            for command in ("list --all", f"show {keys['bob']}", "stats", "purge --all --yes"):
                echo(f"  {base} {command}")
            echo(f"  rm -r {demo.folder}")
        echo("Try next:")
        echo("  sessctl demo --serve    the same app, for your own browser (Ctrl-C stops it)")
        if not keep:
            echo("  sessctl demo --keep     keep the database, to look around with the commands")
        echo("  sessctl --help          every command; README.md: sessctl in your own app")


def serve(*, port: int = 0, keep: bool = False) -> None:
    """The example app for a person's browser, until Ctrl-C (or a kill)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops it as Ctrl-C does, cleaning up
    try:
        with running(port=port, keep=keep, log=True) as demo:
            base = f"sessctl --config {demo.config}"
            click.echo(f"sessctl demo: the example app is at {demo.url}  (Ctrl-C stops it)")
            click.echo(f"  database  {demo.settings.database_url} ({'kept' if keep else 'removed when it stops'})")
            click.echo("  in another terminal, watch and change your sessions:")
            for command in ("list", "stats", "set-life KEY 2s", "till-browser-close KEY", "purge --expired"):
                click.echo(f"    {base} {command}")
            sys.stdout.flush()
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
