"""Sessions of a user, over real HTTP with cookie jars, on every backend: find, list, end, devices, limits.

Alice logs in on two browsers and Bob on one, through sessctl's middleware
(``session.login(user)``); the operator's command line and the app's runtime
API then find and end sessions by user, through the user index that the
runtime keeps beside Django's table.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, unquote

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from helpers import Clock
from httpserver import Client, Server, cookie_attrs, raw_get, routes_app, serve
from sessctl import SessionMiddleware, SessionStore
from sessctl.cli import cli
from sessctl.userindex import side_name
from sessctl.users import SessionLimitReached

pytestmark = pytest.mark.usefixtures("isolated")
WAIT = 20
UA = "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0"



def v_login(session, environ):
    user = unquote(environ["QUERY_STRING"].partition("=")[2])
    result = session.login(user)
    return {"evicted": list(result.evicted), "reason": result.reason}


def v_whoami(session, environ):
    return {"user": session.user_id}


def v_logout(session, environ):
    session.flush()


def v_write(session, environ):
    session["n"] = session.get("n", 0) + 1


def v_others_out(session, environ):
    return {"ended": sorted(session.end_other_sessions())}


ROUTES = {"/login": v_login, "/whoami": v_whoami, "/logout": v_logout, "/write": v_write, "/others-out": v_others_out}


@dataclass
class Web:
    server: Server
    store: SessionStore

    def browser(self) -> Client:
        return Client(self.server)


@pytest.fixture
def web(store):
    """``web(routes=..., clock=..., **settings)``: the app served over HTTP, and its store."""
    stack = contextlib.ExitStack()
    started = []

    def start(routes=None, *, clock=None, **overrides) -> Web:
        settings = store.settings.replace(**overrides) if overrides else store.settings
        st = SessionStore(settings, engine=store.engine, clock=clock)
        app = SessionMiddleware(routes_app({**ROUTES, **(routes or {})}), store=st)
        server = stack.enter_context(serve(app))
        started.append(server)
        return Web(server, st)

    yield start
    stack.close()
    for server in started:
        server.assert_no_errors()




def log_in(w: Web, user: str, **headers) -> Client:
    browser = w.browser()
    r = browser.get(f"/login?user={quote(user)}", headers=headers or None)
    assert r.status == 200, r.body
    assert browser.cookie_value()
    return browser


def side_rows(store) -> list[dict]:
    with store.engine.connect() as conn:
        q = store.engine.dialect.identifier_preparer.quote
        return [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {q(side_name(store.settings.table))}"))]


def everything_stored(store) -> str:
    """Every value of every row of the session table and the user index, as one text."""
    q = store.engine.dialect.identifier_preparer.quote
    out = []
    with store.engine.connect() as conn:
        for table in (store.settings.table, side_name(store.settings.table)):
            for row in conn.execute(text(f"SELECT * FROM {q(table)}")):
                out.extend(str(v) for v in row)
    return "\n".join(out)


# -- alice on two devices, bob on one ------------------------------------------------------


def test_list_and_end_the_sessions_of_a_user(web, run_ok):
    w = web()
    a1, a2, b1 = log_in(w, "alice"), log_in(w, "alice"), log_in(w, "bob")
    k1, k2, kb = a1.cookie_value(), a2.cookie_value(), b1.cookie_value()
    assert len({k1, k2, kb}) == 3

    found = w.store.user_sessions("alice")
    assert {s.key for s in found} == {k1, k2} and found.method == "index"
    listed = json.loads(run_ok("list", "--user", "alice", "--json").stdout)
    assert {item["key"] for item in listed} == {k1, k2}
    assert {item["user"] for item in listed} == {"alice"}
    human = run_ok("list", "--user", "alice")
    assert k1 in human.stdout and k2 in human.stdout and kb not in human.stdout
    assert "user index" in human.stderr

    r = run_ok("delete", "--user", "alice", "--except", k1)
    assert "1 session" in r.stderr and "user index" in r.stderr

    gone = a2.get("/whoami")  # the ended device is logged out, and its cookie removed
    assert gone.json() == {"user": None}
    assert cookie_attrs(gone.cookie())[2]["max-age"] == "0"
    assert a1.get("/whoami").json() == {"user": "alice"}
    assert b1.get("/whoami").json() == {"user": "bob"}
    assert [s.key for s in w.store.user_sessions("alice")] == [k1]
    assert [s.key for s in w.store.user_sessions("bob")] == [kb]
    assert json.loads(run_ok("list", "--user", "alice", "--json").stdout)[0]["key"] == k1
    assert {row["session_key"] for row in side_rows(w.store)} == {k1, kb}


def test_delete_user_everywhere_and_dry_run(web, run_ok):
    w = web()
    a1, a2, b1 = log_in(w, "alice"), log_in(w, "alice"), log_in(w, "bob")
    r = run_ok("delete", "--user", "alice", "--dry-run")
    assert a1.cookie_value() in r.stdout and a2.cookie_value() in r.stdout
    assert "would" in r.stderr
    assert len(w.store.user_sessions("alice")) == 2
    run_ok("delete", "--user", "alice")
    assert a1.get("/whoami").json() == a2.get("/whoami").json() == {"user": None}
    assert b1.get("/whoami").json() == {"user": "bob"}
    r = run_ok("delete", "--user", "nobody", code=1)
    assert "no live session" in r.stderr and "Traceback" not in r.output


def test_users_command_counts_most_first(web, run_ok):
    w = web()
    for user in ("alice", "alice", "bob", "carol", "alice", "bob"):
        log_in(w, user)
    w.browser().get("/write")  # an anonymous session: nobody's
    report = json.loads(run_ok("users", "--json").stdout)
    assert [(u["user"], u["sessions"]) for u in report] == [("alice", 3), ("bob", 2), ("carol", 1)]
    assert all(u["last_activity"] for u in report)
    assert [u["user"] for u in json.loads(run_ok("users", "--limit", "1", "--json").stdout)] == ["alice"]
    human = run_ok("users")
    assert "alice" in human.stdout and "user index" in human.stderr


def test_show_has_the_user(web, run_ok):
    w = web()
    key = log_in(w, "alice").cookie_value()
    info = json.loads(run_ok("show", key, "--json").stdout)
    assert info["user"] == "alice" and info["device"] is None
    assert "alice" in run_ok("show", key).stdout


# -- the runtime API, and requests in flight ---------------------------------------------


def test_log_out_my_other_devices(web):
    w = web()
    a1, a2, b1 = log_in(w, "alice"), log_in(w, "alice"), log_in(w, "bob")
    assert a1.get("/others-out").json() == {"ended": [a2.cookie_value()]}
    assert a2.get("/whoami").json() == {"user": None}
    assert a1.get("/whoami").json() == {"user": "alice"}
    assert b1.get("/whoami").json() == {"user": "bob"}


@pytest.mark.parametrize("then", ["write", "login-again", "touch"])
def test_a_request_in_flight_does_not_bring_an_ended_session_back(web, then):
    clock = Clock()
    loaded, proceed = threading.Event(), threading.Event()

    def v_slow(session, environ):
        session.user_id  # loaded
        loaded.set()
        assert proceed.wait(WAIT)
        if then == "write":
            session["cart"] = 3
        elif then == "login-again":
            session.login("alice")
        return {"user": session.user_id}

    w = web({"/slow": v_slow}, clock=clock)
    a1, a2 = log_in(w, "alice"), log_in(w, "alice")
    k1, k2 = a1.cookie_value(), a2.cookie_value()
    if then == "touch":
        clock.advance(3 * 86400)  # a read now slides the deadline: the touch is due
    outcome = {}

    def request():
        outcome["r"] = raw_get(w.server, "/slow", cookie=f"sessionid={k2}")

    thread = threading.Thread(target=request)
    thread.start()
    assert loaded.wait(WAIT)
    assert w.store.end_user_sessions("alice", keep=k1) == [k2]
    proceed.set()
    thread.join(WAIT)
    r = outcome["r"]
    if then == "touch":  # a read whose activity touch found the row gone: told to forget it
        assert r.status == 200 and cookie_attrs(r.cookie())[2]["max-age"] == "0"
    else:  # a save: as Django (SessionInterrupted), a 400 that leaves the cookie alone (issue 11, item 10)
        assert r.status == 400 and r.cookie() is None, (r.status, r.set_cookies)
    assert w.store.get_row(k2) is None
    assert [s.key for s in w.store.user_sessions("alice")] == [k1]
    assert {row["session_key"] for row in side_rows(w.store)} == {k1}
    assert len(list(w.store.iter_rows("all"))) == 1


# -- the index stays right --------------------------------------------------------------


@pytest.mark.parametrize("other", ["Alice", "ALICE", "alice ", "alicé"])
def test_user_ids_that_differ_only_in_case_or_accents_are_other_users(web, run_ok, other):
    """MariaDB's default collation would call 'Alice', 'alicé' and 'alice' one user, and every PAD
    SPACE collation (utf8mb4_bin too) 'alice ' and 'alice': ending one must never end the other's
    sessions, nor count them as one user, on any backend."""
    w = web()
    mine, theirs = log_in(w, "alice"), log_in(w, other)
    assert [item["key"] for item in json.loads(run_ok("list", "--user", other, "--json").stdout)] == [
        theirs.cookie_value()
    ]
    assert theirs.get("/others-out").json() == {"ended": []}
    run_ok("delete", "--user", other)
    assert mine.get("/whoami").json() == {"user": "alice"}
    assert theirs.get("/whoami").json() == {"user": None}
    assert sorted(u["user"] for u in json.loads(run_ok("users", "--json").stdout)) == ["alice"]
    again = log_in(w, other)
    assert sorted((u["user"], u["sessions"]) for u in json.loads(run_ok("users", "--json").stdout)) == sorted(
        [("alice", 1), (other, 1)]
    )
    assert again.get("/whoami").json() == {"user": other}


def test_login_cycles_the_key_and_a_new_user_gets_an_empty_session(web):
    w = web()
    browser = w.browser()
    browser.get("/write")
    anonymous = browser.cookie_value()
    browser.get("/login?user=alice")
    alice = browser.cookie_value()
    assert alice != anonymous and w.store.get_row(anonymous) is None
    assert w.store.codec.decode(w.store.get_row(alice).session_data)["n"] == 1  # kept across login
    browser.get("/login?user=bob")
    bob = browser.cookie_value()
    assert bob != alice and w.store.get_row(alice) is None
    data = w.store.codec.decode(w.store.get_row(bob).session_data)
    assert data == {"_auth_user_id": "bob"}  # another user's login starts from nothing
    assert [row["user_id"] for row in side_rows(w.store)] == ["bob"]
    browser.get("/logout")
    assert side_rows(w.store) == []


def test_user_set_without_login_helper_is_indexed(web):
    def v_set(session, environ):
        session["_auth_user_id"] = 42  # as an app might, without login()

    def v_unset(session, environ):
        del session["_auth_user_id"]

    w = web({"/set": v_set, "/unset": v_unset})
    browser = w.browser()
    browser.get("/write")
    browser.get("/set")
    assert [s.key for s in w.store.user_sessions("42")] == [browser.cookie_value()]
    browser.get("/unset")
    assert w.store.user_sessions("42") == [] and side_rows(w.store) == []


def test_purge_deletes_the_index_rows_of_purged_sessions(web, store):
    clock = Clock()
    w = web(clock=clock)
    for _ in range(3):
        log_in(w, "alice")
    clock.advance(60)
    keep = log_in(w, "bob").cookie_value()
    cutoff = clock.now + timedelta(seconds=store.settings.cookie_age - 30)
    assert store.purge_expired(cutoff=cutoff).deleted == 3
    assert [row["session_key"] for row in side_rows(store)] == [keep]
    assert [s.key for s in w.store.user_sessions("bob")] == [keep]


def test_postgres_purge_batches_delete_their_own_index_rows(web, store, backend):
    # On PostgreSQL each batch deletes the index rows of the rows it deletes, in its statement:
    # the sweep after it finds only what was deleted behind the index (Django's deletes).
    if backend != "postgres":
        pytest.skip("SQLite and MariaDB/MySQL batches leave index rows to the sweep")
    clock = Clock()
    w = web(clock=clock)
    expired = [log_in(w, "alice").cookie_value() for _ in range(3)]
    clock.advance(60)
    keep = log_in(w, "bob").cookie_value()
    behind = log_in(w, "carol").cookie_value()
    q = store.engine.dialect.identifier_preparer.quote
    with store.engine.begin() as conn:  # what Django's session.delete() does: the index row stays
        conn.execute(text(f"DELETE FROM {q(store.settings.table)} WHERE session_key = :k"), {"k": behind})
    cutoff = clock.now + timedelta(seconds=store.settings.cookie_age - 30)
    result = store.purge_expired(cutoff=cutoff)
    assert result.deleted == len(expired)
    assert result.index_deleted == 1  # carol's: the batches had already taken alice's three
    assert [row["session_key"] for row in side_rows(store)] == [keep]


def test_rows_deleted_behind_the_index_are_ignored_and_cleaned(web, store):
    w = web()
    a1, a2 = log_in(w, "alice"), log_in(w, "alice")
    q = store.engine.dialect.identifier_preparer.quote
    with store.engine.begin() as conn:  # what Django's clearsessions or session.delete() does
        conn.execute(text(f"DELETE FROM {q(store.settings.table)} WHERE session_key = :k"), {"k": a2.cookie_value()})
    assert [s.key for s in w.store.user_sessions("alice")] == [a1.cookie_value()]
    assert {row["session_key"] for row in side_rows(store)} == {a1.cookie_value()}


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_sweep_from_any_point_round_the_index_takes_every_dead_row(store, where):
    """Purge sweeps from a random key and wraps around: wherever it starts, every index row
    whose session is gone is deleted in one unbounded sweep, and no live session's row."""
    from sessctl.session import Session
    from sessctl.users import sweep

    keys = []
    for i in range(30):
        s = Session(store)
        s.login(f"u{i % 7}")
        keys.append(s.save())
    dead = set(sorted(keys)[::2])
    q = store.engine.dialect.identifier_preparer.quote
    with store.engine.begin() as conn:  # Django's clearsessions, or a purge's batches
        for k in dead:
            conn.execute(text(f"DELETE FROM {q(store.settings.table)} WHERE session_key = :k"), {"k": k})
    start = {"start": "", "middle": sorted(keys)[15], "end": "zzzz"}[where]
    assert sweep(store, step=4, start=start) == (len(dead), True)
    assert {row["session_key"] for row in side_rows(store)} == set(keys) - dead


