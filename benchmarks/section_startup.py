"""Section ``startup``: wall time of ``sessctl --help`` and ``sessctl stats`` against bare python,
and of ``sessctl stats`` against ``python -c "import sqlalchemy, click"`` (what sessctl adds over
the two libraries every database command needs)."""

from __future__ import annotations

import random

from bench_common import PYTHON, Row, clean_env, last_line, log, median, run_child, sqlite_url
from bench_data import make_runtime_table, runtime_keys

TABLE = "bench_session"


def run(ctx) -> None:
    res = ctx.results
    exe, why = ctx.cli()
    if exe is None:
        res.note(f"startup: skipped, the CLI is not ready ({why})")
        res.add(Row("startup", "`sessctl --help` start-up over `python -c pass`", None, "ms",
                    kind="delta", target="≤ +60 ms", note="CLI not ready"))
        res.add(Row("startup", "`sessctl stats` (small SQLite db) start-up over `python -c pass`", None, "ms",
                    kind="delta", target="≤ +250 ms", note="CLI not ready"))
        return
    db = ctx.workdir / "startup.db"
    make_runtime_table("sqlite", str(db), TABLE, runtime_keys(1000))
    env = clean_env()
    cwd = ctx.workdir
    cmds = {
        "python": [PYTHON, "-c", "pass"],
        "libs": [PYTHON, "-c", "import sqlalchemy, click"],
        "help": [exe, "--help"],
        "stats": [exe, "--db", sqlite_url(db), "--table", TABLE, "stats"],
    }
    runs = 5 if ctx.quick else 30
    usable = dict(cmds)
    for name, argv in cmds.items():  # warm-up (and a check that each one works)
        for _ in range(2):
            r = run_child(argv, cwd=cwd, env=env, timeout=60)
        if r.returncode != 0:
            res.note(f"startup: `{' '.join(argv[1:])}` exits {r.returncode}: {last_line(r.stderr)}")
            usable.pop(name)
    times: dict[str, list[float]] = {n: [] for n in usable}
    rng = random.Random(3)
    failed = 0
    for _ in range(runs):  # one round runs each command once, in a random order
        order = list(usable)
        rng.shuffle(order)
        took = {}
        for name in order:
            r = run_child(usable[name], cwd=cwd, env=env, timeout=60)
            if r.returncode != 0:
                res.note(f"startup: `{' '.join(usable[name][1:])}` exits {r.returncode}: {last_line(r.stderr)}")
                break
            took[name] = r.wall * 1000
        if len(took) < len(order):  # a failed run: the whole round is left out, so rounds stay paired
            failed += 1
            continue
        for name, ms in took.items():
            times[name].append(ms)
    if failed:
        res.note(f"startup: {failed} of {runs} rounds left out, a command failed in them")
    if not any(times.values()):
        times = {}
    med = {n: median(v) for n, v in times.items()}
    log(f"startup medians (ms): {med}")

    def paired(name: str, base: str) -> float:
        return median([a - b for a, b in zip(times[name], times[base])])

    rounds = len(next(iter(times.values()), []))
    note = f"median of {rounds}; over: median of the {rounds} interleaved rounds' differences"
    for name, base, label, base_label, limit in (
        ("help", "python", "`sessctl --help`", "python -c pass", 60),
        ("stats", "python", "`sessctl stats` (small SQLite db)", "python -c pass", 250),
        ("stats", "libs", "`sessctl stats` (small SQLite db)", "python -c 'import sqlalchemy, click'", 40),
    ):
        over = "`import sqlalchemy, click`" if base == "libs" else f"`{base_label}`"
        scenario = f"{label} start-up over {over}"
        if name not in med or base not in med:
            res.add(Row("startup", scenario, None, "ms", kind="delta", target=f"≤ +{limit} ms", note="command failed"))
            continue
        delta = paired(name, base)
        res.add(Row("startup", scenario, med[name], "ms", baseline=med[base], baseline_label=base_label,
                    kind="delta", target=f"≤ +{limit} ms", met=delta <= limit, note=note, paired=delta,
                    extra={"runs_ms": times[name], "baseline_runs_ms": times[base]}))
