"""A real Django project on disk, and a runner that drives it, as the oracle for sessctl.

Unlike tests/django_peer.py (``settings.configure()``), this writes a project the way
``startproject`` would: a ``proj`` package with a settings *module*. That matters: only a
settings module makes Django set ``TZ`` to ``TIME_ZONE``, so under ``USE_TZ = False`` its
naive times are the project's local wall time, as in production.

    make_project(tmp_path, db_url=..., table=..., use_tz=False, ...)   # from a test
    python tests/django_project.py [--now ISO] CMD ...    # cwd = the folder holding proj/

Commands print one JSON document on stdout and exit 0 (errors: stderr, exit 1):

    migrate                                   create --data JSON [--expiry VALUE]
    load --key K                              save --key K --name N --value JSON
    clear-expired                             keys
    http --path /login|/whoami|/touch [--cookie K]

``--now`` freezes ``django.utils.timezone.now`` (naive wall time under USE_TZ=False,
or an aware ISO value). A table other than ``django_session`` gets a model of its own
(``proj.models.ProjSession``) and an engine ``proj.sessions`` subclassing the chosen
built-in engine, so parallel test runs on a shared server never share a table.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote, urlsplit

RUNNER = Path(__file__).resolve()
ENGINES = {
    "db": "django.contrib.sessions.backends.db",
    "cached_db": "django.contrib.sessions.backends.cached_db",
}


def database_dict(url: str) -> tuple[dict, str]:
    """DATABASES['default'] for a SQLAlchemy-style URL, and code the settings need first."""
    parts = urlsplit(url)
    dialect = parts.scheme.split("+")[0]
    if dialect == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parts.path[1:]}, ""
    db = {
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }
    if dialect in ("postgresql", "postgres"):
        return {**db, "ENGINE": "django.db.backends.postgresql"}, ""
    # PyMySQL standing in for mysqlclient, as projects do in settings.py.
    shim = (
        "import pymysql\n"
        "pymysql.version_info = (1, 4, 3, 'final', 0)\n"
        "pymysql.install_as_MySQLdb()\n"
    )
    return {**db, "ENGINE": "django.db.backends.mysql", "OPTIONS": {"charset": "utf8mb4"}}, shim


def make_project(
    root: Path,
    *,
    db_url: str,
    table: str = "django_session",
    use_tz: bool = False,
    time_zone: str = "America/New_York",
    engine: str = "db",
    caches: dict | None = None,
    secret: str = "django-project-secret",
    fallbacks: tuple[str, ...] = (),
    extra: str = "",
) -> Path:
    """Write ``root/proj`` (settings, models, urls); return ``root``."""
    pkg = root / "proj"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    database, shim = database_dict(db_url)
    custom = table != "django_session"
    session_engine = "proj.sessions" if custom else ENGINES.get(engine, engine)
    settings = f"""\
        SECRET_KEY = {secret!r}
        SECRET_KEY_FALLBACKS = {list(fallbacks)!r}
        DEBUG = False
        ALLOWED_HOSTS = ["*"]
        USE_TZ = {use_tz!r}
        TIME_ZONE = {time_zone!r}
        INSTALLED_APPS = ["django.contrib.sessions", "proj"]
        MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
        ROOT_URLCONF = "proj.urls"
        DATABASES = {{"default": {database!r}}}
        SESSION_ENGINE = {session_engine!r}
        CACHES = {caches or {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}!r}
        """
    (pkg / "settings.py").write_text(shim + textwrap.dedent(settings) + textwrap.dedent(extra))
    models = ""
    if custom:
        models = f"""\
            from django.contrib.sessions.base_session import AbstractBaseSession


            class ProjSession(AbstractBaseSession):
                class Meta:
                    app_label = "proj"
                    db_table = {table!r}

                @classmethod
                def get_session_store_class(cls):
                    from proj.sessions import SessionStore

                    return SessionStore
            """
        base = ENGINES.get(engine, engine)
        (pkg / "sessions.py").write_text(textwrap.dedent(f"""\
            from {base} import SessionStore as BaseStore


            class SessionStore(BaseStore):
                @classmethod
                def get_model_class(cls):
                    from proj.models import ProjSession

                    return ProjSession
            """))
    (pkg / "models.py").write_text(textwrap.dedent(models))
    (pkg / "urls.py").write_text(textwrap.dedent("""\
        import json

        from django.http import HttpResponse
        from django.urls import path


        def login(request):
            request.session["user"] = request.GET.get("user", "ann")
            return HttpResponse("ok")


        def whoami(request):
            return HttpResponse(json.dumps({"user": request.session.get("user")}))


        def touch(request):
            request.session["n"] = request.session.get("n", 0) + 1
            return HttpResponse(json.dumps({"user": request.session.get("user")}))


        urlpatterns = [path("login", login), path("whoami", whoami), path("touch", touch)]
        """))
    return root


def clean_env(**extra: str) -> dict:
    """The environment without the developer's SESSCTL_* or DJANGO_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSCTL_", "DJANGO_"))}
    env.update(extra)
    return env


