"""The command on a database that real Django made and wrote: show, set-life, purge; Django agrees."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from helpers import django as peer

pytest.importorskip("django")

pytestmark = pytest.mark.usefixtures("isolated")  # no SESSCTL_* or sessctl.toml from the shell


@pytest.fixture
def django(settings):
    """Run one django_peer command on the test's database and table."""

    def django(*args):
        return peer(settings, *args)

    django("migrate")
    return django


def test_django_database_as_it_is(django, run_ok):
    plain = django("create", "--data", '{"user": 1, "name": "Zoë"}')["key"]
    idle = django("create", "--data", '{"user": 2}', "--expiry", "600")["key"]
    gone = django("create", "--data", '{"user": 3}', "--expiry", "-10")["key"]  # already expired

    assert "already exists" in run_ok("init").stderr  # Django's table is left as it is

    info = json.loads(run_ok("show", plain, "--json").stdout)
    assert info["data"] == {"user": 1, "name": "Zoë"} and info["verified"] is True
    assert info["lifetime"] == {"kind": "default"}
    assert json.loads(run_ok("show", idle, "--json").stdout)["lifetime"] == {"kind": "idle", "seconds": 600}
    assert json.loads(run_ok("show", gone, "--json").stdout)["expired"] is True
    assert [i["key"] for i in json.loads(run_ok("list", "--expired", "--json").stdout)] == [gone]

    run_ok("set-life", plain, "2h")
    seen = django("load", "--key", plain)
    assert seen["exists"] and seen["data"]["user"] == 1 and seen["data"]["name"] == "Zoë"
    assert 7190 <= seen["expiry_age"] <= 7200
    deadline = datetime.fromisoformat(seen["expiry_date"])
    assert abs(deadline - (datetime.now(timezone.utc) + timedelta(hours=2))) < timedelta(seconds=60)
    assert datetime.fromisoformat(django("row", "--key", plain)["expire_date"]) == deadline

    run_ok("till-browser-close", idle)
    seen = django("load", "--key", idle)
    assert seen["browser_close"] is True and seen["data"]["user"] == 2

    run_ok("reset-life", idle)
    seen = django("load", "--key", idle)
    assert seen["browser_close"] is False and seen["expiry_age"] == 1209600

    report = json.loads(run_ok("purge", "--expired", "--json").stdout)
    assert report["deleted"] == 1
    assert django("row", "--key", gone)["found"] is False
    assert django("load", "--key", plain)["exists"] and django("load", "--key", idle)["exists"]
    assert django("clear-expired")["remaining"] == 2  # nothing left for Django's own purge


def test_a_session_django_changes_after_set_life(django, run_ok):
    key = django("create", "--data", '{"cart": [1, 2]}')["key"]
    run_ok("set-life", key, "90m", "--idle")
    django("set-item", "--key", key, "--name", "cart", "--value", "[1, 2, 3]")
    info = json.loads(run_ok("show", key, "--json").stdout)
    assert info["data"]["cart"] == [1, 2, 3]
    assert info["lifetime"] == {"kind": "idle", "seconds": 5400}
