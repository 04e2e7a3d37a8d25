"""Time bounds: every database call ends within a bound, whatever the server does.

A server that stops answering without closing the socket (a hung host, a frozen VM, a
partitioned network: here a proxy that stops forwarding and closes nothing) must cost a request
a few seconds, not a worker forever; ``sessctl stats`` and ``purge`` must exit. A row lock held
by someone else's open transaction must not keep ``purge --max-seconds 2`` running. Under ASGI,
hung store calls must not take the threads the app's own ``to_thread`` work needs.

The bound is ``Settings.timeout`` / ``sessctl --timeout`` (seconds); "within the bound" below
allows the documented margin and the test machine's slack.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from httpserver import serve
from lifecycle import Browser, FaultProxy, handle, served
from sessctl import SessionMiddleware, SessionStore
from helpers import fill, sessctl
from test_faults import ERROR_LINE

SERVERS = ["postgres", "mysql"]
SLACK = 3.0  # seconds of margin over a bound (client-side margin + a loaded 2-core machine)
MARGIN = 2.0  # sessctl.lifecycle.READ_MARGIN: the client waits this much past the server-side bound
LOAD = 2.0  # what a loaded shared 2-core machine adds to a command beyond its measured baseline


def _app(store):
    from sessctl.middleware import get_session

    def view(environ, start_response):
        status, payload = handle(get_session(environ), environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [json.dumps(payload).encode()]

    return SessionMiddleware(view, store=store)


def _port(settings) -> int:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).port


@contextlib.contextmanager
def silent_server(settings, **changes):
    """Settings that reach the server through a proxy, and the proxy (not yet silent)."""
    proxy = FaultProxy(_port(settings))
    try:
        yield proxy, settings.replace(database_url=proxy.url(settings.database_url), **changes)
    finally:
        proxy.close()  # also ends whatever still waits on it, so a failing test cannot hang


def timed(fn):
    began = time.monotonic()
    result = fn()
    return result, time.monotonic() - began


# -- the app --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.scenario("silent server: a request within the bound")
def test_request_on_a_silent_server_fails_within_the_bound(store):
    with silent_server(store.settings, timeout=1) as (proxy, via):
        app_store = SessionStore(via)
        with serve(_app(app_store)) as server:
            try:
                b = Browser(server)
                assert b.call("/login?user=a").status == 200
                proxy.silent.set()
                r, took = timed(lambda: b.call("/bump", timeout=30))
                assert r.status >= 500, r.status
                assert took < 1 + MARGIN + LOAD, took
                # A new connection: the connect (twice on PostgreSQL: SSL, then not), then the handshake's read.
                fresh, took = timed(lambda: Browser(server).call("/login?user=b", timeout=30))
                assert fresh.status >= 500 and took < 2 * 1 + 1 + MARGIN + LOAD, (fresh.status, took)
            finally:
                proxy.close()
                app_store.close()


@pytest.mark.parametrize("backend", SERVERS)
def test_request_behind_a_row_lock_fails_within_the_bound(store, backend):
    """Someone holds the session's row in an open transaction: the save waits at most the bound."""
    app_store = SessionStore(store.settings.replace(timeout=1))
    with serve(_app(app_store)) as server:
        b = Browser(server)
        assert b.call("/login?user=a").status == 200
        key = b.cookie_value()
        with store.engine.connect() as other:
            q = store.engine.dialect.identifier_preparer.quote
            other.exec_driver_sql(
                f"SELECT session_data FROM {q(store.settings.table)} WHERE session_key = '{key}' FOR UPDATE")
            r, took = timed(lambda: b.call("/bump", timeout=60))
            other.rollback()
        app_store.close()
    assert r.status >= 500 and took < 1 + SLACK, (r.status, took)


# -- the command line -----------------------------------------------------------------------------


def _run_timed(settings, *args, limit: float = 90):
    began = time.monotonic()
    r = sessctl(settings, *args, timeout=limit)
    return r, time.monotonic() - began


def _baseline(settings) -> float:
    """What a normal short command costs here (start-up, imports, connect, a query)."""
    r, took = _run_timed(settings, "stats")
    assert r.returncode == 0, r.stderr
    return took


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.parametrize("when", ["from-the-start", "mid-command"])
@pytest.mark.scenario("silent server: stats within the bound")
def test_stats_on_a_silent_server_exits_within_the_bound(store, backend, when):
    """Bounds: the connect (PostgreSQL: twice, as libpq retries without SSL under the default
    sslmode=prefer; MariaDB: the handshake is a read), then every wait for an answer."""
    fill(store, expired=50, live=3000)
    base = _baseline(store.settings)
    with silent_server(store.settings) as (proxy, via):
        if when == "mid-command":
            r = sessctl(via, "stats", "--exact")  # how much traffic a whole run makes
            assert r.returncode == 0, r.stderr
            proxy.silence_after, proxy.chunks = proxy.chunks // 2, 0
            bound = 2 + MARGIN
        else:
            proxy.silent.set()
            bound = 2 * 2 if backend == "postgres" else 2 + MARGIN
        r, took = _run_timed(via, "--timeout", "2", "stats", "--exact")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert ERROR_LINE.fullmatch(r.stderr), r.stderr
    assert took < base + bound + LOAD, (took, base, bound)