# -- devices ------------------------------------------------------------------------------


def test_devices_off_store_nothing_about_the_client(web):
    w = web(trusted_proxies=("127.0.0.1",))
    log_in(w, "alice", **{"User-Agent": "UniqueAgent-7f3a", "X-Forwarded-For": "198.51.100.23"})
    stored = everything_stored(w.store)
    assert "UniqueAgent" not in stored and "198.51.100" not in stored and "127.0.0.1" not in stored
    (row,) = side_rows(w.store)
    assert row["ip"] is None and row["user_agent"] is None


def test_devices_on_keep_ip_through_trusted_proxies_and_user_agent(web, run_ok):
    w = web(track_devices=True, trusted_proxies=("127.0.0.0/8",))
    browser = log_in(w, "alice", **{"User-Agent": UA, "X-Forwarded-For": "6.6.6.6, 203.0.113.9"})
    key = browser.cookie_value()
    (found,) = w.store.user_sessions("alice")
    assert (found.ip, found.user_agent) == ("203.0.113.9", UA)  # 6.6.6.6 was the client's own claim
    info = json.loads(run_ok("show", key, "--json").stdout)
    assert info["device"]["ip"] == "203.0.113.9" and info["device"]["user_agent"] == UA
    listed = json.loads(run_ok("list", "--user", "alice", "--json").stdout)
    assert listed[0]["device"]["ip"] == "203.0.113.9" and listed[0]["last_activity"]
    assert "TestBrowser" in run_ok("list", "--user", "alice").stdout
    browser.get("/logout")
    assert side_rows(w.store) == []  # removed with the session


