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
    runs = 5 if ctx.quick else 20
    usable = dict(cmds)
    for name, argv in cmds.items():  # warm-up (and a check that each one works)
        for _ in range(2):
            r = run_child(argv, cwd=cwd, env=env, timeout=60)
        if r.returncode != 0:
            res.note(f"startup: `{' '.join(argv[1:])}` exits {r.returncode}: {last_line(r.stderr)}")
            usable.pop(name)
    times: dict[str, list[float]] = {n: [] for n in usable}
    rng = random.Random(3)
    for _ in range(runs):
        order = list(usable)
        rng.shuffle(order)
        for name in order:
            times[name].append(run_child(usable[name], cwd=cwd, env=env, timeout=60).wall * 1000)
    med = {n: median(v) for n, v in times.items()}
    log(f"startup medians (ms): {med}")
    py = med.get("python")
    for name, label, limit in (("help", "`sessctl --help`", 60), ("stats", "`sessctl stats` (small SQLite db)", 250)):
        ours = med.get(name)
        if ours is None or py is None:
            res.add(Row("startup", f"{label} start-up over `python -c pass`", None, "ms", kind="delta",
                        target=f"≤ +{limit} ms", note="command failed"))
            continue
        res.add(Row("startup", f"{label} start-up over `python -c pass`", ours, "ms", baseline=py,
                    baseline_label="python -c pass", kind="delta", target=f"≤ +{limit} ms",
                    met=(ours - py) <= limit, note=f"median of {runs}",
                    extra={"runs_ms": times[name], "python_runs_ms": times["python"]}))
    libs, ours = med.get("libs"), med.get("stats")
    res.add(Row("startup", "`sessctl stats` (small SQLite db) start-up over `import sqlalchemy, click`", ours, "ms",
                baseline=libs, baseline_label="python -c 'import sqlalchemy, click'", kind="delta",
                target="≤ +40 ms", met=None if ours is None or libs is None else (ours - libs) <= 40,
                note=f"median of {runs}, interleaved"))
