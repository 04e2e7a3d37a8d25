"""Child process: purge the expired rows of one table, once, and time it.

    python benchmarks/worker_purge.py --mode raw|store --backend B --target URL --table T

``raw``: one ``DELETE FROM t WHERE expire_date < now`` on the plain driver,
at the server's default settings (what Django's clearsessions does; SQLite
with synchronous=NORMAL as sessctl's runtime). ``store``:
``SessionStore(settings).purge_expired()`` with its defaults. The parent reads
this process's peak RSS with wait4(). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone

from bench_common import db_value, param, quote, raw_connect


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True, choices=["raw", "store"])
    ap.add_argument("--backend", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--table", required=True)
    args = ap.parse_args()
    b = args.backend
    if args.mode == "raw":
        conn = raw_connect(b, args.target)
        if b == "sqlite":
            conn.execute("PRAGMA synchronous=NORMAL")
        cur = conn.cursor()
        now = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        cur.execute(f"DELETE FROM {quote(b, args.table)} WHERE expire_date < {param(b)}", (db_value(b, now),))
        deleted = cur.rowcount
        conn.commit()
        seconds = time.perf_counter() - t0
        conn.close()
        out = {"deleted": deleted, "seconds": seconds, "batches": 1, "complete": True}
    else:
        from sessctl import SessionStore, Settings

        store = SessionStore(Settings(database_url=args.target, table=args.table))
        with store.engine.connect():  # connect (and import the driver) before the clock starts
            pass
        t0 = time.perf_counter()
        result = store.purge_expired()
        seconds = time.perf_counter() - t0
        store.close()
        out = {"deleted": result.deleted, "seconds": seconds, "batches": result.batches,
               "complete": result.complete}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
