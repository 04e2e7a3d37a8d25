"""Child process: requests/s of one runtime implementation, called in-process (no HTTP).

    python benchmarks/worker_runtime.py --impl sessctl|django|django-stock|raw|bare
        --scenario modify|untouched --backend B --target URL --table T --keys FILE
        --seconds S --warmup N

Each request carries the cookie of one of the prepared sessions (round-robin).
"modify" does ``s["n"] = s.get("n", 0) + 1``; "untouched" never looks at the
session. Prints one JSON object: requests made (including warm-up), timed
requests, seconds, req/s, and on SQLite the statements SQLite ran per request
during the warm-up (its trace callback, off for the timed part).
"""

from __future__ import annotations

import argparse
import io
import os
import json
import sys
import time
from datetime import datetime, timedelta, timezone

from bench_common import COOKIE_AGE, SECRET, db_value, param, quote, raw_connect

UTC = timezone.utc
urlpatterns: list = []  # this module is Django's ROOT_URLCONF in the django impls


class Tracer:
    """Counts the statements SQLite runs (BEGIN/COMMIT included), during the warm-up only.

    Works whatever layer issues them (SQLAlchemy, raw DBAPI, Django): it is
    the sqlite3 connection's own trace callback. Not available on servers.
    """

    def __init__(self) -> None:
        self.count = 0
        self.active = True
        self.conns: list = []

    def _cb(self, _sql: str) -> None:
        self.count += 1

    def install(self, dbapi_conn) -> None:
        if self.active and hasattr(dbapi_conn, "set_trace_callback"):
            dbapi_conn.set_trace_callback(self._cb)
            self.conns.append(dbapi_conn)

    def stop(self) -> None:
        self.active = False
        for c in self.conns:
            try:
                c.set_trace_callback(None)
            except Exception:
                pass
        self.conns.clear()


TRACER = Tracer()


def base_environ() -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


# -- sessctl -------------------------------------------------------------------------


def sessctl_app(args):
    from sqlalchemy import event

    from sessctl import SessionMiddleware, Settings

    modify = args.scenario == "modify"

    def inner(environ, start_response):
        if modify:
            s = environ["sessctl.session"]
            s["n"] = s.get("n", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    if args.impl == "bare":
        return inner
    settings = Settings(database_url=args.target, table=args.table, secret_key=SECRET)
    mw = SessionMiddleware(inner, settings)
    if args.backend == "sqlite":
        engine = mw.store.engine  # built now (no connection yet), so every connection is traced
        event.listen(engine, "connect", lambda dbapi_conn, _rec: TRACER.install(dbapi_conn))
    return mw


# -- Django --------------------------------------------------------------------------


def django_app(args):
    import django
    from django.conf import settings
    from urllib.parse import unquote, urlsplit

    tuned = args.impl == "django"
    if args.backend == "sqlite":
        db = {"ENGINE": "django.db.backends.sqlite3", "NAME": args.target.split(":///", 1)[1]}
    else:
        parts = urlsplit(args.target)
        db = {"NAME": parts.path.lstrip("/"), "USER": unquote(parts.username or ""),
              "PASSWORD": unquote(parts.password or ""), "HOST": parts.hostname or "",
              "PORT": str(parts.port or "")}
        if args.backend == "postgres":
            db["ENGINE"] = "django.db.backends.postgresql"
        else:
            import pymysql

            pymysql.version_info = (1, 4, 6, "final", 0)  # Django asks for mysqlclient >= 1.4.3
            pymysql.install_as_MySQLdb()
            db["ENGINE"] = "django.db.backends.mysql"
            db["OPTIONS"] = {"charset": "utf8mb4"}
    # Tuned: one persistent connection (and WAL + synchronous=NORMAL on SQLite).
    db["CONN_MAX_AGE"] = None if tuned else 0
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        SECRET_KEY=SECRET,
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE=__name__,
        ROOT_URLCONF=__name__,
        DATABASES={"default": db},
        LOGGING_CONFIG=None,
    )
    from django.db.backends.signals import connection_created

    def on_connect(sender, connection, **kwargs):
        if connection.vendor == "sqlite":
            if tuned:
                with connection.cursor() as cur:
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
            TRACER.install(connection.connection)

    connection_created.connect(on_connect, weak=False)
    django.setup()

    from django.contrib.sessions.backends.db import SessionStore as DbStore
    from django.contrib.sessions.base_session import AbstractBaseSession
    from django.http import HttpResponse
    from django.urls import path

    table = args.table

    class BenchSession(AbstractBaseSession):
        class Meta:
            app_label = "sessions"
            db_table = table

    class SessionStore(DbStore):
        @classmethod
        def get_model_class(cls):
            return BenchSession

    SessionStore.__qualname__ = "SessionStore"  # Django's signing salt is built from it
    globals()["SessionStore"] = SessionStore

    modify = args.scenario == "modify"

    def view(request):
        if modify:
            s = request.session
            s["n"] = s.get("n", 0) + 1
        return HttpResponse(b"ok", content_type="text/plain")

    urlpatterns.append(path("", view))

    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


