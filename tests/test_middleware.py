"""SessionMiddleware through a real HTTP server and a real cookie jar, on every backend.

Each test starts a threaded wsgiref server on 127.0.0.1 around a small app
(``routes_app``) wrapped in ``SessionMiddleware``, and drives it with urllib
and ``http.cookiejar`` (``client.close_browser()`` is a browser exiting).
Server-side time travel uses the store's ``clock``; the jar keeps real time.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest

from httpserver import Client, Response, Server, cookie_attrs, raw_get, routes_app, serve
from sessctl import SessionMiddleware, SessionStore, TILL_BROWSER_CLOSE
from sessctl.policy import EXPIRY_KEY
from sessctl.store import new_key
from adapters import login
from helpers import AGE, DELETION, KEY_RE, Clock, save

UTC = timezone.utc


@dataclass
class Web:
    server: Server
    client: Client
    store: SessionStore

    def get(self, path: str = "/", **kw) -> Response:
        return self.client.get(path, **kw)

    def raw(self, path: str = "/", cookie=None) -> Response:
        return raw_get(self.server, path, cookie)

    @property
    def key(self) -> str | None:
        return self.client.cookie_value()

    def data(self, key: str | None = None):
        row = self.store.get_row(key or self.key)
        return None if row is None else self.store.codec.decode(row.session_data)

    def rows(self) -> list[str]:
        return sorted(r.key for r in self.store.iter_rows("all"))


# -- views ------------------------------------------------------------------------


def v_none(session, environ):
    return {"untouched": True}


def v_read(session, environ):
    return {"data": dict(session.items()), "key": session.session_key}


def v_write(session, environ):
    qs = environ.get("QUERY_STRING", "")
    name, _, value = qs.partition("=")
    session[name or "n"] = value or session.get(name or "n", 0) + 1
    return {"key": session.session_key}


def v_flush(session, environ):
    session.flush()


def v_clear(session, environ):
    for name in list(session.keys()):
        del session[name]


def v_cycle(session, environ):
    session.cycle_key()


def v_browser_close(session, environ):
    session.set_life(TILL_BROWSER_CLOSE)


def v_life_3600(session, environ):
    session.set_life(3600)


def v_idle_3600(session, environ):
    session.set_life(3600, idle=True)


def v_life_none(session, environ):
    session.set_life(None)


ROUTES = {
    "/none": v_none,
    "/read": v_read,
    "/write": v_write,
    "/flush": v_flush,
    "/clear": v_clear,
    "/cycle": v_cycle,
    "/browser-close": v_browser_close,
    "/life-3600": v_life_3600,
    "/idle-3600": v_idle_3600,
    "/life-none": v_life_none,
}


@pytest.fixture
def web(store):
    """``web(routes=..., clock=..., **settings)``: a served app and its browser."""
    stack = contextlib.ExitStack()
    started = []

    def start(routes=None, *, clock=None, **overrides) -> Web:
        settings = store.settings.replace(**overrides) if overrides else store.settings
        st = SessionStore(settings, engine=store.engine, clock=clock)
        app = SessionMiddleware(routes_app({**ROUTES, **(routes or {})}), store=st)
        server = stack.enter_context(serve(app))
        w = Web(server, Client(server), st)
        started.append(w)
        return w

    yield start
    stack.close()
    for w in started:
        w.server.assert_no_errors()


# -- untouched, read, write: queries, cookies, Vary ------------------------------------


def test_untouched_request_runs_no_query_and_sends_no_cookie(web, log):
    w = web()
    r = w.get("/none")
    assert r.status == 200 and r.set_cookies == [] and "cookie" not in r.vary
    key = login(w)
    log.clear()
    r = w.get("/none")  # with a valid session cookie
    assert r.set_cookies == [] and "cookie" not in r.vary
    r = w.raw("/none", cookie=f"sessionid={new_key()}")  # with an unknown one
    assert r.set_cookies == [] and "cookie" not in r.vary
    assert log.kinds == []
    assert w.key == key


def test_query_counts_of_read_and_write_requests(web, log, backend, capsys):
    w = web()
    log.clear()
    r = w.get("/write?user=1")
    created = log.kinds
    assert r.cookie() is not None
    key = w.key
    log.clear()
    r = w.get("/read")
    read = log.kinds
    assert r.set_cookies == [] and r.json()["data"] == {"user": "1"}
    log.clear()
    r = w.get("/write?cart=2")
    written = log.kinds
    assert r.cookie() is not None and w.key == key
    with capsys.disabled():
        print(f"\n[{backend}] queries: new session {created}; read {read}; write existing {written}")
    assert created == ["INSERT"]
    assert read == ["SELECT"]
    assert written == ["SELECT", "UPDATE"]


def test_read_only_request_saves_nothing_and_sends_only_vary(web, log):
    w = web()
    key = login(w)
    before = w.store.get_row(key)
    log.clear()
    r = w.get("/read")
    assert r.json()["data"] == {"user": "1"}
    assert r.set_cookies == []
    assert r.vary == ["cookie"]
    assert log.kinds == ["SELECT"]
    assert w.store.get_row(key) == before


def test_vary_is_cookie_alone_when_the_app_sends_none(web):
    """(An app's own Vary is merged: the adapter contract, test_adapters.py.)"""

    def app_vary(session, environ):
        session.get("x")

    w = web({"/vary": app_vary})
    assert w.get("/vary").vary == ["cookie"]


def test_nested_mutation_is_not_saved_unless_marked(web):
    def v_init(session, environ):
        session["foo"] = {}

    def v_nested(session, environ):
        session["foo"]["bar"] = 1

    def v_nested_marked(session, environ):
        session["foo"]["bar"] = 2
        session.modified = True

    w = web({"/init": v_init, "/nested": v_nested, "/marked": v_nested_marked})
    w.get("/init")
    key = w.key
    r = w.get("/nested")
    assert r.set_cookies == []
    assert w.data(key) == {"foo": {}}  # the gotcha: not saved
    assert w.get("/read").json()["data"] == {"foo": {}}
    r = w.get("/marked")
    assert r.cookie() is not None
    assert w.data(key) == {"foo": {"bar": 2}}


def test_cookie_only_when_created_or_modified(web):
    w = web()
    r = w.get("/write?a=1")
    name, value, attrs = cookie_attrs(r.cookie())
    assert name == "sessionid" and KEY_RE.fullmatch(value)
    assert w.get("/read").set_cookies == []
    assert w.get("/none").set_cookies == []
    r = w.get("/write?a=2")
    assert cookie_attrs(r.cookie())[1] == value  # same key, re-sent because modified
    assert w.data(value) == {"a": "2"}


@pytest.mark.parametrize("status", [500, 503])
def test_nothing_is_saved_on_a_5xx_response(web, status):
    def v_fail_existing(session, environ):
        session["user"] = "changed"
        session["extra"] = True
        return status

    def v_fail_new(session, environ):
        session["user"] = "new"
        return status

    w = web({"/fail": v_fail_existing, "/fail-new": v_fail_new})
    key = login(w)
    before = w.store.get_row(key)
    r = w.get("/fail")
    assert r.status == status
    assert r.set_cookies == [] and r.vary == ["cookie"]
    assert w.store.get_row(key) == before
    other = Client(w.server)
    r = other.get("/fail-new")
    assert r.status == status and r.set_cookies == []
    assert w.rows() == [key]


def test_nothing_is_saved_when_the_view_raises(web):
    def v_crash(session, environ):
        session["user"] = "changed"
        raise RuntimeError("boom")

    w = web({"/crash": v_crash})
    key = login(w)
    before = w.store.get_row(key)
    r = w.get("/crash")
    assert r.status == 500 and r.set_cookies == []
    assert [type(e) for e in w.server.errors] == [RuntimeError]
    w.server.errors.clear()
    assert w.store.get_row(key) == before


def test_flush_deletes_row_and_cookie(web):
    w = web()
    key = login(w)
    r = w.get("/flush")
    assert r.set_cookies == [DELETION]
    assert r.vary == ["cookie"]
    assert w.store.get_row(key) is None and w.rows() == []
    assert w.key is None


def test_flush_without_a_cookie_sends_only_vary(web):
    w = web()
    r = w.get("/flush")
    assert r.set_cookies == [] and r.vary == ["cookie"]


def test_deletion_cookie_honours_domain_path_and_secure(web):
    w = web(cookie_domain="example.com", cookie_path="/app", cookie_secure=True)
    # The jar refuses a cookie for another domain (and Secure over http): send it by hand.
    key = cookie_attrs(w.raw("/write?a=1").cookie())[1]
    assert w.rows() == [key]
    r = w.raw("/flush", cookie=f"sessionid={key}")
    assert r.set_cookies == [
        'sessionid=""; Domain=example.com; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/app; '
        "SameSite=Lax; Secure"
    ]


def test_cycle_key_new_key_same_data_old_row_gone(web):
    w = web()
    old = login(w, user="7", cart="x")
    r = w.get("/cycle")
    new = cookie_attrs(r.cookie())[1]
    assert new != old and KEY_RE.fullmatch(new) and w.key == new
    assert w.data(new) == {"user": "7", "cart": "x"}
    assert w.store.get_row(old) is None and w.rows() == [new]
    assert w.get("/read").json()["data"] == {"user": "7", "cart": "x"}
    r = w.raw("/read", cookie=f"sessionid={old}")  # the old key is dead
    assert r.json()["data"] == {}


def test_test_cookie_helpers(web):
    def v_set(session, environ):
        session.set_test_cookie()

    def v_check(session, environ):
        worked = session.test_cookie_worked()
        if worked:
            session.delete_test_cookie()
        return {"worked": worked}

    w = web({"/set-test": v_set, "/check-test": v_check})
    assert Client(w.server).get("/check-test").json() == {"worked": False}
    w.get("/set-test")
    assert w.get("/check-test").json() == {"worked": True}
    assert w.get("/check-test").json() == {"worked": False}


# -- cookie attributes ---------------------------------------------------------------------


def test_default_cookie_header(web):
    w = web()
    before = datetime.now(UTC)
    r = w.get("/write?a=1")
    header = r.cookie()
    name, key, attrs = cookie_attrs(header)
    assert re.fullmatch(
        r"sessionid=[a-z0-9]{32}; expires=\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT; HttpOnly; "
        r"Max-Age=1209600; Path=/; SameSite=Lax",
        header,
    ), header
    expires = parsedate_to_datetime(attrs["expires"])
    assert before + timedelta(seconds=AGE - 2) <= expires <= datetime.now(UTC) + timedelta(seconds=AGE + 1)
    assert "secure" not in attrs and "domain" not in attrs
    jar_cookie = w.client.cookie()
    assert jar_cookie.value == key and not jar_cookie.discard and jar_cookie.expires is not None


def test_cookie_attributes_follow_settings(web):
    w = web(cookie_secure=True, cookie_samesite="Strict", cookie_domain="example.com", cookie_httponly=False,
            cookie_path="/app", cookie_name="sid", cookie_age=600)
    r = w.raw("/write?a=1")
    header = r.cookie("sid")
    name, key, attrs = cookie_attrs(header)
    assert KEY_RE.fullmatch(key)
    assert attrs["secure"] is True and attrs["samesite"] == "Strict" and attrs["domain"] == "example.com"
    assert attrs["path"] == "/app" and attrs["max-age"] == "600"
    assert "httponly" not in attrs
    assert r.cookie("sessionid") is None


def test_samesite_can_be_omitted(web):
    w = web(cookie_samesite=None)
    _, _, attrs = cookie_attrs(w.get("/write?a=1").cookie())
    assert "samesite" not in attrs and attrs["httponly"] is True


def test_browser_close_cookie_has_no_max_age_or_expires(web):
    w = web(expire_at_browser_close=True)
    header = w.get("/write?a=1").cookie()
    assert re.fullmatch(r"sessionid=[a-z0-9]{32}; HttpOnly; Path=/; SameSite=Lax", header), header
    assert w.client.cookie().discard


# -- lifetimes through the jar -------------------------------------------------------------


def test_default_session_survives_a_browser_restart(web):
    w = web()
    key = login(w)
    w.client.close_browser()
    assert w.key == key
    assert w.get("/read").json()["data"] == {"user": "1"}


def test_till_browser_close_ends_with_the_browser(web):
    w = web()
    persistent = Client(w.server)
    assert persistent.get("/write?user=p").status == 200
    login(w, user="b")
    r = w.get("/browser-close")
    header = r.cookie()
    _, key, attrs = cookie_attrs(header)
    assert "max-age" not in attrs and "expires" not in attrs
    assert w.get("/read").json()["data"] == {"user": "b", EXPIRY_KEY: 0}
    # The server still keeps the row for cookie_age (the cap).
    expire = w.store.get_row(key).expire_date
    assert abs((expire - datetime.now(UTC)).total_seconds() - AGE) < 30
    w.client.close_browser()
    persistent.close_browser()
    assert w.key is None
    assert w.get("/read").json()["data"] == {}
    assert persistent.get("/read").json()["data"] == {"user": "p"}


def test_global_browser_close_overridden_by_a_per_session_life(web):
    w = web(expire_at_browser_close=True)
    login(w)
    _, _, attrs = cookie_attrs(w.get("/write?a=1").cookie())
    assert "max-age" not in attrs
    r = w.get("/life-3600")
    _, key, attrs = cookie_attrs(r.cookie())
    assert attrs["max-age"] in ("3599", "3600")
    w.client.close_browser()
    assert w.key == key
    assert w.get("/read").json()["data"]["user"] == "1"
    # idle timeout: persistent too, with Max-Age = N
    _, _, attrs = cookie_attrs(w.get("/idle-3600").cookie())
    assert attrs["max-age"] == "3600"
    # back to the global policy: a browser-session cookie again
    _, _, attrs = cookie_attrs(w.get("/life-none").cookie())
    assert "max-age" not in attrs and "expires" not in attrs
    w.client.close_browser()
    assert w.key is None


def test_global_persistent_overridden_by_browser_close_and_back(web):
    w = web()
    login(w)
    _, _, attrs = cookie_attrs(w.get("/browser-close").cookie())
    assert "max-age" not in attrs
    _, _, attrs = cookie_attrs(w.get("/life-none").cookie())
    assert attrs["max-age"] == str(AGE)
    w.client.close_browser()
    assert w.get("/read").json()["data"] == {"user": "1"}


def test_absolute_life_ends_on_the_server_even_if_the_cookie_is_still_sent(web):
    clock = Clock()

    def v_life_2(session, environ):
        session.set_life(2)

    w = web({"/life-2": v_life_2}, clock=clock)
    key = login(w)
    _, _, attrs = cookie_attrs(w.get("/life-2").cookie())
    assert attrs["max-age"] == "2"
    clock.advance(1)
    assert w.get("/read").json()["data"]["user"] == "1"
    clock.advance(1)  # at the deadline
    assert w.key == key  # the browser still holds and sends the cookie (real time barely moved)
    r = w.get("/read")
    assert r.json()["data"] == {}
    assert r.cookie() == DELETION  # it read a dead session: its cookie goes
    assert w.store.get_row(key) is not None  # dead, not yet purged


def test_absolute_life_of_two_seconds_in_real_time(web):
    def v_life_2(session, environ):
        session.set_life(2)

    w = web({"/life-2": v_life_2})
    key = login(w)
    w.get("/life-2")
    deadline = w.store.get_row(key).expire_date
    assert timedelta(seconds=1) < deadline - datetime.now(UTC) <= timedelta(seconds=2)
    assert w.raw("/read", cookie=f"sessionid={key}").json()["data"]["user"] == "1"
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.2)
    r = w.raw("/read", cookie=f"sessionid={key}")  # a client that keeps sending it
    assert r.json() == {"data": {}, "key": None}
    r = w.raw("/write?x=1", cookie=f"sessionid={key}")
    assert cookie_attrs(r.cookie())[1] != key


