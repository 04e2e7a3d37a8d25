"""Section ``users``: the user index on the big SQLite table, and what it costs.

One table of N rows (half expired), 40 % of them a logged-in user's (N/10
users, about 4 sessions each), with its user index as sessctl's runtime
keeps it; and the same table without the index (what Django writes). It
measures, in-process:

* finding and ending one user's sessions through the index (target ≤ 50 ms);
* the scan path on the table without index: rows read and decoded per second
  for one user (target ≥ 50,000 rows/s), and for the `users` report;
* purge of the expired half with the index (purge's batches, then a tenth of their time, at
  least 0.2 s, sweeping the index rows whose session is gone; a full sweep after) against the table without it
  (target: within 10 %), with 5 % and with 40 % of the rows logged in;
* requests (read-only, and modifying) through the runtime with the index
  against without (target: within 10 %). On SQLite a load does not join the
  index: "last seen" is read only when a touch may be due (sessctl.activity).
"""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import datetime, timedelta, timezone

from bench_common import Row, log, median, sqlite_text, sqlite_url
from bench_data import copy_sqlite, remove_sqlite

TABLE = "bench_users"
SECRET = "bench-users-secret"
UTC = timezone.utc


def _orphans(path) -> int:
    """Index rows whose session row is gone."""
    from sessctl.userindex import side_name

    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            f'SELECT count(*) FROM "{side_name(TABLE)}" u WHERE NOT EXISTS '
            f'(SELECT 1 FROM "{TABLE}" s WHERE s.session_key = u.session_key)').fetchone()[0]
    finally:
        conn.close()


def _indexed_live(path) -> int:
    """Index rows whose session row is there."""
    from sessctl.userindex import side_name

    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            f'SELECT count(*) FROM "{side_name(TABLE)}" u JOIN "{TABLE}" s ON s.session_key = u.session_key').fetchone()[0]
    finally:
        conn.close()


