"""Stress: the reliability scenarios of issue 5, with counts, on real databases, and a table.

    python benchmarks/stress.py [--backends sqlite,postgres,mysql] [--quick] [--seed N] [--json FILE]

PostgreSQL and MariaDB URLs come from SESSCTL_TEST_POSTGRES and SESSCTL_TEST_MYSQL
(eval "$(../shared/services.sh)" exports them). Every scenario works on a table of its own,
dropped afterwards (SQLite: a temporary folder). Requests go through a real threaded HTTP
server (tests/httpserver.py); the admin command is the installed `sessctl`, run as separate
processes, as cron and operators run it.

Each row of the table counts operations and three kinds of failure, which must all be zero
(the exit status is 1 otherwise):

  lost         a change or a session that should be there and is not (a key a concurrent
               request set, an admin's lifetime, a refreshed session purged, a live row
               touched by a killed purge)
  resurrected  something that should be gone and is there (a deleted session saved again,
               an expired session left after purge)
  errors       anything else that went wrong: a 5xx, a command that failed when it should
               not, a failure that was not one `Error: ...` line with exit 1, a client's key
               adopted, a timeout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from httpserver import Client, cookie_attrs, raw_get, routes_app, serve  # noqa: E402

from sessctl import SessionMiddleware, SessionStore, Settings  # noqa: E402
from sessctl.policy import EXPIRY_KEY, IDLE_KEY, RESEND_KEY  # noqa: E402
from sessctl.store import new_key  # noqa: E402

UTC = timezone.utc
BACKENDS = ("sqlite", "postgres", "mysql")
ENV_URL = {"postgres": "SESSCTL_TEST_POSTGRES", "mysql": "SESSCTL_TEST_MYSQL"}
LABEL = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MariaDB"}
SECRET = "sessctl-stress-secret-key"
SCRIPT = Path(sys.executable).with_name("sessctl")
WAIT = 30
LOCKED = "another purge is running on this table; exiting"
ERROR_LINE = re.compile(r"Error: \S.*\n")
KEY_RE = re.compile(r"[a-z0-9]{32}")


@dataclass
class Result:
    scenario: str
    backend: str
    ops: int = 0
    lost: int = 0
    resurrected: int = 0
    errors: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == self.resurrected == self.errors == 0

    def fail(self, what: str, kind: str = "errors", n: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + n)
        message = f"{kind}: {what}"
        if message in self.problems or len(self.problems) < 6:
            self.problems[message] = self.problems.get(message, 0) + 1

    def summary(self) -> str:
        problems = [m if n == 1 else f"{m} (x{n})" for m, n in self.problems.items()]
        return "; ".join([*problems, *self.notes])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- plumbing -------------------------------------------------------------------------------------


class Bench:
    """One backend: makes a fresh table per scenario and runs the command against it."""

    def __init__(self, backend: str, url: str, workdir: Path, quick: bool, rng: random.Random):
        self.backend, self.url, self.workdir, self.quick, self.rng = backend, url, workdir, quick, rng

    @contextlib.contextmanager
    def table(self, name: str):
        if self.backend == "sqlite":
            folder = self.workdir / f"{name}-{secrets.token_hex(3)}"
            folder.mkdir()
            settings = Settings(database_url=f"sqlite:///{folder / 'sessions.db'}", secret_key=SECRET)
        else:
            settings = Settings(database_url=self.url, secret_key=SECRET, table=f"stress_{secrets.token_hex(5)}")
        store = SessionStore(settings)
        try:
            store.create_table()
            yield store
        finally:
            if self.backend != "sqlite":
                with contextlib.suppress(Exception), store.engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {settings.table}")
            store.close()

    @staticmethod
    def env(settings: Settings) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSCTL_", "_SESSCTL_", "TTY_"))}
        env.update(SESSCTL_DB=settings.database_url, SESSCTL_TABLE=settings.table, SESSCTL_SECRET_KEY=SECRET)
        return env

    def run(self, settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=self.env(settings),
                              timeout=timeout, cwd=self.workdir)

    def popen(self, settings: Settings, *args: str) -> subprocess.Popen:
        return subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(settings), cwd=self.workdir)


def fill(store: SessionStore, *, expired: int, live: int) -> dict[str, tuple]:
    """Bulk-insert rows; returns the live ones as {key: (session_data, expire_date)}."""
    from sqlalchemy import insert

    now = store.now()
    old = store.codec.encode({"user": "gone"})
    rows = [{"session_key": new_key(), "session_data": old, "expire_date": now - timedelta(seconds=1 + i)}
            for i in range(expired)]
    for i in range(live):
        rows.append({"session_key": new_key(), "session_data": store.codec.encode({"user": i}),
                     "expire_date": now + timedelta(hours=1, seconds=i)})
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            conn.execute(insert(store.table), rows[start:start + 1000])
    return {r["session_key"]: (r["session_data"], r["expire_date"]) for r in rows[expired:]}


def snapshot(store: SessionStore) -> dict[str, tuple]:
    return {r.key: (r.session_data, r.expire_date) for r in store.iter_rows("all")}


def together(*calls):
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result(timeout=300) for f in futures]


@contextlib.contextmanager
def site(store: SessionStore, routes: dict, result: Result):
    app_store = SessionStore(store.settings)
    try:
        with serve(SessionMiddleware(routes_app(routes), store=app_store)) as server:
            yield server
            for exc in server.errors:
                result.fail(f"the app raised {type(exc).__name__}: {exc}")
    finally:
        app_store.close()


def v_set(session, environ):
    for part in environ.get("QUERY_STRING", "").split("&"):
        name, _, value = part.partition("=")
        if name:
            session[name] = value
    return {"key": session.session_key}


# -- scenarios ------------------------------------------------------------------------------------


def concurrent_keys(b: Bench, r: Result) -> None:
    n, rounds = 20, (3 if b.quick else 10)
    r.notes.append(f"{rounds} rounds of {n} requests at once")
    state = {}

    def v_overlap(session, environ):
        session.get("user")
        state["barrier"].wait()
        name, _, value = environ["QUERY_STRING"].partition("=")
        session[name] = value

    with b.table("keys") as store, site(store, {"/set": v_set, "/overlap": v_overlap}, r) as server:
        for _ in range(rounds):
            state["barrier"] = threading.Barrier(n, timeout=WAIT)
            client = Client(server)
            client.get("/set?user=1")
            key = client.cookie_value()
            responses = together(*[lambda i=i: raw_get(server, f"/overlap?k{i}={i}", f"sessionid={key}")
                                   for i in range(n)])
            r.ops += n
            bad = [x.status for x in responses if x.status != 200]
            if bad:
                r.fail(f"statuses {bad}", n=len(bad))
            row = store.get_row(key)
            data = {} if row is None else store.codec.decode(row.session_data)
            missing = [i for i in range(n) if data.get(f"k{i}") != str(i)]
            if missing:
                r.fail(f"keys {missing} lost", "lost", len(missing))


ADMIN = [
    ("set-life", ["set-life", "{key}", "8h", "--idle", "30m"]),
    ("till-browser-close", ["till-browser-close", "{key}"]),
    ("reset-life", ["reset-life", "{key}"]),
    ("delete", ["delete", "{key}"]),
]


def admin_vs_request(b: Bench, r: Result) -> None:
    rounds = 1 if b.quick else 3
    r.notes.append(f"{rounds * len(ADMIN)} requests held open while `sessctl` ran")
    state = {}

    def v_held(session, environ):
        session.get("user")
        state["loaded"].set()
        if not state["proceed"].wait(WAIT):
            raise TimeoutError("the admin command never finished")
        session["cart"] = "3"

    with b.table("admin") as store, site(store, {"/set": v_set, "/held": v_held}, r) as server:
        for _ in range(rounds):
            for name, args in ADMIN:
                client = Client(server)
                client.get("/set?user=1")
                key = client.cookie_value()
                if name == "reset-life":
                    b.run(store.settings, "set-life", key, "2h")
                    raw_get(server, "/set?x=1", f"sessionid={key}")
                state["loaded"], state["proceed"] = threading.Event(), threading.Event()

                def admin():
                    try:
                        if not state["loaded"].wait(WAIT):
                            raise TimeoutError("the request never loaded its session")
                        return b.run(store.settings, *[a.format(key=key) for a in args])
                    finally:
                        state["proceed"].set()

                response, done = together(lambda: raw_get(server, "/held", f"sessionid={key}"), admin)
                r.ops += 1
                if done.returncode != 0 or response.status != 200:
                    r.fail(f"{name}: exit {done.returncode} {done.stderr.strip()}, HTTP {response.status}")
                    continue
                row = store.get_row(key)
                if name == "delete":
                    if row is not None:
                        r.fail("a deleted session was saved again", "resurrected")
                    continue
                data = store.codec.decode(row.session_data) if row else None
                if data is None or data.get("cart") != "3" or data.get("user") != "1":
                    r.fail(f"{name}: the request's own change", "lost")
                    continue
                header = response.cookie()
                attrs = cookie_attrs(header)[2] if header else {}
                expect = {
                    "set-life": isinstance(data.get(EXPIRY_KEY), str) and data.get(IDLE_KEY) == 1800
                    and 1790 <= int(attrs.get("max-age", 0)) <= 1800,
                    "till-browser-close": data.get(EXPIRY_KEY) == 0 and "max-age" not in attrs,
                    "reset-life": EXPIRY_KEY not in data and IDLE_KEY not in data
                    and int(attrs.get("max-age", 0)) == store.settings.cookie_age,
                }[name]
                if not expect or RESEND_KEY in data:
                    r.fail(f"{name}: the admin's lifetime", "lost")


def purge_vs_refresh(b: Bench, r: Result) -> None:
    idle, seconds = 1.2, (2.0 if b.quick else 6.0)
    n_refreshed, n_abandoned, n_expired = 8, 8, 300

    def v_refresh(session, environ):
        session.set_life(idle, idle=True)
        session["n"] = session.get("n", 0) + 1

    with b.table("refresh") as store, site(store, {"/refresh": v_refresh}, r) as server:
        def make() -> str:
            return cookie_attrs(raw_get(server, "/refresh").cookie())[1]

        refreshed = [make() for _ in range(n_refreshed)]
        for _ in range(n_abandoned):
            make()  # left alone: they must be purged
        fill(store, expired=n_expired, live=0)
        gone_at = time.monotonic() + idle + 0.1
        until = time.monotonic() + seconds
        stop = threading.Event()
        purges: list[subprocess.CompletedProcess] = []

        def refresher():
            while not stop.is_set():
                for key in refreshed:
                    resp = raw_get(server, "/refresh", f"sessionid={key}")
                    r.ops += 1
                    header = resp.cookie()
                    if resp.status != 200:
                        r.fail(f"HTTP {resp.status}")
                    elif header is None or cookie_attrs(header)[1] != key:
                        r.fail("a refreshed session was purged under the app", "lost")
                time.sleep(0.03)

        def purger():
            try:
                last = 0.0
                while time.monotonic() < until or last < gone_at:
                    last = time.monotonic()
                    purges.append(b.run(store.settings, "purge", "--expired", "--batch-size", "7", "--json"))
            finally:
                stop.set()

        together(refresher, purger)
        left = {row.key for row in store.iter_rows("all")}
        r.ops += len(purges)
        for p in purges:
            if p.returncode != 0:
                r.fail(f"purge exit {p.returncode}: {p.stderr.strip()}")
        deleted = sum(json.loads(p.stdout)["deleted"] for p in purges if p.returncode == 0)
        r.notes.append(f"{len(purges)} purges while {n_refreshed} sessions were kept alive; {deleted} deleted")
        if missing := set(refreshed) - left:
            r.fail(f"{len(missing)} refreshed sessions gone", "lost", len(missing))
        if extra := left - set(refreshed):
            r.fail(f"{len(extra)} expired sessions left after purge", "resurrected", len(extra))


def purge_vs_saves(b: Bench, r: Result) -> None:
    """The same race at full speed, in-process: six app threads save sessions about to expire
    (idle 1 s) while purge batches delete the expired rows just below them."""
    seconds, threads = (2.0 if b.quick else 5.0), 6
    with b.table("saves") as store:
        app, purger = SessionStore(store.settings), SessionStore(store.settings)
        keys = []
        for _ in range(2 * threads):
            session = app.session()
            session["n"] = 0
            session.set_life(1.0, idle=True)
            keys.append(session.save())
        stop = time.monotonic() + seconds
        lock = threading.Lock()

        def count(n: int = 1) -> None:
            with lock:
                r.ops += n

        def saver(mine):
            while time.monotonic() < stop:
                for key in mine:
                    try:
                        session = app.session(key)
                        if session.get("n") is None:
                            r.fail("a session was lost", "lost")
                            continue
                        session["n"] += 1
                        session.set_life(1.0, idle=True)
                        session.save()
                        count()
                    except Exception as exc:
                        r.fail(f"app save: {type(exc).__name__}: {str(exc)[-90:]}")

        def purge():
            while time.monotonic() < stop:
                fill(purger, expired=40, live=0)
                try:
                    purger.purge_expired(batch_size=5)
                    count()
                except Exception as exc:
                    r.fail(f"purge: {type(exc).__name__}: {str(exc)[-90:]}")
            purger.purge_expired()

        try:
            together(purge, *[lambda i=i: saver(keys[i::threads]) for i in range(threads)])
            left = {row.key for row in store.iter_rows("all")}
            if left != set(keys):
                r.fail(f"{len(left - set(keys))} expired rows left", "resurrected", len(left - set(keys)))
        finally:
            app.close()
            purger.close()
    r.notes.append(f"{threads} app threads saving, purge batches of 5 below them, {seconds:.0f} s")


def overlapping_purges(b: Bench, r: Result) -> None:
    rounds, per_round = (2 if b.quick else 5), 3
    skipped = 0
    with b.table("overlap") as store:
        for _ in range(rounds):
            live = fill(store, expired=400, live=20)
            procs = [b.popen(store.settings, "purge", "--expired", "--batch-size", "5", "--json")
                     for _ in range(per_round)]
            deleted = 0
            for p in procs:
                try:
                    out, err = p.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.communicate()
                    r.fail("a purge hung (deadlock?)")
                    continue
                r.ops += 1
                if p.returncode != 0 or err not in ("", f"{LOCKED} (pass --wait to wait for it instead)\n"):
                    r.fail(f"exit {p.returncode}: {err.strip()}")
                    continue
                report = json.loads(out)
                skipped += report.get("skipped") == LOCKED
                deleted += report["deleted"]
            now = snapshot(store)
            if lost := [k for k in live if now.get(k) != live[k]]:
                r.fail(f"{len(lost)} live rows touched", "lost", len(lost))
            if extra := set(now) - set(live):
                r.fail(f"{len(extra)} expired rows left", "resurrected", len(extra))
            if deleted != 400:
                r.fail(f"deleted {deleted} of 400")
            for key in live:
                store.delete(key)
        # And --wait: it waits for the holder, then does the work.
        fill(store, expired=50, live=0)
        with store.exclusive("purge"):
            waiting = b.popen(store.settings, "purge", "--expired", "--wait", "--json")
            time.sleep(1.0)
            still = waiting.poll() is None
        out, err = waiting.communicate(timeout=120)
        r.ops += 1
        if waiting.returncode != 0 or not still or json.loads(out)["deleted"] != 50:
            r.fail(f"--wait: exit {waiting.returncode}, waited {still}: {err.strip()}")
    r.notes.append(f"{rounds} rounds of {per_round} purges at once; {skipped} exited on the lock; --wait waited")


def kill_9(b: Bench, r: Result) -> None:
    kills = 3 if b.quick else 8
    mid, release = 0, 0.0
    with b.table("kill") as store:
        n_expired = 3000
        live = fill(store, expired=n_expired, live=300)
        left = n_expired
        for i in range(kills):
            proc = b.popen(store.settings, "purge", "--expired", "--batch-size", "50")
            if i % 3 == 0:
                time.sleep(b.rng.uniform(0.0, 0.5))
            else:
                target = left - b.rng.randint(1, max(1, left // 2))
                deadline = time.monotonic() + 30
                while proc.poll() is None and time.monotonic() < deadline and store.count_expired() > target:
                    time.sleep(0.001)
            running = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            r.ops += 1
            # The dead holder's lock must come free (when the server sees the connection close).
            t0 = time.monotonic()
            while True:
                with store.exclusive("purge") as got:
                    pass
                if got or time.monotonic() - t0 > 10:
                    break
                time.sleep(0.005)
            release = max(release, time.monotonic() - t0)
            if not got:
                r.fail("the purge lock stayed held after kill -9")
            now_left = store.count_expired()
            mid += running and 0 < now_left < left
            left = now_left
            now = snapshot(store)
            if lost := [k for k in live if now.get(k) != live[k]]:
                r.fail(f"{len(lost)} live rows touched by a killed purge", "lost", len(lost))
            if b.backend == "sqlite":
                path = store.settings.database_url.removeprefix("sqlite:///")
                with contextlib.closing(sqlite3.connect(path)) as db:
                    if db.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                        r.fail("integrity_check failed")
            if left == 0:  # it got to the end before the kill: start over
                live = {**live, **fill(store, expired=n_expired, live=0)}
                left = n_expired
        done = b.run(store.settings, "purge", "--expired", "--batch-size", "50", "--json")
        r.ops += 1
        if done.returncode != 0 or done.stderr:
            r.fail(f"the re-run: exit {done.returncode}: {done.stderr.strip()}")
        now = snapshot(store)
        if lost := [k for k in live if now.get(k) != live[k]]:
            r.fail(f"{len(lost)} live rows", "lost", len(lost))
        if extra := set(now) - set(live):
            r.fail(f"{len(extra)} expired rows left after the re-run", "resurrected", len(extra))
    r.notes.append(f"{kills} kills, {mid} in the middle of deleting; lock free again within {release * 1000:.0f} ms; "
                   "then a re-run")


def _one_error(r: Result, what: str, proc: subprocess.CompletedProcess, *fragments: str) -> None:
    if proc.returncode != 1 or not ERROR_LINE.fullmatch(proc.stderr) or not all(f in proc.stderr for f in fragments):
        r.fail(f"{what}: exit {proc.returncode}, stderr {proc.stderr.strip()[:200]!r}")


def database_goes_away(b: Bench, r: Result) -> None:
    if b.backend == "sqlite":
        return _sqlite_goes_away(b, r)
    from test_faults import TcpProxy

    from sqlalchemy.engine import make_url

    port = make_url(b.url).port
    commands = [["list", "--all", "--json"], ["set-life", "{key}", "2h"], ["stats", "--json"], ["show", "{key}"]]
    with b.table("away") as store:
        fill(store, expired=10, live=1500)
        key = next(iter(store.iter_rows("active"))).key
        for args in commands:
            args = [a.format(key=key) for a in args]
            proxy = TcpProxy(port)
            try:
                uncut = b.run(store.settings.replace(database_url=proxy.url(b.url)), *args)
                traffic = proxy.chunks
            finally:
                proxy.close()
            if uncut.returncode != 0:
                r.fail(f"{args[0]} without a fault: {uncut.stderr.strip()}")
                continue
            for share in (0.25, 0.5, 0.75) if not b.quick else (0.5,):
                proxy = TcpProxy(port, cut_after=max(2, int(traffic * share)))
                try:
                    cut = b.run(store.settings.replace(database_url=proxy.url(b.url)), *args)
                finally:
                    proxy.close()
                r.ops += 1
                _one_error(r, f"{args[0]} cut at {share:.0%}", cut, "cannot reach the database")
        # A purge cut in the middle, then re-run.
        fill(store, expired=2000, live=0)
        live = {k: v for k, v in snapshot(store).items() if v[1] > store.now()}
        proxy = TcpProxy(port, cut_after=80)
        try:
            cut = b.run(store.settings.replace(database_url=proxy.url(b.url)), "purge", "--expired", "--batch-size", "1")
        finally:
            proxy.close()
        r.ops += 1
        _one_error(r, "purge cut", cut, "cannot reach the database")
        again = b.run(store.settings, "purge", "--expired")
        r.ops += 1
        if again.returncode != 0:
            r.fail(f"purge re-run: {again.stderr.strip()}")
        now = snapshot(store)
        if lost := [k for k in live if now.get(k) != live[k]]:
            r.fail(f"{len(lost)} live rows", "lost", len(lost))
        if extra := set(now) - set(live):
            r.fail(f"{len(extra)} expired rows left", "resurrected", len(extra))
    r.notes.append("a proxy on 127.0.0.1 closed mid-command; purge cut then re-run")


def _sqlite_goes_away(b: Bench, r: Result) -> None:
    notes = []
    for how in ("removed", "replaced", "truncated"):
        with b.table(f"away-{how}") as store:
            fill(store, expired=300, live=10)
            path = Path(store.settings.database_url.removeprefix("sqlite:///"))
            proc = b.popen(store.settings, "purge", "--expired", "--batch-size", "1")
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline and store.count_expired() > 295:
                time.sleep(0.005)
            store.close()
            if how == "truncated":
                os.truncate(path, 0)
            else:
                for extra in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(f"{path}{extra}")
                if how == "removed":
                    os.remove(path)
                else:
                    impostor = path.with_name("impostor")
                    impostor.write_bytes(b"not a database\n" * 300)
                    os.replace(impostor, path)
            out, err = proc.communicate(timeout=120)
            r.ops += 1
            if proc.returncode == 1:
                _one_error(r, f"file {how}", subprocess.CompletedProcess([], 1, out, err))
            elif proc.returncode != 0 or "Traceback" in err:
                r.fail(f"file {how}: exit {proc.returncode}: {err.strip()[:200]}")
            after = b.run(store.settings, "list")
            r.ops += 1
            if how == "truncated" and after.returncode == 0:
                pass
            else:
                _one_error(r, f"list after the file was {how}", after)
            notes.append(f"{how}: exit {proc.returncode}")
    if os.geteuid() == 0 and shutil.which("chattr"):
        with b.table("readonly") as store:
            key = store.save(None, {"user": 1})
            store.close()
            path = Path(store.settings.database_url.removeprefix("sqlite:///"))
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
                try:
                    for args in (["delete", key], ["set-life", key, "1h"], ["purge", "--all", "--yes"]):
                        r.ops += 1
                        _one_error(r, f"read-only {args[0]}", b.run(store.settings, *args), "read-only")
                finally:
                    subprocess.run(["chattr", "-i", str(path)], check=True)
                notes.append("read-only (chattr +i)")
    r.notes.append("SQLite file under a running purge: " + "; ".join(notes))


def hostile_cookies(b: Bench, r: Result) -> None:
    n = 300 if b.quick else 2000

    def v_touch(session, environ):
        session["x"] = session.get("x", 0) + 1

    with b.table("cookies") as store:
        live = store.save(None, {"user": "known"})
        with site(store, {"/": v_touch}, r) as server:
            for i in range(n):
                raw = bytes(b.rng.randrange(256) for _ in range(b.rng.randrange(200)))
                raw = raw.replace(b"\r", b"").replace(b"\n", b"")
                if i % 10 == 0:
                    raw += f"; sessionid={live}".encode()
                elif i % 10 == 1:
                    raw += f"; sessionid={new_key()}".encode()  # a key of the attacker's choosing
                resp = raw_get(server, "/", raw)
                r.ops += 1
                if resp.status != 200:
                    r.fail(f"HTTP {resp.status}")
                    continue
                from sessctl.middleware import parse_cookie

                sent = raw.decode("latin-1").strip(" \t")
                key = cookie_attrs(resp.cookie())[1] if resp.cookie() else None
                legit = parse_cookie(sent, "sessionid") == live
                if key is None or (key == live) != legit or (not legit and (key in sent or not KEY_RE.fullmatch(key))):
                    r.fail(f"a key from the client was adopted: {sent[:60]!r}")
    r.notes.append(f"{n} random Cookie headers; a client's key is never adopted")


def hostile_data(b: Bench, r: Result) -> None:
    from click.testing import CliRunner
    from test_faults import HOSTILE, RAW_SEQUENCES, nest, signed_by_a_deeper_peer

    from sessctl.cli import cli

    with b.table("data") as store:
        key = store.save(None, HOSTILE)
        value = store.get_row(key).session_data
        deep = store.create_row(signed_by_a_deeper_peer(store.codec, nest(5000)), store.now() + timedelta(hours=1))
        s = store.settings
        base = ["--db", s.database_url, "--table", s.table]
        rich = {"TTY_COMPATIBLE": "1", "COLUMNS": "120"}
        runs = [(["show", key], {}, None, 0), (["show", key, "--json"], {}, None, 0), (["decode"], {}, value, 0),
                (["list"], {}, None, 0), (["list"], rich, None, 0), (["list", "--json"], {}, None, 0),
                (["stats"], rich, None, 0), (["show", deep], {}, None, 1), (["set-life", deep, "1h"], {}, None, 1)]
        for args, env, stdin, code in runs:
            res = CliRunner().invoke(cli, [*base, *args], env={"SESSCTL_SECRET_KEY": SECRET, **env}, input=stdin)
            r.ops += 1
            if res.exit_code != code or any(raw in res.stdout for raw in RAW_SEQUENCES):
                r.fail(f"{' '.join(args[:1])}: exit {res.exit_code}: {res.stderr.strip()[:120]}")
            elif code == 1 and not ERROR_LINE.fullmatch(res.stderr):
                r.fail(f"{args[0]} on too-deep data: {res.stderr.strip()[:120]!r}")
            elif "--json" in args and args[0] == "show" and json.loads(res.stdout)["data"] != HOSTILE:
                r.fail("show --json changed the data", "lost")
    r.notes.append(f"1 MB, non-ASCII, markup, ANSI/C1/bidi escapes ({len(value):,} bytes stored); JSON too deep to parse")


def too_deep_row_in_the_app(b: Bench, r: Result) -> None:
    """A row signed with the app's key whose JSON is deeper than Python parses (a peer with a
    higher recursion limit wrote it): the app must treat it as untrusted, not answer 500."""
    from test_faults import nest, signed_by_a_deeper_peer

    def v_read(session, environ):
        return {"user": session.get("user")}

    with b.table("deep") as store:
        key = store.create_row(signed_by_a_deeper_peer(store.codec, nest(5000)), store.now() + timedelta(hours=1))
        app_store = SessionStore(store.settings)
        try:
            with serve(SessionMiddleware(routes_app({"/": v_read}), store=app_store)) as server:
                for _ in range(3):
                    resp = raw_get(server, "/", f"sessionid={key}")
                    r.ops += 1
                    if resp.status != 200:
                        r.fail(f"HTTP {resp.status} ({type(server.errors[-1]).__name__ if server.errors else '?'})")
        finally:
            app_store.close()
    r.notes.append("a signed row nested 5000 deep, requested 3 times")


def secret_never_shown(b: Bench, r: Result) -> None:
    from click.testing import CliRunner
    from test_security import CANARY, CANARY_FALLBACK, UNREACHABLE, leaks

    from sessctl.cli import cli

    with b.table("secret") as store:
        ours = store.settings.replace(secret_key=CANARY, secret_key_fallbacks=(CANARY_FALLBACK,))
        app = SessionStore(ours)
        try:
            key = app.save(None, {"user": 1})
            other = app.create_row(store.codec.encode({"u": 2}), app.now() + timedelta(hours=1))
            value = app.codec.encode({"u": 3})
        finally:
            app.close()
        base = ["--db", ours.database_url, "--table", ours.table]
        env = {"SESSCTL_SECRET_KEY": CANARY, "SESSCTL_SECRET_KEY_FALLBACKS": CANARY_FALLBACK}
        runs = [["list"], ["stats"], ["show", key], ["show", other], ["show", other, "--no-verify"], ["decode", value],
                ["set-life", key, "8h", "--idle", "30m"], ["set-life", other, "1h"], ["show", "nosuchkey0001"],
                ["purge", "--expired"], ["delete", "nosuchkey0001"]]
        texts = []
        for args in runs:
            for debug in ([], ["--debug"]):
                res = CliRunner().invoke(cli, [*debug, *base, *args], env=env)
                texts.append(res.output)
        for debug in ([], ["--debug"]):
            texts.append(CliRunner().invoke(cli, [*debug, "--db", UNREACHABLE, "list"], env=env).output)
        proc = subprocess.run([str(SCRIPT), "--debug", *base, "set-life", other, "1h"], capture_output=True, text=True,
                              env={**Bench.env(ours), **env}, timeout=60)
        texts.append(proc.stdout + proc.stderr)
        for text in texts:
            r.ops += 1
            if found := leaks(text):
                r.fail(f"the secret was printed: {found[0][:12]}...")
    r.notes.append("every command, ok and failing, with --debug; real tracebacks too")


def idle_and_absolute(b: Bench, r: Result) -> None:
    """set_life(8h, idle=30m) under a random walk of request gaps (server clock moved by hand):
    every response's Max-Age and every row's expiry is the earlier limit; an idle gap ends it."""
    sessions = 5 if b.quick else 20
    clock_now = [datetime.now(UTC).replace(microsecond=0)]

    def login(session, environ):
        session["user"] = "u"
        session.set_life(8 * 3600, idle=1800)

    def touch(session, environ):
        if session.get("user") is not None:
            session["n"] = session.get("n", 0) + 1
        return {"user": session.get("user")}

    with b.table("limits") as store:
        app_store = SessionStore(store.settings, clock=lambda: clock_now[0])
        try:
            with serve(SessionMiddleware(routes_app({"/login": login, "/touch": touch}), store=app_store)) as server:
                for _ in range(sessions):
                    start = clock_now[0]
                    deadline = start + timedelta(hours=8)
                    key = cookie_attrs(raw_get(server, "/login").cookie())[1]
                    r.ops += 1
                    while True:
                        gap = b.rng.choice([60, 600, 1700, 1799, 1801, 2400]) if b.rng.random() < 0.2 else \
                            b.rng.choice([30, 300, 900, 1500])
                        last = clock_now[0]
                        clock_now[0] += timedelta(seconds=gap)
                        resp = raw_get(server, "/touch", f"sessionid={key}")
                        r.ops += 1
                        alive_expected = clock_now[0] < min(last + timedelta(seconds=1800), deadline)
                        alive = resp.json()["user"] == "u"
                        if alive and not alive_expected:
                            r.fail("a session past its limit was still served", "resurrected")
                        if alive_expected and not alive:
                            r.fail("a session within both limits was lost", "lost")
                        if not alive:
                            break
                        row = store.get_row(key)
                        expected = min(clock_now[0] + timedelta(seconds=1800), deadline)
                        age = int(cookie_attrs(resp.cookie())[2]["max-age"])
                        if row.expire_date != expected or age != int((expected - clock_now[0]).total_seconds()):
                            r.fail(f"expiry {row.expire_date} / Max-Age {age}, expected {expected}")
                    clock_now[0] += timedelta(hours=9)
                for exc in server.errors:
                    r.fail(f"the app raised {exc!r}")
        finally:
            app_store.close()
    r.notes.append(f"{sessions} sessions with 8h + 30m idle under random request gaps")


def keys_are_unique(b: Bench, r: Result) -> None:
    if b.backend != "sqlite":
        return
    n = 50_000 if b.quick else 200_000
    seen = set()
    for _ in range(n):
        key = new_key()
        r.ops += 1
        if key in seen or not KEY_RE.fullmatch(key):
            r.fail(f"bad or repeated key {key}")
        seen.add(key)
    r.notes.append(f"{n:,} keys from secrets, 32 of [a-z0-9] (165 bits): none repeated")


SCENARIOS = [
    ("concurrent requests, one session", concurrent_keys),
    ("admin command during a request", admin_vs_request),
    ("purge while the app refreshes", purge_vs_refresh),
    ("purge batches vs app saves", purge_vs_saves),
    ("overlapping purges (cron)", overlapping_purges),
    ("kill -9 of purge, then re-run", kill_9),
    ("database goes away mid-command", database_goes_away),
    ("hostile Cookie headers", hostile_cookies),
    ("hostile session data printed", hostile_data),
    ("JSON too deep to parse, in the app", too_deep_row_in_the_app),
    ("secret never shown", secret_never_shown),
    ("idle + absolute limits", idle_and_absolute),
    ("session keys", keys_are_unique),
]


# -- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: sqlite,postgres,mysql)")
    ap.add_argument("--quick", action="store_true", help="small counts (about a minute for all three backends)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (kill moments, cookies); printed")
    ap.add_argument("--only", default=None, help="comma-separated scenario numbers (1-13) to run")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    backends = [x.strip() for x in args.backends.split(",") if x.strip()]
    if bad := [x for x in backends if x not in BACKENDS]:
        ap.error(f"unknown backend(s) {', '.join(bad)}; choose from {', '.join(BACKENDS)}")
    if not SCRIPT.exists():
        ap.error(f"the sessctl command is not installed next to {sys.executable} (pip install -e .)")
    urls = {"sqlite": ""}
    for backend in backends:
        if backend != "sqlite":
            urls[backend] = os.environ.get(ENV_URL[backend], "")
            if not urls[backend]:
                ap.error(f"{ENV_URL[backend]} is not set: run eval \"$(../shared/services.sh)\" first")
    chosen = SCENARIOS if not args.only else [SCENARIOS[int(i) - 1] for i in args.only.split(",")]
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"stress: backends {','.join(backends)}; {'quick' if args.quick else 'full'} counts; seed {seed}", flush=True)
    results: list[Result] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sessctl-stress-") as tmp:
        for backend in backends:
            bench = Bench(backend, urls[backend], Path(tmp), args.quick, random.Random(f"{seed}-{backend}"))
            for title, scenario in chosen:
                result = Result(title, LABEL[backend])
                log(f"{LABEL[backend]}: {title} ...")
                t0 = time.monotonic()
                try:
                    scenario(bench, result)
                except Exception as exc:  # a scenario that blows up is an error, never a pass
                    result.fail(f"{type(exc).__name__}: {exc}")
                result.seconds = time.monotonic() - t0
                if result.ops or not result.ok:  # a scenario may not apply to a backend
                    results.append(result)
    print_table(results)
    total = time.monotonic() - started
    failed = [x for x in results if not x.ok]
    print(f"\n{sum(x.ops for x in results):,} operations in {total:.0f}s; "
          f"{'all zero' if not failed else f'{len(failed)} scenario(s) FAILED'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": seed, "backends": backends, "quick": args.quick,
                                               "results": [asdict(x) for x in results]}, indent=2))
    return 1 if failed else 0


def print_table(results: list[Result]) -> None:
    header = ("scenario", "backend", "ops", "lost", "resurrected", "errors", "s", "notes")
    rows = [(x.scenario, x.backend, f"{x.ops:,}", str(x.lost), str(x.resurrected), str(x.errors), f"{x.seconds:.1f}",
             x.summary()) for x in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header[:-1])]
    print()
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))) + "  notes")
    print("  ".join("-" * w for w in widths) + "  -----")
    for row in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells) + "  " + row[-1])


if __name__ == "__main__":
    sys.exit(main())