def test_idle_life_slides_on_each_save(web):
    """With the activity touch off (Django's rule) only saves slide an idle deadline; test_touch.py has the touch."""
    clock = Clock()

    def v_idle_10(session, environ):
        session.set_life(10, idle=True)

    w = web({"/idle-10": v_idle_10}, clock=clock, touch=False)
    key = login(w)
    _, _, attrs = cookie_attrs(w.get("/idle-10").cookie())
    assert attrs["max-age"] == "10"
    for i in range(3):
        clock.advance(8)
        r = w.get(f"/write?tick={i}")  # a save slides the deadline
        assert cookie_attrs(r.cookie())[2]["max-age"] == "10"
        assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=10)
    clock.advance(8)
    assert w.get("/read").json()["data"]["tick"] == "2"  # 32 s after the first save: alive
    clock.advance(2)  # a read does not slide (touch off): 10 s after the last save
    assert w.get("/read").json()["data"] == {}


def test_idle_life_slides_on_every_request_with_save_every_request(web):
    clock = Clock()
    w = web(clock=clock, save_every_request=True)
    key = login(w)
    w.get("/idle-3600")
    for _ in range(3):
        clock.advance(3000)
        assert w.get("/read").json()["data"]["user"] == "1"
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=3600)


def test_zero_or_negative_lives_are_value_errors_in_a_view(web):
    def v_bad(session, environ):
        errors = []
        for value, idle in ((0, False), (-5, False), (0, True), (-1, True), (timedelta(0), False)):
            try:
                session.set_life(value, idle=idle)
            except ValueError:
                errors.append(True)
        return {"errors": len(errors), "modified": session.modified}

    w = web({"/bad": v_bad})
    login(w)
    r = w.get("/bad")
    assert r.json() == {"errors": 5, "modified": False}
    assert r.set_cookies == []


