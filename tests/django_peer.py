"""Real Django as a session oracle for sessctl's tests (sessctl never imports Django).

    python tests/django_peer.py --db URL --secret KEY [--fallback KEY]... [--table NAME] CMD

    encode --data JSON [--timestamp INT]     decode --session-data STR
    migrate                                  sqlmigrate
    create --data JSON [--expiry VALUE]      load --key K
    row --key K                              clear-expired
    set-item --key K --name N --value JSON
    middleware --cookie K_OR_EMPTY --action read|write|flush|set-expiry|none
               [--expiry VALUE] [--status 200] [--setting NAME=JSON]...

Django is configured here with USE_TZ=True and TIME_ZONE="America/Chicago" (on purpose,
so time-zone bugs show) and the db session engine.  Each command prints one JSON
document on stdout and exits 0; errors go to stderr with exit status 1.  Datetimes
are printed as ISO-8601 UTC.  --db takes SQLAlchemy-style URLs (sqlite:////abs.db,
sqlite:///rel.db, postgresql[+psycopg]://..., mysql[+pymysql]://... or mariadb://...).
--expiry VALUE is an int/float of seconds (0 = browser close), "none", or an ISO
datetime for datetime.fromisoformat (naive stays naive).  A --table other than
django_session uses a custom AbstractBaseSession model with that db_table and a store
class still named SessionStore (same signing salt); migrate and sqlmigrate then use
the schema editor instead of the sessions migration.
"""

import argparse
import contextlib
import datetime
import io
import json
import sys
from importlib import import_module
from unittest import mock
from urllib.parse import unquote, urlsplit

import django
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore as DbStore
from django.contrib.sessions.middleware import SessionMiddleware
from django.core import signing
from django.core.handlers.exception import convert_exception_to_response
from django.core.management import call_command
from django.db import connection
from django.http import HttpResponse
from django.test import RequestFactory

DEFAULT_TABLE = "django_session"
urlpatterns = []  # this module doubles as ROOT_URLCONF (needed for 400 responses)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.exit(f"{self.prog}: error: {message}")  # exit status 1


def database_from_url(url):
    parts = urlsplit(url)
    dialect = parts.scheme.split("+")[0]
    if dialect == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parts.path[1:] or ":memory:"}
    db = {"NAME": parts.path.lstrip("/"), "USER": unquote(parts.username or ""),
          "PASSWORD": unquote(parts.password or ""), "HOST": parts.hostname or "",
          "PORT": str(parts.port or "")}
    if dialect in ("postgresql", "postgres"):
        return {**db, "ENGINE": "django.db.backends.postgresql"}
    if dialect in ("mysql", "mariadb"):
        import pymysql

        if pymysql.version_info < (1, 4, 3):  # Django requires "mysqlclient >= 1.4.3"
            pymysql.version_info = (1, 4, 3, "final", 0)
        pymysql.install_as_MySQLdb()
        return {**db, "ENGINE": "django.db.backends.mysql", "OPTIONS": {"charset": "utf8mb4"}}
    raise ValueError(f"unsupported database URL: {url}")


def parse_expiry(value):
    if value.lower() == "none":
        return None
    for convert in (int, float, datetime.datetime.fromisoformat):
        try:
            return convert(value)
        except ValueError:
            pass
    raise ValueError(f"bad expiry value: {value!r}")


def iso_utc(dt):
    if dt is not None and dt.tzinfo is not None:  # naive values are left as they are
        dt = dt.astimezone(datetime.timezone.utc)
    return None if dt is None else dt.isoformat()


def build_parser():
    p = Parser(description="Real-Django session oracle for sessctl tests.")
    p.add_argument("--db", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--fallback", action="append", default=[])
    p.add_argument("--table", default=DEFAULT_TABLE)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("encode").add_argument("--data", required=True)
    sub.choices["encode"].add_argument("--timestamp", type=int)
    sub.add_parser("decode").add_argument("--session-data", required=True)
    for name in ("migrate", "sqlmigrate", "clear-expired"):
        sub.add_parser(name)
    sub.add_parser("create").add_argument("--data", required=True)
    sub.choices["create"].add_argument("--expiry")
    for name in ("load", "row"):
        sub.add_parser(name).add_argument("--key", required=True)
    s = sub.add_parser("set-item")
    for opt in ("--key", "--name", "--value"):
        s.add_argument(opt, required=True)
    m = sub.add_parser("middleware")
    m.add_argument("--cookie", required=True)
    m.add_argument("--action", required=True,
                   choices=["read", "write", "flush", "set-expiry", "none"])
    m.add_argument("--expiry")
    m.add_argument("--status", type=int, default=200)
    m.add_argument("--setting", action="append", default=[])
    return p


def setup_django(args):
    overrides = {}
    for item in getattr(args, "setting", []):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--setting wants NAME=JSON, got {item!r}")
        overrides[name] = json.loads(value)
    custom = args.table != DEFAULT_TABLE
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="America/Chicago",
        SECRET_KEY=args.secret,
        SECRET_KEY_FALLBACKS=args.fallback,
        INSTALLED_APPS=["django.contrib.sessions", "django.contrib.contenttypes"],
        SESSION_ENGINE=__name__ if custom else "django.contrib.sessions.backends.db",
        DATABASES={"default": database_from_url(args.db)},
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        **overrides,
    )
    django.setup()
    if custom:
        install_custom_store(args.table)


