"""A request that overlaps a login must not log the user out (issue 11, item 10).

Request A loads the session under the old key; request B logs in (cycle_key(): new key, the old
row deleted) and the browser stores the new cookie; then A writes. Its row is gone. Django's
middleware answers such a request with SessionInterrupted, a BadRequest: HTTP 400, and it does not
touch the cookie (django/contrib/sessions/middleware.py, process_response). A deletion cookie
there would reach the browser after the login's cookie and log the user out.

Everything here is real HTTP through a threaded server, with one browser-like cookie jar.
"""

from __future__ import annotations

import threading

import pytest

from httpserver import Client, routes_app, serve
from sessctl import SessionMiddleware

WAIT = 15


@pytest.fixture
def site(store):
    loaded, proceed = threading.Event(), threading.Event()

    def browse(session, environ):
        session["cart"] = ["book"]

    def slow_add(session, environ):
        session.get("cart")  # loaded under the old key
        loaded.set()
        assert proceed.wait(WAIT)
        session["cart"] = [*session.get("cart", []), "pen"]

    def login(session, environ):
        session.cycle_key()
        session["user"] = "ada"

    def me(session, environ):
        return {"user": session.get("user"), "cart": session.get("cart")}

    def logout(session, environ):
        session.flush()

    routes = {"/browse": browse, "/slow-add": slow_add, "/login": login, "/me": me, "/logout": logout}
    with serve(SessionMiddleware(routes_app(routes), store=store)) as server:
        yield server, loaded, proceed


def test_a_request_overlapping_a_login_does_not_log_the_user_out(site):
    server, loaded, proceed = site
    browser = Client(server)
    assert browser.get("/browse").status == 200
    old = browser.cookie_value()
    result = {}
    slow = threading.Thread(target=lambda: result.setdefault("r", browser.get("/slow-add")))
    slow.start()
    assert loaded.wait(WAIT)
    login = browser.get("/login")
    assert login.status == 200 and login.cookie() is not None
    new = browser.cookie_value()
    assert new and new != old
    proceed.set()
    slow.join(WAIT)
    r = result["r"]
    # As Django: 400 (SessionInterrupted), and the cookie left alone.
    assert r.status == 400, (r.status, r.body)
    assert r.cookie() is None, r.set_cookies
    assert "cookie" in r.vary
    assert browser.cookie_value() == new  # the login's cookie survived
    assert browser.get("/me").json() == {"user": "ada", "cart": ["book"]}
    server.assert_no_errors()


def test_a_request_overlapping_a_logout_still_ends_nothing_else(site):
    """The same 400 when the row was deleted by a logout in another tab; the next request is
    logged out (the row is gone), and nothing is re-created."""
    server, loaded, proceed = site
    browser = Client(server)
    browser.get("/browse")
    browser.get("/login")
    result = {}
    slow = threading.Thread(target=lambda: result.setdefault("r", browser.get("/slow-add")))
    slow.start()
    assert loaded.wait(WAIT)
    assert browser.get("/logout").status == 200
    proceed.set()
    slow.join(WAIT)
    r = result["r"]
    assert r.status == 400 and r.cookie() is None, (r.status, r.set_cookies)
    assert browser.get("/me").json() == {"user": None, "cart": None}
    server.assert_no_errors()


def test_the_400_has_a_body_and_the_view_body_is_not_sent(site):
    server, loaded, proceed = site
    browser = Client(server)
    browser.get("/browse")
    result = {}
    slow = threading.Thread(target=lambda: result.setdefault("r", browser.get("/slow-add")))
    slow.start()
    assert loaded.wait(WAIT)
    browser.get("/login")
    proceed.set()
    slow.join(WAIT)
    r = result["r"]
    assert r.status == 400
    assert b"session" in r.body.lower()
    assert r.headers.get("Content-Length") in (None, str(len(r.body)))
