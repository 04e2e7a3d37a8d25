"""max_sessions_per_user holds under parallel logins of one user, on every backend.

Each login checks the limit when the app calls ``session.login()``; logins that run at the same
time all pass that check. The limit must still hold once they have saved: the insert counts
again under a lock of the user (sessctl.userlimit). Logins of other users are not held up.
"""

from __future__ import annotations

import threading

import pytest

from sessctl import SessionStore
from sessctl.errors import SessionGone
from sessctl.session import Session
from sessctl.users import SessionLimitReached

LOGINS = 8
WAIT = 30


def parallel_logins(store: SessionStore, user: str, n: int = LOGINS) -> tuple[list[object], set[str], list[str]]:
    """``n`` threads each log ``user`` in on an anonymous session of their own (a cart), all at
    once. Each outcome is the new key (the login is saved at once, as Django's), or the exception;
    then the keys evicted, and the anonymous sessions' keys."""
    barrier = threading.Barrier(n, timeout=WAIT)
    outcomes: list[object] = [None] * n
    evicted: set[str] = set()
    before: list[str] = [""] * n

    def one(i: int) -> None:
        s = Session(store)
        s["cart"] = i
        before[i] = s.save()
        s = Session(store, before[i])  # a new request: not loaded until login() reads it
        barrier.wait()
        try:
            result = s.login(user)
        except (SessionGone, SessionLimitReached) as exc:
            outcomes[i] = exc
            return
        evicted.update(result.evicted)
        outcomes[i] = s.session_key

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    return outcomes, evicted, before


def limited(store: SessionStore, **overrides) -> SessionStore:
    return SessionStore(store.settings.replace(max_sessions_per_user=2, **overrides), engine=store.engine)


def log_in(store: SessionStore, user: str) -> str:
    s = Session(store)
    s.login(user)
    return s.save()


def test_parallel_logins_evict_down_to_the_limit(store):
    st = limited(store)
    log_in(st, "alice")
    bob = log_in(st, "bob")
    first = st.user_sessions("alice")[0].key
    outcomes, evicted, _ = parallel_logins(st, "alice")
    keys = [o for o in outcomes if isinstance(o, str)]
    assert len(keys) == LOGINS, outcomes  # evicting: every login succeeds
    live = {s.key for s in st.user_sessions("alice")}
    assert len(live) == 2 and live <= set(keys)  # two of the new logins, nothing older
    assert live | evicted == set(keys) | {first}  # every other session was evicted by a login
    assert [s.key for s in st.user_sessions("bob")] == [bob]  # another user is untouched
    rows = {r.key for r in st.iter_rows("active")}
    assert rows == live | {bob}  # no session row beyond the limit, indexed or not


def test_parallel_logins_refused_beyond_the_limit(store):
    st = limited(store, on_max_sessions="refuse")
    first = log_in(st, "alice")
    outcomes, _, before = parallel_logins(st, "alice")
    keys = [o for o in outcomes if isinstance(o, str)]
    refused = [i for i, o in enumerate(outcomes) if not isinstance(o, str)]
    assert len(keys) == 1 and len(refused) == LOGINS - 1, outcomes
    assert all(isinstance(outcomes[i], SessionLimitReached) for i in refused)  # a reason the app can show
    assert {s.key for s in st.user_sessions("alice")} == {first, keys[0]}
    # A refused login changed nothing: each browser's session before it is there, with its cart.
    assert {r.key for r in st.iter_rows("active")} == {first, keys[0], *(before[i] for i in refused)}
    assert all(Session(st, before[i])["cart"] == i for i in refused)


@pytest.mark.parametrize("mode", ["evict", "refuse"])
def test_one_login_within_the_limit_is_unchanged(store, mode):
    """No race: the third login evicts the least recently active (or is refused at login())."""
    st = limited(store, on_max_sessions=mode)
    a, b = log_in(st, "alice"), log_in(st, "alice")
    s = Session(st)
    if mode == "refuse":
        with pytest.raises(SessionLimitReached):
            s.login("alice")
        assert {x.key for x in st.user_sessions("alice")} == {a, b}
        return
    result = s.login("alice")
    c = s.save()
    assert result.evicted == (a,) and s.login_result.evicted == (a,)
    assert {x.key for x in st.user_sessions("alice")} == {b, c}


