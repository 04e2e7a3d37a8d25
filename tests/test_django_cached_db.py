"""cached_db: Django reads its cache before the table, so every change sessctl makes to a
session must reach Django's cache too (through Django's own cache API).

A real project with SESSION_ENGINE cached_db and a cache shared between processes (the
file-based cache, and Redis on 127.0.0.1:6379), served through Django's middleware, under
USE_TZ = False and True (TIME_ZONE America/New_York).
"""

from __future__ import annotations

import json
import secrets
import socket

import pytest

from django_project import django, django_batch, make_project, sessctl, sessctl_many

pytest.importorskip("django")
pytestmark = pytest.mark.usefixtures("isolated")


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["file", "redis"])
def cache(request, tmp_path):
    if request.param == "file":
        return {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                            "LOCATION": str(tmp_path / "cache")}}
    pytest.importorskip("redis")
    if not _redis_up():  # the issue asks for Redis "where it is running"; the file cache always runs
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    # A prefix of its own: other test runs share the Redis server.
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                        "LOCATION": "redis://127.0.0.1:6379/0", "KEY_PREFIX": f"t{secrets.token_hex(6)}"}}


@pytest.fixture(params=[False, True], ids=["naive", "aware"])
def site(request, settings, tmp_path, cache):
    root = make_project(
        tmp_path / "site", db_url=settings.database_url, table=settings.table, use_tz=request.param,
        engine="cached_db", caches=cache, secret=settings.secret_key, extra="SESSION_COOKIE_AGE = 3600\n",
    )
    django(root, "migrate")
    return root


def expire_in_table(settings, key):
    """The row alone expires (as time would do it); Django's cache still holds the session."""
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {settings.table} SET expire_date = '2001-01-01 00:00:00' "
                              "WHERE session_key = :k"), {"k": key})
    finally:
        engine.dispose()


def login():
    return [["http", "--path", "/login", "--user", "ann"], ["http", "--path", "/whoami", "--cookie", "$KEY"]]


def whoami(key):
    return ["http", "--path", "/whoami", "--cookie", key]


def test_every_change_reaches_djangos_cache(site, settings):
    def run(*args):
        return sessctl(site, "--django-settings", "proj.settings", *args)

    steps = django_batch(site, *login(), *login(), *login(), ["load", "--key", "$KEY"])
    a, b, c = steps[0]["key"], steps[2]["key"], steps[4]["key"]
    assert [steps[i]["body"]["user"] for i in (1, 3, 5)] == ["ann"] * 3
    assert steps[6]["expiry_age"] == 3600

    expire_in_table(settings, b)
    assert django(site, *whoami(b))["body"]["user"] == "ann"  # served from Django's cache: the test can fail

    answers = sessctl_many(site, *(["--django-settings", "proj.settings", *command] for command in
                                   (["delete", a], ["purge", "--expired", "--json"], ["set-life", c, "2h"])))
    assert [answer["code"] for answer in answers] == [0, 0, 0], answers
    assert json.loads(answers[1]["stdout"])["deleted"] == 1
    after = django_batch(site, whoami(a), whoami(b), ["load", "--key", c])
    assert [after[0]["body"]["user"], after[1]["body"]["user"]] == [None, None]  # both logged out
    assert 7140 <= after[2]["expiry_age"] <= 7200  # the new lifetime, seen at once

    run("till-browser-close", c)
    assert django(site, "load", "--key", c)["browser_close"] is True
    run("reset-life", c)
    seen, touched, who = django_batch(site, ["load", "--key", c], ["http", "--path", "/touch", "--cookie", c], whoami(c))
    assert seen["browser_close"] is False and seen["expiry_age"] == 3600
    assert touched["body"]["user"] == who["body"]["user"] == "ann"  # Django saves it and reads it back

    run("purge", "--all", "--yes")
    assert django(site, *whoami(c))["body"]["user"] is None
