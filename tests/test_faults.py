"""Faults and bad input: a killed purge, a database that goes away, a read-only or full disk,
hostile cookies and hostile session data. Nothing is lost, nothing crashes, every failure of
the command is one `Error: ...` line and exit 1.

Faults are real, never mocked:

* ``kill -9`` of a real ``sessctl purge`` process at random moments (the seed is printed);
* a database server that goes away: a TCP proxy on 127.0.0.1 in front of PostgreSQL or
  MariaDB that closes every connection, and stops listening, in the middle of a command
  (half-way through the traffic that command makes, measured by a first, uncut run);
* a SQLite file truncated, removed or replaced under a running command;
* a read-only SQLite database: the file (and then its folder) made immutable with
  ``chattr +i``, which binds root too (tests run as root, who ignores permission bits);
* a full disk: a 512 KiB tmpfs mounted for the test and filled up.

The last two need root and a file system that supports them; they skip otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from httpserver import Client, cookie_attrs, raw_get, routes_app, serve
from sessctl import SessionMiddleware, SessionStore
from sessctl.cli import cli
from sessctl.codec import Codec, CodecError, decode_unverified
from sessctl.cookies import parse_cookie
from helpers import KEY_RE, fill, invoke, load, popen, save, sessctl, snapshot

ERROR_LINE = re.compile(r"Error: \S.*\n")

pytestmark = pytest.mark.usefixtures("isolated")


def one_error_line(stderr: str, *fragments: str) -> str:
    """Exactly one line, `Error: ...`, with each fragment; no traceback."""
    assert ERROR_LINE.fullmatch(stderr), repr(stderr)
    for fragment in fragments:
        assert fragment in stderr, stderr
    return stderr


# -- kill -9 of purge --------------------------------------------------------------------------


@pytest.mark.scenario("kill -9 of purge, then re-run")
def test_purge_killed_at_random_moments_then_rerun(store, backend):
    seed = int(os.environ.get("SESSCTL_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"kill -9 seed: {seed} (set SESSCTL_FAULT_SEED to replay)")
    n_expired = 2500
    live = fill(store, expired=n_expired, live=200)
    left = n_expired
    mid_run = 0
    for round_ in range(3):
        if round_ and left < n_expired // 2:
            # A fast backend may have finished in round 0's pause: give this round rows to cut into.
            fill(store, expired=n_expired - left, live=0)
            left = store.count_expired()
        proc = popen(store.settings, "purge", "--expired", "--batch-size", "50")
        if round_ == 0:
            time.sleep(rng.uniform(0.0, 0.4))  # any moment, maybe before it has even connected
        else:
            # Some moment while it deletes: once a random share (up to half) of what is left has gone.
            target = left - rng.randint(1, max(1, left // 2))
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline and store.count_expired() > target:
                time.sleep(0.001)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        now_left = store.count_expired()
        mid_run += alive and 0 < now_left < left
        assert now_left <= left
        left = now_left
        after = snapshot(store)
        assert {k: after.get(k) for k in live} == live  # no live session touched
        assert set(after) - set(live) == {r.key for r in store.iter_rows("expired")}
        if backend == "sqlite":
            path = store.settings.database_url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path)) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert mid_run >= 1, f"no kill landed while purge was deleting (seed {seed})"
    # The killed holder's lock goes when the server sees its connection close (at once on SQLite):
    # --wait covers that moment, and would hang (and fail) if the lock were never released.
    r = sessctl(store.settings, "purge", "--expired", "--batch-size", "50", "--json", "--wait")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["deleted"] == left, (seed, r.stderr)
    assert snapshot(store) == live  # exactly the live sessions, untouched


# -- a database server that goes away mid-command --------------------------------------------------


class TcpProxy:
    """127.0.0.1:<port> -> a database port. ``cut_after`` chunks of traffic (either way), it
    closes every connection and stops listening: the server is gone. ``chunks`` counts them."""

    def __init__(self, target_port: int, cut_after: int | None = None) -> None:
        self.target = ("127.0.0.1", target_port)
        self.cut_after = cut_after
        self.chunks = 0
        self.cut_done = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # closing a socket does not wake a thread blocked in accept()
        self.port = self._listener.getsockname()[1]
        self._start(self._accept)

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.cut_done.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self.cut_done.is_set():
                    client.close()
                    upstream.close()
                    return
                self._socks += [client, upstream]
            self._start(self._pump, client, upstream)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        other = {a: b, b: a}
        try:
            while not self.cut_done.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        self.chunks += 1
                        cut = self.cut_after is not None and self.chunks >= self.cut_after
                    if cut:
                        self.cut()
                        return
                    other[sock].sendall(data)
        except OSError:
            pass
        finally:
            for sock in (a, b):
                sock.close()

    def cut(self) -> None:
        with self._lock:
            self.cut_done.set()
            self._listener.close()
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(5)
        for sock in self._socks:
            sock.close()

    def url(self, database_url: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)


@contextlib.contextmanager
def proxied(settings, cut_after=None):
    from sqlalchemy.engine import make_url

    proxy = TcpProxy(make_url(settings.database_url).port, cut_after)
    try:
        yield proxy, settings.replace(database_url=proxy.url(settings.database_url))
    finally:
        proxy.close()


SERVER_COMMANDS = {
    "list": ["list", "--all", "--json"],  # a long read, streamed
    "stats": ["stats"],  # a count, then a streamed read
    "set-life": ["set-life", "{key}", "2h"],  # a short read-modify-write
}


@pytest.mark.scenario("database goes away mid-command")
@pytest.mark.parametrize("backend", ["postgres", "mysql"])
@pytest.mark.parametrize("command", list(SERVER_COMMANDS))
def test_server_gone_mid_command_is_one_error_line(store, command):
    fill(store, expired=10, live=10 if command == "set-life" else 1500)
    key = next(iter(store.iter_rows("active"))).key
    args = [a.format(key=key) for a in SERVER_COMMANDS[command]]
    with proxied(store.settings) as (proxy, via):
        r = sessctl(via, *args)
        assert r.returncode == 0, r.stderr
        traffic = proxy.chunks
    assert traffic >= 6, traffic
    for cut in (traffic // 3, 2 * traffic // 3):  # early (around connecting) and late (streaming, writing)
        with proxied(store.settings, cut_after=cut) as (proxy, via):
            r = sessctl(via, *args)
            assert proxy.cut_done.is_set()
        assert r.returncode == 1, (cut, traffic, r.stdout[-300:], r.stderr)
        one_error_line(r.stderr, "Error: cannot reach the database", "127.0.0.1")
        assert "Traceback" not in r.stdout


@pytest.mark.scenario("database goes away mid-purge")
@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_server_gone_mid_purge_is_one_error_line_and_a_rerun_finishes(store):
    live = fill(store, expired=3000, live=50)
    with proxied(store.settings, cut_after=80) as (proxy, via):
        r = sessctl(via, "purge", "--expired", "--batch-size", "1")
        assert proxy.cut_done.is_set()
    assert r.returncode == 1, r.stderr
    one_error_line(r.stderr, "Error: cannot reach the database")
    assert 0 < store.count_expired() < 3000  # it was cut in the middle
    r = sessctl(store.settings, "purge", "--expired")
    assert r.returncode == 0, r.stderr  # the lock died with the cut connection
    assert snapshot(store) == live


# -- SQLite: the file goes away, is read-only, or the disk is full -------------------------------------


def sqlite_path(settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///"))


def wait_for_progress(store, proc, below: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and store.count_expired() >= below:
        time.sleep(0.005)
    assert proc.poll() is None, "purge ended before the fault"


@pytest.mark.scenario("SQLite file goes away mid-purge")
@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("how", ["removed", "replaced", "truncated"])
def test_sqlite_file_removed_replaced_or_truncated_mid_purge(store, how, tmp_path):
    """SQLite keeps working on the file it has open (POSIX semantics): the running command may
    not notice and finish. It never crashes or hangs: exit 0, or one `Error:` line and exit 1;
    and so does the next command, which names the problem when there is one."""
    fill(store, expired=300, live=10)
    path = sqlite_path(store.settings)
    proc = popen(store.settings, "purge", "--expired", "--batch-size", "1")
    wait_for_progress(store, proc, below=297)
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
            impostor = tmp_path / "impostor"
            impostor.write_bytes(b"this is not a database\n" * 200)
            os.replace(impostor, path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1), err
    if proc.returncode:
        one_error_line(err)
    else:
        assert err.startswith("deleted ") and len(err.splitlines()) == 1
    r = sessctl(store.settings, "list")
    if how == "removed":
        assert r.returncode == 1
        one_error_line(r.stderr, "does not exist", "sessctl init")
    elif how == "replaced":
        assert r.returncode == 1
        one_error_line(r.stderr, "not a database")
    elif r.returncode:
        one_error_line(r.stderr)
    else:
        assert "Traceback" not in r.stderr


@contextlib.contextmanager
def immutable(*paths: Path):
    """``chattr +i``: no write, create, delete or rename, for root too. Skips where unsupported."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done = []
    try:
        for path in paths:
            r = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
            if r.returncode:
                pytest.skip(f"cannot make {path} immutable here: {r.stderr.strip()}")
            done.append(path)
        yield
    finally:
        for path in reversed(done):
            subprocess.run(["chattr", "-i", str(path)], check=True)