@pytest.mark.parametrize("backend", SERVERS)
def test_purge_max_seconds_on_a_silent_server_is_a_promise(store):
    """--max-seconds bounds the whole run, connecting included, even without --timeout."""
    fill(store, expired=2000, live=10)
    base = _baseline(store.settings)
    with silent_server(store.settings) as (proxy, via):
        proxy.silence_after = 60  # connected, lock taken, some batches done: then nothing
        r, took = _run_timed(via, "purge", "--expired", "--batch-size", "10", "--max-seconds", "2")
    assert took < base + 2 + MARGIN + LOAD, (took, base, r.stderr)
    assert r.returncode in (0, 1), r.stderr
    if r.returncode == 1:
        assert ERROR_LINE.fullmatch(r.stderr), r.stderr


def _hold_one_expired_row(store, backend):
    """An open transaction holding a lock an expired row's DELETE must wait for."""
    if backend == "sqlite":
        db = sqlite3.connect(store.settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # the one write lock
        return db
    from sqlalchemy import select

    conn = store.engine.connect()
    t = store.table
    conn.execute(select(t.c.session_key).where(t.c.expire_date < store.now())
                 .order_by(t.c.expire_date).limit(1).with_for_update()).all()
    return conn


@pytest.mark.parametrize("mode", [[], ["--batch-size", "100"]], ids=["adaptive", "fixed"])
@pytest.mark.scenario("purge --max-seconds behind a held lock")
def test_purge_max_seconds_with_a_lock_held_by_an_open_transaction(store, backend, mode):
    """The budget, then at most a short count of what is left (0.5 s)."""
    fill(store, expired=500, live=10)
    base = _baseline(store.settings)
    holder = _hold_one_expired_row(store, backend)
    try:
        r, took = _run_timed(store.settings, "purge", "--expired", "--max-seconds", "2", "--json", *mode)
    finally:
        holder.rollback()
        holder.close()
    assert took < base + 2 + 0.5 + LOAD, (took, base, r.stderr)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["complete"] is False or out["remaining"] == 0, out


# -- ASGI: hung store calls do not starve the app's threads -----------------------------------------


@pytest.mark.parametrize("backend", SERVERS)
def test_asgi_hung_database_leaves_asyncio_threads_to_the_app(store):
    """Under uvicorn, 12 requests hang on a silent database; the app's to_thread work still runs
    at once, and every hung request ends within the bound."""
    with silent_server(store.settings, timeout=4) as (proxy, via):
        with served("uvicorn", via, workers=1) as server:
            browsers = [Browser(server) for _ in range(12)]
            assert all(b.call(f"/login?user=u{i}").status == 200 for i, b in enumerate(browsers))
            proxy.silent.set()
            with ThreadPoolExecutor(12) as pool:
                hung = [pool.submit(lambda b=b: timed(lambda: b.call("/whoami", timeout=60))) for b in browsers]
                time.sleep(0.5)  # they are all waiting on the database now
                r, took = timed(lambda: Browser(server).call("/thread", timeout=60))
                ends = [f.result(timeout=120) for f in hung]
    assert r.status == 200 and took < 1.0, (r.status, took)
    # Each hung request: a connect (twice on PostgreSQL: SSL, then not) and a read, each bounded.
    bound = 2 * 4 + 4 + MARGIN
    assert all(resp.status >= 500 and t < bound + LOAD for resp, t in ends), [(x.status, round(t, 1)) for x, t in ends]


# -- the setting itself ---------------------------------------------------------------------------------


def test_timeout_setting_is_validated(settings):
    from sessctl.config import ConfigError

    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(ConfigError):
            settings.replace(timeout=bad)
    assert settings.replace(timeout=2.5).timeout == 2.5


def test_timeout_option_rejects_nonsense(settings):
    for bad in ("0", "-3", "nan", "abc"):
        r = sessctl(settings, "--timeout", bad, "stats")
        assert r.returncode == 2, (bad, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("backend", SERVERS)
def test_server_side_bounds_follow_the_setting(store, backend):
    """The bound reaches the server too: statement and lock-wait timeouts of the store's sessions."""
    bounded = SessionStore(store.settings.replace(timeout=3))
    try:
        with bounded.engine.connect() as conn:
            if backend == "postgres":
                got = [conn.exec_driver_sql(f"SHOW {name}").scalar() for name in ("statement_timeout", "lock_timeout")]
                assert got == ["3s", "3s"], got
            else:
                got = conn.exec_driver_sql("SELECT @@max_statement_time, @@innodb_lock_wait_timeout").one()
                assert (float(got[0]), int(got[1])) == (3.0, 3), got
    finally:
        bounded.close()