def install_custom_store(table):
    """Define a session model on `table` plus a store class named SessionStore."""
    from django.contrib.sessions.base_session import AbstractBaseSession

    class PeerSession(AbstractBaseSession):
        class Meta:
            app_label = "sessions"
            db_table = table

        @classmethod
        def get_session_store_class(cls):
            return SessionStore

    class SessionStore(DbStore):
        @classmethod
        def get_model_class(cls):
            return PeerSession

    SessionStore.__qualname__ = "SessionStore"  # key_salt is built from __qualname__
    globals()["SessionStore"] = SessionStore  # SESSION_ENGINE is this module


def store_class():
    return import_module(settings.SESSION_ENGINE).SessionStore


def row_of(key):
    obj = store_class().get_model_class().objects.filter(pk=key).first()
    if obj is None:
        return {"found": False, "session_data": None, "expire_date": None}
    return {"found": True, "session_data": obj.session_data,
            "expire_date": iso_utc(obj.expire_date)}


def cmd_encode(args):
    frozen = contextlib.nullcontext()
    if args.timestamp is not None:  # freeze the signing clock for deterministic output
        ts = signing.b62_encode(args.timestamp)
        frozen = mock.patch.object(signing.TimestampSigner, "timestamp", lambda self: ts)
    with frozen:
        return {"session_data": store_class()().encode(json.loads(args.data))}


def cmd_decode(args):
    return {"data": store_class()().decode(args.session_data)}


def schema_sql(collect):
    """Create the custom table (or just collect its DDL) with the schema editor."""
    model = store_class().get_model_class()
    with connection.schema_editor(collect_sql=collect) as editor:
        if collect or model._meta.db_table not in connection.introspection.table_names():
            editor.create_model(model)
    return "\n".join(editor.collected_sql) if collect else ""


def cmd_migrate(args):
    if args.table == DEFAULT_TABLE:
        call_command("migrate", "sessions", verbosity=0, interactive=False)
    else:
        schema_sql(collect=False)
    return {"ok": True}


def cmd_sqlmigrate(args):
    if args.table != DEFAULT_TABLE:
        return {"sql": schema_sql(collect=True)}
    out = io.StringIO()
    call_command("sqlmigrate", "sessions", "0001", stdout=out, no_color=True)
    return {"sql": out.getvalue().strip()}


def cmd_create(args):
    s = store_class()()
    for name, value in json.loads(args.data).items():
        s[name] = value
    if args.expiry is not None:
        s.set_expiry(parse_expiry(args.expiry))
    s.save()
    row = row_of(s.session_key)
    return {"key": s.session_key, "expire_date": row["expire_date"],
            "session_data": row["session_data"]}


def cmd_load(args):
    cls = store_class()
    s = cls(session_key=args.key)
    data = dict(s.items())  # loads (or fails to load) the row first
    return {"data": data, "key_after": s.session_key, "expiry_age": s.get_expiry_age(),
            "expiry_date": iso_utc(s.get_expiry_date()),
            "browser_close": s.get_expire_at_browser_close(), "exists": cls().exists(args.key)}


def cmd_row(args):
    return row_of(args.key)


def cmd_clear_expired(args):
    call_command("clearsessions")
    return {"ok": True, "remaining": store_class().get_model_class().objects.count()}


def cmd_set_item(args):
    s = store_class()(session_key=args.key)
    s[args.name] = json.loads(args.value)
    s.save()
    return {"key": s.session_key, "expire_date": row_of(s.session_key)["expire_date"]}


def cmd_middleware(args):
    def view(request):
        session = request.session
        if args.action == "read":
            session.get("x")
        elif args.action == "write":
            session["x"] = 1
        elif args.action == "flush":
            session.flush()
        elif args.action == "set-expiry":
            session.set_expiry(parse_expiry(args.expiry))
        return HttpResponse(status=args.status)

    name = settings.SESSION_COOKIE_NAME
    factory = RequestFactory()
    if args.cookie:
        factory.cookies[name] = args.cookie
    request = factory.get("/")
    # Wrap like Django's handler does, so SessionInterrupted becomes a 400 response.
    handler = convert_exception_to_response(
        SessionMiddleware(convert_exception_to_response(view)))
    response = handler(request)
    cookie = response.cookies.get(name)
    return {"status": response.status_code,
            "set_cookie": cookie.OutputString() if cookie is not None else None,
            "vary": response.get("Vary"), "key": request.session.session_key}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        setup_django(args)
        handler = globals()["cmd_" + args.cmd.replace("-", "_")]
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON only
            result = handler(args)
        print(json.dumps(result))
    except Exception as exc:
        print(f"django_peer {args.cmd}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