READS = [["list"], ["stats"], ["show", "{key}"]]
WRITES = [["delete", "{key}"], ["set-life", "{key}", "1h"], ["till-browser-close", "{key}"], ["reset-life", "{key}"],
          ["purge", "--expired"], ["purge", "--all", "--yes"]]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_read_only_sqlite_file(store):
    key = save(store, None, {"user": 1})
    store.create_row(store.codec.encode({"old": 1}), store.now() - timedelta(hours=1))
    store.close()  # a clean close checkpoints the WAL and removes -wal and -shm
    path = sqlite_path(store.settings)
    before = snapshot(store)
    store.close()
    with immutable(path):
        for args in READS:
            r = invoke(store.settings, *[a.format(key=key) for a in args])
            assert r.exit_code == 0, (args, r.output)  # reading a read-only database works
        for args in WRITES:
            r = invoke(store.settings, *[a.format(key=key) for a in args])
            assert r.exit_code == 1, (args, r.output)
            one_error_line(r.stderr, "read-only", "permissions")
        r = sessctl(store.settings, "delete", key)  # and the same from the installed command
        assert r.returncode == 1
        one_error_line(r.stderr, "read-only", "permissions")
    assert snapshot(store) == before


@pytest.mark.parametrize("backend", ["sqlite"])
def test_read_only_sqlite_file_and_folder(store):
    key = save(store, None, {"user": 1})
    store.close()
    path = sqlite_path(store.settings)
    before = snapshot(store)
    store.close()
    with immutable(path, path.parent):
        for args in [*READS, *WRITES]:
            r = invoke(store.settings, *[a.format(key=key) for a in args])
            assert r.exit_code == 1, (args, r.output)
            one_error_line(r.stderr, str(path), "readable and writable")
        r = sessctl(store.settings, "list")
        assert r.returncode == 1
        one_error_line(r.stderr, str(path), "readable and writable")
    assert snapshot(store) == before


