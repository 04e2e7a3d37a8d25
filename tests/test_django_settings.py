"""`--django-settings MODULE`: the project's own settings, read the way manage.py reads them.

What is read (database with OPTIONS, keys, SESSION_*, USE_TZ/TIME_ZONE, the engine and its
table), what wins over it (flags, environment), and every refusal as one clear line.
"""

from __future__ import annotations

import json
import sys

import pytest

from django_project import django, make_project, sessctl

pytest.importorskip("django")
pytestmark = pytest.mark.usefixtures("isolated")

def site_at(tmp_path, db_name="app.db", **kw):
    return make_project(tmp_path / "site", db_url=f"sqlite:///{tmp_path / 'site' / db_name}", **kw)


def run(root, *args, code=0, env=None):
    return sessctl(root, "--django-settings", "proj.settings", *args, code=code, env=env)


def test_the_settings_sessctl_reads(tmp_path):
    root = site_at(tmp_path, secret="new-key", fallbacks=("old-key",), extra="""
        SESSION_COOKIE_AGE = 3600
        SESSION_COOKIE_NAME = "appsid"
        SESSION_EXPIRE_AT_BROWSER_CLOSE = True
        """)
    django(root, "migrate")
    r = run(root, "--debug", "stats", "--json")
    assert "app.db" in r.stderr and "django_session" in r.stderr
    assert "America/New_York" in r.stderr  # USE_TZ = False: naive times are New York's
    # a session signed with the fallback key verifies; its default lifetime is the project's
    key = django(root, "create", "--data", '{"a": 1}')["key"]
    shown = json.loads(run(root, "show", key, "--json").stdout)
    assert shown["verified"] is True and shown["data"] == {"a": 1}
    run(root, "set-life", key, "1h")
    run(root, "reset-life", key)
    seen = django(root, "load", "--key", key)
    assert seen["expiry_age"] == 3600 and seen["browser_close"] is True
    assert [i["key"] for i in json.loads(run(root, "list", "--browser-close", "--json").stdout)] == [key]


def test_flags_and_environment_win(tmp_path):
    root = site_at(tmp_path)
    django(root, "migrate")
    other = tmp_path / "other.db"
    r = run(root, "--db", f"sqlite:///{other}", "--debug", "init")
    assert "other.db" in r.stderr and other.exists()
    r = run(root, "--debug", "stats", env={"SESSCTL_TABLE": "elsewhere"}, code=1)
    assert "elsewhere" in r.stderr


def test_config_file_names_the_project(tmp_path):
    root = site_at(tmp_path)
    django(root, "migrate")
    (root / "sessctl.toml").write_text('django_settings = "proj.settings"\n')
    key = django(root, "create", "--data", '{"b": 2}')["key"]
    assert json.loads(sessctl(root, "show", key, "--json").stdout)["data"] == {"b": 2}
    assert json.loads(sessctl(root, "show", key, "--json", env={"SESSCTL_DJANGO_SETTINGS": "proj.settings"})
                      .stdout)["data"] == {"b": 2}


def test_the_password_is_never_printed(tmp_path):
    root = make_project(tmp_path / "site", db_url="postgresql://app:s3cr%40t-pw@127.0.0.1:1/app")
    r = run(root, "--debug", "list", code=1)
    assert "s3cr" not in r.stdout + r.stderr
    assert "postgresql" in r.stderr  # it did try that database


@pytest.mark.parametrize(
    "engine,why",
    [
        ("django.contrib.sessions.backends.cache", "cache"),
        ("django.contrib.sessions.backends.signed_cookies", "cookie"),
        ("django.contrib.sessions.backends.file", "file"),
    ],
)
def test_engines_sessctl_cannot_serve_are_refused(tmp_path, engine, why):
    root = site_at(tmp_path, engine=engine)
    r = run(root, "list", code=1)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and why in lines[0] and "Traceback" not in r.stderr


def test_a_serializer_other_than_json_is_refused(tmp_path):
    root = site_at(tmp_path, extra='SESSION_SERIALIZER = "proj.serializers.Pickle"\n')
    r = run(root, "list", code=1)
    assert r.stderr.startswith("Error: ") and "SESSION_SERIALIZER" in r.stderr and len(r.stderr.splitlines()) == 1


def test_a_database_engine_sessctl_cannot_open_is_refused(tmp_path):
    root = site_at(tmp_path)
    (root / "proj" / "settings.py").write_text(
        (root / "proj" / "settings.py").read_text()
        + 'DATABASES = {"default": {"ENGINE": "django.db.backends.oracle", "NAME": "x"}}\n'
    )
    r = run(root, "list", code=1)
    assert "oracle" in r.stderr and len(r.stderr.splitlines()) == 1


def test_a_missing_settings_module_is_one_line(tmp_path):
    r = sessctl(tmp_path, "--django-settings", "nope.settings", "list", code=1)
    assert r.stderr.startswith("Error: ") and "nope.settings" in r.stderr and len(r.stderr.splitlines()) == 1


def test_django_missing_is_one_clear_line(tmp_path):
    import subprocess

    root = site_at(tmp_path)
    code = "import sys; sys.modules['django'] = None; from sessctl.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "--django-settings", "proj.settings", "list"],
        cwd=root, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and "Django" in proc.stderr and "virtualenv" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_plain_commands_do_not_import_django(tmp_path):
    import subprocess

    code = ("import sys; from sessctl.cli import main; sys.argv = ['sessctl', 'list'];\n"
            "try: main()\nexcept SystemExit: pass\nprint('django' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_database_urls_from_django_databases():
    from sessctl.djangoconf import database_url

    assert database_url({"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/app/db.sqlite3"}) == \
        "sqlite:////srv/app/db.sqlite3"
    url = database_url({"ENGINE": "django.db.backends.postgresql", "NAME": "app", "USER": "me", "PASSWORD": "p@ss/w",
                        "HOST": "db.internal", "PORT": 5433,
                        "OPTIONS": {"sslmode": "require", "isolation_level": 2, "pool": True}})
    assert url == "postgresql+psycopg://me:p%40ss%2Fw@db.internal:5433/app?sslmode=require"
    url = database_url({"ENGINE": "django.contrib.gis.db.backends.postgis", "NAME": "geo", "HOST": "/run/postgresql"})
    assert url == "postgresql+psycopg:///geo?host=%2Frun%2Fpostgresql"
    url = database_url({"ENGINE": "django.db.backends.mysql", "NAME": "app", "USER": "u", "HOST": "127.0.0.1",
                        "OPTIONS": {"charset": "utf8mb4", "ssl": {"ca": "/etc/ca.pem"}, "init_command": "SET x=1"}})
    assert url == "mysql+pymysql://u@127.0.0.1/app?charset=utf8mb4&init_command=SET+x%3D1&ssl_ca=%2Fetc%2Fca.pem"
