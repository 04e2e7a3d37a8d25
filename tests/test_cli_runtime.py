"""The command line and the runtime on one database: sessions made through the middleware,
changed with the command, then seen by the app's next response."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from sessctl import SessionMiddleware

pytestmark = pytest.mark.usefixtures("isolated")  # no SESSCTL_* or sessctl.toml from the shell


def view(environ, start_response):
    session = environ["sessctl.session"]
    if environ["PATH_INFO"] == "/login":
        session["user"] = "alice"
    body = json.dumps({"user": session.get("user")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Browser:
    """Keeps the session cookie between requests, as a browser would."""

    def __init__(self, app, name="sessionid"):
        self.app, self.name, self.cookie = app, name, None

    def get(self, path):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.url_scheme": "http"}
        if self.cookie:
            environ["HTTP_COOKIE"] = f"{self.name}={self.cookie}"
        captured = {}

        def start_response(status, headers, exc_info=None):
            captured["headers"] = headers

        body = b"".join(self.app(environ, start_response))
        set_cookie = [v for k, v in captured["headers"] if k.lower() == "set-cookie"]
        if set_cookie:
            value = set_cookie[0].split(";")[0].split("=", 1)[1]
            self.cookie = value if value not in ('""', "") else None
        return json.loads(body), (set_cookie[0] if set_cookie else None)


def max_age(set_cookie):
    found = re.search(r"Max-Age=(\d+)", set_cookie)
    return None if found is None else int(found.group(1))


def test_lifetime_changes_reach_the_next_response(store, run_ok):
    browser = Browser(SessionMiddleware(view, store=store))
    data, cookie = browser.get("/login")
    key = browser.cookie
    assert key and max_age(cookie) == store.settings.cookie_age

    run_ok("set-life", key, "2h")
    data, cookie = browser.get("/")
    assert data == {"user": "alice"}
    assert cookie is not None and 7190 <= max_age(cookie) <= 7200
    assert browser.get("/")[1] is None  # re-sent once, then quiet again

    run_ok("till-browser-close", key)
    data, cookie = browser.get("/")
    assert data == {"user": "alice"} and cookie.startswith(f"sessionid={key}")
    assert "Max-Age" not in cookie and "expires" not in cookie

    run_ok("set-life", key, "10m", "--idle")
    assert max_age(browser.get("/")[1]) == 600

    run_ok("reset-life", key)
    assert max_age(browser.get("/")[1]) == store.settings.cookie_age

    info = json.loads(run_ok("show", key, "--json").stdout)
    assert info["lifetime"] == {"kind": "default"} and info["data"] == {"user": "alice"}


def test_delete_logs_the_browser_out(store, run_ok):
    browser = Browser(SessionMiddleware(view, store=store))
    browser.get("/login")
    run_ok("delete", browser.cookie)
    data, cookie = browser.get("/")
    assert data == {"user": None}
    assert cookie is not None and cookie.startswith('sessionid=""')


def test_purge_removes_what_the_app_no_longer_sees(store, run_ok):
    app = SessionMiddleware(view, store=store)
    stale, fresh = Browser(app), Browser(app)
    stale.get("/login")
    fresh.get("/login")
    row = store.get_row(stale.cookie)
    store.swap_row(row, row.session_data, store.now() - timedelta(seconds=1))  # its time has come
    assert json.loads(run_ok("stats", "--json").stdout)["expired"] == 1
    report = json.loads(run_ok("purge", "--expired", "--json").stdout)
    assert report["deleted"] == 1
    assert stale.get("/")[0] == {"user": None}
    assert fresh.get("/")[0] == {"user": "alice"}
