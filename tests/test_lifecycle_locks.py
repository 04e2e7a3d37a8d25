"""The purge lock: never lost unnoticed, and scoped to one database + schema + table.

* Lost: the lock lives on a database connection; if that connection ends (the server's idle
  timeout, an administrator's ``pg_terminate_backend``/``KILL``, a failover) the lock is gone and
  a second purge may start. The purge must hold it where that cannot go unnoticed, and stop
  with a clear message if it happens.
* Scope: one app's purge must never silence another's. MariaDB's ``GET_LOCK`` names are
  server-wide (and at most 64 characters), PostgreSQL's advisory keys database-wide; a lock for
  ``db1.django_session`` must not be the lock for ``db2.django_session``, nor for another
  schema's table, nor for a table whose long name starts the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time

import pytest
from sqlalchemy import text

from lifecycle import with_query
from sessctl import SessionStore
from helpers import fill, popen, sessctl
from test_faults import ERROR_LINE

LOCKED = "another purge is running"


def _started(store, proc, total: int, timeout: float = 30) -> None:
    """Until the purge has deleted something (so it holds its lock), while it still runs."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and store.count_expired() >= total:
        time.sleep(0.01)
    assert proc.poll() is None, f"the purge ended too soon: {proc.communicate()}"


def _finish(proc, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# -- lost --------------------------------------------------------------------------------------------


def _idle_url(backend: str, url: str, seconds: int) -> str:
    if backend == "postgres":
        return with_query(url, options=f"-c idle_session_timeout={seconds * 1000}")
    return with_query(url, init_command=f"SET SESSION wait_timeout={seconds}")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
@pytest.mark.scenario("purge lock kept past the server idle timeout")
def test_server_idle_timeout_does_not_take_the_purge_lock(store, backend):
    """The server closes connections idle for 1 s. A purge that runs for several seconds keeps its
    lock all along: a second purge started meanwhile says another one is running."""
    # 10,000 batches of 3: about 10 s of work on this machine unloaded (4,000 rows ended before the check)
    fill(store, expired=30000, live=10)
    short = store.settings.replace(database_url=_idle_url(backend, store.settings.database_url, 1))
    first = popen(short, "purge", "--expired", "--batch-size", "3", "--json")
    try:
        _started(store, first, 30000)
        time.sleep(2.5)  # past the idle timeout
        assert first.poll() is None, "the first purge ended before the check"
        second = sessctl(store.settings, "purge", "--expired", "--json")
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout).get("skipped", "").startswith(LOCKED), second.stdout
    finally:
        code, out, err = _finish(first)
    assert code == 0, err
    assert store.count_expired() == 0


def _purge_conns_pg(store, app: str) -> list[int]:
    with store.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
            "WHERE a.application_name = :app AND l.locktype = 'advisory' AND l.granted"), {"app": app}).scalars())