def _build(path, n: int, seed: int = 5, share: float = 0.4) -> tuple[list[str], int]:
    """The table with its user index; returns (users with a live session, live rows)."""
    from sessctl.codec import Codec
    from sessctl.model import create_statements
    from sessctl.userindex import create_statements as side_statements
    from sessctl.userindex import side_name

    codec = Codec(SECRET)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    users = max(10, n // 10)
    remove_sqlite(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    quote = lambda name: f'"{name}"'  # noqa: E731
    for stmt in create_statements("sqlite", TABLE, quote)[:1] + side_statements("sqlite", TABLE, quote)[:1]:
        conn.execute(stmt)
    anonymous = [codec.encode({"cart": [rng.randint(1, 999)], "n": i}) for i in range(64)]
    conn.execute("BEGIN")
    rows, side, live_users, live = [], [], set(), 0
    for i in range(n):
        key = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32))
        expired = i % 2 == 0
        exp = now + timedelta(seconds=-rng.uniform(60, 30 * 86400) if expired else rng.uniform(86400, 14 * 86400))
        live += not expired
        if rng.random() < share:
            uid = str(rng.randrange(users))
            data = codec.encode({"_auth_user_id": uid, "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                                 "_auth_user_hash": "%064x" % rng.getrandbits(256)})
            seen = sqlite_text(now - timedelta(seconds=rng.uniform(0, 86400)))
            side.append((key, uid, seen, seen, None, None))
            if not expired:
                live_users.add(uid)
        else:
            data = anonymous[rng.randrange(len(anonymous))]
        rows.append((key, data, sqlite_text(exp)))
        if len(rows) >= 50_000:
            conn.executemany(f'INSERT INTO "{TABLE}" VALUES (?, ?, ?)', rows)
            conn.executemany(f'INSERT INTO "{side_name(TABLE)}" VALUES (?, ?, ?, ?, ?, ?)', side)
            rows, side = [], []
    conn.executemany(f'INSERT INTO "{TABLE}" VALUES (?, ?, ?)', rows)
    conn.executemany(f'INSERT INTO "{side_name(TABLE)}" VALUES (?, ?, ?, ?, ?, ?)', side)
    conn.execute("COMMIT")
    for stmt in create_statements("sqlite", TABLE, quote)[1:] + side_statements("sqlite", TABLE, quote)[1:]:
        conn.execute(stmt)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return sorted(live_users), live


def _without_index(path) -> None:
    from sessctl.userindex import side_name

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f'DROP TABLE "{side_name(TABLE)}"')
    conn.close()
    _vacuum(path)


def _vacuum(path) -> None:
    """Rewrite the file table by table, as ``_without_index`` leaves the copy without the index:
    both files then start from the same physical state, and the ratio is the index's own cost."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("VACUUM")
    conn.close()


def _store(path):
    from sessctl import SessionStore, Settings

    return SessionStore(Settings(database_url=sqlite_url(path), table=TABLE, secret_key=SECRET))


def _requests(store, keys: list[str], count: int, modify: bool) -> float:
    """Seconds for ``count`` requests through the runtime's per-request path (Session + the
    response rules), in-process."""
    from sessctl.cookies import CookieRules
    from sessctl.session import Session

    rules = CookieRules(store.settings)
    t0 = time.perf_counter()
    for i in range(count):
        session = Session(store, keys[i % len(keys)])
        if modify:
            session["n"] = i
        else:
            session.get("_auth_user_id")
        rules.finish(session, True, 200, [])
    return time.perf_counter() - t0


def run(ctx) -> None:
    from sessctl import users as lookups

    res = ctx.results
    n = ctx.rows
    work = ctx.workdir
    indexed, plain = work / "users_indexed.db", work / "users_plain.db"
    t0 = time.perf_counter()
    live_users, live = _build(indexed, n)
    log(f"users: built {n:,} rows ({live:,} live, {len(live_users):,} users live) in {time.perf_counter() - t0:.1f} s")
    copy_sqlite(indexed, plain)
    _without_index(plain)
    rng = random.Random(3)
    note = f"{n:,} rows, {len(live_users):,} users with live sessions"

    # -- find + end one user's sessions through the index
    store = _store(indexed)
    picks = rng.sample(live_users, min(21, len(live_users)))
    times, ended = [], 0
    for i, uid in enumerate(picks):
        s0 = time.perf_counter()
        found = store.user_sessions(uid)
        gone = store.end_user_sessions(uid)
        took = time.perf_counter() - s0
        if found.method != "index" or sorted(s.key for s in found) != sorted(gone):
            res.fail(f"users: index lookup of {uid} found {len(found)}, ended {len(gone)}")
        if i:
            times.append(took)
            ended += len(gone)
    store.close()
    ours = median(times)
    res.add(Row("users", "SQLite: find + end one user's sessions (index, in the store)", ours * 1000, "ms",
                kind="info", target="≤ 50 ms", met=ours <= 0.05,
                note=f"{note}; median of {len(times)} users, max {max(times) * 1000:.1f} ms, {ended} sessions ended"))

    # -- the scan path (a table Django writes)
    store = _store(plain)
    now = store.now()
    s0 = time.perf_counter()
    read = found = 0
    for read, item in lookups.scan(store, now, picks[-1]):
        found += item is not None
    took = time.perf_counter() - s0
    res.add(Row("users", "SQLite: scan-and-decode for one user (no index)", read / took, "rows/s", kind="info",
                target="≥ 50,000 rows/s", met=read / took >= 50_000,
                note=f"{read:,} live rows read in {took:.2f} s, {found} sessions found"))
    s0 = time.perf_counter()
    report = store.users()
    took = time.perf_counter() - s0
    res.add(Row("users", "SQLite: `users` report by scan (no index, every user row verified)", report.scanned / took,
                "rows/s", kind="info", note=f"{report.scanned:,} rows in {took:.2f} s, {len(report):,} users"))
    store.close()

    # -- requests with and without the index
    keys = []
    conn = sqlite3.connect(indexed)
    from sessctl.userindex import side_name

    keys = [k for (k,) in conn.execute(
        f'SELECT u.session_key FROM "{side_name(TABLE)}" u JOIN "{TABLE}" s USING (session_key) '
        f"WHERE s.expire_date > ? LIMIT 1000", (sqlite_text(datetime.now(UTC)),))]
    conn.close()
    # Chunks of 1,000 requests on each table in turn, the median chunk of each: interleaving keeps
    # the rest of the machine's drift out of the ratio.
    chunks = 5 if ctx.quick else 15
    stores = {"indexed": _store(indexed), "plain": _store(plain)}
    for modify in (False, True):
        took = {"indexed": [], "plain": []}
        for name, st in stores.items():
            _requests(st, keys, len(keys), modify)  # warm: the first pass touches every session
        for _round in range(chunks):
            for name, st in stores.items():
                took[name].append(_requests(st, keys, 1000, modify))
        with_index, without = 1000 / median(took["indexed"]), 1000 / median(took["plain"])
        label = "modifying" if modify else "read-only"
        res.add(Row("users", f"SQLite: {label} requests of logged-in sessions, with the index", with_index, "req/s",
                    baseline=without, baseline_label="same table without the index", target="≥ 0.9×",
                    met=with_index >= 0.9 * without,
                    note=f"in-process Session + CookieRules, median of {chunks} interleaved chunks of 1,000"))
    for st in stores.values():
        st.close()

    remove_sqlite(indexed)
    remove_sqlite(plain)
    # -- purge with and without the index, on fresh tables (5 % and 40 % of the rows logged in)
    for share in (0.05, 0.4):
        _build(indexed, n, share=share)
        copy_sqlite(indexed, plain)
        _without_index(plain)
        _vacuum(indexed)
        # Each purge on a fresh copy of the same two files, in turn (each order once or more);
        # the median of each.
        pristine = {"plain": work / "users_plain.pristine.db", "indexed": work / "users_indexed.pristine.db"}
        copy_sqlite(plain, pristine["plain"])
        copy_sqlite(indexed, pristine["indexed"])
        took, deleted = {"plain": [], "indexed": []}, set()
        for round_ in range(1 if ctx.quick else 3):
            order = (("plain", plain), ("indexed", indexed))
            for name, path in (order if round_ % 2 == 0 else order[::-1]):
                copy_sqlite(pristine[name], path)
                st = _store(path)
                s0 = time.perf_counter()
                result = st.purge_expired()
                took[name].append(time.perf_counter() - s0)
                deleted.add((name, result.deleted))
                st.close()
        for path in pristine.values():
            remove_sqlite(path)
        purge = {name: (median(times), next(d for nm, d in deleted if nm == name)) for name, times in took.items()}
        if len(deleted) != 2 or purge["indexed"][1] != purge["plain"][1]:
            res.fail(f"users: purges deleted {sorted(deleted)} rows (with and without the index)")
        from sessctl.users import sweep

        # Purge sweeps the index for a tenth of its time (at least 0.05 s); the rest is left for later
        # purges (harmless: every read joins the live table). A full sweep must then leave no index
        # row of a purged session, and keep every live session's.
        left = _orphans(indexed)
        indexed_live = _indexed_live(indexed)
        st = _store(indexed)
        s0 = time.perf_counter()
        sweep(st)
        rest = time.perf_counter() - s0
        st.close()
        if _orphans(indexed) or _indexed_live(indexed) != indexed_live:
            res.fail("users: a full sweep after purge left index rows of purged sessions, or took a live one's")
        res.add(Row("users", f"SQLite: purge --expired with the index, {share:.0%} of rows logged in",
                    purge["indexed"][0], "s", baseline=purge["plain"][0], baseline_label="same table without the index",
                    kind="inverse", target="≤ 1.1×", met=purge["indexed"][0] <= 1.1 * purge["plain"][0],
                    note=f"{purge['indexed'][1]:,} rows purged (median of {len(took['plain'])} fresh copies each), "
                         f"then a tenth of that time (at least 0.05 s) sweeping the index; "
                         f"{left:,} index rows left for later purges (a full sweep of them: {rest:.2f} s)"))
    remove_sqlite(indexed)
    remove_sqlite(plain)
