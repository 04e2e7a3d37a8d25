"""The one home of the helpers the test files share (fixtures live in conftest.py).

Whole sessions are written and read through :class:`sessctl.session.Session`, the
one save semantics (compare-and-swap, merging a concurrent change), never by a
store-level blind write.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

SECRET = "test-secret-key-for-sessctl"
AGE = 1209600  # Django's default SESSION_COOKIE_AGE, in seconds
KEY_RE = re.compile(r"[a-z0-9]{32}")
DELETION = 'sessionid=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax'
# A fixed instant with a fraction, so microseconds are exercised everywhere.
T = datetime(2031, 5, 17, 8, 30, 15, 250000, tzinfo=UTC)
SCRIPT = Path(sys.executable).with_name("sessctl")
PEER = Path(__file__).with_name("django_peer.py")


class Clock:
    """A clock the test moves by hand; a store built with ``clock=`` reads it."""

    def __init__(self, moment: datetime | None = None) -> None:
        self.now = moment if moment is not None else datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- whole sessions, through Session ---------------------------------------------------------


def save(store, key: str | None, data: dict[str, Any]) -> str:
    """Write ``data`` as the whole session ``key`` (a new one for None); returns the key.

    An existing key must be live: :class:`SessionGone` otherwise, never re-created.
    A concurrent change to other fields is merged, as any request's save would.
    """
    from sessctl.session import Session

    session = Session(store, key)
    if key is not None and session.session_key is None:
        from sessctl.errors import SessionGone

        raise SessionGone(f"session {key} does not exist or has expired")
    session.clear()
    session.update(data)
    return session.save()


def load(store, key: str) -> dict[str, Any] | None:
    """The decoded data of a live session as stored (markers included), or None."""
    from sessctl.codec import CodecError

    row = store.load_row(key)
    if row is None:
        return None
    try:
        return store.codec.decode(row.session_data)
    except CodecError:
        return None


def put(store, expire_date, data=None, key=None) -> str:
    """Insert one signed row; returns its key."""
    from sessctl.store import new_key

    key = key or new_key()
    assert store.insert_row(key, store.codec.encode(data if data is not None else {"k": key}), expire_date)
    return key


def all_keys(store) -> list[str]:
    return sorted(r.key for r in store.iter_rows("all"))


def clocked(store, moment: list[datetime]):
    """A second store on the same engine whose clock is frozen at ``moment[0]``."""
    from sessctl import SessionStore

    return SessionStore(store.settings, engine=store.engine, clock=lambda: moment[0])


def snapshot(store) -> dict[str, tuple[str, object]]:
    """Every row of the table, key → (data, expire_date)."""
    return {r.key: (r.session_data, r.expire_date) for r in store.iter_rows("all")}


def fill(store, *, expired: int, live: int) -> dict[str, tuple[str, object]]:
    """Bulk-insert ``expired`` expired rows and ``live`` live ones; returns the live rows."""
    from sqlalchemy import insert

    from sessctl.store import new_key

    now = store.now()
    old = store.codec.encode({"user": "gone"})
    rows = [{"session_key": new_key(), "session_data": old, "expire_date": now - timedelta(seconds=1 + i)}
            for i in range(expired)]
    alive = {}
    for i in range(live):
        key = new_key()
        alive[key] = store.codec.encode({"user": i})
        rows.append({"session_key": key, "session_data": alive[key], "expire_date": now + timedelta(hours=1, seconds=i)})
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            conn.execute(insert(store.table), rows[start:start + 1000])
    return {k: v for k, v in snapshot(store).items() if k in alive}


def run_together(*calls, timeout: float = 120):
    """Run the calls in threads at once; their results, in order (a hang fails after ``timeout``)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result(timeout=timeout) for f in futures]


# -- the command line ----------------------------------------------------------------------


def invoke(settings, *args, secret: Any = ..., env=None, input=None, db: bool = True, code: int | None = None):
    """Run sessctl in-process (CliRunner) on the test's table; ``code`` asserts the exit code.

    ``secret`` defaults to the settings' key, given as SESSCTL_SECRET_KEY; None unsets it.
    """
    from click.testing import CliRunner

    from sessctl.cli import cli

    prefix = ["--db", settings.database_url, "--table", settings.table] if db else []
    secret = settings.secret_key if secret is ... else secret
    r = CliRunner().invoke(
        cli, [*prefix, *args], env={"SESSCTL_SECRET_KEY": secret, **(env or {})}, input=input, prog_name="sessctl"
    )
    if code is not None:
        assert r.exit_code == code, r.output
    return r


def sessctl_env(settings, **extra) -> dict[str, str]:
    """The environment of a sessctl process on the test's table, free of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSCTL_", "_SESSCTL_", "TTY_", "FORCE_COLOR"))}
    env.update(SESSCTL_DB=settings.database_url, SESSCTL_TABLE=settings.table, SESSCTL_SECRET_KEY=settings.secret_key)
    env.update(extra)
    return env


def _script() -> str:
    if not SCRIPT.exists():
        pytest.skip(f"the sessctl console script is not installed next to {sys.executable}")
    return str(SCRIPT)


def sessctl(settings, *args, timeout=60, input=None) -> subprocess.CompletedProcess:
    """Run the installed command on the test's table, as a separate process."""
    return subprocess.run(
        [_script(), *args], capture_output=True, text=True, env=sessctl_env(settings), timeout=timeout, input=input
    )


def popen(settings, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [_script(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sessctl_env(settings)
    )


# -- Django, the oracle ----------------------------------------------------------------------


def django(settings, *args: str, fallbacks: tuple[str, ...] = ()) -> dict:
    """Run one tests/django_peer.py command on the test's database and table; its JSON answer."""
    cmd = [sys.executable, str(PEER), "--db", settings.database_url, "--secret", settings.secret_key or ""]
    for fb in fallbacks:
        cmd += ["--fallback", fb]
    cmd += ["--table", settings.table, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def sqlite_file_store(path) -> tuple[Any, Any]:
    """(settings, store) for a SQLite file at ``path``, its session table created."""
    from sessctl import SessionStore, Settings

    settings = Settings(database_url=f"sqlite:///{path}", secret_key="k")
    store = SessionStore(settings)
    store.create_table()
    return settings, store