@contextlib.contextmanager
def tiny_disk(where: Path, size: str = "512k"):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill_up(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


def test_full_disk_sqlite(tmp_path):
    from sessctl import Settings

    with tiny_disk(tmp_path / "disk") as disk:
        settings = Settings(database_url=f"sqlite:///{disk / 'sessions.db'}", secret_key="full-disk-secret")
        app = SessionStore(settings)
        app.create_table()
        small = save(app, None, {"user": 1})
        big = save(app, None, {"blob": random.Random(0).randbytes(60_000).hex()})
        before = snapshot(app)
        app.close()  # a clean close removes -wal and -shm
        fill_up(disk)
        # SQLite cannot even make its -shm file: every command fails, in one line that names
        # the disk among the things to check.
        for args in (["list"], ["show", small], ["delete", small], ["purge", "--expired"]):
            r = sessctl(settings, *args)
            assert r.returncode == 1, (args, r.stderr)
            one_error_line(r.stderr, "disk is not full")
        os.remove(disk / "filler")
        app = SessionStore(settings)  # the app, running: it keeps the database (and its WAL) open
        try:
            assert load(app, small) == {"user": 1}
            fill_up(disk)
            # A write that needs room: one clear line, exit 1, and the session as it was.
            r = sessctl(settings, "set-life", big, "1h")
            assert r.returncode == 1, r.stderr
            one_error_line(r.stderr, "disk is full")
            assert snapshot(app) == before
        finally:
            app.close()


# -- hostile cookies ---------------------------------------------------------------------------


cookie_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=300)
cookie_latin1 = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
key_like = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=0, max_size=45)