def test_devices_untrusted_forwarded_for_truncated_ip_and_long_agent(web):
    w = web(track_devices=True, truncate_ip=True)
    log_in(w, "alice", **{"User-Agent": "x" * 1000, "X-Forwarded-For": "203.0.113.9"})
    (found,) = w.store.user_sessions("alice")
    assert found.ip == "127.0.0.0"  # REMOTE_ADDR (no trusted proxy), cut to its /24
    assert found.user_agent == "x" * 256


# -- max sessions per user -----------------------------------------------------------------


def test_max_sessions_evicts_the_least_recently_active(web):
    clock = Clock()
    w = web(clock=clock, max_sessions_per_user=2)
    first = log_in(w, "alice")
    clock.advance(10)
    second = log_in(w, "alice")
    clock.advance(10)
    third = w.browser()
    r = third.get("/login?user=alice").json()
    assert r["evicted"] == [first.cookie_value()] and "2" in r["reason"]
    assert first.get("/whoami").json() == {"user": None}
    assert second.get("/whoami").json() == third.get("/whoami").json() == {"user": "alice"}


def test_max_sessions_refuses_a_new_login(web):
    def v_try(session, environ):
        try:
            session.login("alice")
        except SessionLimitReached as exc:
            return 409, {"reason": exc.reason}

    w = web({"/try": v_try}, max_sessions_per_user=1, on_max_sessions="refuse")
    first = log_in(w, "alice")
    other = w.browser()
    r = other.get("/try")
    assert r.status == 409 and "1" in r.json()["reason"]
    assert other.cookie_value() is None
    assert first.get("/whoami").json() == {"user": "alice"}


def test_list_json_gains_user_and_user_ids_complete(web, run_ok, settings):
    w = web()
    alice = log_in(w, "alice").cookie_value()
    log_in(w, "albert")
    w.browser().get("/write")
    listed = {item["key"]: item["user"] for item in json.loads(run_ok("list", "--json").stdout)}
    assert listed[alice] == "alice"
    assert sorted(v for v in listed.values() if v) == ["albert", "alice"] and None in listed.values()
    r = CliRunner().invoke(
        cli,
        env={"_SESSCTL_COMPLETE": "bash_complete", "COMP_WORDS": "sessctl list --user al", "COMP_CWORD": "3",
             "SESSCTL_DB": settings.database_url, "SESSCTL_TABLE": settings.table},
        prog_name="sessctl",
    )
    assert r.exit_code == 0 and r.stderr == ""
    assert [line.split(",", 1)[1] for line in r.stdout.splitlines()] == ["albert", "alice"]
