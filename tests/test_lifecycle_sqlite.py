"""Django's own SQLite files: a rollback journal, not WAL.

``sessctl init`` switches a database it creates to WAL, but a file Django created (``migrate``)
keeps SQLite's rollback journal, where a writer's COMMIT waits until no reader holds the file.
Readers and writers here are real processes on a file Django made; app writes must not fail,
also while the command line reads the whole table, and the command tells the operator that
WAL would help, and how to switch (it does not switch by itself: that is the operator's call
beside a live Django app).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import fill, sessctl

HERE = Path(__file__).resolve().parent
SECONDS = 5.0

WRITER = """
import json, sys, time
from sessctl import Session, SessionStore, Settings
url, secret, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = SessionStore(Settings(database_url=url, secret_key=secret))
ok = failed = 0
first = None
keys = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        s = Session(store, keys[ok % len(keys)] if len(keys) >= 10 else None)
        s["n"] = s.get("n", 0) + 1
        s.save()
        if len(keys) < 10:
            keys.append(s.session_key)
        ok += 1
    except Exception as exc:
        failed += 1
        first = first or repr(exc)[:300]
print(json.dumps({"ok": ok, "failed": failed, "first": first}))
"""

READER = """
import json, sys, time
from sessctl import SessionStore, Settings
url, secret, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = SessionStore(Settings(database_url=url, secret_key=secret))
reads = failed = 0
first = None
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        for row in store.iter_rows("all"):   # what `sessctl list --all` reads
            pass
        store.counts()                         # what `sessctl stats` reads
        reads += 1
    except Exception as exc:
        failed += 1
        first = first or repr(exc)[:300]
print(json.dumps({"reads": reads, "failed": failed, "first": first}))
"""


def _django_file(settings) -> Path:
    """The session table made by Django's own migrate (so: its journal mode, not ours)."""
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    r = subprocess.run([sys.executable, str(HERE / "django_peer.py"), "--db", settings.database_url,
                        "--secret", settings.secret_key, "migrate"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    return path


def _spawn(code: str, settings, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), settings.database_url,
                             settings.secret_key, str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _results(procs) -> list[dict]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        out.append(json.loads(stdout))
    return out


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.scenario("rollback-journal SQLite: readers and writers")
def test_app_writes_beside_readers_on_a_rollback_journal_file(settings):
    """3 reader processes (whole-table reads, as list and stats do) and 2 writer processes (app
    saves) on a file Django created: every write succeeds."""
    from sessctl import SessionStore

    _django_file(settings)
    store = SessionStore(settings)
    fill(store, expired=2000, live=8000)
    store.close()
    readers = [_spawn(READER, settings, SECONDS) for _ in range(3)]
    writers = [_spawn(WRITER, settings, SECONDS) for _ in range(2)]
    w, r = _results(writers), _results(readers)
    print("writers", w, "readers", r)
    assert sum(x["ok"] for x in w) > 50, w
    assert all(x["reads"] >= 1 for x in r), r  # every reader made whole passes
    assert [x["failed"] for x in w] == [0, 0], w
    assert [x["failed"] for x in r] == [0, 0, 0], r


@pytest.mark.parametrize("backend", ["sqlite"])
def test_long_list_does_not_starve_app_writers(settings):
    """`sessctl list --all --json` over many rows while the app writes: no app write fails."""
    from sessctl import SessionStore

    _django_file(settings)
    store = SessionStore(settings)
    fill(store, expired=0, live=60_000)
    store.close()
    lister = subprocess.Popen([str(Path(sys.executable).with_name("sessctl")), "list", "--all", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(settings))
    time.sleep(0.3)
    writers = [_spawn(WRITER, settings, SECONDS) for _ in range(2)]
    w = _results(writers)
    stdout, stderr = lister.communicate(timeout=300)
    assert lister.returncode == 0, stderr
    print("writers", w)
    assert sum(x["ok"] for x in w) > 50, w
    assert [x["failed"] for x in w] == [0, 0], w
    assert len(json.loads(stdout)) >= 60_000


def _env(settings) -> dict[str, str]:
    from helpers import sessctl_env

    return sessctl_env(settings)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_command_says_when_wal_would_help_and_how(settings):
    path = _django_file(settings)
    r = sessctl(settings, "stats")
    assert r.returncode == 0, r.stderr
    assert "WAL" in r.stderr and "PRAGMA journal_mode=WAL" in r.stderr and str(path) in r.stderr, r.stderr
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # told, not switched
        db.execute("PRAGMA journal_mode=WAL")
    r = sessctl(settings, "stats")
    assert r.returncode == 0 and "WAL" not in r.stderr, r.stderr