def header_with(junk_before: str, value: str, junk_after: str, sep: str) -> str:
    return f"{junk_before}{sep}sessionid={value}{sep}{junk_after}"


hostile_headers = cookie_text | cookie_latin1 | st.builds(
    header_with, cookie_text, key_like | cookie_text, cookie_text, st.sampled_from([";", "; ", ",", " ", ";;", "="])
)


@hsettings(max_examples=500, deadline=None)
@given(hostile_headers, st.sampled_from(["sessionid", "sid", "__Host-s", "a.b"]))
def test_parse_cookie_never_raises(header, name):
    value = parse_cookie(header, name)
    assert value is None or (isinstance(value, str) and value in header)


@pytest.mark.scenario("hostile Cookie headers")
def test_middleware_never_fails_on_any_cookie_header(store):
    """Arbitrary Cookie headers, on the wire and straight into the WSGI environ: always a 200
    from our code, and a session key is only ever one we made (none from the header)."""
    live = save(store, None, {"user": "known"})

    def view(session, environ):
        name = environ.get("QUERY_STRING") or "x"
        session[name] = session.get(name, 0) + 1
        return {"user": session.get("user")}

    app = SessionMiddleware(routes_app({"/": view}), store=store)

    def check(status, headers, sent: str):
        assert status == 200
        cookies = [v for k, v in headers if k.lower() == "set-cookie"]
        assert len(cookies) == 1
        _, key, _ = cookie_attrs(cookies[0])
        if parse_cookie(sent, "sessionid") == live:
            assert key == live
        else:
            assert KEY_RE.fullmatch(key) and key not in sent and key != live

    with serve(app) as server:

        @hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(st.binary(max_size=400).filter(lambda b: b"\r" not in b and b"\n" not in b)
               | st.builds(lambda a, b: a + f"; sessionid={live}; ".encode() + b, st.binary(max_size=50),
                           st.binary(max_size=50)).filter(lambda b: b"\r" not in b and b"\n" not in b))
        def over_http(raw: bytes):
            r = raw_get(server, "/", cookie=raw)
            sent = raw.decode("latin-1").strip(" \t")
            check(r.status, list(r.headers.items()), sent)

        over_http()

        @hsettings(max_examples=200, deadline=None)
        @given(hostile_headers)
        def in_environ(header: str):
            captured = {}

            def start_response(status, headers, exc_info=None):
                captured.update(status=int(status[:3]), headers=headers)

            body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_COOKIE": header}, start_response))
            assert body
            check(captured["status"], captured["headers"], header)

        in_environ()
        server.assert_no_errors()


