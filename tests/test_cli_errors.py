"""Failures: exit codes 1 and 2, one `Error: ...` line that says what to do, and no change to the table."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner

from sessctl.cli import cli
from helpers import save, snapshot

pytestmark = pytest.mark.usefixtures("isolated")  # no SESSCTL_* or sessctl.toml from the shell
UNREACHABLE = {
    "postgres": "postgresql+psycopg://sessctl@127.0.0.1:1/x",
    "mysql": "mysql+pymysql://sessctl@127.0.0.1:1/x",
}
KEY = "k" * 32
DB_COMMANDS = [
    ["list"],
    ["list", "--json"],
    ["show", KEY],
    ["set-life", KEY, "2h"],
    ["till-browser-close", KEY],
    ["reset-life", KEY],
    ["delete", KEY],
    ["purge", "--expired"],
    ["purge", "--all", "--yes"],
    ["stats"],
]


def fails(result, *fragments, code=1):
    """Exit ``code``; for 1, exactly one `Error: ...` line on stderr, with each fragment, and no traceback."""
    assert result.exit_code == code, result.output
    if code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        line = lines[0]
    else:
        line = result.stderr
    assert "Error: " in line and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture
def sessions(store):
    """A live session, an expired one and an undecodable one; the test checks they never change."""
    keys = {
        "live": save(store, None, {"user": 1}),
        "old": store.create_row(store.codec.encode({"user": 2}), store.now() - timedelta(hours=1)),
        "bad": store.create_row("this is not a session", store.now() + timedelta(hours=1)),
    }
    before = snapshot(store)
    yield keys
    assert snapshot(store) == before


# -- the database -----------------------------------------------------------


@pytest.mark.parametrize("backend_name", sorted(UNREACHABLE))
@pytest.mark.parametrize("args", [["init"], *DB_COMMANDS], ids=" ".join)
def test_unreachable_database_fails_fast(backend_name, args):
    start = time.monotonic()
    r = CliRunner().invoke(cli, ["--db", UNREACHABLE[backend_name], *args], env={"SESSCTL_SECRET_KEY": "s"})
    assert time.monotonic() - start < 10
    fails(r, "cannot reach the database", "127.0.0.1", "check --db / SESSCTL_DB")


def test_database_password_is_never_shown():
    url = "postgresql+psycopg://sessctl:hunter2@127.0.0.1:1/x"
    r = CliRunner().invoke(cli, ["--debug", "--db", url, "list"])
    assert r.exit_code == 1, r.output
    assert "hunter2" not in r.output and "***" in r.output


@pytest.mark.parametrize("args", DB_COMMANDS, ids=" ".join)
def test_missing_table_suggests_init(settings, run, args):
    fails(run(*args), "does not exist", "sessctl init")


def test_missing_sqlite_file_is_not_created(tmp_path):
    path = tmp_path / "none.db"
    r = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", "list"])
    fails(r, "does not exist", "sessctl init")
    assert not path.exists()


def test_missing_table_in_an_existing_sqlite_file(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    sqlite3.connect(path).close()
    r = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", "stats"])
    fails(r, "table 'django_session' does not exist", "sessctl init")



@pytest.mark.parametrize("args", [["init"], ["stats"], ["list"], ["purge", "--expired"], ["users"]], ids=" ".join)
def test_a_session_table_sqlite_cannot_read_is_missing_to_every_command(tmp_path, args):
    """A view of that name over a dropped table: every command, init included, says the table is
    not there (as SQLite's own table_info does), never a raw error from a later statement."""
    import sqlite3

    path = tmp_path / "broken.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE real_t (session_key varchar(40) NOT NULL PRIMARY KEY, "
                     "session_data text NOT NULL, expire_date datetime NOT NULL)")
        conn.execute("CREATE VIEW django_session AS SELECT * FROM real_t")
        conn.execute("DROP TABLE real_t")
    conn.close()
    r = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", *args])
    fails(r, "table 'django_session' does not exist", "sessctl init")


