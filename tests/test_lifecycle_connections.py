"""Connection lifecycle: a cached connection that the server has closed costs no request.

Servers close idle connections (MariaDB's ``wait_timeout``, PostgreSQL's
``idle_session_timeout``), restart, fail over; a proxy or a firewall drops them. The store keeps
per-request connections between requests, so the next request meets a dead one. It must notice
(or retry once, where that is safe) and answer normally: no 500, no lost update, no other
user's session.

Faults are real: a TCP proxy that closes every connection it carries, the servers' own idle
timeouts set for the test's connections only (through the URL), and a proxy that goes down and
comes back (a restart) under load from real HTTP clients with cookie jars.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from httpserver import serve
from lifecycle import Browser, handle, proxied, served, with_query
from sessctl import SessionMiddleware, SessionStore

SERVERS = ["postgres", "mysql"]
USERS = 8


def _app(store):
    from sessctl.middleware import get_session

    def view(environ, start_response):
        import json

        status, payload = handle(get_session(environ), environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
        body = json.dumps(payload).encode()
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [body]

    return SessionMiddleware(view, store=store)


def _log_in(server, n: int) -> list[Browser]:
    browsers = [Browser(server) for _ in range(n)]
    with ThreadPoolExecutor(n) as pool:  # at once, so the store caches several connections
        answers = list(pool.map(lambda ib: ib[1].call(f"/login?user=u{ib[0]}").status, enumerate(browsers)))
    assert answers == [200] * n
    return browsers


def _bump_all(browsers, expected: list[int]) -> list[str]:
    """Every browser bumps at once; returns what went wrong."""
    with ThreadPoolExecutor(len(browsers)) as pool:
        answers = list(pool.map(lambda b: b.call("/bump"), browsers))
    wrong = []
    for i, r in enumerate(answers):
        if r.status != 200:
            wrong.append(f"u{i}: {r.status} {r.body[:200]!r}")
            continue
        got = r.json()
        if got["user"] != f"u{i}" or got["n"] != expected[i] + 1:
            wrong.append(f"u{i}: expected n={expected[i] + 1}, got {got}")
        expected[i] = got["n"]
    return wrong


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.scenario("dead connections: all closed between requests")
def test_every_cached_connection_closed_between_requests(store):
    """Five rounds: the proxy closes every connection, then every user sends a request."""
    with proxied(store.settings) as (proxy, via):
        app_store = SessionStore(via)
        try:
            with serve(_app(app_store)) as server:
                browsers = _log_in(server, USERS)
                expected = [0] * USERS
                problems, closed = [], 0
                for _ in range(5):
                    closed += proxy.close_all()
                    problems += _bump_all(browsers, expected)
                server.assert_no_errors()
        finally:
            app_store.close()
    assert closed >= 5, closed  # there were cached connections to kill
    assert problems == [], problems
    assert expected == [5] * USERS


@pytest.mark.parametrize("backend", SERVERS)
def test_admin_reads_after_every_connection_closed(store):
    """The engine's pool (the command line's and admin calls' connections) survives it too."""
    with proxied(store.settings) as (proxy, via):
        admin = SessionStore(via)
        try:
            key = admin.create_row(admin.codec.encode({"a": 1}), admin.now().replace(year=admin.now().year + 1))
            for _ in range(3):
                assert admin.counts()["total"] == 1
                assert admin.get_row(key) is not None
                assert [r.key for r in admin.iter_rows("all")] == [key]
                proxy.close_all()
        finally:
            admin.close()


def _idle_url(backend: str, url: str, seconds: int) -> str:
    """The servers' own idle timeout, for this URL's connections only (never global)."""
    if backend == "postgres":
        return with_query(url, options=f"-c idle_session_timeout={seconds * 1000}")
    return with_query(url, init_command=f"SET SESSION wait_timeout={seconds}")


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.scenario("dead connections: server idle timeout")
def test_server_idle_timeout_closes_cached_connections(store, backend):
    """Users come back after the server's own idle timeout: every request still works."""
    short = store.settings.replace(database_url=_idle_url(backend, store.settings.database_url, 1))
    app_store = SessionStore(short)
    try:
        with serve(_app(app_store)) as server:
            browsers = _log_in(server, USERS)
            expected = [0] * USERS
            problems = []
            for _ in range(2):
                time.sleep(2.5)  # past the idle timeout: the server has closed every cached connection
                problems += _bump_all(browsers, expected)
                assert app_store.counts()["total"] == USERS  # the pool's connection too
            server.assert_no_errors()
    finally:
        app_store.close()
    assert problems == [], problems


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
@pytest.mark.scenario("dead connections: database restart under load")
def test_database_restart_under_load(store, kind):
    """The database goes away for a second and comes back while real users browse.

    Requests during the outage may fail (503/500: there is no database); every request that
    starts after it is back succeeds, nobody sees another user's session, no update is lost."""
    with proxied(store.settings) as (proxy, via):
        with served(kind, via, workers=3, preload=(kind == "gunicorn")) as server:
            stop = threading.Event()
            lock = threading.Lock()
            events: list[tuple[float, str]] = []
            ops = [0]

            def browse(i: int) -> None:
                b = Browser(server)
                while b.call(f"/login?user=u{i}").status != 200 and not stop.is_set():
                    time.sleep(0.05)
                n = 0
                while not stop.is_set():
                    began = time.monotonic()
                    r = b.call("/bump")
                    with lock:
                        ops[0] += 1
                    if r.status != 200:
                        with lock:
                            events.append((began, f"error {r.status}"))
                        # Did the failed one save? (It may have: a commit whose answer the outage
                        # swallowed.) Ask until the database answers; the stored count is then the
                        # last one this user saw, or one more, never anything else.
                        while (r := b.call("/whoami")).status != 200 and not stop.is_set():
                            time.sleep(0.05)
                        if r.status == 200:
                            got = r.json()
                            if got["user"] != f"u{i}" or got["n"] not in (n, n + 1):
                                with lock:
                                    events.append((began, f"after an error: u{i} had {n}, stored {got}"))
                            else:
                                n = got["n"]
                        continue
                    got = r.json()
                    if got["user"] != f"u{i}":
                        with lock:
                            events.append((began, f"wrong user: u{i} got {got}"))
                    elif got["n"] != n + 1:
                        with lock:
                            events.append((began, f"lost: u{i} expected {n + 1} got {got}"))
                    n = got["n"]

            threads = [threading.Thread(target=browse, args=(i,)) for i in range(USERS)]
            for t in threads:
                t.start()
            time.sleep(2)
            down_at = time.monotonic()
            proxy.down()
            time.sleep(1.0)
            proxy.up()
            up_at = time.monotonic()
            time.sleep(3)
            stop.set()
            for t in threads:
                t.join(60)
    outage = [e for e in events if down_at - 0.5 <= e[0] <= up_at + 0.2]  # a request may start just before
    outside = [e for e in events if e not in outage]
    other = [e for e in events if not e[1].startswith("error")]
    print(f"ops={ops[0]} errors during the outage={len(outage)} outside it={outside[:5]} other={other[:5]}")
    assert ops[0] > 30
    assert other == [], other
    assert outside == [], outside