# -- hostile session data -------------------------------------------------------------------------


def nest(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = {
    "huge": random.Random(0).randbytes(786432).hex(),  # 1.5 MiB of text that does not compress much
    "non_ascii": "Zoë 日本語 🎉 ß ı",
    "markup": "[/x] [bold]bold?[/bold] [link=https://evil.example]x[/link] [/]",
    "ansi": "\x1b[31mred\x1b[0m \x1b]8;;https://evil.example\x07click\x1b]8;;\x07 \x1b[2J",
    "c1": "\x9b31mred",
    "bidi": "\u202eexe.txt",
    "controls": "bell\x07 nul\x00 cr\roverwrite del\x7f",
    "nested": nest(100),
}
RAW_SEQUENCES = ["\x1b[31mred", "\x1b]8;;https", "\x1b[2J", "\x9b31m", "\u202e", "\x07", "\x00", "\r", "\x7f"]


@pytest.mark.scenario("hostile session data printed")
def test_hostile_data_prints_safely(store):
    key = save(store, None, HOSTILE)
    value = store.get_row(key).session_data
    assert len(value) > 1_000_000
    rich = {"TTY_COMPATIBLE": "1", "COLUMNS": "120"}
    small = save(store, None, {k: v for k, v in HOSTILE.items() if k != "huge"})  # rich wraps 1 MB slowly
    outputs = {
        "show": invoke(store.settings, "show", key),
        "show (terminal)": invoke(store.settings, "show", small, env=rich),
        "decode": invoke(store.settings, "decode", input=value),
        "list": invoke(store.settings, "list"),
        "list (terminal)": invoke(store.settings, "list", env=rich),
    }
    for name, r in outputs.items():
        assert r.exit_code == 0, (name, r.output[-500:])
        for raw in RAW_SEQUENCES:
            assert raw not in r.stdout, (name, raw)
        assert r.stderr == ""
    for name in ("show", "decode"):
        out = outputs[name].stdout
        assert HOSTILE["huge"] in out and HOSTILE["non_ascii"] in out and HOSTILE["markup"] in out
        assert "\\u001b[31mred" in out and "\\u009b31mred" in out and "\\u202eexe.txt" in out
    assert "[/x] [bold]bold?[/bold]" in outputs["show (terminal)"].stdout  # shown, never read as markup
    for args in (["show", key, "--json"], ["decode", "--json"]):
        r = invoke(store.settings, *args, input=value)
        assert r.exit_code == 0, r.output[-500:]
        assert json.loads(r.stdout)["data"] == HOSTILE  # --json is exact
        assert all(raw not in r.stdout for raw in RAW_SEQUENCES)
    listed = json.loads(invoke(store.settings, "list", "--json").stdout)
    assert {i["key"]: i["size"] for i in listed}[key] == len(value)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_hostile_session_key_in_the_table_prints_safely(store):
    """A row put in by hand with escapes in its key: list shows them escaped, never raw."""
    evil = "\x1b[2J\x9b\u202ek"
    store.insert_row(evil, store.codec.encode({"u": 1}), store.now() + timedelta(hours=1))
    for env in ({}, {"TTY_COMPATIBLE": "1", "COLUMNS": "120"}):
        r = invoke(store.settings, "list", env=env)
        assert r.exit_code == 0, r.output
        assert not any(c in r.stdout for c in ("\x1b[2J", "\x9b", "\u202e"))
        assert "\\x1b[2J" in r.stdout or "\\x1b" in r.stdout
    assert json.loads(invoke(store.settings, "list", "--json").stdout)[0]["key"] == evil


@pytest.mark.parametrize("backend", ["sqlite"])
def test_non_ascii_data_on_a_narrow_output_encoding(store):
    """stdout in latin-1 (an old locale): what it cannot hold is written as JSON escapes."""
    key = save(store, None, {"name": "Zoë 日本語 🎉"})
    s = store.settings
    r = CliRunner(charset="latin-1").invoke(
        cli, ["--db", s.database_url, "--table", s.table, "show", key], env={"SESSCTL_SECRET_KEY": s.secret_key}
    )
    assert r.exit_code == 0, r.output
    assert '"name": "Zo\xeb \\u65e5\\u672c\\u8a9e \\ud83c\\udf89"'.encode("latin-1") in r.stdout_bytes


# -- data nested deeper than Python's JSON goes -----------------------------------------------------


def too_deep_for_here() -> list:
    return nest(sys.getrecursionlimit() + 50)


def signed_by_a_deeper_peer(codec: Codec, value) -> str:
    """What a peer with a higher recursion limit (Django with sys.setrecursionlimit raised) writes."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(old * 20)
    try:
        return codec.encode({"deep": value})
    finally:
        sys.setrecursionlimit(old)


def test_a_value_nested_too_deeply_is_a_type_error_naming_its_key():
    """As for any value JSON (here: Python's json) cannot hold: TypeError naming the key."""
    with pytest.raises(TypeError, match="'deep'"):
        Codec("s").encode({"ok": 1, "deep": too_deep_for_here()})


def test_json_nested_too_deeply_is_the_codecs_own_error():
    codec = Codec("s")
    value = signed_by_a_deeper_peer(codec, too_deep_for_here())
    with pytest.raises(CodecError):
        codec.decode(value)
    with pytest.raises(CodecError):
        decode_unverified(value)


def test_a_view_storing_too_deep_data_leaves_the_session_as_it_was(store):
    def v_deep(session, environ):
        session["deep"] = too_deep_for_here()

    def v_read(session, environ):
        return {"data": dict(session)}

    app = SessionMiddleware(routes_app({"/deep": v_deep, "/read": v_read, "/login": lambda s, e: s.update(user="1")}),
                            store=store)
    with serve(app) as server:
        client = Client(server)
        client.get("/login")
        key = client.cookie_value()
        before = snapshot(store)
        r = client.get("/deep")
        assert r.status == 500 and r.set_cookies == []  # the app's own bad value: its error
        assert len(server.errors) == 1
        server.errors.clear()
        assert snapshot(store) == before
        assert client.get("/read").json() == {"data": {"user": "1"}}
        assert client.cookie_value() == key
        server.assert_no_errors()


@pytest.mark.scenario("JSON too deep to parse, in the app")
def test_a_row_too_deep_to_parse_is_a_fresh_session_not_a_500(store):
    """Signed with our key but deeper than this process parses: not trusted, never a crash."""
    key = store.create_row(signed_by_a_deeper_peer(store.codec, nest(5000)), store.now() + timedelta(hours=1))

    def v_read(session, environ):
        return {"data": dict(session), "key": session.session_key}

    with serve(SessionMiddleware(routes_app({"/read": v_read}), store=store)) as server:
        r = raw_get(server, "/read", cookie=f"sessionid={key}")
        errors = list(server.errors)
        server.errors.clear()
    assert errors == [] and r.status == 200
    assert r.json() == {"data": {}, "key": None}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_commands_on_data_nested_too_deeply_give_one_clear_line(store):
    value = signed_by_a_deeper_peer(store.codec, nest(5000))
    key = store.create_row(value, store.now() + timedelta(hours=1))
    for args, input in ((["show", key], None), (["show", key, "--json"], None), (["decode"], value),
                        (["decode", "--no-verify"], value), (["set-life", key, "1h"], None)):
        r = invoke(store.settings, *args, input=input)
        assert r.exit_code == 1, (args, r.output[-300:])
        one_error_line(r.stderr, "cannot be decoded", "nested too deeply")
    for args in (["list", "--json"], ["stats", "--json"]):
        r = invoke(store.settings, *args)
        assert r.exit_code == 0, r.output
    assert json.loads(invoke(store.settings, "list", "--json").stdout)[0]["lifetime"] == {"kind": "unreadable"}
