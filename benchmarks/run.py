"""sessctl benchmarks: one entry point, one table.

    python benchmarks/run.py [--quick] [--only SECTION,...] [--rows N]
                             [--backends sqlite,postgres,mysql] [--json FILE]

Sections: startup, runtime, purge, report, users (see benchmarks/README.md). Each
builds its own data and runs its comparisons side by side in this one command;
the table at the end has one line per comparison: scenario | ours | baseline |
ratio | target | met?. Benchmarks print, they do not judge: the exit status is
0 unless something crashed or a correctness check failed (wrong rows purged,
lost updates...), then 1. PostgreSQL and MariaDB come from
$SESSCTL_TEST_POSTGRES and $SESSCTL_TEST_MYSQL (eval "$(scripts/test-databases.sh)").
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import (  # noqa: E402
    BACKENDS,
    LABEL,
    DataSet,
    Results,
    cli_status,
    log,
    machine_info,
    render_table,
    backend_urls,
)

SECTIONS = ("startup", "runtime", "purge", "report", "users")


class Context:
    def __init__(self, args: argparse.Namespace, workdir: Path, results: Results, urls: dict[str, str]):
        self.quick = args.quick
        self.repeat = args.repeat
        self.rows = args.rows
        self.backends = args.backends
        self.workdir = workdir
        self.results = results
        self.urls = urls
        self._cli: tuple[str | None, str] | None = None
        self._dataset: DataSet | None = None
        self._template: Path | None = None

    def cli(self) -> tuple[str | None, str]:
        """(sessctl executable, "") once the command works; checked once per run."""
        if self._cli is None:
            self._cli = cli_status(self.workdir)
            log(f"CLI: {'ready at ' + self._cli[0] if self._cli[0] else 'not ready: ' + self._cli[1]}")
        return self._cli

    def dataset(self) -> DataSet:
        if self._dataset is None:
            t0 = time.perf_counter()
            ds = DataSet(n=self.rows, t_build=round(time.time()))
            ds.summarise()
            self._dataset = ds
            log(f"data set: {ds.n:,} rows, {ds.expired:,} expired, {ds.live:,} live, "
                f"mean session_data {ds.mean_data_len:.0f} bytes ({time.perf_counter() - t0:.1f} s)")
        return self._dataset

    def sqlite_template(self) -> Path:
        if self._template is None:
            from bench_data import build_sqlite_template

            ds = self.dataset()
            path = self.workdir / "template.db"
            t0 = time.perf_counter()
            build_sqlite_template(ds, path, "bench_purge")
            log(f"SQLite template: {ds.n:,} rows, {path.stat().st_size / 2**20:.0f} MiB, "
                f"built in {time.perf_counter() - t0:.1f} s")
            self._template = path
        return self._template


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small and short (CI): 20,000 rows, few repetitions")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})")
    ap.add_argument("--rows", type=int, default=None,
                    help="rows in the purge/report table (default 1,000,000; 20,000 with --quick)")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help="comma-separated backends for runtime and purge (default: sqlite,postgres,mysql)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure, the machine and the notes as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (databases, logs)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="purge trials per mode and backend, interleaved; the table shows medians (default 1)")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    args.only = only
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        ap.error(f"unknown backend(s) {', '.join(bad)}; choose from {', '.join(BACKENDS)}")
    args.backends = backends
    if args.rows is None:
        args.rows = 20_000 if args.quick else 1_000_000
    if args.rows < 2000:
        ap.error("--rows must be at least 2000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = Results()
    workdir = Path(tempfile.mkdtemp(prefix="sessctl-bench-"))
    started = time.perf_counter()
    log(f"work directory {workdir}")
    urls = backend_urls(args.backends, results)
    machine = machine_info(urls)
    log("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    ctx = Context(args, workdir, results, urls)
    crashed = []
    try:
        for name in SECTIONS:
            if name not in args.only:
                continue
            log(f"=== section {name} ===")
            t0 = time.perf_counter()
            module = __import__(f"section_{name}")
            try:
                module.run(ctx)
            except Exception:
                tb = traceback.format_exc()
                print(tb, file=sys.stderr)
                crashed.append(f"section {name} crashed: {tb.strip().splitlines()[-1]}")
            log(f"=== section {name} done in {time.perf_counter() - t0:.1f} s ===")
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    from bench_common import _loadavg, sessctl_commit

    machine["loadavg_end"] = _loadavg()
    machine["sessctl_commit_end"] = sessctl_commit()
    if machine["sessctl_commit_end"] != machine["sessctl_commit"]:
        results.note(f"the sessctl code changed during the run ({machine['sessctl_commit']} -> "
                     f"{machine['sessctl_commit_end']}): figures may mix versions; re-run")

    print()
    print(f"sessctl benchmarks — {command}")
    print(f"machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['mem_gib']} GiB; Python {machine['python']}, "
          f"SQLite {machine['sqlite']}, SQLAlchemy {machine['sqlalchemy']}, Django {machine['django']}"
          + "".join(f", {LABEL[b]} {machine[b]}" for b in ("postgres", "mysql") if b in machine)
          + f"; sessctl {machine.get('sessctl_commit')}")
    print(f"load average (1/5/15 min) at start {machine['loadavg_start']}, at end {machine['loadavg_end']} "
          "(anything else running skews the figures)")
    print(f"rows: {args.rows:,}; backends: {','.join(args.backends)}; sections: {','.join(args.only)}; "
          f"total {elapsed:.0f} s")
    print()
    print(render_table(results.rows))
    for text in results.notes:
        print(f"note: {text}")
    for text in crashed + results.failures:
        print(f"FAILED: {text}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": command, "machine": machine, "elapsed_s": elapsed,
            "args": {"quick": args.quick, "rows": args.rows, "backends": args.backends, "only": args.only},
            "rows": [r.to_json() for r in results.rows], "notes": results.notes,
            "failures": crashed + results.failures,
        }, indent=2, default=str))
    return 1 if (crashed or results.failures) else 0


if __name__ == "__main__":
    sys.exit(main())
