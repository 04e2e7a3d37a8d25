"""Child process: a steady "app" load through the real sessctl SessionMiddleware.

    python benchmarks/worker_appload.py --target URL --table T --keys FILE --rate 200
        --threads 8 --out FILE

Open loop: request k is due at t0 + k/rate whatever happened before (so a
stalled database shows up as queueing delay, as a real server would see it),
and is served by one of ``--threads`` worker threads (a threaded WSGI server).
Each request reads and writes one live session (``s["n"] += 1``). Latency is
completion time minus due time, on CLOCK_MONOTONIC (shared with the parent).

Prints "ready" once warm; on "stop" (a line on stdin) it stops scheduling,
drains, writes ``[[due, latency, error-or-null], ...]`` to ``--out`` and exits.
A request is an error if it raises, answers other than 200, or loses its
session (the response does not re-send the same key).
"""

from __future__ import annotations

import argparse
import io
import json
import queue
import random
import sys
import threading
import time

from bench_common import SECRET
from worker_runtime import base_environ


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from sessctl import SessionMiddleware, Settings

    with open(args.keys) as fh:
        keys = json.load(fh)

    def inner(environ, start_response):
        s = environ["sessctl.session"]
        s["n"] = s.get("n", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    app = SessionMiddleware(inner, Settings(database_url=args.target, table=args.table, secret_key=SECRET))
    base = base_environ()
    base["wsgi.multithread"] = True

    def request(key: str) -> str | None:
        env = dict(base)
        env["HTTP_COOKIE"] = f"sessionid={key}"
        env["wsgi.input"] = io.BytesIO(b"")
        got = {}

        def start_response(status, headers, exc_info=None):
            got["status"], got["headers"] = status, headers

        try:
            body = app(env, start_response)
            for _ in body:
                pass
        except Exception as exc:  # the app's error, as the server would log it
            first = (str(exc).strip().splitlines() or [""])[0]
            return f"{type(exc).__name__}: {first[:160]}"
        if not got.get("status", "").startswith("200"):
            return f"status {got.get('status')}"
        want = f"sessionid={key};"
        if not any(n.lower() == "set-cookie" and v.strip().startswith(want) for n, v in got["headers"]):
            return "session lost (a new key or a deleted cookie came back)"
        return None

    rng = random.Random(5)
    for _ in range(20):  # warm the pool and the code paths
        request(rng.choice(keys))

    records: list[tuple[float, float, str | None]] = []
    todo: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker():
        while True:
            item = todo.get()
            if item is None:
                return
            due, key = item
            err = request(key)
            records.append((due, time.monotonic() - due, err))

    def dispatcher():
        t0 = time.monotonic()
        k = 0
        while not stop.is_set():
            due = t0 + k / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            todo.put((due, keys[rng.randrange(len(keys))]))
            k += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    disp = threading.Thread(target=dispatcher, daemon=True)
    disp.start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()
    disp.join()
    for _ in threads:
        todo.put(None)
    for t in threads:
        t.join(timeout=60)
    with open(args.out, "w") as fh:
        json.dump(list(records), fh)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
