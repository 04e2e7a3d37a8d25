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


def parallel_logins(store: SessionStore, user: str, n: int = LOGINS) -> list[object]:
    """``n`` threads each log ``user`` in on a new session; all check the limit, then all save at once.
    Each outcome is the new key, or the exception."""
    barrier = threading.Barrier(n, timeout=WAIT)
    outcomes: list[object] = [None] * n

    def one(i: int) -> None:
        s = Session(store)
        s["n"] = i
        try:
            s.login(user)
        except SessionLimitReached as exc:
            outcomes[i] = exc
            barrier.wait()
            return
        barrier.wait()
        try:
            outcomes[i] = s.save()
        except (SessionGone, SessionLimitReached) as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    return outcomes


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
    outcomes = parallel_logins(st, "alice")
    keys = [o for o in outcomes if isinstance(o, str)]
    assert len(keys) == LOGINS, outcomes  # evicting: every login succeeds
    live = {s.key for s in st.user_sessions("alice")}
    assert len(live) == 2 and live <= set(keys)  # the two most recent logins, nothing older
    assert [s.key for s in st.user_sessions("bob")] == [bob]  # another user is untouched
    rows = {r.key for r in st.iter_rows("active")}
    assert rows == live | {bob}  # no session row beyond the limit, indexed or not


def test_parallel_logins_refused_beyond_the_limit(store):
    st = limited(store, on_max_sessions="refuse")
    first = log_in(st, "alice")
    outcomes = parallel_logins(st, "alice")
    keys = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if not isinstance(o, str)]
    assert len(keys) == 1 and len(refused) == LOGINS - 1, outcomes
    assert all(isinstance(o, (SessionLimitReached, SessionGone)) for o in refused)
    assert {s.key for s in st.user_sessions("alice")} == {first, keys[0]}
    assert {r.key for r in st.iter_rows("active")} == {first, keys[0]}  # a refused login wrote nothing


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
                s.login("alice")
                issued.append(s.save())
                ended.update(s.login_result.evicted)  # evicted to keep the limit: ended too
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