@pytest.mark.parametrize("limit", [None, 2])
def test_logins_racing_log_out_everywhere_leave_no_key_without_a_row(store, limit):
    """Logins of alice while "log alice out everywhere" runs again and again: every login that
    succeeded has its row at the end, unless a log-out ended it after (it is in what was ended).
    No login hands out a key whose row was never there or vanished unaccounted for; with a
    limit, the sessions a login evicted count as ended."""
    import time

    st = SessionStore(store.settings.replace(max_sessions_per_user=limit), engine=store.engine)
    stop = time.monotonic() + 2.0
    issued: list[str] = []
    ended: set[str] = set()
    errors: list[BaseException] = []

    def logins() -> None:
        while time.monotonic() < stop:
            s = Session(st)
            try:
                ended.update(s.login("alice").evicted)  # evicted to keep the limit: ended too
                issued.append(s.save())
            except SessionGone:
                pass  # a login whose own session ended while it ran: no key handed out
            except BaseException as exc:
                errors.append(exc)
                return

    def logouts() -> None:
        while time.monotonic() < stop:
            ended.update(st.end_user_sessions("alice"))

    threads = [threading.Thread(target=f) for f in (logins, logins, logouts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert errors == []
    assert len(issued) > 5
    live = {s.key for s in st.user_sessions("alice")}
    rows = {r.key for r in st.iter_rows("all")}
    assert live == rows  # every row is indexed, every index row has its row
    assert [k for k in issued if k not in live and k not in ended] == []
    if limit:
        assert len(live) <= limit


@pytest.mark.parametrize("mode", ["evict", "refuse"])
def test_logging_in_again_from_the_same_session_does_not_count_it(store, mode):
    """A user at the limit logs in again from a session they are logged in on, in a request that
    has not read the session yet: nothing is evicted or refused, and the session keeps its data."""
    st = SessionStore(store.settings.replace(max_sessions_per_user=1, on_max_sessions=mode), engine=store.engine)
    s = Session(st)
    s.login("alice")
    s["cart"] = 3
    key = s.save()
    again = Session(st, key)  # not loaded
    result = again.login("alice")
    new = again.save()
    assert result.evicted == () and new != key
    assert Session(st, new)["cart"] == 3
    assert [x.key for x in st.user_sessions("alice")] == [new]
    assert st.get_row(key) is None  # the old key is gone (cycled), the session lives on under the new one


@pytest.mark.parametrize("uid", [" ", "\t", "a\x00b", "a\ud800b", "x" * 151])
def test_user_ids_no_backend_can_hold_are_refused_at_login(store, uid):
    s = Session(store)
    s["cart"] = 1
    key = s.save()
    s = Session(store, key)
    with pytest.raises(ValueError):
        s.login(uid)
    assert Session(store, key)["cart"] == 1  # nothing changed


def test_a_refused_login_on_another_users_session_keeps_that_session(store):
    """u1's browser logs in as u2 while another login of u2 takes the last slot: whenever the
    login is refused, u1's session is still there with its data (a refusal changes nothing)."""
    st = SessionStore(store.settings.replace(max_sessions_per_user=1, on_max_sessions="refuse"), engine=store.engine)
    refused = 0
    for attempt in range(12):
        a = Session(st)
        a["cart"] = attempt
        a.login(f"u1-{attempt}")
        ka = a.save()
        barrier = threading.Barrier(2, timeout=WAIT)
        outcome: dict = {}

        def switch():
            s = Session(st, ka)
            s.get("cart")
            barrier.wait()
            try:
                s.login(f"u2-{attempt}")
            except SessionLimitReached:
                outcome["refused"] = True

        def other():
            barrier.wait()
            try:
                Session(st).login(f"u2-{attempt}")
            except SessionLimitReached:
                pass

        threads = [threading.Thread(target=switch), threading.Thread(target=other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        if outcome.get("refused"):
            refused += 1
            kept = Session(st, ka)
            assert kept.user_id == f"u1-{attempt}" and kept["cart"] == attempt
    assert refused >= 1  # the race was met at least once


def test_login_after_the_session_was_deleted_meanwhile_is_a_fresh_login(store):
    """The session a login starts from was deleted while the request ran (sessctl delete, a
    double-submitted login form): the login still succeeds, on a session that carries nothing."""
    st = limited(store)
    s = Session(st)
    s["cart"] = 5
    key = s.save()
    s = Session(st, key)
    s.get("cart")
    assert st.delete(key)
    s.login("alice")
    new = s.session_key
    assert new != key and st.get_row(key) is None
    assert dict(Session(st, new)) == {st.settings.user_key: "alice"}  # nothing of the ended session


def test_a_login_whose_response_fails_leaves_no_session_behind(store):
    """A view that logs in and then fails (500): the browser never gets the new cookie, so the row
    the login saved is deleted again and does not count against the limit of one."""
    from httpserver import Client, routes_app, serve

    from sessctl import SessionMiddleware

    st = SessionStore(store.settings.replace(max_sessions_per_user=1, on_max_sessions="refuse"), engine=store.engine)

    def v_login_then_fail(session, environ):
        session.login("alice")
        raise RuntimeError("the view failed after the login")

    def v_login(session, environ):
        session.login("alice")
        return {"user": session.user_id}

    with serve(SessionMiddleware(routes_app({"/fail": v_login_then_fail, "/login": v_login}), store=st)) as server:
        r = Client(server).get("/fail")
        assert r.status == 500 and r.cookie() is None
        assert st.user_sessions("alice") == []
        r = Client(server).get("/login")
        assert r.status == 200 and r.json() == {"user": "alice"}
        server.errors.clear()  # the first request's error was the point
