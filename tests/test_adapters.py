"""The adapter contract: what the WSGI middleware, Flask and ASGI adapters all promise, written
once and run on each (tests/adapters.py drives them), on every backend.

What only one adapter does stays in its own file: test_middleware.py (WSGI), test_flask.py,
test_asgi.py. Where an adapter says more than the contract (ASGI preloads the session off the
event loop and reports it), the extra assertion is kept under ``if w.kind == ...``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from werkzeug.test import Client as WSGIClient

from adapters import DRIVERS, login
from helpers import AGE, DELETION, KEY_RE, Clock, load, save
from httpserver import cookie_attrs, routes_app
from sessctl import SessionMiddleware, SessionStore
from sessctl.policy import EXPIRY_KEY, RESEND_KEY
from sessctl.store import new_key

UTC = timezone.utc


@pytest.fixture(params=list(DRIVERS))
def adapter(request) -> str:
    return request.param


@pytest.fixture
def web(adapter, store):
    """``web(clock=..., **settings)``: the adapter's app on its own store (sharing the test's engine)."""
    made: list[Any] = []

    def start(*, clock=None, **overrides: Any):
        settings = store.settings.replace(**overrides) if overrides else store.settings
        w = DRIVERS[adapter](SessionStore(settings, engine=store.engine, clock=clock))
        made.append(w)
        return w

    yield start
    for w in made:
        try:
            w.close()
        finally:
            w.store.close()


# -- create, read, write ---------------------------------------------------------------------


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
    expected = {"data": {"user": "1"}, "key": key}
    if w.kind == "asgi":
        expected["preloaded"] = True  # loaded off the event loop before the app ran
    assert r.json() == expected
    assert r.set_cookies == [] and r.vary == ["cookie"]
    log.clear()
    r = w.get("/write?cart=2")
    assert log.kinds == ["SELECT", "UPDATE"]
    assert cookie_attrs(r.cookie())[1] == key
    assert w.data(key) == {"user": "1", "cart": "2"}
    if w.kind == "asgi":  # a plain def endpoint: Starlette runs it in its thread pool
        r = w.get("/sync-write")
        assert cookie_attrs(r.cookie())[1] == key
        assert w.data(key) == {"user": "1", "cart": "2", "sync": "yes"}


def test_new_session_that_sets_nothing_gets_no_cookie_and_no_row(web, log):
    w = web()
    r = w.get("/read")
    expected = {"data": {}, "key": None}
    if w.kind == "asgi":
        expected["preloaded"] = False
    assert r.json() == expected
    assert r.set_cookies == [] and r.vary == ["cookie"]
    assert log.kinds == []  # no key, nothing to look up
    assert w.rows() == []


def test_vary_cookie_is_merged_into_an_existing_vary(web):
    w = web()
    r = w.get("/vary")
    assert r.vary == ["accept-encoding", "cookie"] and len(r.headers.get_all("Vary") if w.kind == "wsgi"
                                                            else r.headers.get_list("vary")) == 1


def test_save_every_request_resaves_and_resends(web, log):
    clock = Clock()
    w = web(clock=clock, save_every_request=True)
    assert w.get("/none").set_cookies == []  # no session: still nothing
    assert w.get("/read").set_cookies == []  # a new empty session: nothing to save
    assert w.rows() == []
    key = login(w)
    first = w.store.get_row(key)
    for path in ("/read", "/none"):
        clock.advance(60)
        log.clear()
        r = w.get(path)
        assert cookie_attrs(r.cookie())[1] == key, path
        assert "cookie" in r.vary, path
        assert log.kinds == ["SELECT", "UPDATE"], path
        assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=AGE), path
    assert w.store.get_row(key).expire_date > first.expire_date
    # An unknown key is not turned into a new row, even on an untouched request.
    r = w.raw("/none", cookie=f"sessionid={new_key()}")
    assert r.cookie() == DELETION
    assert w.rows() == [key]


# -- lifetimes ---------------------------------------------------------------------------------


def test_set_life_variants_and_their_cookies(web):
    clock = Clock()
    w = web(clock=clock)
    key = login(w)
    # TILL_BROWSER_CLOSE: no Max-Age, no Expires; the server keeps the row for cookie_age.
    _, value, attrs = cookie_attrs(w.get("/life/browser-close").cookie())
    assert value == key and "max-age" not in attrs and "expires" not in attrs
    assert w.data() == {"user": "1", EXPIRY_KEY: 0}
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=AGE)
    assert w.get("/expiry").json()["browser_close"] is True
    # An absolute hour.
    _, _, attrs = cookie_attrs(w.get("/life/3600").cookie())
    assert attrs["max-age"] == "3600"
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=3600)
    clock.advance(600)
    e = w.get("/expiry").json()
    assert e["age"] == 3000 and e["browser_close"] is False
    if w.kind != "flask":  # Flask's /expiry reports its own fields too
        assert e == {"age": 3000, "browser_close": False}
    # Idle: Max-Age = N at each save (sliding).
    _, _, attrs = cookie_attrs(w.get("/life/idle-3600").cookie())
    assert attrs["max-age"] == "3600"
    clock.advance(600)
    w.get("/write?touch=1")
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=3600)
    # Back to the global policy.
    _, _, attrs = cookie_attrs(w.get("/life/none").cookie())
    assert attrs["max-age"] == str(AGE)
    assert EXPIRY_KEY not in w.data()
    # The absolute life ends on the server even while the client still sends the cookie.
    w.get("/life/3600")
    clock.advance(3601)
    assert w.get("/read").json()["data"] == {}


def test_lifetime_set_by_another_writer_reaches_the_next_cookie(web):
    w = web()
    key = login(w)
    w.store.update(key, lambda d: d.__setitem__(EXPIRY_KEY, 0), resend=True)  # as `sessctl till-browser-close`
    assert w.get("/none").set_cookies == []  # untouched: the signal waits for a request that uses the session
    r = w.get("/read")
    assert r.json()["data"] == {"user": "1", EXPIRY_KEY: 0}
    _, value, attrs = cookie_attrs(r.cookie())
    assert value == key and "max-age" not in attrs and "expires" not in attrs
    assert RESEND_KEY not in w.data(key)
    assert w.get("/read").set_cookies == []  # sent once


# -- keys: login, logout, emptied, unknown, tampered ------------------------------------------


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
    if w.kind == "asgi":
        assert log.kinds == ["SELECT", "DELETE"]  # preloaded off the event loop, then deleted
    else:
        assert log.kinds[-1:] == ["DELETE"]  # may delete the key it was sent without loading it
    assert w.store.get_row(key) is None and w.rows() == []
    assert w.key is None
    r = w.get("/logout")  # no cookie any more: nothing to delete
    assert r.set_cookies == [] and r.vary == ["cookie"]


def test_session_emptied_by_the_view_is_deleted_with_its_cookie(web):
    w = web()
    key = login(w, a="1", b="2")
    r = w.get("/clear")
    assert r.cookie() == DELETION and "cookie" in r.vary
    assert w.store.get_row(key) is None and w.key is None  # the jar dropped it
    assert w.get("/read").json()["data"] == {}


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
    assert r.cookie() == DELETION  # the stale cookie goes
    r = w.raw("/write?user=1", cookie=f"sessionid={sent}")
    new = cookie_attrs(r.cookie())[1]
    assert new != sent and KEY_RE.fullmatch(new)
    assert w.data(new) == {"user": "1"}
    if kind == "tampered":
        assert w.store.get_row(sent).session_data == "not:a:signature"  # untouched, not adopted


def test_session_deleted_during_the_request_is_not_recreated(web):
    w = web()
    key = login(w)
    r = w.get("/gone")
    # As Django (SessionInterrupted): the whole response is a 400, and no cookie is touched.
    assert r.status == 400 and r.set_cookies == [] and "cookie" in r.vary
    assert b"session" in r.body.lower()
    assert w.store.get_row(key) is None and w.rows() == []
    assert w.key == key


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/fail?status=500", "/fail?status=503", "/crash", "/abort"])
def test_nothing_is_saved_on_a_5xx(web, path):
    w = web()
    key = login(w)
    before = w.store.get_row(key)
    r = w.get(path)
    assert r.status >= 500 and r.set_cookies == []
    assert w.store.get_row(key) == before
    r = w.raw(path)  # a new session, failing
    assert r.status >= 500 and r.set_cookies == []
    assert w.rows() == [key]
    if w.kind == "wsgi":  # the served app's own errors: the view raised, twice
        assert [type(e) for e in w.server.errors] == ([RuntimeError] * 2 if path == "/crash" else [])
        w.server.errors.clear()


# -- the same sessions through the adapter, the WSGI middleware and the store -------------------


@pytest.mark.parametrize("adapter", ["flask", "asgi"], indirect=True)
def test_sessions_are_shared_with_the_wsgi_middleware_and_the_store(web):
    w = web()
    wsgi = SessionMiddleware(
        routes_app({
            "/read": lambda s, e: {"data": dict(s.items())},
            "/write": lambda s, e: s.__setitem__("from", "wsgi"),
        }),
        store=w.store,
    )
    # the adapter -> WSGI middleware and store
    key = login(w, user=w.kind)
    assert load(w.store, key) == {"user": w.kind}
    wc = WSGIClient(wsgi, use_cookies=False)
    r = wc.get("/read", headers={"Cookie": f"sessionid={key}"})
    assert r.json == {"data": {"user": w.kind}}
    r = wc.get("/write", headers={"Cookie": f"sessionid={key}"})
    assert cookie_attrs(r.headers["Set-Cookie"])[1] == key
    assert w.get("/read").json()["data"] == {"user": w.kind, "from": "wsgi"}
    # WSGI middleware -> the adapter
    r = WSGIClient(wsgi, use_cookies=False).get("/write")
    other = cookie_attrs(r.headers["Set-Cookie"])[1]
    assert w.raw("/read", cookie=f"sessionid={other}").json()["data"] == {"from": "wsgi"}
    # store -> the adapter
    third = save(w.store, None, {"from": "store"})
    assert w.raw("/read", cookie=f"sessionid={third}").json()["data"] == {"from": "store"}