def django(root: Path, *args: str, now: str | None = None) -> dict:
    """Run one runner command in the project at ``root``; its JSON answer."""
    import subprocess

    cmd = [sys.executable, str(RUNNER), *(["--now", now] if now else []), *args]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def django_batch(root: Path, *steps: list[str]) -> list:
    """Several runner commands in one Django process (each step may start with --now ISO;
    the word ``$KEY`` stands for the last key a step answered with)."""
    return django(root, "batch", json.dumps([list(step) for step in steps]))


def sessctl_many(root: Path, *argvs: list[str], env: dict | None = None) -> list[dict]:
    """Several sessctl commands run one after the other in one fresh process, in ``root``;
    each answer is {code, stdout, stderr} (the caller checks the codes)."""
    import subprocess

    cmd = [sys.executable, str(RUNNER), "sessctl-many", json.dumps([list(a) for a in argvs])]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=clean_env(**(env or {})))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def sessctl(root: Path, *args: str, code: int = 0, env: dict | None = None):
    """Run the real ``sessctl`` command in ``root`` (a process of its own: Django's settings
    are global to a process, so each project needs a fresh one)."""
    import subprocess

    cmd = [sys.executable, "-m", "sessctl", *args]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, env=clean_env(**(env or {})))
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


# ----------------------------------------------------------------------------- runner


def _iso(value):
    return None if value is None else value.isoformat()


def _store_class():
    from importlib import import_module

    from django.conf import settings

    return import_module(settings.SESSION_ENGINE).SessionStore


def _raw_row(key):
    """The row as Django's ORM returns it (naive under USE_TZ=False), or None."""
    model = _store_class().get_model_class()
    obj = model.objects.filter(pk=key).first()
    return None if obj is None else {"expire_date": _iso(obj.expire_date), "session_data": obj.session_data}


def _parse_expiry(value):
    import datetime

    if value is None:
        return None
    for convert in (int, float, datetime.datetime.fromisoformat):
        try:
            return convert(value)
        except ValueError:
            pass
    raise ValueError(f"bad expiry {value!r}")


def cmd_migrate(args):
    from django.core.management import call_command
    from django.db import connection

    model = _store_class().get_model_class()
    if model._meta.db_table == "django_session":
        call_command("migrate", "sessions", verbosity=0, interactive=False)
    elif model._meta.db_table not in connection.introspection.table_names():
        with connection.schema_editor() as editor:
            editor.create_model(model)
    return {"ok": True}


def cmd_create(args):
    s = _store_class()()
    for name, value in json.loads(args.data).items():
        s[name] = value
    if args.expiry is not None:
        s.set_expiry(_parse_expiry(args.expiry))
    s.save()
    return {"key": s.session_key, "row": _raw_row(s.session_key), "expiry": s.get("_session_expiry")}


