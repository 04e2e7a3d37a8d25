"""The command says only what the app serving the table will do: Django or sessctl's runtime."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sessctl.cli import cli

from django_project import django, make_project

pytest.importorskip("django")
pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def site(settings, tmp_path):
    root = make_project(tmp_path / "site", db_url=settings.database_url, table=settings.table, use_tz=True,
                        secret=settings.secret_key)
    django(root, "migrate")
    return root


@pytest.fixture
def run(settings):
    def run(app, *args, code=0):
        r = CliRunner().invoke(
            cli, ["--db", settings.database_url, "--table", settings.table, "--app", app, *args],
            env={"SESSCTL_SECRET_KEY": settings.secret_key},
        )
        assert r.exit_code == code, r.output
        return r

    return run


def test_till_browser_close_tells_what_djangos_cookie_does(site, run):
    key = django(site, "http", "--path", "/login")["key"]
    said = run("django", "till-browser-close", key).stderr
    assert "next request" not in said
    assert "modifies the session" in said  # Django re-sends the cookie only then
    said = run("sessctl", "till-browser-close", key).stderr
    assert "re-sends its cookie on the next request" in said


def test_set_life_for_django_writes_no_marker_and_warns_about_requests_in_flight(site, run):
    key = django(site, "http", "--path", "/login")["key"]
    said = run("django", "set-life", key, "2h").stderr
    assert "in flight" in said and "delete" in said  # only delete is a dependable forced logout
    seen = django(site, "load", "--key", key)
    assert set(seen["data"]) == {"user", "_session_expiry"}
    assert 7140 <= seen["expiry_age"] <= 7200


def test_an_idle_limit_beside_a_deadline_is_refused_for_django(site, run):
    key = django(site, "http", "--path", "/login")["key"]
    r = run("django", "set-life", key, "8h", "--idle", "30m", code=2)
    assert "Django" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert django(site, "load", "--key", key)["expiry_age"] == 1209600  # nothing was changed
    run("django", "set-life", key, "30m", "--idle")  # an idle timeout alone is Django's own
    assert django(site, "load", "--key", key)["expiry_age"] == 1800


def test_show_and_list_never_report_a_limit_django_does_not_enforce(site, run):
    key = django(site, "http", "--path", "/login")["key"]
    run("sessctl", "set-life", key, "8h", "--idle", "30m")  # both limits: sessctl's runtime keeps them
    ours = json.loads(run("sessctl", "show", key, "--json").stdout)["lifetime"]
    assert ours["kind"] == "absolute" and ours["idle_seconds"] == 1800
    theirs = json.loads(run("django", "show", key, "--json").stdout)["lifetime"]
    assert theirs["kind"] == "absolute" and "idle_seconds" not in theirs
    listed = json.loads(run("django", "list", "--json").stdout)
    assert [i["lifetime"] for i in listed] == [theirs]
    said = [line for line in run("django", "show", key).stdout.splitlines() if line.startswith("lifetime")]
    assert len(said) == 1 and "idle" not in said[0]
