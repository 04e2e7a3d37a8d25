"""Section ``purge``: purge vs one raw DELETE, with a live app beside it, on each backend.

For each backend, every trial starts from an identical copy of the same table
(N rows, half expired, interleaved), and runs with the same concurrent app
load (``worker_appload.py``: ~200 requests/s through the real middleware,
reading and writing live sessions of that table). Trials:

* ``raw``: one ``DELETE ... WHERE expire_date < now`` (``worker_purge.py --mode raw``);
* ``store``: ``SessionStore.purge_expired()`` (``worker_purge.py --mode store``);
* ``cli``: ``sessctl purge --expired --json``, once the command exists.

Each purger is a child process whose peak RSS is read with wait4(). The app's
latencies before the purge starts are the "no purge" baseline. After each
trial the table must hold exactly the live rows (count, no expired row left,
checksum of the keys).
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from pathlib import Path

from bench_common import (
    HERE,
    LABEL,
    PYTHON,
    Row,
    clean_env,
    drop_table,
    last_line,
    log,
    percentile,
    run_child,
    sqlite_url,
)
from bench_data import (
    build_server_template,
    copy_sqlite,
    make_trial_table,
    remove_sqlite,
    verify_purged,
)

TABLE = "bench_purge"
TEMPLATE = "bench_purge_tpl"
RATE = 200.0
THREADS = 8
RATIO_TARGET = {"sqlite": 0.8, "postgres": 0.8, "mysql": 0.5}
MEMORY_LIMIT_MB = 100.0


def run(ctx) -> None:
    ds = ctx.dataset()
    keys_file = ctx.workdir / "app_keys.json"
    keys_file.write_text(json.dumps(ds.app_keys))
    for b in ctx.backends:
        if b != "sqlite" and b not in ctx.urls:
            continue
        try:
            _backend(ctx, b, ds, keys_file)
        finally:
            if b != "sqlite":
                for t in (TABLE, TEMPLATE):
                    try:
                        drop_table(b, ctx.urls[b], t)
                    except Exception as exc:  # pragma: no cover
                        ctx.results.note(f"could not drop {t} on {LABEL[b]}: {exc}")


def _backend(ctx, b: str, ds, keys_file: Path) -> None:
    res = ctx.results
    L = LABEL[b]
    if b == "sqlite":
        template = ctx.sqlite_template()
    else:
        t0 = time.perf_counter()
        log(f"purge {L}: building the {ds.n:,}-row template table {TEMPLATE}")
        build_server_template(b, ctx.urls[b], ds, TEMPLATE)
        log(f"purge {L}: template built in {time.perf_counter() - t0:.1f} s")
    modes = ["raw", "store"]
    exe, why = ctx.cli()
    if exe is not None:
        modes.append("cli")
    else:
        res.note(f"purge {L}: `sessctl purge --expired` not measured, the CLI is not ready ({why})")
    rounds = getattr(ctx, "repeat", 1)
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    order = list(modes)
    for rnd in range(rounds):
        if rnd:  # interleaved: each round in another order, so drift on the machine hits every mode
            order = order[1:] + order[:1]
        for mode in order:
            t0 = time.perf_counter()
            if b == "sqlite":
                path = ctx.workdir / f"purge_{mode}.db"
                copy_sqlite(template, path)
                target, raw_target = sqlite_url(path), str(path)
            else:
                make_trial_table(b, ctx.urls[b], TEMPLATE, TABLE)
                target = raw_target = ctx.urls[b]
            log(f"purge {L} {mode} (round {rnd + 1}/{rounds}): table ready in {time.perf_counter() - t0:.1f} s; "
                "starting the app load")
            trial = _trial(ctx, b, mode, target, keys_file, exe)
            runs[mode].append(trial)
            problems = verify_purged(b, raw_target, TABLE, ds)
            if trial.get("error"):
                res.fail(f"purge {L} {mode}: the purge failed: {trial['error']}")
            elif problems:
                res.fail(f"purge {L} {mode}: wrong rows left: " + "; ".join(problems))
            elif trial["deleted"] != ds.expired:
                res.note(f"purge {L} {mode}: reported {trial['deleted']} deleted for {ds.expired} expired rows")
            if b == "sqlite":
                remove_sqlite(path)
            log(f"purge {L} {mode}: {trial.get('deleted')} rows in {trial.get('seconds', 0):.2f} s; app during: "
                f"p50 {_ms(trial['during_p50'])} p99 {_ms(trial['during_p99'])} errors {trial['errors']} "
                f"(n={trial['during_n']}); peak RSS {trial.get('maxrss_mb', 0):.1f} MB"
                + (f"; WAL peak {trial['wal_peak_mb']:.0f} MB" if trial.get("wal_peak_mb") is not None else ""))
    trials = {mode: _median_trial(t) for mode, t in runs.items()}

    # The "no purge" baseline pools the app's latencies before every trial's purge started.
    pre = [lat for t in trials.values() for lat in t["pre_latencies"]]
    base_p99 = percentile(pre, 99)
    base_p50 = percentile(pre, 50)
    raw = trials["raw"]
    raw_rps = raw.get("rps")
    target_ratio = RATIO_TARGET[b]
    res.add(Row("purge", f"{L}: app p99 with no purge running (baseline)", base_p99, "ms", kind="info",
                note=f"p50 {_ms(base_p50)}, {len(pre)} requests at {RATE:g}/s"))
    res.add(Row("purge", f"{L}: app p99 during one raw DELETE (context)", raw["during_p99"], "ms",
                baseline=base_p99, baseline_label="no purge", kind="inverse", target="report",
                note=_app_note(raw)))
    res.add(Row("purge", f"{L}: one raw DELETE (the baseline purge)", raw_rps, "rows/s", kind="info",
                note=_purge_note(raw, ds, "statement + commit")))
    for mode, label in (("store", "purge_expired()"), ("cli", "`sessctl purge --expired`")):
        if mode not in trials:
            continue
        t = trials[mode]
        ours = t.get("rps")
        ratio = ours / raw_rps if ours and raw_rps else None
        how = "wall time incl. start-up" if mode == "cli" else "in-process time"
        res.add(Row("purge", f"{L}: {label} rows/s vs one raw DELETE", ours, "rows/s", baseline=raw_rps,
                    baseline_label="raw DELETE", target=f"≥ {target_ratio}×",
                    met=None if ratio is None else ratio >= target_ratio,
                    note=_purge_note(t, ds, how),
                    extra={k: v for k, v in t.items() if k not in ("pre_latencies",)}))
        p99 = t["during_p99"]
        if b == "sqlite":
            met = None if p99 is None else (p99 <= 50 and t["errors"] == 0)
            tgt = "≤ 50 ms, 0 errors"
        else:
            met = None if p99 is None or base_p99 is None else (p99 <= 2 * base_p99 and t["errors"] == 0)
            tgt = "≤ 2×, 0 errors"
        res.add(Row("purge", f"{L}: app p99 during {label}", p99, "ms", baseline=base_p99,
                    baseline_label="no purge", kind="inverse", target=tgt, met=met, note=_app_note(t)))
        rss = t.get("maxrss_mb")
        res.add(Row("purge", f"{L}: peak RSS of the {label} process", rss, "MB", baseline=raw.get("maxrss_mb"),
                    baseline_label="raw DELETE process", kind="inverse", target=f"≤ {MEMORY_LIMIT_MB:g} MB",
                    met=None if rss is None else rss <= MEMORY_LIMIT_MB))


def _median_trial(runs: list[dict]) -> dict:
    """One trial's figures from several: medians of rates and latencies, sums of errors, the worst RSS and WAL."""
    from bench_common import median

    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for key in ("rps", "seconds", "reported_seconds", "during_p50", "during_p99", "batches", "deleted"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        out[key] = median(vals) if vals else None
        if key in ("batches", "deleted") and out[key] is not None:
            out[key] = round(out[key])
    for key in ("maxrss_mb", "wal_peak_mb", "during_max"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        out[key] = max(vals) if vals else None
    out["errors"] = sum(r["errors"] for r in runs)
    out["during_n"] = sum(r["during_n"] for r in runs)
    kinds: dict[str, int] = {}
    for r in runs:
        for k, n in r["error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + n
    out["error_kinds"] = kinds
    out["pre_latencies"] = [lat for r in runs for lat in r["pre_latencies"]]
    out["rounds"] = len(runs)
    out["round_rps"] = [r.get("rps") for r in runs]
    out["round_p99"] = [r.get("during_p99") for r in runs]
    if any(r.get("error") for r in runs):
        out["error"] = next(r["error"] for r in runs if r.get("error"))
    return out


def _purge_note(t: dict, ds, how: str) -> str:
    note = f"{t.get('deleted', 0):,} of {ds.n:,} rows in {t.get('seconds', 0):.1f} s ({how})"
    if t.get("batches") is not None:
        note += f", {t['batches']} batch" + ("es" if t["batches"] != 1 else "")
    if t.get("reported_seconds") is not None:
        note += f"; command's own timer {t['reported_seconds']:.1f} s"
    if t.get("wal_peak_mb") is not None:
        note += f"; WAL peak {t['wal_peak_mb']:.0f} MB"
    if t.get("rounds"):
        note += f"; median of {t['rounds']} rounds: " + ", ".join(f"{r / 1000:.0f}k" for r in t["round_rps"] if r)
    return note


def _ms(v) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"


def _app_note(t: dict) -> str:
    note = f"p50 {_ms(t['during_p50'])}, {t['during_n']} requests, {t['errors']} errors"
    if t.get("rounds"):
        note += "; p99 per round " + ", ".join(_ms(p) for p in t["round_p99"])
    if t["error_kinds"]:
        top = sorted(t["error_kinds"].items(), key=lambda kv: -kv[1])[:2]
        note += "; " + "; ".join(f"{n}× {k[:70]}" for k, n in top)
    return note


def _trial(ctx, b: str, mode: str, target: str, keys_file: Path, exe: str | None) -> dict:
    baseline_s = 1.0 if ctx.quick else 5.0
    tail_s = 0.5
    out_file = ctx.workdir / f"appload_{b}_{mode}.json"
    err_file = open(ctx.workdir / f"appload_{b}_{mode}.err", "w+")
    app = subprocess.Popen(
        [PYTHON, str(HERE / "worker_appload.py"), "--target", target, "--table", TABLE, "--keys", str(keys_file),
         "--rate", str(RATE), "--threads", str(THREADS), "--out", str(out_file)],
        cwd=ctx.workdir, env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_file, text=True)
    trial: dict = {}
    try:
        if _readline(app, 120) != "ready":
            err_file.seek(0)
            raise RuntimeError(f"the app load did not start: {last_line(err_file.read())}")
        t_ready = time.monotonic()
        time.sleep(baseline_s)
        t_start = time.monotonic()
        if mode == "cli":
            argv = [exe, "--db", target, "--table", TABLE, "purge", "--expired", "--json"]
        else:
            argv = [PYTHON, str(HERE / "worker_purge.py"), "--mode", mode, "--backend", b, "--target", target,
                    "--table", TABLE]
        wal = _WalWatch(target) if b == "sqlite" else None
        try:
            r = run_child(argv, cwd=ctx.workdir, env=clean_env(), timeout=1800, rss=True)
        finally:
            if wal is not None:
                trial["wal_peak_mb"] = wal.stop()
        t_end = time.monotonic()
        time.sleep(tail_s)
        trial["maxrss_mb"] = r.maxrss_mb
        trial["wall"] = r.wall
        if r.returncode != 0:
            trial["error"] = f"exit {r.returncode}: {last_line(r.stderr) or last_line(r.stdout)}"
        else:
            try:
                out = r.json()
                trial["deleted"] = int(out.get("deleted", 0))
                trial["batches"] = out.get("batches")
                trial["complete"] = out.get("complete")
                trial["seconds"] = r.wall if mode == "cli" else float(out["seconds"])
                if mode == "cli":
                    trial["reported_seconds"] = out.get("seconds")
                trial["rps"] = trial["deleted"] / trial["seconds"] if trial["seconds"] > 0 else None
            except (ValueError, KeyError) as exc:
                trial["error"] = f"unreadable output: {exc}"
    finally:
        try:
            app.stdin.write("stop\n")
            app.stdin.flush()
            app.stdin.close()
        except OSError:
            pass
        done = _readline(app, 180)
        if done != "done":
            app.kill()  # our own child, by its handle
        app.wait()
        err_file.close()
    records = json.loads(out_file.read_text()) if out_file.exists() else []
    out_file.unlink(missing_ok=True)
    pre = [lat * 1000 for due, lat, err in records if t_ready + 0.2 <= due < t_start]
    during = [(lat * 1000, err) for due, lat, err in records if t_start <= due <= t_end]
    after = [(lat * 1000, err) for due, lat, err in records if t_end < due]
    errors = [e for _, e in during + after if e]
    kinds: dict[str, int] = {}
    for e in errors:
        kinds[e] = kinds.get(e, 0) + 1
    lat = [l for l, _ in during]
    trial.update({
        "pre_latencies": pre,
        "during_n": len(during),
        "during_p50": percentile(lat, 50),
        "during_p99": percentile(lat, 99),
        "during_max": max(lat) if lat else None,
        "errors": len(errors),
        "error_kinds": kinds,
        "pre_errors": sum(1 for due, _, err in records if err and due < t_start),
    })
    if trial["pre_errors"]:
        ctx.results.note(f"purge {LABEL[b]} {mode}: the app had {trial['pre_errors']} errors before the purge started")
    return trial


class _WalWatch:
    """The largest size the SQLite file's -wal reaches while a purge runs (sampled every 20 ms)."""

    def __init__(self, url: str) -> None:
        import threading

        self.path = url.split(":///", 1)[1] + "-wal"
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import os

        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, os.path.getsize(self.path))
            except OSError:
                pass
            self._stop.wait(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def _readline(proc: subprocess.Popen, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                return None
            return line.strip()
        if proc.poll() is not None:
            line = proc.stdout.readline()
            return line.strip() if line else None
    return None