# -- the raw driver ------------------------------------------------------------------


def raw_loop(args, keys):
    """SELECT + decode + modify + encode + UPDATE per request, straight on the driver."""
    from sessctl.codec import Codec

    codec = Codec(SECRET)
    b = args.backend
    conn = raw_connect(b, args.target)
    if b == "sqlite":
        conn.execute("PRAGMA synchronous=NORMAL")
        TRACER.install(conn)
    t = quote(b, args.table)
    p = param(b)
    select = f"SELECT session_data FROM {t} WHERE session_key = {p} AND expire_date > {p}"
    upd = f"UPDATE {t} SET session_data = {p}, expire_date = {p} WHERE session_key = {p}"
    cur = conn.cursor()
    cookie_age = timedelta(seconds=COOKIE_AGE)

    def one(i):
        key = keys[i % len(keys)]
        now = datetime.now(UTC)
        cur.execute(select, (key, db_value(b, now)))
        found = cur.fetchone()
        data = codec.decode(found[0])
        data["n"] = data.get("n", 0) + 1
        cur.execute(upd, (codec.encode(data), db_value(b, now + cookie_age), key))
        conn.commit()

    return one


def wsgi_loop(app, keys, modify):
    base = base_environ()
    names = [f"sessionid={k}" for k in keys]
    state = {}

    def start_response(status, headers, exc_info=None):
        state["status"] = status
        state["headers"] = headers

    def one(i):
        env = dict(base)
        env["HTTP_COOKIE"] = names[i % len(names)]
        env["wsgi.input"] = io.BytesIO(b"")
        body = app(env, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return state

    def checked(i):
        st = one(i)
        if not st["status"].startswith("200"):
            raise SystemExit(f"request {i} answered {st['status']}")
        cookies = [v.strip() for n, v in st["headers"] if n.lower() == "set-cookie"]
        if modify and not any(c.startswith(names[i % len(names)] + ";") for c in cookies):
            raise SystemExit(f"request {i}: the session was not kept (Set-Cookie: {cookies!r})")
        if not modify and cookies:
            raise SystemExit(f"request {i}: an untouched session sent a cookie: {cookies!r}")

    return one, checked


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", required=True, choices=["sessctl", "django", "django-stock", "raw", "bare"])
    ap.add_argument("--scenario", default="modify", choices=["modify", "untouched"])
    ap.add_argument("--backend", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--profile", action="store_true", help="cProfile the timed loop (to stderr)")
    args = ap.parse_args()
    with open(args.keys) as fh:
        keys = json.load(fh)
    if args.impl == "raw":
        one = checked = raw_loop(args, keys)
    else:
        app = django_app(args) if args.impl.startswith("django") else sessctl_app(args)
        one, checked = wsgi_loop(app, keys, args.scenario == "modify")
    # Warm-up, checking every response; then the timed loop (check one in 64).
    i = 0
    for _ in range(args.warmup):
        checked(i)
        i += 1
    traced = TRACER.count / max(1, args.warmup) if args.backend == "sqlite" else None
    TRACER.stop()
    timed = 0
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    deadline = t0 + args.seconds
    while True:
        for _ in range(63):
            one(i)
            i += 1
        checked(i)
        i += 1
        timed += 64
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - t0
    if args.profile:
        import pstats

        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats(os.environ.get("PSORT","tottime")).print_stats(int(os.environ.get("PN","25")))
    print(json.dumps({"requests": i, "timed": timed, "seconds": elapsed, "rps": timed / elapsed,
                      "statements_per_request": traced}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
