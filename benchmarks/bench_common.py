"""Shared helpers for the benchmarks: results, logging, data, drivers, subprocesses.

Nothing here times anything by itself; the ``section_*`` modules do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = sys.executable
UTC = timezone.utc

# Every benchmark signs with this key: the runtime, the app load and Django all
# decode the rows the builders write.
SECRET = "sessctl-benchmark-secret-key-not-for-production-0123456789abcdef"
COOKIE_AGE = 1209600

BACKENDS = ("sqlite", "postgres", "mysql")
ENV_URL = {"postgres": "SESSCTL_TEST_POSTGRES", "mysql": "SESSCTL_TEST_MYSQL"}
LABEL = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MariaDB"}

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# -- results -----------------------------------------------------------------


@dataclass
class Row:
    """One line of the final table.

    ``kind`` says how ours compares to the baseline: "ratio" (ours / baseline,
    higher is better), "inverse" (lower is better, ratio still ours / baseline),
    "delta" (ours - baseline, in the unit), or "info" (no comparison). A delta measured in
    interleaved rounds gives ``paired``: the median of the per-round differences, which the
    ratio column shows (on a machine whose speed swings from one run to the next, a median of
    differences is steadier than a difference of medians).
    """

    section: str
    scenario: str
    ours: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    kind: str = "ratio"
    target: str = "—"
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    paired: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.kind == "delta" and self.paired is not None:
            return self.paired
        if self.kind == "info" or self.ours is None or self.baseline in (None, 0):
            return None
        if self.kind == "delta":
            return self.ours - self.baseline
        return self.ours / self.baseline

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.failures: list[str] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        log(f"  -> {row.scenario}: {fmt_value(row.ours, row.unit)}"
            + (f" vs {fmt_value(row.baseline, row.unit)}" if row.baseline is not None else "")
            + (f" [{row.note}]" if row.note else ""))
        return row

    def note(self, text: str) -> None:
        log(f"note: {text}")
        self.notes.append(text)

    def fail(self, text: str) -> None:
        log(f"CORRECTNESS FAILURE: {text}")
        self.failures.append(text)


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("req/s", "rows/s"):
        if value >= 100_000:
            return f"{value / 1000:,.0f}k {unit}"
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "queries":
        return f"{value:.2f}"
    return f"{value:g} {unit}"


def fmt_ratio(row: Row) -> str:
    r = row.ratio
    if r is None:
        return "—"
    if row.kind == "delta":
        return f"{r:+,.0f} {row.unit}" if abs(r) >= 10 else f"{r:+.1f} {row.unit}"
    return f"{r:.2f}×"


def render_table(rows: list[Row]) -> str:
    head = ["scenario", "ours", "baseline", "ratio", "target", "met?"]
    body = []
    for r in rows:
        base = fmt_value(r.baseline, r.unit) if r.baseline is not None else "—"
        if r.baseline_label:
            base = f"{base} ({r.baseline_label})"
        met = {True: "yes", False: "NO", None: "—"}[r.met]
        scen = r.scenario + (f" [{r.note}]" if r.note else "")
        body.append([scen, fmt_value(r.ours, r.unit), base, fmt_ratio(r), r.target, met])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    return "\n".join(out)


# -- statistics -------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- machine ------------------------------------------------------------------------


def machine_info(urls: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "mem_gib": _mem_gib(),
        "kernel": platform.release(),
        "loadavg_start": _loadavg(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    for mod in ("sqlalchemy", "django", "psycopg", "pymysql"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", None) or getattr(m, "VERSION", None)
        except Exception:  # pragma: no cover - optional
            info[mod] = None
    if "postgres" in urls:
        try:
            with raw_connect("postgres", urls["postgres"]) as conn:
                info["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
        except Exception as exc:
            info["postgres"] = f"unreachable: {exc}"
    if "mysql" in urls:
        try:
            conn = raw_connect("mysql", urls["mysql"])
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION(), @@innodb_buffer_pool_size, @@tx_isolation")
                v, pool, iso = cur.fetchone()
            conn.close()
            info["mysql"] = f"{v} (buffer pool {int(pool) // 2**20} MiB, {iso})"
        except Exception as exc:
            info["mysql"] = f"unreachable: {exc}"
    info["sessctl_commit"] = sessctl_commit()
    return info


def sessctl_commit() -> str | None:
    """HEAD of the repository (+dirty when tracked files differ), read without taking git's locks."""
    try:
        env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        rev, dirty = "unknown", ""
    # The code actually imported is the working tree: fingerprint it too.
    digest = hashlib.sha1()
    for path in sorted((REPO / "sessctl").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return f"{rev}{'+dirty' if dirty else ''} (tree {digest.hexdigest()[:8]})"


def _loadavg() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


# -- data -------------------------------------------------------------------------


def payload_pool(n: int = 64, seed: int = 1) -> list[str]:
    """Realistic encoded ``session_data`` values (a logged-in Django user, ~200 bytes)."""
    from sessctl.codec import Codec

    codec = Codec(SECRET)
    rng = random.Random(seed)
    pool = []
    for i in range(n):
        data: dict[str, Any] = {
            "_auth_user_id": str(rng.randint(1, 10**6)),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": rng.randbytes(32).hex(),
        }
        if i % 2:
            data["cart"] = [rng.randint(1, 9999) for _ in range(rng.randint(1, 3))]
        pool.append(codec.encode(data, timestamp=1_700_000_000 + i))
    return pool


def key_digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


@dataclass
class DataSet:
    """The rows a purge trial starts from (regenerated deterministically from the seed)."""

    n: int
    t_build: float  # Unix time the expiry dates are relative to
    seed: int = 7
    live: int = 0
    expired: int = 0
    live_checksum: int = 0  # sum of key_digest(live keys) mod 2**64
    app_keys: list[str] = field(default_factory=list)
    mean_data_len: float = 0.0

    def chunks(self, chunk: int = 50_000) -> Iterator[list[tuple[str, str, bool, datetime]]]:
        """Rows (key, session_data, expired, naive UTC expire_date), half expired, interleaved.

        Keys are 32 random characters of [a-z2-7] (base32 of random bytes),
        so expired and live rows interleave in key order and in insertion order.
        """
        rng = random.Random(self.seed)
        pool = payload_pool()
        base = datetime.fromtimestamp(self.t_build, UTC).replace(tzinfo=None)
        for start in range(0, self.n, chunk):
            m = min(chunk, self.n - start)
            keys = base64.b32encode(rng.randbytes(20 * m)).decode("ascii").lower()
            rows = []
            for j in range(m):
                expired = (start + j) % 2 == 0
                if expired:  # 1 minute to 30 days ago
                    offset = -rng.uniform(60, 30 * 86400)
                else:  # 1 to 14 days ahead: stays live for the whole run
                    offset = rng.uniform(86400, 14 * 86400)
                rows.append((keys[32 * j: 32 * j + 32], pool[rng.randrange(len(pool))], expired,
                             base + timedelta(seconds=round(offset, 6))))
            yield rows

    def summarise(self, app_sessions: int = 1000) -> None:
        """Count live/expired rows, checksum the live keys, pick the app's sessions."""
        live = expired = 0
        checksum = 0
        total_len = 0
        live_keys_seen = 0
        step = max(1, (self.n // 2) // app_sessions)
        app_keys = []
        for rows in self.chunks():
            for key, data, is_expired, _ in rows:
                total_len += len(data)
                if is_expired:
                    expired += 1
                else:
                    live += 1
                    checksum = (checksum + key_digest(key)) % 2**64
                    if live_keys_seen % step == 0 and len(app_keys) < app_sessions:
                        app_keys.append(key)
                    live_keys_seen += 1
        self.live, self.expired, self.live_checksum = live, expired, checksum
        self.app_keys = app_keys
        self.mean_data_len = total_len / max(1, self.n)


def sqlite_text(moment: datetime) -> str:
    """Django's SQLite form: naive UTC, fraction only when non-zero."""
    return str(moment.replace(tzinfo=None))


# -- backends and drivers -----------------------------------------------------------


def backend_urls(requested: list[str], results: Results) -> dict[str, str]:
    """The database URL of each requested server backend (SQLite files are made per use)."""
    urls = {}
    for b in requested:
        if b == "sqlite":
            continue
        url = os.environ.get(ENV_URL[b])
        if not url:
            results.note(f"{LABEL[b]} skipped: ${ENV_URL[b]} is not set "
                         "(eval \"$(scripts/test-databases.sh)\" exports it)")
            continue
        try:
            conn = raw_connect(b, url)
            conn.close()
        except Exception as exc:
            results.note(f"{LABEL[b]} skipped: cannot connect to {redact(url)}: {exc}")
            continue
        urls[b] = url
    return urls


def sqlite_url(path: Path | str) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _parts(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return {"host": u.host or "127.0.0.1", "port": u.port, "user": u.username or "",
            "password": u.password or "", "database": u.database or ""}


def raw_connect(backend: str, url: str, **kw: Any) -> Any:
    """A plain DB-API connection (sqlite3 / psycopg / PyMySQL) for ``url``."""
    if backend == "sqlite":
        path = url.split(":///", 1)[1] if "://" in url else url
        conn = sqlite3.connect(path, timeout=kw.pop("timeout", 10.0), **kw)
        return conn
    p = _parts(url)
    if backend == "postgres":
        import psycopg

        return psycopg.connect(host=p["host"], port=p["port"] or 5432, user=p["user"],
                               password=p["password"] or None, dbname=p["database"], **kw)
    if backend == "mysql":
        import pymysql

        return pymysql.connect(host=p["host"], port=p["port"] or 3306, user=p["user"],
                               password=p["password"], database=p["database"], charset="utf8mb4", **kw)
    raise ValueError(backend)


def dialect_of(backend: str) -> str:
    return {"sqlite": "sqlite", "postgres": "postgresql", "mysql": "mysql"}[backend]


def quote(backend: str, name: str) -> str:
    return f"`{name}`" if backend == "mysql" else f'"{name}"'


def ddl(backend: str, table: str) -> list[str]:
    """Django's DDL for a session table (sessctl's own copy of it): table first, then indexes."""
    from sessctl.model import create_statements

    return create_statements(dialect_of(backend), table, lambda n: quote(backend, n))


def drop_table(backend: str, url: str, table: str) -> None:
    conn = raw_connect(backend, url)
    try:
        if backend == "postgres":
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        elif backend == "mysql":
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        else:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.commit()
    finally:
        conn.close()


def param(backend: str) -> str:
    return "?" if backend == "sqlite" else "%s"


def db_value(backend: str, moment: datetime) -> Any:
    """An aware UTC datetime as each driver should bind it for the session table."""
    moment = moment.astimezone(UTC)
    if backend == "sqlite":
        return sqlite_text(moment)
    if backend == "mysql":
        return moment.replace(tzinfo=None)
    return moment


# -- subprocesses -----------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no SESSCTL_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSCTL_")}
    env.setdefault("PYTHONHASHSEED", "0")
    env.update(extra)
    return env


@dataclass
class ChildResult:
    returncode: int
    wall: float
    maxrss_mb: float
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        text = self.stdout.strip()
        start = text.find("{")
        if start >= 0:  # one (possibly pretty-printed) object
            try:
                return json.loads(text[start:])
            except ValueError:
                pass
        for line in reversed(text.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        raise ValueError(f"no JSON in the child's output: {self.stdout[-500:]!r} / {self.stderr[-500:]!r}")


def _kill_group(pid: int) -> None:
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)  # the group of our own child (launcher and command)
    except OSError:  # gone already; or not ours to kill: then the plain kill below
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def run_child(argv: list[str], *, cwd: Path | str | None = None, env: dict[str, str] | None = None,
              timeout: float = 1800.0, rss: bool = False) -> ChildResult:
    """Run a child to completion and time it (wall clock, from this process).

    With ``rss`` the child is started through ``rusage_exec.py``, which reads
    its true peak RSS with wait4() and times it from fork to exit.
    """
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(suffix=".json") as usage_file:
        full = [PYTHON, str(HERE / "rusage_exec.py"), usage_file.name, "--", *argv] if rss else argv
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, cwd=cwd, env=env if env is not None else clean_env(),
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        # A blocking wait, with a timer for the timeout: Popen.wait(timeout=...) polls, sleeping up
        # to 50 ms between polls, which rounded every time measured here up to its schedule.
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        code, maxrss = proc.returncode, 0.0
        if rss:
            try:
                usage = json.loads(Path(usage_file.name).read_text())
                code, wall, maxrss = usage["returncode"], usage["wall"], usage["maxrss_kb"] / 1024.0
            except (OSError, ValueError, KeyError):
                code = code or -1
        out.seek(0)
        err.seek(0)
        return ChildResult(code, wall, maxrss, out.read().decode(errors="replace"),
                           err.read().decode(errors="replace"))


def sessctl_exe() -> str | None:
    """The ``sessctl`` console script next to this interpreter (or on PATH)."""
    cand = Path(sys.executable).parent / "sessctl"
    if cand.exists():
        return str(cand)
    return shutil.which("sessctl")


def byte_compile_package() -> None:
    """Write the package's ``.pyc`` files, as installing a wheel does.

    An editable install (``pip install -e .``, what the README and CI use) never byte-compiles
    the checkout, and where ``PYTHONDONTWRITEBYTECODE`` is set (it is on our machines) Python
    never writes them either: every command would then compile ~40 modules from source
    (~70 ms on this machine), a cost no installed copy pays. Python still reads ``.pyc`` files
    under that setting, so compiling once here measures what users run."""
    import compileall

    compileall.compile_dir(str(REPO / "sessctl"), quiet=1)


def cli_status(workdir: Path) -> tuple[str | None, str]:
    """(path to sessctl, "") when the command works, else (None, why not)."""
    exe = sessctl_exe()
    if exe is None:
        return None, "no sessctl console script is installed"
    if not (REPO / "sessctl" / "cli").exists() and not (REPO / "sessctl" / "cli.py").exists():
        return None, "sessctl/cli does not exist yet"
    byte_compile_package()
    r = run_child([exe, "--help"], cwd=workdir, timeout=60)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"`sessctl --help` exits {r.returncode}: {last[:160]}"
    return exe, ""


def last_line(text: str) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:200] if lines else ""
