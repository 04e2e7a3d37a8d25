"""The activity touch, over real HTTP on every backend: an idle timeout slides on any access, cheaply.

A request that only reads a session moves its deadline (and the user's
"last seen") through at most one small write per ``touch_interval``; the
write never rewrites the session data, never moves an absolute deadline,
never brings back a deleted session, and re-sends the cookie so the
browser's copy slides too. Server time is the store's injected clock.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
from datetime import timedelta

import pytest

from helpers import Clock
from httpserver import Client, cookie_attrs, raw_get, routes_app, serve
from sessctl import SessionMiddleware, SessionStore

IDLE = 1800
WAIT = 20



def v_login_idle(session, environ):
    session.login("alice")
    session.set_life(IDLE, idle=True)


def v_login_absolute(session, environ):
    session.login("alice")
    session.set_life(3 * 3600)


def v_login_both(session, environ):
    session.login("alice")
    session.set_life(2 * 3600, idle=IDLE)


def v_anonymous_idle(session, environ):
    session["cart"] = 1
    session.set_life(IDLE, idle=True)


def v_read(session, environ):
    return {"user": session.user_id, "cart": session.get("cart")}


ROUTES = {
    "/login-idle": v_login_idle, "/login-absolute": v_login_absolute, "/login-both": v_login_both,
    "/anonymous-idle": v_anonymous_idle, "/read": v_read,
}


@pytest.fixture
def app(store):
    stack = contextlib.ExitStack()

    def start(routes=None, *, clock, **overrides):
        settings = store.settings.replace(**overrides) if overrides else store.settings
        st = SessionStore(settings, engine=store.engine, clock=clock)
        server = stack.enter_context(serve(SessionMiddleware(routes_app({**ROUTES, **(routes or {})}), store=st)))
        return server, Client(server), st

    yield start
    stack.close()


def writes_to_sessions(log, table: str) -> int:
    """UPDATE statements on the session table itself (not the user index beside it)."""
    pattern = re.compile(rf'^\s*UPDATE\s+[`"]?{re.escape(table)}[`"]?\s', re.I)
    return sum(1 for s in log.statements if pattern.match(s))


def writes(log) -> int:
    return sum(1 for kind in log.kinds if kind in ("UPDATE", "INSERT", "DELETE"))


@pytest.mark.parametrize("login", ["/login-idle", "/anonymous-idle"])
def test_idle_session_kept_busy_by_reads_for_two_hours(app, log, store, login):
    clock = Clock()
    server, browser, st = app(clock=clock)
    assert browser.get(login).status == 200
    key = browser.cookie_value()
    interval = st.touch_interval_for(IDLE)
    assert 0 < interval <= IDLE / 5
    log.clear()
    touched_at = []
    started = clock.now
    while clock.now - started < timedelta(hours=2):
        clock.advance(60)
        before = writes_to_sessions(log, store.settings.table)
        r = browser.get("/read")
        assert r.status == 200 and r.json()["user" if login == "/login-idle" else "cart"] is not None
        if writes_to_sessions(log, store.settings.table) > before:
            touched_at.append(clock.now)
            _, value, attrs = cookie_attrs(r.cookie())  # the browser's copy slides too
            assert value == key and attrs["max-age"] == str(IDLE)
        else:
            assert r.cookie() is None
        row = st.get_row(key)
        assert row.expire_date >= clock.now + timedelta(seconds=IDLE - interval)
    assert len(touched_at) <= 7200 / interval + 1
    assert all(b - a >= timedelta(seconds=interval) for a, b in zip(touched_at, touched_at[1:]))
    assert writes(log) == len(touched_at) * (2 if login == "/login-idle" else 1)  # + "last seen" of a user
    last = clock.now
    assert touched_at[-1] == last  # 2 h is a whole number of intervals: the last read touched
    clock.advance(IDLE - 1)
    assert st.get_row(key).expire_date > clock.now  # still alive 29:59 after the last request
    clock.advance(1)
    fresh = Client(server)
    r = raw_get(server, "/read", cookie=f"sessionid={key}")
    assert r.json() == {"user": None, "cart": None}  # 30 min after its last request: gone
    assert fresh.get("/read").json() == {"user": None, "cart": None}


def test_a_burst_within_the_interval_writes_nothing(app, log, store):
    clock = Clock()
    server, browser, st = app(clock=clock)
    browser.get("/login-idle")
    clock.advance(st.touch_interval_for(IDLE) - 1)
    log.clear()
    for _ in range(20):
        r = browser.get("/read")
        assert r.json()["user"] == "alice" and r.cookie() is None
    assert writes(log) == 0


def test_touch_never_rewrites_data_and_never_moves_an_absolute_deadline(app, log, store):
    clock = Clock()
    server, browser, st = app(clock=clock)
    browser.get("/login-absolute")
    key = browser.cookie_value()
    row = st.get_row(key)
    log.clear()
    for _ in range(10):
        clock.advance(600)
        browser.get("/read")
    assert writes_to_sessions(log, store.settings.table) == 0
    assert st.get_row(key) == row


def test_touch_slides_an_idle_limit_only_up_to_its_deadline(app, store):
    clock = Clock()
    server, browser, st = app(clock=clock)
    browser.get("/login-both")
    key = browser.cookie_value()
    deadline = clock.now + timedelta(hours=2)
    data = st.get_row(key).session_data
    for _ in range(12):
        clock.advance(600)
        r = browser.get("/read")
        row = st.get_row(key)
        if row is None:
            break
        assert row.expire_date <= deadline and row.session_data == data
    assert clock.now >= deadline and r.json()["user"] is None


def test_touch_never_brings_back_a_deleted_session(app, store):
    clock = Clock()
    loaded, proceed = threading.Event(), threading.Event()

    def v_slow(session, environ):
        session.get("x")
        loaded.set()
        assert proceed.wait(WAIT)

    server, browser, st = app({"/slow": v_slow}, clock=clock)
    browser.get("/login-idle")
    key = browser.cookie_value()
    clock.advance(IDLE / 2)  # a touch is due
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", raw_get(server, "/slow", cookie=f"sessionid={key}")))
    thread.start()
    assert loaded.wait(WAIT)
    assert st.delete(key)  # logout elsewhere, sessctl delete, purge
    proceed.set()
    thread.join(WAIT)
    assert cookie_attrs(out["r"].cookie())[2]["max-age"] == "0"
    assert st.get_row(key) is None


def test_touch_off_slides_only_on_saves_as_django(app, log, store):
    clock = Clock()
    server, browser, st = app(clock=clock, touch=False)
    browser.get("/login-idle")
    key = browser.cookie_value()
    log.clear()
    clock.advance(IDLE - 1)
    assert browser.get("/read").json()["user"] == "alice"
    assert writes(log) == 0
    clock.advance(1)
    assert raw_get(server, "/read", cookie=f"sessionid={key}").json()["user"] is None


def test_touch_interval_setting(app, log, store):
    clock = Clock()
    server, browser, st = app(clock=clock, touch_interval=60)
    browser.get("/anonymous-idle")
    log.clear()
    clock.advance(59)
    browser.get("/read")
    assert writes(log) == 0
    clock.advance(1)
    assert browser.get("/read").cookie() is not None
    assert writes(log) == 1


# -- "last seen" under any mix of reads and saves -------------------------------------------------


def v_save(session, environ):
    session["n"] = session.get("n", 0) + 1


def v_login_default(session, environ):
    session.login("alice")


def v_login_week(session, environ):
    session.login("alice")
    session.set_life(7 * 86400)  # a fixed deadline: "last seen" is all a read may move


WINDOWS = {"/login-idle": IDLE, "/login-both": IDLE, "/login-week": None, "/login-default": "cookie_age"}


def _seen_of(st, key):
    found = {s.key: s for s in st.user_sessions("alice")}
    return found[key].last_seen if key in found else None


def _side_writes(log, table: str) -> int:
    pattern = re.compile(rf'^\s*(UPDATE|INSERT|DELETE)\s+(INTO\s+)?[`"]?{re.escape(table)}_user[`"]?\s', re.I)
    return sum(1 for s in log.statements if pattern.match(s))


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
@pytest.mark.parametrize("login", sorted(WINDOWS))
def test_last_seen_keeps_up_with_reads_and_saves(app, log, store, login, workers):
    """Saves a little less than an interval apart, then reads, then a random mix: after every
    request the user's "last seen" is less than an interval behind it, and read-only requests
    write the index at most once an interval. With two workers (two stores, as two processes
    have) the requests alternate between them."""
    clock = Clock()
    routes = {"/save": v_save, "/login-default": v_login_default, "/login-week": v_login_week}
    server, browser, st = app(routes, clock=clock)
    assert browser.get(login).status == 200
    key = browser.cookie_value()
    servers = [server] + [app(routes, clock=clock)[0] for _ in range(workers - 1)]
    window = WINDOWS[login]
    interval = st.touch_interval_for(st.settings.cookie_age if window == "cookie_age" else window)
    rng = random.Random(7)
    steps = [("/save", 0.9)] * 10 + [("/read", 0.3)] * 30 + [
        (rng.choice(["/read", "/save"]), rng.choice([0.1, 0.5, 0.9, 1.1])) for _ in range(40)]
    read_writes = []
    for i, (path, share) in enumerate(steps):
        clock.advance(round(share * interval))
        before = _side_writes(log, store.settings.table)
        r = raw_get(servers[i % workers], path, cookie=f"sessionid={key}")
        if r.status != 200 or st.load_row(key) is None:
            assert login == "/login-both"  # its 2-hour deadline passed
            break
        if path == "/read" and _side_writes(log, store.settings.table) > before:
            read_writes.append(clock.now)
        seen = _seen_of(st, key)
        assert seen is not None and (clock.now - seen).total_seconds() < interval, (path, clock.now, seen)
    assert read_writes, "reads never moved last seen"
    assert all((b - a).total_seconds() >= interval for a, b in zip(read_writes, read_writes[1:]))


def test_last_seen_moves_after_the_settings_shorten_the_lifetime(app, log, store):
    """A row whose deadline lies further than the lifetime now gives (cookie_age was cut) still
    gets its "last seen" moved by reads, once an interval."""
    clock = Clock()
    _, browser, _ = app({"/login-default": v_login_default}, clock=clock)
    browser.get("/login-default")
    key = browser.cookie_value()
    server, _, st = app(clock=clock, cookie_age=86400)
    interval = st.touch_interval_for(86400)
    seen_before = _seen_of(st, key)
    for _ in range(18):
        clock.advance(600)
        assert raw_get(server, "/read", cookie=f"sessionid={key}").json()["user"] == "alice"
        assert (clock.now - _seen_of(st, key)).total_seconds() <= interval
    assert _seen_of(st, key) > seen_before


def test_last_seen_keeps_up_when_another_writer_slides_the_deadline(app, store):
    """Django (or any other writer of the table) saves the session and moves its deadline without
    touching the index: "last seen" still follows sessctl's requests, less than an interval behind."""
    clock = Clock()
    server, browser, st = app(clock=clock, touch_interval=60)
    browser.get("/login-idle")
    key = browser.cookie_value()
    table = st.table
    from sqlalchemy import update

    for _ in range(40):
        clock.advance(20)
        with st.engine.begin() as conn:  # the other writer's save: its deadline, no index row touched
            conn.execute(update(table).where(table.c.session_key == key).values(
                expire_date=clock.now + timedelta(seconds=IDLE)))
        clock.advance(20)
        assert raw_get(server, "/read", cookie=f"sessionid={key}").json()["user"] == "alice"
        assert (clock.now - _seen_of(st, key)).total_seconds() < 60


