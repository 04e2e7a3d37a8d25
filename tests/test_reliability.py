"""Nothing is lost and nothing comes back, under real concurrency, on SQLite, PostgreSQL and MariaDB.

Requests go through the threaded HTTP server of ``httpserver.py``; the admin
command runs as a real subprocess of the installed ``sessctl`` script, as cron
or an operator would run it. A view that must overlap with something else
waits on a ``threading.Barrier`` or an event after it has loaded the session,
so the overlap is forced rather than hoped for.

See also test_concurrency.py (the same races with in-process admin calls) and
test_purge.py (the purge lock, also between two processes); here the other side is a real
process.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from httpserver import Client, cookie_attrs, raw_get, routes_app, serve
from sessctl import SessionMiddleware, SessionStore
from sessctl.policy import EXPIRY_KEY, IDLE_KEY, RESEND_KEY
from helpers import run_together, sessctl
from sessctl.session import Session

UTC = timezone.utc
WAIT = 20  # seconds a view waits for its partner before the test fails (never hangs)


pytestmark = pytest.mark.usefixtures("isolated")


class Site:
    """A served app around its own store (closed with the test), and the store to inspect the table."""

    def __init__(self, store: SessionStore, routes: dict, stack: contextlib.ExitStack, clock=None):
        self.store = store
        self.app_store = SessionStore(store.settings, clock=clock)
        stack.callback(self.app_store.close)
        self.server = stack.enter_context(serve(SessionMiddleware(routes_app(routes), store=self.app_store)))

    def request(self, path: str, key: str | None = None):
        return raw_get(self.server, path, cookie=None if key is None else f"sessionid={key}")

    def login(self, **data) -> str:
        client = Client(self.server)
        for name, value in (data or {"user": "1"}).items():
            assert client.get(f"/set?{name}={value}").status == 200
        key = client.cookie_value()
        assert key is not None
        return key

    def data(self, key: str):
        row = self.store.get_row(key)
        return None if row is None else self.store.codec.decode(row.session_data)

    def keys(self) -> set[str]:
        return {r.key for r in self.store.iter_rows("all")}


@pytest.fixture
def site(store):
    stack = contextlib.ExitStack()
    made = []

    def start(routes: dict, clock=None) -> Site:
        s = Site(store, {"/set": v_set, **routes}, stack, clock)
        made.append(s)
        return s

    yield start
    stack.close()
    for s in made:
        s.server.assert_no_errors()


def v_set(session, environ):
    for part in environ.get("QUERY_STRING", "").split("&"):
        name, _, value = part.partition("=")
        if name:
            session[name] = value
    return {"key": session.session_key}


def held(loaded: threading.Event, proceed: threading.Event):
    """A view that loads the session, signals, waits for the go-ahead, then writes ``cart``."""

    def view(session, environ):
        session.get("user")
        loaded.set()
        assert proceed.wait(WAIT)
        session["cart"] = "3"
        return {"key": session.session_key}

    return view


def close_to(moment: datetime, expected: datetime, slack: float = 30) -> bool:
    return abs((moment - expected).total_seconds()) <= slack


# -- N concurrent requests of one session ----------------------------------------------------


@pytest.mark.scenario("concurrent requests, one session")
def test_twenty_concurrent_requests_each_set_a_different_key(site):
    n = 20
    barrier = threading.Barrier(n, timeout=WAIT)

    def v_overlap(session, environ):
        session.get("user")  # every request has loaded the same row before any of them saves
        barrier.wait()
        name, _, value = environ["QUERY_STRING"].partition("=")
        session[name] = value
        return {"key": session.session_key}

    s = site({"/overlap": v_overlap})
    key = s.login(user="1")
    responses = run_together(*[lambda i=i: s.request(f"/overlap?k{i}={i}", key) for i in range(n)])
    assert [r.status for r in responses] == [200] * n
    assert {cookie_attrs(r.cookie())[1] for r in responses} == {key}
    assert s.data(key) == {"user": "1", **{f"k{i}": str(i) for i in range(n)}}
    assert s.keys() == {key}


# -- the admin command while a request is in flight ---------------------------------------------


ADMIN = {
    "set-life": ["set-life", "{key}", "8h", "--idle", "30m"],  # a deadline and an idle limit
    "till-browser-close": ["till-browser-close", "{key}"],
    "delete": ["delete", "{key}"],
}


@pytest.mark.scenario("admin command during a request")
@pytest.mark.parametrize("command", list(ADMIN))
def test_admin_command_during_a_request_survives_it(site, store, command):
    loaded, proceed = threading.Event(), threading.Event()
    s = site({"/slow": held(loaded, proceed)})
    key = s.login(user="1")

    def admin():
        assert loaded.wait(WAIT)
        try:
            return sessctl(store.settings, *[a.format(key=key) for a in ADMIN[command]])
        finally:
            proceed.set()

    started = datetime.now(UTC)
    response, done = run_together(lambda: s.request("/slow", key), admin)
    assert done.returncode == 0, done.stderr
    age = store.settings.cookie_age

    if command == "delete":
        # As Django (SessionInterrupted): the request's own save finds its session gone, so it
        # answers 400 and sets no cookie; it never brings the session back.
        assert response.status == 400 and response.set_cookies == []
        assert s.keys() == set()
        assert s.request("/set?x=1", key).cookie() != f"sessionid={key}"
        return

    assert response.status == 200
    data = s.data(key)
    row = store.get_row(key)
    assert data["user"] == "1" and data["cart"] == "3"  # the request's own change is kept too
    assert RESEND_KEY not in data  # this response already carried the new lifetime
    _, value, attrs = cookie_attrs(response.cookie())
    assert value == key
    if command == "set-life":
        deadline = datetime.fromisoformat(data[EXPIRY_KEY])
        assert close_to(deadline, started + timedelta(hours=8)) and data[IDLE_KEY] == 1800
        assert close_to(row.expire_date, started + timedelta(minutes=30))  # the idle limit is the earlier
        assert 1790 <= int(attrs["max-age"]) <= 1800
    else:
        assert data[EXPIRY_KEY] == 0
        assert "max-age" not in attrs and "expires" not in attrs
        assert close_to(row.expire_date, started + timedelta(seconds=age))


# -- purge while the app refreshes sessions about to expire ----------------------------------------


@pytest.mark.scenario("purge while the app refreshes")
def test_purge_while_the_app_refreshes_sessions_about_to_expire(site, store):
    """Sessions live 3 s idle. The app keeps refreshing some of them while purge runs again and
    again as separate processes: none of the refreshed ones is ever deleted, and every session
    that expired without a refresh is gone at the end. (3 s, not less: on a loaded 2-core machine
    one round of six HTTP refreshes beside a purge process can take over a second, and a session
    that truly expired between two refreshes is purged rightly.)"""
    idle = 3.0

    def v_refresh(session, environ):
        session.set_life(idle, idle=True)
        session["n"] = session.get("n", 0) + 1
        return {"key": session.session_key}

    s = site({"/refresh": v_refresh})
    refreshed = [s.request("/refresh") for _ in range(6)]
    refreshed = [cookie_attrs(r.cookie())[1] for r in refreshed]
    abandoned = [cookie_attrs(s.request("/refresh").cookie())[1] for _ in range(6)]
    codec_data = store.codec.encode({"old": True})
    expired = [store.create_row(codec_data, store.now() - timedelta(minutes=i + 1)) for i in range(20)]
    abandoned_gone_at = time.monotonic() + idle + 0.1  # the abandoned ones expire while purges keep running
    until = time.monotonic() + 2.0
    stop = threading.Event()
    outcomes: list[tuple[str, object]] = []
    purges: list[subprocess.CompletedProcess] = []

    def refresher():
        while not stop.is_set():
            for key in refreshed:
                outcomes.append((key, s.request("/refresh", key)))
            time.sleep(0.05)

    def purger():
        try:
            last_start = 0.0
            # Purge again and again, at least once after the abandoned sessions have expired.
            while time.monotonic() < until or last_start < abandoned_gone_at:
                last_start = time.monotonic()
                purges.append(sessctl(store.settings, "purge", "--expired", "--batch-size", "3", "--json"))
        finally:
            stop.set()  # the app refreshes until the last purge has ended

    run_together(refresher, purger)
    remaining = s.keys()

    lost = [key for key, r in outcomes if r.status != 200 or r.cookie() != _same_key_cookie(r, key)]
    assert lost == [], "a refreshed session was deleted under the app"
    assert len(outcomes) >= 6 * 5
    assert all(p.returncode == 0 for p in purges), [p.stderr for p in purges if p.returncode]
    assert len(purges) >= 2
    deleted = sum(json.loads(p.stdout)["deleted"] for p in purges)
    assert deleted == len(abandoned) + len(expired)
    assert remaining == set(refreshed)  # every expired, un-refreshed session is gone; none of the rest


def _same_key_cookie(response, key):
    header = response.cookie()
    return header if header is not None and cookie_attrs(header)[1] == key else f"sessionid={key} (expected)"


# -- two purges at once (overlapping cron) -------------------------------------------------------


# -- purge and the app's writes on the same rows --------------------------------------------------


@pytest.mark.scenario("purge batches vs app saves")
def test_purge_batches_and_app_saves_never_deadlock(store):
    """Six app threads keep saving sessions about to expire (idle 5 s) while purge batches run
    on the rows just below them, for a few seconds: no save and no batch may fail. (A purge
    DELETE that walks the expire_date index locks index entries before rows, the app's UPDATE
    by key locks the row before the index entry: opposite orders deadlock on InnoDB.)"""
    from sqlalchemy import insert

    from sessctl.store import new_key

    IDLE = 5.0  # the app refreshes each session every few ms; 5 s outlasts a loaded machine's stalls
    app = SessionStore(store.settings)
    purger = SessionStore(store.settings)
    keys = []
    for _ in range(12):
        session = Session(app)
        session["n"] = 0
        session.set_life(IDLE, idle=True)
        keys.append(session.save())
    failures: list[str] = []
    counts = {"saves": 0, "batches": 0}
    started = time.monotonic()

    def running() -> bool:
        # At least 3 s, and on a loaded machine until enough work has overlapped (30 s at most).
        elapsed = time.monotonic() - started
        enough = counts["saves"] > 100 and counts["batches"] > 5
        return elapsed < 3 or (not enough and elapsed < 30)

    def refresher(mine):
        while running():
            for key in mine:
                try:
                    session = Session(app, key)
                    if session.get("n") is None:
                        failures.append(f"session {key} was lost")
                        continue
                    session["n"] += 1
                    session.set_life(IDLE, idle=True)
                    session.save()
                    counts["saves"] += 1
                except Exception as exc:
                    failures.append(f"app save: {type(exc).__name__}: {exc}")

    def purge():
        old = purger.codec.encode({"old": True})
        while running():
            now = purger.now()
            with purger.engine.begin() as conn:
                conn.execute(insert(purger.table), [
                    {"session_key": new_key(), "session_data": old, "expire_date": now - timedelta(seconds=1)}
                    for _ in range(40)
                ])
            try:
                purger.purge_expired(batch_size=5)
                counts["batches"] += 1
            except Exception as exc:
                failures.append(f"purge: {type(exc).__name__}: {exc}")

    try:
        run_together(purge, *[lambda i=i: refresher(keys[i::6]) for i in range(6)])
    finally:
        app.close()
        purger.close()
    assert counts["saves"] > 100 and counts["batches"] > 5, (counts, failures[:3])
    assert failures == [], f"{len(failures)} failures in {counts}: {failures[:3]}"