def test_readers_in_a_view(web):
    clock = Clock()

    def v_readers(session, environ):
        return {
            "age": session.get_expiry_age(),
            "date": session.get_expiry_date().isoformat(),
            "close": session.get_expire_at_browser_close(),
        }

    w = web({"/readers": v_readers}, clock=clock)
    login(w)
    assert w.get("/readers").json() == {
        "age": AGE, "date": (clock.now + timedelta(seconds=AGE)).isoformat(), "close": False
    }
    w.get("/idle-3600")
    assert w.get("/readers").json()["age"] == 3600
    w.get("/browser-close")
    assert w.get("/readers").json()["close"] is True


# -- hostile or stale cookies ------------------------------------------------------------------


BAD_COOKIES = [
    "sessionid=../../x",
    "sessionid=" + "a" * 500,
    "sessionid=" + "A" * 32,
    "sessionid=",
    'sessionid="quoted"',
    "sessionid=short",
    "sessionid=" + "a" * 41,
    "sessionid=abc%20def",
    "sessionid=" + "é" * 32,
    "sessionid=" + "\u00ff" * 8,
    b"sessionid=\xe2\x98\x83\xe2\x98\x83\xe2\x98\x83\xe2\x98\x83",  # UTF-8 bytes, not latin-1 text
    "sessionid",
    "sessionid=a;sessionid=b",
    "=; ; sessionid=%s" % ("z" * 33),
]