@pytest.mark.parametrize("login", ["/login-idle", "/login-absolute"])
def test_requests_that_loaded_the_row_at_once_touch_it_once(app, store, login):
    """Four workers load the same session, then finish one after another (each later than the last):
    one touch writes, the others find it done and change nothing (not even "last seen")."""
    from sessctl.session import Session

    clock = Clock()
    _, browser, _ = app(clock=clock, touch_interval=60)
    browser.get(login)
    key = browser.cookie_value()
    workers = [app(clock=clock, touch_interval=60)[2] for _ in range(4)]
    clock.advance(61)
    sessions = [Session(st, key) for st in workers]
    assert all(s.get("_auth_user_id") == "alice" for s in sessions)  # all four loaded the row
    before = workers[0].get_row(key).expire_date
    outcomes, first = [], clock.now + timedelta(seconds=0.2)
    for s in sessions:
        clock.advance(0.2)
        outcomes.append(s.touch())
    assert outcomes == ["touched" if login == "/login-idle" else None] + [None] * 3
    assert _seen_of(workers[0], key) == first
    after = workers[0].get_row(key).expire_date
    assert after == (first + timedelta(seconds=IDLE) if login == "/login-idle" else before)


def test_a_touch_of_last_seen_alone_records_the_device_and_sees_a_deleted_session(app, store):
    """A fixed deadline: the touch moves "last seen" only, with the device as it is now (devices on);
    and a session deleted while the request ran stays deleted, and its next request is logged out."""
    clock = Clock()
    server, browser, st = app(clock=clock, track_devices=True)
    browser.get("/login-absolute", headers={"User-Agent": "Old/1"})
    key = browser.cookie_value()
    clock.advance(st.touch_interval_for(None))
    assert browser.get("/read", headers={"User-Agent": "New/2"}).json()["user"] == "alice"
    (found,) = st.user_sessions("alice")
    assert found.user_agent == "New/2" and found.last_seen == clock.now

    loaded, proceed = threading.Event(), threading.Event()

    def v_slow(session, environ):
        session.get("x")
        loaded.set()
        assert proceed.wait(WAIT)

    server, _, st = app({"/slow": v_slow}, clock=clock, track_devices=True)
    clock.advance(st.touch_interval_for(None))  # "last seen" is due again
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", raw_get(server, "/slow", cookie=f"sessionid={key}")))
    thread.start()
    assert loaded.wait(WAIT)
    assert st.delete(key)
    proceed.set()
    thread.join(WAIT)
    header = out["r"].cookie()
    assert header is None or cookie_attrs(header)[2]["max-age"] == "0"  # never a cookie that keeps it
    assert st.get_row(key) is None and st.user_sessions("alice") == []
    after = raw_get(server, "/read", cookie=f"sessionid={key}")
    assert after.json()["user"] is None and cookie_attrs(after.cookie())[2]["max-age"] == "0"


def test_a_users_session_without_an_index_row_costs_no_read_per_request(app, log, store):
    """A logged-in session Django wrote (no index row beside it): its requests within an interval
    look for "last seen" once at most, not on every request."""
    from sessctl.model import new_key

    clock = Clock()
    server, _, st = app(clock=clock, touch_interval=60)
    key = new_key()
    assert st.insert_row(key, st.codec.encode({"_auth_user_id": "7"}), clock.now + timedelta(seconds=st.settings.cookie_age))
    log.clear()
    for _ in range(10):
        clock.advance(5)
        assert raw_get(server, "/read", cookie=f"sessionid={key}").json()["user"] == "7"
    looks = [s for s in log.statements if re.match(r'\s*SELECT\s+[`"]?last_seen\b', s, re.I)]  # beside the loads
    assert len(looks) <= 1, looks
    assert writes(log) == 0
