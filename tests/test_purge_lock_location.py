"""Purge of a SQLite database whose folder the purging user cannot write (Django's db.sqlite3
under a deploy folder): the lock goes elsewhere, purge works, and says where the lock is."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from sessctl import SessionStore, Settings

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def readonly_folder():
    """A folder holding a live WAL database (an app keeps it open, so -wal and -shm exist) that
    the purging process may read and write but whose folder it may not write."""
    folder = Path(tempfile.mkdtemp(prefix="sessctl-ro-"))
    os.chmod(folder, 0o755)
    db = folder / "db.sqlite3"
    store = SessionStore(Settings(database_url=f"sqlite:///{db}", secret_key="k"))
    store.create_table()
    now = store.now()
    with store.engine.begin() as conn:
        conn.execute(insert(store.table), [
            {"session_key": f"e{i:031d}", "session_data": "e30:1:x", "expire_date": now - timedelta(hours=1)}
            for i in range(5)
        ] + [{"session_key": "live" + "x" * 28, "session_data": "e30:1:x", "expire_date": now + timedelta(hours=1)}])
    app = sqlite3.connect(db)  # the live app's connection keeps -wal and -shm in place
    app.execute("select count(*) from django_session").fetchall()
    if os.geteuid() == 0:
        # Root writes any folder; without the capabilities that let it, it is refused like anyone.
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to run root without CAP_DAC_OVERRIDE")
        shutil.chown(folder, "nobody")
        user = "root"
    else:
        user = None
        os.chmod(folder, 0o555)
    yield folder, db, user
    app.close()
    store.close()
    os.chmod(folder, 0o755)
    shutil.rmtree(folder, ignore_errors=True)


def _purge(db: Path, user: str | None, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sessctl", "--db", f"sqlite:///{db}", "purge", "--expired", *args]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if user:
        cmd = [shutil.which("setpriv"), "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *cmd]
    return subprocess.run(cmd, cwd="/", env=env, capture_output=True, text=True, timeout=120)


def test_purge_works_when_the_folder_is_read_only_and_says_where_the_lock_is(readonly_folder):
    folder, db, user = readonly_folder
    r = _purge(db, user, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["deleted"] == 5 and out["complete"] is True
    lock = Path(out["lock"])
    assert lock.parent != folder and lock.exists()
    assert db.name in lock.name  # recognisable by the database's name
    assert sorted(p.name for p in folder.iterdir()) == ["db.sqlite3", "db.sqlite3-shm", "db.sqlite3-wal"]
    # The message says so too.
    r = _purge(db, user)
    assert r.returncode == 0, r.stderr
    assert str(lock) in r.stderr and "not writable" in r.stderr


def test_the_lock_elsewhere_still_excludes_a_second_purge(readonly_folder):
    folder, db, user = readonly_folder
    lock = Path(json.loads(_purge(db, user, "--json").stdout)["lock"])
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a purge in progress
        r = _purge(db, user, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["skipped"].startswith("another purge is running")
    finally:
        os.close(fd)


def test_a_writable_folder_keeps_the_lock_beside_the_database(tmp_path):
    db = tmp_path / "sessions.db"
    store = SessionStore(Settings(database_url=f"sqlite:///{db}"))
    store.create_table()
    store.close()
    r = _purge(db, None, "--json")
    assert r.returncode == 0, r.stderr
    lock = Path(json.loads(r.stdout)["lock"])
    assert lock.parent == tmp_path and lock.name.startswith("sessions.db.")
    assert "not writable" not in r.stderr


def test_a_relative_database_url_names_the_lock_by_its_absolute_path(tmp_path):
    """sqlite:///sessions.db (the default shape) in a writable folder: no 'not writable' note,
    and the lock the JSON names is absolute, like the database it names."""
    store = SessionStore(Settings(database_url=f"sqlite:///{tmp_path / 'sessions.db'}"))
    store.create_table()
    store.close()
    r = subprocess.run(
        [sys.executable, "-m", "sessctl", "--db", "sqlite:///sessions.db", "purge", "--expired", "--json"],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "not writable" not in r.stderr
    lock = Path(json.loads(r.stdout)["lock"])
    assert lock.is_absolute() and lock.parent == tmp_path and lock.exists()


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_a_rollback_journal_database_in_a_read_only_folder_says_why_it_cannot_write(tmp_path):
    """Django's default db.sqlite3 uses the rollback journal, which SQLite must create beside the
    file to write: in a folder this user cannot write, purge fails with that reason (not 'cannot
    reach the database'), and loses nothing."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    db = folder / "db.sqlite3"
    store = SessionStore(Settings(database_url=f"sqlite:///{db}", secret_key="k"))
    store.create_table()
    with store.engine.begin() as conn:
        conn.execute(insert(store.table), [
            {"session_key": "e" * 32, "session_data": "e30:1:x", "expire_date": store.now() - timedelta(hours=1)}
        ])
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this file system does not support chattr +i")
    try:
        r = _purge(db, None, "--json")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "not writable" in errors[0] and "-journal" in errors[0] and "cannot reach" not in errors[0]
    assert sqlite3.connect(db).execute(f"SELECT COUNT(*) FROM {store.settings.table}").fetchone() == (1,)
