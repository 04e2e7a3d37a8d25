"""Requests of one session that really run at once, through the threaded HTTP server.

A ``threading.Barrier`` (or a pair of events) inside the view holds each
request after it has loaded the session, so the overlap is forced rather than
hoped for; other writers (another request, the command line's
``store.update``/``store.delete``) act while it waits.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

from httpserver import cookie_attrs, raw_get
from sessctl.policy import EXPIRY_KEY, RESEND_KEY
from helpers import AGE, DELETION, run_together
from adapters import login
from test_middleware import Web, web  # noqa: F401  (fixtures)

UTC = timezone.utc
WAIT = 15  # seconds; a hung view fails the test instead of hanging the run


def overlapping_writes(n):
    """A view that loads the session, waits for ``n`` requests to have loaded it, then writes."""
    barrier = threading.Barrier(n, timeout=WAIT)

    def view(session, environ):
        session.get("user")  # loaded before anyone saves
        barrier.wait()
        for part in environ["QUERY_STRING"].split("&"):
            name, _, value = part.partition("=")
            if name.startswith("-"):
                session.pop(name[1:], None)
            else:
                session[name] = value
        return {"key": session.session_key}

    return view


def hold(loaded: threading.Event, proceed: threading.Event, then=None):
    """A view that loads the session, signals, and waits for the test's go-ahead."""

    def view(session, environ):
        session.get("user")
        loaded.set()
        assert proceed.wait(WAIT)
        if then is not None:
            then(session)

    return view


def get(w: Web, path: str, key: str):
    return lambda: raw_get(w.server, path, cookie=f"sessionid={key}")


# -- two requests, different keys ---------------------------------------------------------


def test_two_overlapping_requests_keep_both_changes(web, log, backend):
    w = web({"/w": overlapping_writes(2)})
    key = login(w)
    log.clear()
    r1, r2 = run_together(get(w, "/w?a=1", key), get(w, "/w?b=2", key))
    # Both loaded the same row: one compare-and-swap lost, re-read the row and retried.
    kinds = Counter(log.kinds)
    # 2 loads, 2 compare-and-swaps (one loses), 1 re-read, 1 winning retry. On
    # SQLite a writer that finds the lock held re-issues its UPDATE, so more may show.
    assert kinds["SELECT"] == 3, log.statements
    if backend == "sqlite":
        assert kinds["UPDATE"] >= 3 and set(kinds) == {"SELECT", "UPDATE"}, log.statements
    else:
        assert kinds["UPDATE"] == 3, log.statements
    assert r1.status == r2.status == 200
    assert cookie_attrs(r1.cookie())[1] == key and cookie_attrs(r2.cookie())[1] == key
    assert w.data(key) == {"user": "1", "a": "1", "b": "2"}


def test_many_overlapping_requests_keep_every_change(web):
    n = 6
    w = web({"/w": overlapping_writes(n)})
    key = login(w)
    responses = run_together(*[get(w, f"/w?k{i}={i}", key) for i in range(n)])
    assert [r.status for r in responses] == [200] * n
    assert w.data(key) == {"user": "1", **{f"k{i}": str(i) for i in range(n)}}


def test_overlapping_delete_and_add_both_apply(web):
    w = web({"/w": overlapping_writes(2)})
    key = login(w, user="1", x="old", shared="0")
    run_together(get(w, "/w?-x", key), get(w, "/w?y=new&shared=1", key))
    assert w.data(key) == {"user": "1", "y": "new", "shared": "1"}


# -- another writer changes the lifetime meanwhile ------------------------------------------


def _cli_set(store, key, value):
    store.update(key, lambda d: d.__setitem__(EXPIRY_KEY, value), resend=True)


def test_lifetime_set_by_the_command_line_during_a_request_is_kept(web):
    loaded, proceed = threading.Event(), threading.Event()
    w = web({"/slow": hold(loaded, proceed, then=lambda s: s.__setitem__("cart", "3"))})
    key = login(w)

    def cli():
        assert loaded.wait(WAIT)
        _cli_set(w.store, key, 0)  # sessctl till-browser-close KEY
        proceed.set()

    response, _ = run_together(get(w, "/slow", key), cli)
    assert response.status == 200
    _, value, attrs = cookie_attrs(response.cookie())
    assert value == key and "max-age" not in attrs and "expires" not in attrs
    assert w.data(key) == {"user": "1", EXPIRY_KEY: 0, "cart": "3"}
    assert RESEND_KEY not in w.data(key)
    expire = w.store.get_row(key).expire_date
    assert abs((expire - datetime.now(UTC)).total_seconds() - AGE) < 30


