"""The installed `sessctl` console script and `python -m sessctl`, as cron and operators run them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import save

SCRIPT = Path(sys.executable).with_name("sessctl")
KEY = "k" * 32


def clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSCTL_", "_SESSCTL_", "TTY_", "FORCE_COLOR"))}
    env.update(extra)
    return env


def sessctl(*args, env=None, cwd=None, input=None, module=False):
    command = [sys.executable, "-m", "sessctl"] if module else [str(SCRIPT)]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env or clean_env(), cwd=cwd, input=input, timeout=60
    )


@pytest.fixture(autouse=True)
def installed():
    if not SCRIPT.exists():
        pytest.skip(f"the sessctl console script is not installed next to {sys.executable}")


def test_help_imports_neither_sqlalchemy_nor_rich(tmp_path):
    for module in (True, False):
        r = sessctl("--help", env=clean_env(PYTHONPROFILEIMPORTTIME="1"), cwd=tmp_path, module=module)
        assert r.returncode == 0, r.stderr
        assert "Usage: sessctl [OPTIONS] COMMAND [ARGS]..." in r.stdout
        imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line]
        assert "click" in imported
        assert not [m for m in imported if m.split(".")[0] in ("sqlalchemy", "rich")]


def test_command_name_completion_imports_no_database_code(tmp_path):
    env = clean_env(
        PYTHONPROFILEIMPORTTIME="1", _SESSCTL_COMPLETE="bash_complete", COMP_WORDS="sessctl pu", COMP_CWORD="1"
    )
    r = sessctl(env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "plain,purge"
    assert "sqlalchemy" not in r.stderr and "rich" not in r.stderr


def test_version_both_ways(tmp_path):
    from sessctl import __version__

    for module in (True, False):
        r = sessctl("--version", cwd=tmp_path, module=module)
        assert r.returncode == 0 and r.stdout == f"sessctl {__version__}\n"


def test_end_to_end(settings, tmp_path):
    """The whole operator's round on a real database, through the installed script."""
    from sessctl import SessionStore
    from sessctl.policy import EXPIRY_KEY

    env = clean_env(
        SESSCTL_DB=settings.database_url, SESSCTL_TABLE=settings.table, SESSCTL_SECRET_KEY=settings.secret_key
    )

    r = sessctl("list", env=env, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "sessctl init" in r.stderr
    assert sessctl("init", env=env, cwd=tmp_path).returncode == 0

    store = SessionStore(settings)
    try:
        live = save(store, None, {"user": 1})
        old = store.create_row(store.codec.encode({"user": 2}), store.now() - timedelta(hours=1))

        r = sessctl("list", "--all", "--json", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert [i["key"] for i in json.loads(r.stdout)] == [old, live]

        r = sessctl("set-life", live, "2h", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        r = sessctl("show", live, "--json", env=env, cwd=tmp_path)
        info = json.loads(r.stdout)
        assert info["lifetime"]["kind"] == "absolute" and info["data"]["user"] == 1
        assert EXPIRY_KEY in info["data"]
        left = datetime.fromisoformat(info["expire_date"]) - datetime.now(timezone.utc)
        assert timedelta(hours=1, minutes=58) < left <= timedelta(hours=2)

        r = sessctl("stats", "--json", env=env, cwd=tmp_path)
        assert {k: json.loads(r.stdout)[k] for k in ("total", "active", "expired")} == {
            "total": 2, "active": 1, "expired": 1,
        }

        r = sessctl("set-life", live, "soon", env=env, cwd=tmp_path)
        assert r.returncode == 2 and "Invalid value for 'DURATION'" in r.stderr
        r = sessctl("show", KEY, env=env, cwd=tmp_path)
        assert r.returncode == 1
        assert r.stderr == f"Error: no session with key {KEY}; see the sessions with: sessctl list --all\n"

        r = sessctl("purge", "--expired", "--json", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["deleted"] == 1 and r.stderr == ""
        assert store.get_row(old) is None and store.get_row(live) is not None

        r = sessctl("delete", live, env=env, cwd=tmp_path)
        assert r.returncode == 0 and store.get_row(live) is None
    finally:
        store.close()


def test_config_file_in_the_working_folder(tmp_path):
    (tmp_path / "secret").write_text("file-secret\n")
    (tmp_path / "sessctl.toml").write_text('db = "sqlite:///cfg.db"\nsecret_key_file = "secret"\n')
    assert sessctl("init", cwd=tmp_path).returncode == 0
    assert (tmp_path / "cfg.db").exists()
    from sessctl import Settings, SessionStore

    store = SessionStore(Settings(database_url=f"sqlite:///{tmp_path / 'cfg.db'}", secret_key="file-secret"))
    try:
        key = save(store, None, {"via": "config"})
    finally:
        store.close()
    # From another folder, --config finds the same database: paths are relative to the file.
    r = sessctl("--config", str(tmp_path / "sessctl.toml"), "show", key, "--json", cwd=tmp_path.parent)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["data"] == {"via": "config"}


def test_broken_pipe_is_quiet(tmp_path):
    """`sessctl list --json | head` must not end in a traceback."""
    db = tmp_path / "big.db"
    url = f"sqlite:///{db}"
    assert sessctl("--db", url, "init", cwd=tmp_path).returncode == 0
    expire = (datetime.now(timezone.utc) + timedelta(days=1)).replace(tzinfo=None)
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO django_session VALUES (?, ?, ?)",
            ((f"key{i:029d}", "x" * 200, str(expire)) for i in range(3000)),
        )
    pipeline = f"{SCRIPT} --db {url} list --json | head -c 100 > /dev/null; echo ${{PIPESTATUS[0]}}"
    r = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert "Traceback" not in r.stderr and "Error: unexpected" not in r.stderr, r.stderr
    assert r.stdout.strip() in ("0", "1")


def test_unreachable_database_through_the_script(tmp_path):
    r = sessctl("--db", "postgresql://sessctl@127.0.0.1:1/x", "stats", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("Error: cannot reach the database") and r.stderr.count("\n") == 1