@pytest.mark.parametrize("kind", ["view", "without rowid"])
def test_purge_on_a_table_it_cannot_walk_says_what_the_table_is(tmp_path, kind):
    """A working view of the session table, or a WITHOUT ROWID copy of it: reads work, and purge
    says what is in the way (not that the database is out of reach, nor that a column is missing)."""
    import sqlite3

    path = tmp_path / "odd.db"
    columns = "session_key varchar(40) NOT NULL PRIMARY KEY, session_data text NOT NULL, expire_date datetime NOT NULL"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # as sessctl init leaves it: no journal note on stderr
        if kind == "view":
            conn.execute(f"CREATE TABLE real_t ({columns})")
            conn.execute("CREATE VIEW django_session AS SELECT * FROM real_t")
            table = "real_t"
        else:
            conn.execute(f"CREATE TABLE django_session ({columns}) WITHOUT ROWID")
            table = "django_session"
        conn.execute(f"INSERT INTO {table} VALUES ('a' || hex(randomblob(16)), 'x:y:z', '2000-01-01 00:00:00')")
    conn.close()
    url = f"sqlite:///{path}"
    assert CliRunner().invoke(cli, ["--db", url, "stats", "--json"]).exit_code == 0
    r = CliRunner().invoke(cli, ["--db", url, "purge", "--expired"])
    line = fails(r, "point --table at the session table" if kind == "view" else "is a WITHOUT ROWID table")
    assert "cannot reach" not in line and "lacks a column" not in line

# -- keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["show", "nosuchkey0001"], ["set-life", "nosuchkey0001", "1h"], ["till-browser-close", "nosuchkey0001"],
     ["reset-life", "nosuchkey0001"], ["delete", "nosuchkey0001"]],
    ids=" ".join,
)
def test_unknown_key(sessions, run, args):
    fails(run(*args), "no session with key nosuchkey0001", "sessctl list")


@pytest.mark.parametrize("command", ["set-life", "till-browser-close", "reset-life"])
def test_expired_session_cannot_change_life(sessions, run, command):
    args = [command, sessions["old"], *(["1h"] if command == "set-life" else [])]
    fails(run(*args), f"session {sessions['old']} has expired")


def test_key_too_long_is_bad_usage(sessions, run):
    fails(run("show", "k" * 41), "is not a session key", code=2)


# -- the secret -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["set-life", "{live}", "1h"], ["till-browser-close", "{live}"], ["reset-life", "{live}"], ["show", "{live}"],
     ["decode", "a:b:c"]],
    ids=lambda a: a[0],
)
def test_missing_secret(sessions, run, args):
    args = [a.format(**sessions) for a in args]
    line = fails(run(*args, secret=None), "no secret key configured", "SESSCTL_SECRET_KEY")
    assert "--secret-key-file" in line


@pytest.mark.parametrize("args", [["show", "{live}"], ["show", "{live}", "--json"]], ids=" ".join)
def test_wrong_secret_show(sessions, run, args):
    r = run(*[a.format(**sessions) for a in args], secret="not-the-app-secret")
    fails(r, "signature does not match", "wrong secret key?", "SESSCTL_SECRET_KEY_FALLBACKS", "--no-verify")
    assert "not-the-app-secret" not in r.output
    assert '"user"' not in r.stdout  # unverified data is never shown without --no-verify
    assert sessions["live"] in r.stdout  # the metadata still is
    if "--json" in args:
        info = json.loads(r.stdout)
        assert info["data"] is None and info["verified"] is False and "signature does not match" in info["error"]


@pytest.mark.parametrize(
    "args",
    [["set-life", "{live}", "1h"], ["till-browser-close", "{live}"], ["reset-life", "{live}"]],
    ids=lambda a: a[0],
)
def test_wrong_secret_changes_nothing(sessions, run, args):
    r = run(*[a.format(**sessions) for a in args], secret="not-the-app-secret")
    fails(r, "signature does not match", "SESSCTL_SECRET_KEY", "nothing was changed")


def test_decode_with_a_wrong_secret(store, run):
    value = store.codec.encode({"user": 1})
    r = run("decode", value, secret="not-the-app-secret")
    fails(r, "signature does not match", "--no-verify")
    assert r.stdout == ""


def test_secret_is_never_printed_even_with_debug(store, run, monkeypatch):
    secret = store.settings.secret_key
    key = save(store, None, {"user": 1})
    for args in (["show", key], ["set-life", key, "1h"], ["stats"], ["show", "nosuchkey0001"]):
        r = run("--debug", *args)
        assert "debug: database" in r.stderr and "secret key set" in r.stderr
        assert secret not in r.output
    from sessctl import store as store_module

    monkeypatch.setattr(store_module.SessionStore, "expiry_counts", lambda self, *a, **k: 1 / 0)
    r = run("--debug", "stats")
    assert r.exit_code == 1 and "Traceback" in r.stderr and secret not in r.output


# -- bad data ---------------------------------------------------------------------


def test_undecodable_row(sessions, run):
    bad = sessions["bad"]
    r = run("show", bad)
    fails(r, f"session {bad}: the data cannot be decoded", "not written by Django or sessctl")
    assert "lifetime:  unknown" in r.stdout
    fails(run("show", bad, "--no-verify"), "cannot be decoded")
    fails(run("set-life", bad, "1h"), "cannot be decoded", "nothing was changed")
    fails(run("reset-life", bad), "cannot be decoded", "nothing was changed")