@pytest.mark.parametrize("backend", ["postgres"])
def test_purge_lock_connection_terminated_stops_the_purge(store):
    """pg_terminate_backend on the backend that holds the advisory lock: the purge stops at once,
    says it lost its lock, exits 1; the next purge finishes the work."""
    fill(store, expired=4000, live=10)
    app = f"sessctl-lock-{secrets.token_hex(4)}"
    tagged = store.settings.replace(database_url=with_query(store.settings.database_url, application_name=app))
    first = popen(tagged, "purge", "--expired", "--batch-size", "3")
    try:
        _started(store, first, 4000)
        holders = _purge_conns_pg(store, app)
        assert len(holders) == 1, holders
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": holders[0]}).scalar()
        left_at_kill = store.count_expired()
        code, out, err = _finish(first, timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert code == 1, err
    assert ERROR_LINE.fullmatch(err) and "lock" in err, err
    assert store.count_expired() >= left_at_kill - 3 * 2  # at most the batch in flight went on
    r = sessctl(store.settings, "purge", "--expired")
    assert r.returncode == 0, r.stderr
    assert store.count_expired() == 0


@pytest.mark.parametrize("backend", ["mysql"])
def test_purge_connections_killed_stops_the_purge(store):
    """KILL every connection of a running purge (found by the proxy's upstream ports): exit 1 with
    one clear line; the next purge finishes the work."""
    from lifecycle import proxied

    fill(store, expired=4000, live=10)
    with proxied(store.settings) as (proxy, via):
        first = popen(via, "purge", "--expired", "--batch-size", "3")
        try:
            _started(store, first, 4000)
            ports = {b.getsockname()[1] for _, b in proxy._pairs}
            with store.engine.connect() as conn:
                rows = conn.execute(text("SELECT ID, HOST FROM information_schema.PROCESSLIST")).all()
                ids = [i for i, host in rows if host and host.rsplit(":", 1)[-1].isdigit()
                       and int(host.rsplit(":", 1)[-1]) in ports]
                assert ids, (ports, rows)
                for i in ids:
                    with contextlib.suppress(Exception):
                        conn.execute(text(f"KILL {int(i)}"))
            code, out, err = _finish(first, timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
    assert code == 1, err
    assert ERROR_LINE.fullmatch(err), err
    r = sessctl(store.settings, "purge", "--expired")
    assert r.returncode == 0, r.stderr
    assert store.count_expired() == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_lock_file_replaced_stops_the_purge(store):
    """Someone removes the lock file (a cleanup job): a second purge could lock a new file at the
    same path. The running purge notices before its next batch and stops."""
    fill(store, expired=3000, live=10)
    first = popen(store.settings, "purge", "--expired", "--batch-size", "2")
    try:
        _started(store, first, 3000)
        db = store.settings.database_url.removeprefix("sqlite:///")
        locks = [f for f in os.listdir(os.path.dirname(db)) if f.endswith(".lock")]
        assert len(locks) == 1, locks
        os.unlink(os.path.join(os.path.dirname(db), locks[0]))
        code, out, err = _finish(first, timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert code == 1, err
    assert ERROR_LINE.fullmatch(err) and "lock" in err, err


# -- scope ---------------------------------------------------------------------------------------------


def _both_purge(a: SessionStore, b: SessionStore, n: int = 3000) -> None:
    """Purge ``a`` (slowly) and, meanwhile, ``b``: both must delete all their expired rows."""
    fill(a, expired=n, live=5)
    fill(b, expired=200, live=5)
    first = popen(a.settings, "purge", "--expired", "--batch-size", "3", "--json")
    try:
        _started(a, first, n)
        r = sessctl(b.settings, "purge", "--expired", "--json")
        assert first.poll() is None, "the first purge was over before the second started"
    finally:
        code, out, err = _finish(first)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert "skipped" not in got and got["deleted"] == 200, got
    assert code == 0 and json.loads(out)["deleted"] == n, err
    assert a.count_expired() == b.count_expired() == 0


@contextlib.contextmanager
def _other_store(settings, url: str, table: str | None = None):
    other = SessionStore(settings.replace(database_url=url, table=table or settings.table))
    try:
        other.create_table()
        yield other
    finally:
        with contextlib.suppress(Exception), other.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {other.settings.table}")
        other.close()


@contextlib.contextmanager
def _other_database(store):
    """A database of our own on the same server (dropped afterwards), with the same table name."""
    from sqlalchemy.engine import make_url

    name = f"sessctl_t_{secrets.token_hex(4)}"
    admin = store.engine.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = make_url(store.settings.database_url).set(database=name).render_as_string(hide_password=False)
    try:
        with _other_store(store.settings, url) as other:
            yield other
    finally:
        with admin.connect() as conn:
            if store.dialect == "postgresql":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
@pytest.mark.scenario("lock scope: two databases purged at once")
def test_same_table_in_two_databases_purged_at_once(store):
    with _other_database(store) as other:
        _both_purge(store, other)


@pytest.mark.parametrize("backend", ["postgres"])
def test_same_table_in_two_schemas_purged_at_once(store):
    schema = f"sessctl_s_{secrets.token_hex(4)}"
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        url = with_query(store.settings.database_url, options=f"-c search_path={schema}")
        with _other_store(store.settings, url) as other:
            _both_purge(store, other)
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_long_table_names_that_start_the_same_purged_at_once(store):
    """Two 63-character names equal but for their last characters (a name cut at 64 collides)."""
    stem = "sessions_" + "x" * 49 + secrets.token_hex(1)
    a_name, b_name = stem + "_aa", stem + "_bb"
    assert len(a_name) == 63
    with _other_store(store.settings, store.settings.database_url, a_name) as a, \
            _other_store(store.settings, store.settings.database_url, b_name) as b:
        _both_purge(a, b)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_two_files_purged_at_once_and_one_file_by_two_paths_is_one_lock(store, tmp_path):
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    with _other_store(store.settings, f"sqlite:///{other_dir / 'sessions.db'}") as other:
        _both_purge(store, other)
    # The same file reached through another path (a symlink to it) is the same table: one lock.
    link = tmp_path / "alias.db"
    link.symlink_to(tmp_path / "sessions.db")
    fill(store, expired=3000, live=5)
    first = popen(store.settings, "purge", "--expired", "--batch-size", "2", "--json")
    try:
        _started(store, first, 3000)
        via_link = store.settings.replace(database_url=f"sqlite:///{link}")
        r = sessctl(via_link, "purge", "--expired", "--json")
    finally:
        _finish(first)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout).get("skipped", "").startswith(LOCKED), r.stdout
