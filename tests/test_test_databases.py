"""The tests stand on their own: scripts/test-databases.sh provides the servers, and a run
without them says loudly which backends it skipped (and fails under CI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "test-databases.sh"
NODE = "tests/test_test_databases.py::test_backend_reachable"
RUNUSER = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
ENV_VARS = ("SESSCTL_TEST_POSTGRES", "SESSCTL_TEST_MYSQL")


def test_backend_reachable(db_url):
    """Each backend's URL (the one the run was given) answers a query."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar() == 1
    finally:
        engine.dispose()


def _pytest(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != "CI"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=240,
    )


def test_a_run_without_servers_says_which_backends_it_did_not_test():
    r = _pytest(NODE, "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 2 skipped" in r.stdout
    summary = r.stdout[r.stdout.index("DATABASE BACKENDS NOT TESTED"):]
    assert "PostgreSQL: 1 tests skipped, SESSCTL_TEST_POSTGRES is not set" in summary
    assert "MariaDB/MySQL: 1 tests skipped, SESSCTL_TEST_MYSQL is not set" in summary
    assert 'Tested only: SQLite. To test every backend: eval "$(scripts/test-databases.sh)"' in summary
    # After pytest's list of skips, just before the count: the last thing one reads.
    assert "short test summary info" not in summary
    assert summary.rstrip().splitlines()[-2].startswith("(it finds, starts")


def test_a_run_with_one_server_names_only_the_other():
    r = _pytest(NODE, "-q",
                SESSCTL_TEST_MYSQL="sqlite://")  # any URL that answers stands in for a server
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PostgreSQL: 1 tests skipped" in r.stdout and "MariaDB/MySQL:" not in r.stdout
    assert "Tested only: SQLite, MariaDB/MySQL." in r.stdout


def test_a_run_with_every_server_prints_no_warning():
    r = _pytest(NODE, "-q",
                SESSCTL_TEST_POSTGRES="sqlite://", SESSCTL_TEST_MYSQL="sqlite://")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed" in r.stdout and "NOT TESTED" not in r.stdout


def test_under_ci_a_missing_server_fails_the_run():
    r = _pytest(NODE, "-q", CI="true")
    assert r.returncode == 1
    assert "1 passed, 2 errors" in r.stdout
    assert "SESSCTL_TEST_POSTGRES is not set" in r.stdout


def _script(*, user: str | None = None, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != "CI"}
    cmd = ["bash", str(SCRIPT)]
    if user:
        cmd = [RUNUSER, "-u", user, "--", "env", *(f"{k}={v}" for k, v in env.items()), *cmd]
    return subprocess.run(cmd, env={**clean, **env}, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_prints_exports_that_reach_both_servers():
    r = _script()
    exports = dict(re.findall(r"^export (SESSCTL_TEST_\w+)=(\S+)$", r.stdout, re.M))
    if set(exports) != set(ENV_VARS):
        if os.environ.get("CI"):
            pytest.fail(f"scripts/test-databases.sh provided only {sorted(exports)}: {r.stderr}")
        pytest.skip(f"this machine lacks a server the script could provide: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 2  # nothing but the two lines goes to stdout
    for url in exports.values():
        test_backend_reachable(url)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_without_servers_explains_and_exits_0_or_1_under_ci():
    """Closed ports stand in for a machine without servers. As root the script would install
    and start servers, so it runs as an unprivileged user here."""
    user = "nobody" if os.geteuid() == 0 else None
    if user and RUNUSER is None:
        pytest.skip("needs runuser to drop root")
    closed = {"PGPORT": "1", "MYSQL_TCP_PORT": "1"}
    r = _script(user=user, **closed)
    assert r.returncode == 0 and r.stdout == ""
    assert "PostgreSQL: no database sessctl_test on 127.0.0.1:1" in r.stderr
    assert "MariaDB: no database sessctl_test on 127.0.0.1:1" in r.stderr
    assert "export SESSCTL_TEST_POSTGRES=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE" in r.stderr
    assert "not available: PostgreSQL MariaDB" in r.stderr
    r = _script(user=user, CI="true", **closed)
    assert r.returncode == 1 and r.stdout == ""
    assert "every backend must be tested" in r.stderr


def test_script_keeps_urls_already_exported():
    r = _script(SESSCTL_TEST_POSTGRES="postgresql+psycopg://me:p&w@db/x", SESSCTL_TEST_MYSQL="mysql+pymysql://me@db/y")
    assert r.returncode == 0
    env = subprocess.run(["bash", "-c", r.stdout + 'printf "%s\\n" "$SESSCTL_TEST_POSTGRES" "$SESSCTL_TEST_MYSQL"'],
                         capture_output=True, text=True).stdout.split()
    assert env == ["postgresql+psycopg://me:p&w@db/x", "mysql+pymysql://me@db/y"]


def test_nothing_in_the_repository_depends_on_a_folder_outside_it():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile("|".join(re.escape(p) for p in ("../" + "shared", "/work/" + "shared")))
    offenders = [f for f in files if (ROOT / f).is_file() and outside.search((ROOT / f).read_text(errors="replace"))]
    assert offenders == []