def test_idle_timeout_set_during_a_request_is_kept(web):
    loaded, proceed = threading.Event(), threading.Event()
    w = web({"/slow": hold(loaded, proceed, then=lambda s: s.__setitem__("cart", "3"))})
    key = login(w)

    def cli():
        assert loaded.wait(WAIT)
        _cli_set(w.store, key, 600)  # sessctl set-life KEY 600 --idle
        proceed.set()

    response, _ = run_together(get(w, "/slow", key), cli)
    assert cookie_attrs(response.cookie())[2]["max-age"] == "600"
    assert w.data(key)[EXPIRY_KEY] == 600
    expire = w.store.get_row(key).expire_date
    assert abs((expire - datetime.now(UTC)).total_seconds() - 600) < 30


def test_lifetime_set_during_a_read_only_request_reaches_the_next_response(web):
    loaded, proceed = threading.Event(), threading.Event()
    w = web({"/slow": hold(loaded, proceed)})
    key = login(w)

    def cli():
        assert loaded.wait(WAIT)
        _cli_set(w.store, key, 0)
        proceed.set()

    response, _ = run_together(get(w, "/slow", key), cli)
    assert response.set_cookies == []  # it only read; it had no new lifetime to send
    follow = w.get("/read")
    _, value, attrs = cookie_attrs(follow.cookie())
    assert value == key and "max-age" not in attrs
    w.client.close_browser()
    assert w.key is None


# -- deleted while in flight ------------------------------------------------------------------


def test_logout_in_another_request_is_not_undone(web):
    loaded, proceed = threading.Event(), threading.Event()
    w = web({"/slow": hold(loaded, proceed, then=lambda s: s.__setitem__("cart", "3"))})
    key = login(w)

    def logout_elsewhere():
        assert loaded.wait(WAIT)
        try:
            return raw_get(w.server, "/flush", cookie=f"sessionid={key}")
        finally:
            proceed.set()

    slow, logout = run_together(get(w, "/slow", key), logout_elsewhere)
    assert logout.set_cookies == [DELETION]
    assert slow.status == 400  # as Django (SessionInterrupted), and no cookie: the logout's stands
    assert slow.set_cookies == []
    assert w.rows() == []


def test_admin_delete_during_a_request_is_not_undone(web):
    loaded, proceed = threading.Event(), threading.Event()
    w = web({"/slow": hold(loaded, proceed, then=lambda s: s.__setitem__("cart", "3"))})
    key = login(w)

    def admin():
        assert loaded.wait(WAIT)
        assert w.store.delete(key)  # sessctl delete KEY
        proceed.set()

    slow, _ = run_together(get(w, "/slow", key), admin)
    assert slow.status == 400 and slow.set_cookies == []
    assert w.rows() == []


def test_purge_during_a_request_is_not_undone(web):
    loaded, proceed = threading.Event(), threading.Event()
    w = web({"/slow": hold(loaded, proceed, then=lambda s: s.__setitem__("cart", "3"))})
    key = login(w)

    def purge():
        assert loaded.wait(WAIT)
        cutoff = datetime.now(UTC) + timedelta(seconds=AGE + 60)  # as if the row had run out
        assert w.store.purge_expired(cutoff=cutoff).deleted == 1
        proceed.set()

    slow, _ = run_together(get(w, "/slow", key), purge)
    assert slow.status == 400 and slow.set_cookies == []
    assert w.rows() == []


def test_admin_delete_during_a_login_is_not_undone(web):
    """cycle_key() (a login) must not bring back, under a new key, a session that was
    ended while the request ran: the response is a 400, as Django's, and sets no cookie."""
    loaded, proceed = threading.Event(), threading.Event()
    w = web({"/slow-login": hold(loaded, proceed, then=lambda s: s.cycle_key())})
    key = login(w)

    def admin():
        assert loaded.wait(WAIT)
        assert w.store.delete(key)  # sessctl delete KEY
        proceed.set()

    slow, _ = run_together(get(w, "/slow-login", key), admin)
    assert slow.status == 400
    assert w.rows() == []
    assert slow.set_cookies == []
