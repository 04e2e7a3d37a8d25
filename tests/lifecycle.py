"""Real parts for the lifecycle tests: a database proxy that can fail on command, and the
example apps served by real servers (gunicorn, uvicorn) in processes of their own.

``FaultProxy(port)`` forwards 127.0.0.1:<its port> to a database port and can, on command:

* ``close_all()``: close every connection it carries (what a server restart, a failover or an
  idle timeout does to a cached connection), and keep accepting new ones;
* ``down()`` / ``up()``: close everything and answer every new connection by closing it (the
  server is restarting), then work again;
* ``silent`` (an Event): forward nothing more, in either direction, without closing anything
  (a server that stopped answering: a hung host, a frozen VM, a partitioned network).

``served(kind, settings, ...)`` runs ``lifecycle_app`` under gunicorn (WSGI, sync workers, with
or without ``--preload``) or uvicorn (ASGI) on a free port and yields its base URL; ``Browser``
is a cookie-jar client of it (``httpserver.Client``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from httpserver import Client, Server

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.silent = threading.Event()
        self.is_down = threading.Event()
        self.accepted = 0
        self.chunks = 0  # forwarded so far, either way
        self.silence_after: int | None = None  # go silent once this many chunks have passed
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database_url: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.is_down.is_set():
                client.close()
                continue
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        other = {a: b, b: a}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.05)
                if self.silent.is_set():
                    continue  # hold everything, close nothing
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        self.chunks += 1
                        if self.silence_after is not None and self.chunks > self.silence_after:
                            self.silent.set()
                    while self.silent.is_set() and not self._stop.is_set():
                        time.sleep(0.02)  # holds this chunk too
                    other[sock].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            self._drop(a, b)

    def _drop(self, a: socket.socket, b: socket.socket) -> None:
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close_all(self) -> int:
        """Close every carried connection (both ends); returns how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            self._drop(a, b)
        return len(pairs)

    def down(self) -> None:
        self.is_down.set()
        self.close_all()

    def up(self) -> None:
        self.is_down.clear()

    def close(self) -> None:
        self._stop.set()
        self.silent.clear()
        self.close_all()
        with contextlib.suppress(OSError):
            self._listener.close()


@contextlib.contextmanager
def proxied(settings) -> Iterator[tuple[FaultProxy, object]]:
    """A FaultProxy in front of ``settings``' server, and the settings that go through it."""
    from sqlalchemy.engine import make_url

    proxy = FaultProxy(make_url(settings.database_url).port)
    try:
        yield proxy, settings.replace(database_url=proxy.url(settings.database_url))
    finally:
        proxy.close()


def with_query(url: str, **query: str) -> str:
    """``url`` with driver connect arguments added to its query string."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.update_query_dict(query).render_as_string(hide_password=False)


# -- the example app's views (lifecycle_app serves them; in-process tests too) ----------------


def handle(session, path: str, query: str) -> tuple[int, dict]:
    from urllib.parse import parse_qs

    if path == "/login":
        user = parse_qs(query).get("user", [""])[0]
        session.cycle_key()
        session["user"] = user
        session["n"] = 0
        return 200, {"user": user, "n": 0, "pid": os.getpid()}
    if path == "/whoami":
        return 200, {"user": session.get("user"), "n": session.get("n"), "pid": os.getpid()}
    if path == "/bump":
        session["n"] = session.get("n", 0) + 1
        return 200, {"user": session.get("user"), "n": session["n"], "pid": os.getpid()}
    if path == "/pid":
        return 200, {"pid": os.getpid()}
    return 404, {}



# -- real servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSCTL_", "LC_"))}
    env.update(
        SESSCTL_DB=settings.database_url,
        SESSCTL_TABLE=settings.table,
        SESSCTL_SECRET_KEY=settings.secret_key,
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    timeout = getattr(settings, "timeout", None)
    if timeout is not None:
        env["LC_TIMEOUT"] = str(timeout)
    env.update(extra)
    return env


@contextlib.contextmanager
def served(kind: str, settings, *, workers: int = 4, preload: bool = False, threads: int = 1,
           env: dict[str, str] | None = None) -> Iterator[RealServer]:
    """Serve lifecycle_app under ``kind`` ("gunicorn" or "uvicorn") until the block ends."""
    port = free_port()
    if kind == "gunicorn":
        exe = BIN / "gunicorn"
        argv = [str(exe), "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
                "--graceful-timeout", "2", "--timeout", "60", "--log-level", "warning"]
        argv += ["--preload"] if preload else []
        argv += ["lifecycle_app:application"]
    elif kind == "uvicorn":
        exe = BIN / "uvicorn"
        argv = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                "--log-level", "warning", "--timeout-graceful-shutdown", "2", "lifecycle_app:asgi_app"]
    else:
        raise ValueError(kind)
    if not exe.exists():
        import pytest

        pytest.skip(f"{kind} is not installed next to {sys.executable} (pip install -e '.[test]')")
    import tempfile

    log = open(os.devnull, "w")  # noqa: SIM115
    # A file, not a pipe: a pipe nobody reads fills up with the server's error logs and then
    # blocks the server (its event loop, under uvicorn) in the middle of writing one.
    errors = tempfile.TemporaryFile("w+")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=HERE, env=app_env(settings, **(env or {})), stdout=log,
                            stderr=errors, text=True, start_new_session=True)
    server = RealServer(proc, port, errors)
    try:
        server.wait_ready(workers)
        yield server
    finally:
        server.stop()
        log.close()
        errors.close()


class RealServer(Server):
    def __init__(self, proc: subprocess.Popen, port: int, errors) -> None:
        super().__init__(f"http://127.0.0.1:{port}", "127.0.0.1", port, [])
        self.proc = proc
        self._errors = errors
        self.stderr = ""

    def wait_ready(self, workers: int, timeout: float = 60) -> None:
        """Until every worker is up and the app answers (workers import the app as they boot)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._errors.seek(0)
                raise AssertionError(f"the server exited {self.proc.returncode}: {self._errors.read()[-3000:]}")
            if workers <= 1 or len(self.workers()) >= workers:
                with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/pid", timeout=5) as r:
                    if r.status == 200:
                        return
            time.sleep(0.1)
        raise AssertionError("the server did not start serving")

    def workers(self) -> list[int]:
        """The pids of the server's worker processes (children of the master)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill_worker(self) -> int:
        pid = self.workers()[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._errors.seek(0)
            self.stderr = self._errors.read()


class Browser(Client):
    """A cookie-jar client that reports transport failures as status 0 instead of raising."""

    def call(self, path: str, timeout: float = 30):
        import http.client

        try:
            return self.get(path, timeout=timeout)
        except (OSError, http.client.HTTPException) as exc:  # a reset, a timeout, a worker killed mid-response
            from email.message import Message

            from httpserver import Response

            return Response(0, Message(), repr(exc).encode())