def test_malformed_cookies_give_a_fresh_session(web):
    w = web()
    for cookie in BAD_COOKIES:
        r = w.raw("/read", cookie=cookie)
        assert r.status == 200 and r.json() == {"data": {}, "key": None}, cookie
        before = set(w.rows())
        r = w.raw("/write?x=1", cookie=cookie)
        assert r.status == 200, cookie
        _, key, _ = cookie_attrs(r.cookie())
        sent = cookie.decode("latin-1") if isinstance(cookie, bytes) else cookie
        assert KEY_RE.fullmatch(key) and key not in sent, cookie
        assert set(w.rows()) - before == {key}, cookie


def test_unknown_key_is_never_adopted(web):
    w = web()
    chosen = new_key()  # an attacker's pick, valid in form
    r = w.raw("/read", cookie=f"sessionid={chosen}")
    assert r.json() == {"data": {}, "key": None}
    assert r.cookie() == DELETION
    r = w.raw("/write?x=1", cookie=f"sessionid={chosen}")
    _, key, _ = cookie_attrs(r.cookie())
    assert key != chosen
    assert w.rows() == [key]


def test_expired_session_is_fresh(web):
    clock = Clock()
    w = web(clock=clock)
    key = login(w)
    clock.advance(AGE)
    r = w.get("/read")
    assert r.json() == {"data": {}, "key": None}
    r = w.get("/write?x=1")
    assert w.key != key and w.data() == {"x": "1"}


