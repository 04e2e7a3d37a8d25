"""Section ``runtime``: requests/s through sessctl's middleware, Django's, and the raw driver.

Every variant runs in its own child process (``worker_runtime.py``), calling
the WSGI app in-process with a prepared environ; the variants alternate in a
shuffled order, round after round, and each round starts from a fresh copy of
the same 1,000 sessions. After each run the counters stored in the sessions
must add up to the number of requests made (no lost or unsaved update).
"""

from __future__ import annotations

import json
import random

from bench_common import HERE, LABEL, PYTHON, Row, last_line, log, median, run_child, sqlite_url
from bench_data import make_runtime_table, remove_sqlite, runtime_keys, sum_counter

SESSIONS = 1000
TABLE = "bench_rt_session"

# (impl, scenario) per backend
SQLITE_VARIANTS = [
    ("sessctl", "modify"), ("django", "modify"), ("django-stock", "modify"), ("raw", "modify"),
    ("sessctl", "untouched"), ("django", "untouched"), ("bare", "untouched"),
]
SERVER_VARIANTS = [("sessctl", "modify"), ("django", "modify"), ("raw", "modify")]


def run(ctx) -> None:
    res = ctx.results
    keys = runtime_keys(SESSIONS)
    keys_file = ctx.workdir / "runtime_keys.json"
    keys_file.write_text(json.dumps(keys))
    rounds, seconds, warmup = (1, 0.5, 100) if ctx.quick else (3, 2.0, 300)

    plan = []  # (backend, impl, scenario)
    for b in ctx.backends:
        if b == "sqlite":
            plan += [("sqlite", i, s) for i, s in SQLITE_VARIANTS]
        elif b in ctx.urls:
            plan += [(b, i, s) for i, s in SERVER_VARIANTS]
    rps: dict[tuple, list[float]] = {p: [] for p in plan}
    qpr: dict[tuple, float] = {}
    failed: dict[tuple, str] = {}
    rng = random.Random(4)
    for rnd in range(rounds):
        order = list(plan)
        rng.shuffle(order)
        for b, impl, scen in order:
            if (b, impl, scen) in failed:
                continue
            if b == "sqlite":
                path = ctx.workdir / f"rt_{impl}_{scen}.db"
                make_runtime_table("sqlite", str(path), TABLE, keys,
                                   journal="DELETE" if impl == "django-stock" else "WAL")
                target = sqlite_url(path)
                raw_target = str(path)
                table = TABLE
            else:
                target = raw_target = ctx.urls[b]
                table = f"bench_rt_{impl.replace('-', '_')}"
                make_runtime_table(b, target, table, keys)
            r = run_child([PYTHON, str(HERE / "worker_runtime.py"), "--impl", impl, "--scenario", scen,
                           "--backend", b, "--target", target, "--table", table, "--keys", str(keys_file),
                           "--seconds", str(seconds), "--warmup", str(warmup)],
                          cwd=ctx.workdir, timeout=300)
            if r.returncode != 0:
                why = last_line(r.stderr) or last_line(r.stdout)
                failed[(b, impl, scen)] = why
                msg = f"runtime {LABEL[b]} {impl}/{scen}: worker failed: {why}"
                if impl in ("sessctl", "bare"):
                    res.fail(msg)
                else:
                    res.note(msg)
                continue
            out = r.json()
            total, rows = sum_counter(b, raw_target, table)
            expected = out["requests"] if scen == "modify" else 0
            if impl == "bare":
                expected = 0
            if total != expected or rows != SESSIONS:
                res.fail(f"runtime {LABEL[b]} {impl}/{scen}: the sessions' counters add up to {total} "
                         f"over {rows} rows, expected {expected} over {SESSIONS} (lost or unsaved updates)")
            rps[(b, impl, scen)].append(out["rps"])
            qpr[(b, impl, scen)] = out["statements_per_request"]
            spr = out["statements_per_request"]
            log(f"runtime {LABEL[b]} {impl}/{scen} round {rnd + 1}: {out['rps']:,.0f} req/s"
                + (f", {spr:.2f} SQLite statements/request" if spr is not None else ""))
            if b == "sqlite":
                remove_sqlite(path)
    for b in ctx.backends:
        if b != "sqlite" and b in ctx.urls:
            for impl, _ in SERVER_VARIANTS:
                from bench_common import drop_table

                drop_table(b, ctx.urls[b], f"bench_rt_{impl.replace('-', '_')}")

    def m(b, impl, scen):
        return median(rps.get((b, impl, scen), []))

    note_runs = f"median of {rounds}×{seconds:g} s"
    for b in ctx.backends:
        if b != "sqlite" and b not in ctx.urls:
            continue
        L = LABEL[b]
        ours = m(b, "sessctl", "modify")
        dj = m(b, "django", "modify")
        target = "≥ 3×" if b == "sqlite" else "report"
        met = (ours / dj >= 3) if (b == "sqlite" and ours and dj) else None
        res.add(Row("runtime", f"{L}: read+modify request, sessctl vs tuned Django", ours, "req/s",
                    baseline=dj, baseline_label="Django, tuned", target=target, met=met, note=note_runs,
                    extra={"ours_runs": rps.get((b, "sessctl", "modify")), "django_runs": rps.get((b, "django", "modify"))}))
        if b == "sqlite":
            res.add(Row("runtime", f"{L}: read+modify request, sessctl vs stock Django", ours, "req/s",
                        baseline=m(b, "django-stock", "modify"), baseline_label="Django, stock",
                        target="report", note="rollback journal, synchronous=FULL, CONN_MAX_AGE=0"))
        raw = m(b, "raw", "modify")
        res.add(Row("runtime", f"{L}: read+modify request, sessctl vs raw driver load+save", ours, "req/s",
                    baseline=raw, baseline_label="raw driver + sessctl.codec", target="≥ 0.9×",
                    met=(ours / raw >= 0.9) if ours and raw else None, note=note_runs,
                    extra={"ours_runs": rps.get((b, "sessctl", "modify")), "raw_runs": rps.get((b, "raw", "modify"))}))
        if b == "sqlite":
            res.add(Row("runtime", f"{L}: statements SQLite runs per read+modify request",
                        qpr.get((b, "sessctl", "modify")), "queries", baseline=qpr.get((b, "django", "modify")),
                        baseline_label="Django, tuned", kind="inverse", target="report",
                        note=f"raw driver: {qpr.get((b, 'raw', 'modify'))}; BEGIN/COMMIT included"))
        if b == "sqlite":
            res.add(Row("runtime", f"{L}: untouched request, sessctl vs bare app", m(b, "sessctl", "untouched"),
                        "req/s", baseline=m(b, "bare", "untouched"), baseline_label="app without middleware",
                        target="report"))
            res.add(Row("runtime", f"{L}: untouched request, sessctl vs tuned Django", m(b, "sessctl", "untouched"),
                        "req/s", baseline=m(b, "django", "untouched"), baseline_label="Django, tuned",
                        target="report"))
            q = qpr.get((b, "sessctl", "untouched"))
            res.add(Row("runtime", f"{L}: statements SQLite runs per untouched request", q, "queries",
                        baseline=qpr.get((b, "django", "untouched")), baseline_label="Django, tuned",
                        kind="info", target="= 0", met=None if q is None else q == 0))