def test_decode_garbage(run):
    fails(run("decode", "garbage", db=False), "cannot be decoded")
    fails(run("decode", "garbage", "--no-verify", db=False), "cannot be decoded")


def test_decode_empty_input(run):
    r = CliRunner().invoke(cli, ["decode"], input="", env={"SESSCTL_SECRET_KEY": "s"})
    fails(r, "no data", code=2)


# -- bad usage --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "message"),
    [("0", "not a positive duration"), ("-5", "not a positive duration"), ("soon", "not a duration"),
     (str(10**30), "too long"), ("", "not a duration"), ("1.5h", "not a duration"), ("2x", "not a duration"),
     ("1h-30m", "not a duration")],
)
def test_bad_durations(sessions, run, duration, message):
    r = run("set-life", sessions["live"], "--", duration)
    fails(r, "Invalid value for 'DURATION'", message, code=2)
    r = run("set-life", sessions["live"], "--idle", "--", duration)
    fails(r, message, code=2)


def test_negative_duration_without_double_dash(sessions, run):
    fails(run("set-life", sessions["live"], "-5"), "No such option", code=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["purge"], "either --expired, or --all --yes"),
        (["purge", "--expired", "--all"], "either --expired, or --all --yes"),
        (["purge", "--all"], "add --yes"),
        (["purge", "--expired", "--batch-size", "0"], "--batch-size"),
        (["purge", "--expired", "--max-seconds", "0"], "--max-seconds"),
        (["list", "--limit", "0"], "--limit"),
        (["nope"], "No such command"),
        (["show"], "Missing argument"),
        (["delete"], "Missing argument"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_usage(sessions, run, args, message):
    fails(run(*args), message, code=2)


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("db = ", "is not valid TOML"),
        ('colour = "blue"\n', "unknown key(s) colour"),
        ("cookie_age = -1\n", "cookie_age must be a positive"),
        ('cookie_samesite = "sideways"\n', "cookie_samesite must be"),
    ],
)
def test_invalid_config_file(tmp_path, sessions, run, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    for args in (["list"], ["show", sessions["live"]], ["purge", "--expired"]):
        fails(run("--config", str(config), *args), message)
    fails(CliRunner().invoke(cli, ["list"], env={"SESSCTL_CONFIG": str(config)}), message)
    (tmp_path / "sessctl.toml").write_text(content)
    fails(run("stats"), message)


def test_a_missing_key_file_fails_only_the_commands_that_need_the_key(tmp_path, sessions, run):
    """list, purge and stats need no key, so a broken secret_key_file does not stop them (issue 11)."""
    config = tmp_path / "bad.toml"
    config.write_text('secret_key_file = "missing.txt"\n')
    fails(run("--config", str(config), "show", sessions["live"]), "secret key file", "secret_key_file")
    for args in (["list"], ["purge", "--expired", "--dry-run"], ["stats"]):
        r = run("--config", str(config), *args)
        assert r.exit_code == 0, r.output


def test_missing_config_file(run, tmp_path):
    fails(run("--config", str(tmp_path / "nope.toml"), "list"), "does not exist")


def test_missing_secret_key_file(sessions, run, tmp_path):
    r = run("--secret-key-file", str(tmp_path / "nope"), "show", sessions["live"])
    fails(r, "secret key file", "does not exist")


def test_bad_database_url():
    fails(CliRunner().invoke(cli, ["--db", "nosuchdb://x", "list"]), "database URL")


# -- unexpected errors ---------------------------------------------------------


def test_unexpected_error_is_one_line_unless_debug(sessions, run, monkeypatch):
    from sessctl import store as store_module

    def boom(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(store_module.SessionStore, "expiry_counts", boom)  # what stats reads since 3f918a3
    fails(run("stats"), "unexpected RuntimeError: boom", "re-run with --debug")
    r = run("--debug", "stats")
    assert r.exit_code == 1, r.output
    assert "Traceback (most recent call last)" in r.stderr and "RuntimeError: boom" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error: unexpected RuntimeError: boom")


def test_a_table_of_the_wrong_shape_is_a_database_error_not_an_unreachable_server(settings, backend):
    # The server answered (an unknown column): "cannot reach the database" would send the
    # operator to the network. PyMySQL calls every server error "operational"; that is no reason.
    import sqlalchemy as sa

    from helpers import invoke

    engine = sa.create_engine(settings.database_url)
    q = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {q(settings.table)} (session_key varchar(40) PRIMARY KEY, "
                             "session_data text NOT NULL)"))
    engine.dispose()
    r = invoke(settings, "list", code=1)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "expire_date" in errors[0] and "lacks a column" in errors[0], r.stderr
    assert "cannot reach" not in r.stderr