def test_tampered_row_is_fresh(web):
    w = web()
    key = login(w, user="alice")
    row = w.store.get_row(key)
    payload, ts, sig = row.session_data.split(":")
    forged = w.store.codec.encode({"user": "admin"}).split(":")[0]
    assert w.store.swap_row(row, f"{forged}:{ts}:{sig}", row.expire_date)
    r = w.get("/read")
    assert r.status == 200 and r.json() == {"data": {}, "key": None}
    r = w.get("/write?x=1")
    assert w.key != key and w.data() == {"x": "1"}


def test_row_signed_with_another_secret_is_fresh(web, store):
    w = web()
    other = SessionStore(store.settings.replace(secret_key="not-ours"), engine=store.engine)
    key = save(other, None, {"user": "admin"})
    r = w.raw("/read", cookie=f"sessionid={key}")
    assert r.status == 200 and r.json() == {"data": {}, "key": None}


# -- deleted while the request runs --------------------------------------------------------------


def test_session_deleted_in_flight_is_not_recreated(web, store):
    def v_logged_out_elsewhere(session, environ):
        key = session.session_key
        session.get("user")  # loaded
        assert store.delete(key)  # another process ends it (logout elsewhere, sessctl delete)
        session["late"] = True

    w = web({"/race": v_logged_out_elsewhere})
    key = login(w)
    r = w.get("/race")
    # As Django (SessionInterrupted): 400, and the cookie left alone: a deletion could reach the
    # browser after the cookie of a login that ended this session, and log the user out.
    assert r.status == 400
    assert r.set_cookies == [] and "cookie" in r.vary
    assert w.rows() == [] and store.get_row(key) is None
    assert w.key == key  # the next request finds no session under it


