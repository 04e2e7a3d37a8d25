"""Sessions written by real Django's login() are found and ended by user, on every backend.

Django's table has no user index (sessctl never changes Django's table), so
the command decodes every live row with the secret key, and says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sessctl import SessionStore
from sessctl.cli import cli

pytest.importorskip("django")
HERE = Path(__file__).parent
pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def django(settings):
    def django(script, *args):
        out = subprocess.run(
            [sys.executable, str(HERE / script), "--db", settings.database_url, "--secret", settings.secret_key,
             "--table", settings.table, *args],
            capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    django("django_peer.py", "migrate")
    return django




def login(django, pk: int) -> str:
    return django("django_login_peer.py", "login", "--user", str(pk))["key"]


def whoami(django, key: str):
    return django("django_login_peer.py", "whoami", "--cookie", key)["user"]


def test_django_logins_found_and_ended_by_user(django, run_ok, settings):
    k1, k2, kb = login(django, 7), login(django, 7), login(django, 8)
    anonymous = django("django_peer.py", "create", "--data", '{"cart": 3}')["key"]

    listed = run_ok("list", "--user", "7", "--json")
    assert {item["key"] for item in json.loads(listed.stdout)} == {k1, k2}
    assert "decoding 4 live sessions" in listed.stderr  # no index on Django's table: said so
    report = json.loads(run_ok("users", "--json").stdout)
    assert [(u["user"], u["sessions"]) for u in report] == [("7", 2), ("8", 1)]

    r = run_ok("delete", "--user", "7", "--except", k1)
    assert "1 session" in r.stderr and "decoding" in r.stderr
    assert whoami(django, k2) is None  # Django sees that device logged out
    assert whoami(django, k1) == "7" and whoami(django, kb) == "8"
    assert django("django_peer.py", "load", "--key", anonymous)["data"] == {"cart": 3}

    store = SessionStore(settings)
    try:
        found = store.user_sessions("7")
        assert [s.key for s in found] == [k1] and found.method == "scan"
    finally:
        store.close()


def test_rows_whose_signature_fails_are_nobody_s(django, run_ok, settings):
    key = login(django, 7)
    forged = SessionStore(settings.replace(secret_key="another-secret"))
    try:
        forged.create_table()
        other = forged.create_row(forged.codec.encode({"_auth_user_id": "7"}), forged.now().replace(year=2100))
    finally:
        forged.close()
    listed = json.loads(run_ok("list", "--user", "7", "--json").stdout)
    assert [item["key"] for item in listed] == [key]  # the app would not trust `other` either
    assert other != key
    assert [(u["user"], u["sessions"]) for u in json.loads(run_ok("users", "--json").stdout)] == [("7", 1)]


def test_scan_needs_the_secret(django, settings):
    login(django, 7)
    r = CliRunner().invoke(cli, ["--db", settings.database_url, "--table", settings.table, "list", "--user", "7"])
    assert r.exit_code == 1 and "secret key" in r.stderr and "Traceback" not in r.output


def test_user_commands_as_a_process_on_a_django_table(django, settings):
    """The installed command in a process of its own, the key from the environment (as an
    operator runs it): each user command answers by decoding, none trips over its own order of
    loading the key and the store."""
    from helpers import sessctl

    k7 = login(django, 7)
    users = sessctl(settings, "users", "--json")
    assert users.returncode == 0, users.stderr
    assert [(u["user"], u["sessions"]) for u in json.loads(users.stdout)] == [("7", 1)]
    assert "decoding" in users.stderr
    listed = sessctl(settings, "list", "--user", "7", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [item["key"] for item in json.loads(listed.stdout)] == [k7]
    dry = sessctl(settings, "delete", "--user", "7", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.split() == [k7], dry.stderr


def test_rebuild_index_builds_and_repairs_it_from_the_sessions(django, run_ok, run, settings, monkeypatch):
    """A table without a user index (here Django's own, later served by sessctl's runtime):
    --rebuild-index creates the index from the verified sessions, user commands then answer from
    it with the same results as the scan, and a second run repairs rows that went wrong."""
    from sqlalchemy import text

    import sessctl.userindex
    from sessctl.userindex import side_name

    monkeypatch.setattr(sessctl.userindex, "RECHECK_SECONDS", 0.0)  # no running app to wait for

    k1, k2, kb = login(django, 7), login(django, 7), login(django, 8)
    anonymous = django("django_peer.py", "create", "--data", '{"cart": 3}')["key"]
    scanned = {item["key"] for item in json.loads(run_ok("list", "--user", "7", "--json").stdout)}

    refused = run("users", "--rebuild-index", env={"SESSCTL_APP": "django"})
    assert refused.exit_code == 1 and "served by Django" in refused.output
    store = SessionStore(settings)
    assert not store.user_index_ready()  # the refusal changed nothing

    built = json.loads(run_ok("users", "--rebuild-index", "--json").stdout)
    assert built == {"created": True, "scanned": 4, "indexed": 3, "added": 3, "removed": 0}
    listed = run_ok("list", "--user", "7", "--json")
    assert {item["key"] for item in json.loads(listed.stdout)} == scanned == {k1, k2}
    assert "from the user index" in listed.stderr
    assert [(u["user"], u["sessions"]) for u in json.loads(run_ok("users", "--json").stdout)] == [("7", 2), ("8", 1)]

    side = side_name(settings.table)
    q = store.engine.dialect.identifier_preparer.quote
    with store.engine.begin() as conn:  # the index goes wrong: bob's row names alice, the anonymous one a user
        conn.execute(text(f"UPDATE {q(side)} SET user_id = '7' WHERE session_key = :k"), {"k": kb})
        conn.execute(text(f"DELETE FROM {q(side)} WHERE session_key = :k"), {"k": k2})
        conn.execute(
            text(f"INSERT INTO {q(side)} (session_key, user_id, created_at, last_seen) VALUES (:k, '9', :t, :t)"),
            {"k": anonymous, "t": store.now().replace(tzinfo=None)},
        )
    repaired = json.loads(run_ok("users", "--rebuild-index", "--json").stdout)
    assert repaired == {"created": False, "scanned": 4, "indexed": 3, "added": 2, "removed": 2}
    assert {i["key"] for i in json.loads(run_ok("list", "--user", "7", "--json").stdout)} == {k1, k2}
    assert [(u["user"], u["sessions"]) for u in json.loads(run_ok("users", "--json").stdout)] == [("7", 2), ("8", 1)]
    again = json.loads(run_ok("users", "--rebuild-index", "--json").stdout)
    assert again["added"] == again["removed"] == 0
    store.close()


def test_rebuild_index_waits_for_running_apps_and_indexes_their_logins(settings, monkeypatch):
    """An app that looked for the index just before it was created writes no index row until it
    looks again: the rebuild waits that long and indexes the logins it saved meanwhile, so
    'log bob out everywhere' misses none of them."""
    import sessctl.userindex
    from sessctl.session import Session
    from sessctl.userindex import side_name
    from sessctl.userrebuild import rebuild

    monkeypatch.setattr(sessctl.userindex, "RECHECK_SECONDS", 2.0)
    admin = SessionStore(settings)
    admin.create_table()
    with admin.engine.begin() as conn:  # a table made before the index existed
        conn.exec_driver_sql(f"DROP TABLE {admin.engine.dialect.identifier_preparer.quote(side_name(settings.table))}")
    admin.__dict__.pop("_user_index", None)
    app = SessionStore(settings)
    s = Session(app)
    s.login("bob")
    before = s.save()  # the app has looked: no index
    during = []

    def login_meanwhile(seconds):
        assert seconds > 2.0
        s = Session(app)
        s.login("bob")
        during.append(s.save())  # still no index for this app: no index row written

    done = rebuild(admin, on_wait=login_meanwhile)
    assert done.created and done.indexed == 2
    found = admin.user_sessions("bob")
    assert found.method == "index" and {x.key for x in found} == {before, *during}
    assert set(admin.end_user_sessions("bob")) == {before, *during}
    assert admin.user_sessions("bob") == []
    app.close()
    admin.close()


def test_rebuild_refuses_a_django_served_table_and_a_second_rebuild_at_once(settings, monkeypatch):
    import sessctl.userindex
    from sessctl.errors import ConfigError
    from sessctl.userrebuild import rebuild

    monkeypatch.setattr(sessctl.userindex, "RECHECK_SECONDS", 0.0)
    django_store = SessionStore(settings.replace(app="django"))
    with pytest.raises(ConfigError, match="served by Django"):
        rebuild(django_store)  # the library refuses too, not only the command
    store = SessionStore(settings)
    store.create_table()
    with store.exclusive("user-index") as mine:  # another rebuild holds the table's rebuild lock
        assert mine
        other = SessionStore(settings)
        with pytest.raises(ConfigError, match="another rebuild"):
            rebuild(other)
        other.close()
    assert rebuild(store).created is False  # and once it is done, a rebuild runs
    store.close()
    django_store.close()
