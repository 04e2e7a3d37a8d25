"""Section ``report``: stats and list on the big SQLite table (N rows, half expired).

``SessionStore.counts()`` and ``iter_rows(limit=50)`` in-process (a fresh store
each time, so connecting is included, as in a command), ``sessctl stats`` and
``sessctl list --limit 50`` as subprocesses once the CLI exists, each against
the same query written by hand on the sqlite3 driver.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta, timezone

from bench_common import Row, clean_env, last_line, log, median, run_child, sqlite_text, sqlite_url
from bench_data import copy_sqlite, remove_sqlite

TABLE = "bench_purge"


def _raw_counts(path: str) -> tuple:
    now = datetime.now(timezone.utc)
    n, h1, d1, d7 = (sqlite_text(now + d) for d in (timedelta(0), timedelta(hours=1), timedelta(days=1),
                                                     timedelta(days=7)))
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            f'SELECT count(*), sum(expire_date > ?), sum(expire_date > ? AND expire_date <= ?), '
            f'sum(expire_date > ? AND expire_date <= ?), sum(expire_date > ? AND expire_date <= ?) FROM "{TABLE}"',
            (n, n, h1, n, d1, n, d7)).fetchone()
    finally:
        conn.close()


def _raw_list(path: str) -> list:
    now = sqlite_text(datetime.now(timezone.utc))
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            f'SELECT session_key, session_data, expire_date FROM "{TABLE}" WHERE expire_date > ? '
            "ORDER BY expire_date, session_key LIMIT 50", (now,)).fetchall()
    finally:
        conn.close()


def _timed(fn, reps: int) -> tuple[float, object]:
    fn()  # warm-up
    times = []
    value = None
    for _ in range(reps):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return median(times), value


def run(ctx) -> None:
    from sessctl import SessionStore, Settings

    res = ctx.results
    ds = ctx.dataset()
    path = ctx.workdir / "report.db"
    copy_sqlite(ctx.sqlite_template(), path)
    url = sqlite_url(path)
    reps = 2 if ctx.quick else 5
    rows_note = f"{ds.n:,} rows, median of {reps}"

    def counts():
        store = SessionStore(Settings(database_url=url, table=TABLE))
        try:
            return store.counts()
        finally:
            store.close()

    def listing():
        store = SessionStore(Settings(database_url=url, table=TABLE))
        try:
            return list(store.iter_rows("active", limit=50))
        finally:
            store.close()

    raw_c, raw_counts = _timed(lambda: _raw_counts(str(path)), reps)
    ours_c, our_counts = _timed(counts, reps)
    if (our_counts["total"], our_counts["active"]) != (ds.n, ds.live):
        res.fail(f"report: counts() says total {our_counts['total']}, active {our_counts['active']}; "
                 f"expected {ds.n}, {ds.live}")
    res.add(Row("report", "SQLite: SessionStore.counts() in-process (stats)", ours_c, "s", baseline=raw_c,
                baseline_label="same aggregate on sqlite3", kind="inverse", target="≤ 1 s", met=ours_c <= 1.0,
                note=rows_note))
    raw_l, _ = _timed(lambda: _raw_list(str(path)), reps)
    ours_l, got = _timed(listing, reps)
    if len(got) != 50:
        res.fail(f"report: iter_rows(limit=50) returned {len(got)} rows")
    res.add(Row("report", "SQLite: iter_rows('active', limit=50) in-process (list)", ours_l, "s", baseline=raw_l,
                baseline_label="same query on sqlite3", kind="inverse", target="≤ 0.5 s", met=ours_l <= 0.5,
                note=rows_note))

    exe, why = ctx.cli()
    if exe is None:
        res.add(Row("report", "SQLite: `sessctl stats` wall time", None, "s", target="≤ 0.5 s",
                    note="CLI not ready"))
        res.add(Row("report", "SQLite: `sessctl list --limit 50` wall time", None, "s", target="≤ 0.5 s",
                    note="CLI not ready"))
        remove_sqlite(path)
        return
    env = clean_env()
    for argv, label, limit, base in (
        ([exe, "--db", url, "--table", TABLE, "stats"], "`sessctl stats`", 0.5, raw_c),
        ([exe, "--db", url, "--table", TABLE, "list", "--limit", "50"], "`sessctl list --limit 50`", 0.5, raw_l),
    ):
        times = []
        failed = None
        runs = reps
        for i in range(reps + 1):
            r = run_child(argv, cwd=ctx.workdir, env=env, timeout=300)
            if r.returncode != 0:
                failed = f"exit {r.returncode}: {last_line(r.stderr)}"
                break
            if i == 0 and r.wall > 5 * limit:
                runs = 1  # far off target: one timed run is enough, and keeps the whole run short
            elif i:
                times.append(r.wall)
            if len(times) >= runs:
                break
        if failed:
            res.fail(f"report: {label} failed: {failed}")
            res.add(Row("report", f"SQLite: {label} wall time", None, "s", target=f"≤ {limit:g} s", note=failed))
            continue
        ours = median(times)
        log(f"report {label}: {times}")
        res.add(Row("report", f"SQLite: {label} wall time", ours, "s", baseline=base,
                    baseline_label="raw query, in-process", kind="inverse", target=f"≤ {limit:g} s",
                    met=ours <= limit, note=f"{ds.n:,} rows, median of {len(times)}, start-up included"))
    remove_sqlite(path)