def test_session_purged_in_flight_is_not_recreated(web, store):
    clock = Clock()

    def v_purged(session, environ):
        session.get("user")
        # The row is past its life and a purge runs while this request works.
        assert store.purge_expired(cutoff=clock.now + timedelta(seconds=AGE + 1)).deleted == 1
        session["late"] = True

    w = web({"/race": v_purged}, clock=clock)
    login(w)
    r = w.get("/race")
    assert r.status == 400 and r.set_cookies == []
    assert w.rows() == []


def test_save_every_request_on_a_session_deleted_in_flight(web, store):
    def v_read_then_gone(session, environ):
        session.get("user")
        store.delete(session.session_key)

    w = web({"/race": v_read_then_gone}, save_every_request=True)
    login(w)
    r = w.get("/race")
    assert r.status == 400 and r.set_cookies == []
    assert w.rows() == []


# -- a lifetime changed by another writer reaches the browser --------------------------------


def _cli_set(store, key, value):
    """What ``sessctl set-life``/``till-browser-close``/``reset-life`` do to the row."""
    if value is None:
        store.update(key, lambda d: d.pop(EXPIRY_KEY, None), resend=True)
    else:
        store.update(key, lambda d: d.__setitem__(EXPIRY_KEY, value), resend=True)


def test_browser_close_set_elsewhere_reaches_the_browser(web, log):
    w = web()
    key = login(w)
    _cli_set(w.store, key, 0)
    assert w.get("/none").set_cookies == []  # only a request that accesses the session
    log.clear()
    r = w.get("/read")
    _, value, attrs = cookie_attrs(r.cookie())
    assert value == key and "max-age" not in attrs and "expires" not in attrs
    assert log.kinds == ["SELECT", "UPDATE"]
    assert w.get("/read").set_cookies == []  # sent once
    assert "_sessctl_resend" not in w.data(key)
    w.client.close_browser()
    assert w.key is None


def test_idle_and_absolute_lives_set_elsewhere_reach_the_browser(web):
    w = web()
    key = login(w)
    _cli_set(w.store, key, 600)
    _, _, attrs = cookie_attrs(w.get("/read").cookie())
    assert attrs["max-age"] == "600"
    deadline = datetime.now(UTC) + timedelta(hours=2)
    _cli_set(w.store, key, deadline.isoformat())
    _, _, attrs = cookie_attrs(w.get("/read").cookie())
    assert 7190 <= int(attrs["max-age"]) <= 7200
    assert abs((parsedate_to_datetime(attrs["expires"]) - deadline).total_seconds()) <= 2
    assert w.store.get_row(key).expire_date == deadline


def test_reset_to_the_global_policy_elsewhere_reaches_the_browser(web):
    w = web()
    key = login(w)
    w.get("/browser-close")
    _cli_set(w.store, key, None)
    _, _, attrs = cookie_attrs(w.get("/read").cookie())
    assert attrs["max-age"] == str(AGE)
    w.client.close_browser()
    assert w.get("/read").json()["data"] == {"user": "1"}


def test_lifetime_set_elsewhere_is_resent_even_by_a_writing_request(web):
    w = web()
    key = login(w)
    _cli_set(w.store, key, 0)
    r = w.get("/write?more=1")
    assert "max-age" not in cookie_attrs(r.cookie())[2]
    assert w.data(key) == {"user": "1", "more": "1", EXPIRY_KEY: 0}


def test_lifetime_set_elsewhere_waits_out_a_failed_response(web):
    def v_fail(session, environ):
        session.get("user")
        return 500

    w = web({"/fail": v_fail})
    key = login(w)
    _cli_set(w.store, key, 0)
    assert w.get("/fail").set_cookies == []  # nothing is saved or sent on a 5xx
    assert "max-age" not in cookie_attrs(w.get("/read").cookie())[2]