def cmd_load(args):
    cls = _store_class()
    s = cls(session_key=args.key)
    data = dict(s.items())
    return {
        "data": data,
        "live": s.session_key is not None and bool(data),
        "expiry_age": s.get_expiry_age(),
        "expiry_date": _iso(s.get_expiry_date()),
        "browser_close": s.get_expire_at_browser_close(),
        "exists": cls().exists(args.key),
        "row": _raw_row(args.key),
    }


def cmd_save(args):
    s = _store_class()(session_key=args.key)
    s[args.name] = json.loads(args.value)
    age = s.get_expiry_age()
    s.save()
    return {"key": s.session_key, "expiry_age": age, "row": _raw_row(s.session_key),
            "expiry": s.get("_session_expiry")}


def cmd_clear_expired(args):
    from django.core.management import call_command

    call_command("clearsessions")
    return cmd_keys(args)


def cmd_keys(args):
    model = _store_class().get_model_class()
    return {"keys": sorted(model.objects.values_list("session_key", flat=True))}


def cmd_http(args):
    from django.conf import settings
    from django.test import Client

    client = Client()
    if args.cookie:
        client.cookies[settings.SESSION_COOKIE_NAME] = args.cookie
    response = client.get(args.path, {"user": args.user} if args.user else {})
    cookie = response.cookies.get(settings.SESSION_COOKIE_NAME)
    body = response.content.decode()
    return {
        "status": response.status_code,
        "body": json.loads(body) if body.startswith("{") else body,
        "set_cookie": cookie.OutputString() if cookie is not None else None,
        "key": cookie.value if cookie is not None else None,
    }


def _parser():
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--now")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("migrate", "clear-expired", "keys"):
        sub.add_parser(name)
    c = sub.add_parser("create")
    c.add_argument("--data", default="{}")
    c.add_argument("--expiry")
    sub.add_parser("load").add_argument("--key", required=True)
    s = sub.add_parser("save")
    for opt in ("--key", "--name", "--value"):
        s.add_argument(opt, required=True)
    h = sub.add_parser("http")
    h.add_argument("--path", required=True)
    h.add_argument("--cookie")
    h.add_argument("--user")
    return p


def _step(argv):
    import contextlib

    args = _parser().parse_args(argv)
    frozen = contextlib.nullcontext()
    if args.now:
        import datetime
        from unittest import mock

        moment = datetime.datetime.fromisoformat(args.now)
        frozen = mock.patch("django.utils.timezone.now", lambda: moment)
    with frozen:
        return globals()["cmd_" + args.cmd.replace("-", "_")](args)


def run_sessctl_many(argvs: list[list[str]]) -> list[dict]:
    """Several ``sessctl`` commands in this one process (CliRunner): Django's settings are
    global to a process, and one project's commands can share them."""
    from click.testing import CliRunner

    from sessctl.cli import cli

    out = []
    for argv in argvs:
        r = CliRunner().invoke(cli, argv)
        out.append({"code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr})
    return out


def main(argv=None) -> int:
    """One command, or ``batch JSON`` (a list of argument lists) in one process: Django
    starts once, which matters on a busy machine."""
    import contextlib

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sessctl-many"]:  # no Django set up here: sessctl reads the settings itself
        print(json.dumps(run_sessctl_many(json.loads(argv[1]))))
        return 0
    sys.path.insert(0, os.getcwd())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    try:
        import django

        django.setup()
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON only
            if argv[:1] == ["batch"]:
                result, last = [], None
                for step in json.loads(argv[1]):  # "$KEY": the key the last step answered with
                    result.append(_step([last if word == "$KEY" else word for word in step]))
                    last = result[-1].get("key") or last
            else:
                result = _step(argv)
        print(json.dumps(result))
    except Exception as exc:
        print(f"django_project {' '.join(argv)[:80]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
