"""Process lifecycle: a store used before the server forks is never shared by the forked workers.

A pre-forking server (gunicorn ``--preload``, uWSGI without lazy-apps) imports the app, and so
makes its store and uses it (``create_table()``), in the master; every worker is a ``fork`` of
it. A connection open at that moment would be one socket shared by every worker: answers read
by the wrong process, i.e. another user's session. Here it is tried with real forks and with a
real gunicorn over real HTTP with cookie jars, and the counts must be zero: no response with
another user's session, no lost update, no error.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings

import pytest

from lifecycle import Browser, served

DURATION = 4.0  # seconds of traffic per run
USERS = 8


def _child(store, rounds: int, out: int) -> None:
    """In a forked child: many sessions of its own, each read back; report counts, never raise."""
    from sessctl import Session

    counts = {"ops": 0, "wrong": 0, "errors": 0}
    me = os.getpid()
    for i in range(rounds):
        try:
            s = Session(store, None)
            s["owner"] = [me, i]
            s.save()
            back = Session(store, s.session_key)
            counts["ops"] += 1
            if back.get("owner") != [me, i]:
                counts["wrong"] += 1
        except Exception as exc:  # noqa: BLE001
            counts["errors"] += 1
            counts.setdefault("first", repr(exc)[:300])
    os.write(out, json.dumps(counts).encode())


@pytest.mark.scenario("fork: children share none of the parent's connections")
def test_forked_children_never_share_the_parents_connections(store):
    """Parent and 4 children use one store at once after fork; each sees only its own sessions."""
    from sessctl import Session

    s = Session(store, None)
    s["owner"] = "parent"
    s.save()
    assert Session(store, s.session_key).get("owner") == "parent"  # the fast path holds a connection now
    store.counts()  # and the engine's pool one
    children = []
    for _ in range(4):
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: none of ours run here
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(r)
                _child(store, 150, w)
            finally:
                os._exit(0)
        os.close(w)
        children.append((pid, r))
    parent = {"ops": 0, "wrong": 0, "errors": 0}
    running = {pid for pid, _ in children}
    deadline = time.monotonic() + 60
    while running and time.monotonic() < deadline:
        try:  # the parent keeps using its store while the children run
            back = Session(store, s.session_key)
            parent["ops"] += 1
            parent["wrong"] += back.get("owner") != "parent"
            store.counts()
        except Exception:  # noqa: BLE001
            parent["errors"] += 1
        running = {pid for pid in running if os.waitpid(pid, os.WNOHANG) == (0, 0)}
    results = []
    for pid, r in children:
        if pid in running:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        with os.fdopen(r, "rb") as fh:
            data = fh.read()
        results.append(json.loads(data or b'{"ops": 0, "wrong": 0, "errors": 1, "first": "no report"}'))
    print("children:", results, "parent:", parent)
    assert all(c["wrong"] == 0 and c["errors"] == 0 and c["ops"] == 150 for c in results), results
    assert parent["wrong"] == parent["errors"] == 0, parent


# -- real pre-forking servers over real HTTP --------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops = self.wrong_user = self.lost = self.errors = self.transport = 0
        self.samples: list[str] = []

    def note(self, what: str, detail: str) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)
            if len(self.samples) < 5:
                self.samples.append(f"{what}: {detail}")

    def __repr__(self) -> str:
        return (f"ops={self.ops} wrong_user={self.wrong_user} lost={self.lost} errors={self.errors} "
                f"transport={self.transport} {self.samples}")


def browse(server, user: str, tally: Tally, stop: threading.Event) -> None:
    """Log in as ``user``, then bump a counter until ``stop``: every answer must be ours, in order."""
    b = Browser(server)
    r = b.call(f"/login?user={user}")
    if r.status != 200:
        tally.note("errors" if r.status else "transport", f"login {r.status} {r.body[:200]!r}")
        return
    n = 0
    while not stop.is_set():
        r = b.call("/bump")
        with tally.lock:
            tally.ops += 1
        if r.status == 0:  # the worker died under this request: find out where we are
            tally.note("transport", r.body.decode()[:200])
            r = b.call("/whoami")
            if r.status != 200:
                continue
            got = r.json()
            if got["user"] != user:
                tally.note("wrong_user", f"{user} got {got}")
                return
            n = got["n"]
            continue
        if r.status != 200:
            tally.note("errors", f"{r.status} {r.body[:200]!r}")
            continue
        got = r.json()
        if got["user"] != user:
            tally.note("wrong_user", f"{user} got {got}")
            return
        if got["n"] != n + 1:
            tally.note("lost", f"{user} expected n={n + 1}, got {got}")
        n = got["n"]


def traffic(server, seconds: float = DURATION, users: int = USERS, during=None) -> Tally:
    tally = Tally()
    stop = threading.Event()
    threads = [threading.Thread(target=browse, args=(server, f"user{i}", tally, stop)) for i in range(users)]
    for t in threads:
        t.start()
    if during is not None:
        time.sleep(seconds / 3)
        during()
        time.sleep(2 * seconds / 3)
    else:
        time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a browser hung"
    return tally


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
@pytest.mark.scenario("fork: gunicorn workers, another user's session")
def test_gunicorn_workers_never_answer_with_another_users_session(store, preload):
    with served("gunicorn", store.settings, workers=4, preload=preload) as server:
        tally = traffic(server)
    print(tally)
    assert tally.ops > 100, tally
    assert (tally.wrong_user, tally.lost, tally.errors, tally.transport) == (0, 0, 0, 0), tally


@pytest.mark.scenario("fork: gunicorn worker killed and respawned")
def test_gunicorn_worker_killed_and_respawned(store):
    """kill -9 of a worker under load: only the requests it was serving fail (at the transport);
    the respawned worker (forked from the preloaded master again) serves everyone correctly."""
    with served("gunicorn", store.settings, workers=3, preload=True) as server:
        before = set(server.workers())
        killed = []
        tally = traffic(server, seconds=6, during=lambda: killed.append(server.kill_worker()))
        after = set(server.workers())
    print(tally, "killed", killed, "workers before", before, "after", after)
    assert killed and killed[0] not in after and len(after) == len(before), (before, after)
    assert tally.ops > 100, tally
    assert (tally.wrong_user, tally.lost, tally.errors) == (0, 0, 0), tally
    assert tally.transport <= USERS, tally  # at most one in-flight request per browser


def test_uvicorn_workers_serve_every_user_their_own_session(store):
    with served("uvicorn", store.settings, workers=2) as server:
        tally = traffic(server)
    print(tally)
    assert tally.ops > 100, tally
    assert (tally.wrong_user, tally.lost, tally.errors, tally.transport) == (0, 0, 0, 0), tally
