"""Every command through CliRunner, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from sessctl.cli import cli
from sessctl.policy import EXPIRY_KEY, RESEND_KEY
from helpers import save

pytestmark = pytest.mark.usefixtures("isolated")  # no SESSCTL_* or sessctl.toml from the shell


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def rows(store):
    return {r.key: r for r in store.iter_rows("all")}


def add_expired(store, data=None, ago=timedelta(hours=1)):
    """An expired row, as a session the app stopped using would leave."""
    key = store.create_row(store.codec.encode(data or {"old": True}), store.now() - ago)
    return key


def close_to(moment: datetime, expected: datetime, slack: float = 30) -> bool:
    return abs((moment - expected).total_seconds()) <= slack


# -- init ---------------------------------------------------------------------


def test_init_creates_the_table_once(settings, run):
    from sessctl import SessionStore

    r = ok(run("init"))
    assert "created table" in r.stderr and r.stdout == ""
    store = SessionStore(settings)
    try:
        assert store.has_table()
        key = save(store, None, {"a": 1})
        r = ok(run("init"))
        assert "already exists" in r.stderr
        assert store.get_row(key) is not None
    finally:
        store.close()


def test_init_needs_no_secret(run):
    ok(run("init", secret=None))


# -- list ---------------------------------------------------------------------


def test_list_shows_active_sessions_by_default(store, run):
    live = save(store, None, {"user": 1})
    old = add_expired(store)
    r = ok(run("list"))
    assert live in r.stdout and old not in r.stdout
    assert r.stdout.splitlines()[0].split() == ["KEY", "EXPIRES", "(UTC)", "RELATIVE", "LIFETIME", "SIZE"]
    line = next(line for line in r.stdout.splitlines() if line.startswith(live))
    assert "default" in line and "in 13d23h" in line


def test_list_states_and_limit(store, run):
    live = [save(store, None, {"n": i}) for i in range(3)]
    old = [add_expired(store, ago=timedelta(hours=i + 1)) for i in range(2)]
    assert set(_keys(ok(run("list", "--json")))) == set(live)
    assert set(_keys(ok(run("list", "--expired", "--json")))) == set(old)
    assert set(_keys(ok(run("list", "--all", "--json")))) == set(live + old)
    limited = _keys(ok(run("list", "--all", "--limit", "2", "--json")))
    assert limited == [old[1], old[0]]  # soonest expiry first


def test_list_json_shape(store, run):
    save(store, None, {"user": 1})
    save(store, None, {"user": 2, EXPIRY_KEY: 0})
    save(store, None, {"user": 3, EXPIRY_KEY: 600})
    deadline = save(store, None, {EXPIRY_KEY: (store.now() + timedelta(hours=2)).isoformat()})
    items = json.loads(ok(run("list", "--json")).stdout)
    assert all(set(i) == {"key", "expire_date", "expired", "lifetime", "size", "user"} for i in items)
    assert all(i["user"] is None for i in items)  # no _auth_user_id in these sessions
    assert all(i["expired"] is False and isinstance(i["size"], int) for i in items)
    assert all(datetime.fromisoformat(i["expire_date"]).utcoffset() == timedelta(0) for i in items)
    kinds = {i["lifetime"]["kind"] for i in items}
    assert kinds == {"default", "browser_close", "idle", "absolute"}
    by_key = {i["key"]: i for i in items}
    assert datetime.fromisoformat(by_key[deadline]["lifetime"]["deadline"]) == datetime.fromisoformat(
        by_key[deadline]["expire_date"]
    )
    idle = next(i for i in items if i["lifetime"]["kind"] == "idle")
    assert idle["lifetime"] == {"kind": "idle", "seconds": 600}


def test_list_json_of_an_empty_table(store, run):
    r = ok(run("list", "--json"))
    assert json.loads(r.stdout) == []
    assert "no active sessions" in r.stderr


def test_list_browser_close_and_unreadable(store, run):
    save(store, None, {"user": 1})
    closing = save(store, None, {"user": 2, EXPIRY_KEY: 0})
    bad = store.create_row("not a session", store.now() + timedelta(hours=1))
    assert _keys(ok(run("list", "--browser-close", "--json"))) == [closing]
    items = {i["key"]: i for i in json.loads(ok(run("list", "--json")).stdout)}
    assert items[bad]["lifetime"] == {"kind": "unreadable"}


def test_list_needs_no_secret(store, run):
    key = save(store, None, {"user": 1})
    assert key in ok(run("list", secret=None)).stdout


def test_json_array_streams(capsys):
    from sessctl.cli.render import json_array

    def items():
        yield {"n": 1}
        assert capsys.readouterr().out == '[\n{"n": 1}'  # written before the next row is read
        yield {"n": 2}

    assert json_array(items()) == 2
    assert capsys.readouterr().out == ',\n{"n": 2}\n]\n'


def _keys(result):
    return [item["key"] for item in json.loads(result.stdout)]


# -- show ---------------------------------------------------------------------


def test_show_plain(store, run):
    key = save(store, None, {"user": 42, "cart": ["a", "b"]})
    r = ok(run("show", key))
    out = r.stdout
    assert f"key:       {key}" in out
    assert "status:    active" in out
    assert "lifetime:  default (global policy)" in out
    assert "verified:  yes" in out
    assert '"user": 42' in out and '"cart": [' in out


def test_show_json(store, run):
    key = save(store, None, {"user": 42, EXPIRY_KEY: 900})
    info = json.loads(ok(run("show", key, "--json")).stdout)
    assert info["key"] == key
    assert info["expired"] is False
    assert info["lifetime"] == {"kind": "idle", "seconds": 900}
    assert info["data"] == {"user": 42, EXPIRY_KEY: 900}
    assert info["verified"] is True
    assert close_to(datetime.fromisoformat(info["expire_date"]), store.now() + timedelta(seconds=900))
    assert datetime.fromisoformat(info["signed_at"]).utcoffset() == timedelta(0)
    assert info["size"] == len(store.get_row(key).session_data)


def test_show_expired_row_is_marked(store, run):
    key = add_expired(store, {"user": 7})
    assert "status:    EXPIRED" in ok(run("show", key)).stdout
    info = json.loads(ok(run("show", key, "--json")).stdout)
    assert info["expired"] is True and info["data"] == {"user": 7}


def test_show_data_is_never_markup(store, run):
    key = save(store, None, {"note": "[/x] [bold]not markup[/bold] [link=x]"})
    r = ok(run("show", key, env={"TTY_COMPATIBLE": "1", "COLUMNS": "120"}))
    assert "[/x] [bold]not markup[/bold] [link=x]" in r.stdout
    assert "╭" in r.stdout  # drawn by rich as a panel


def test_show_no_verify_with_a_wrong_secret(store, run):
    key = save(store, None, {"user": 1})
    r = ok(run("show", key, "--no-verify", secret="another-secret"))
    assert "verified:  NO" in r.stdout and '"user": 1' in r.stdout
    info = json.loads(ok(run("show", key, "--json", "--no-verify", secret=None)).stdout)
    assert info["verified"] is False and info["data"] == {"user": 1}
    info = json.loads(ok(run("show", key, "--json", "--no-verify")).stdout)
    assert info["verified"] is True


def test_show_with_a_fallback_key(store, run):
    key = save(store, None, {"user": 1})
    env = {"SESSCTL_SECRET_KEY_FALLBACKS": f"unrelated,{store.settings.secret_key}"}
    info = json.loads(ok(run("show", key, "--json", secret="rotated-key", env=env)).stdout)
    assert info["verified"] is True and info["data"] == {"user": 1}


# -- decode -------------------------------------------------------------------


def test_decode_argument_and_stdin(store, run):
    value = store.codec.encode({"user": 5, EXPIRY_KEY: 0})
    r = ok(run("decode", value))
    assert '"user": 5' in r.stdout and "until the browser closes" in r.stdout
    info = json.loads(ok(run("decode", "--json", input=value + "\n")).stdout)
    assert info["data"] == {"user": 5, EXPIRY_KEY: 0}
    assert info["verified"] is True and info["lifetime"] == {"kind": "browser_close"}
    assert json.loads(ok(run("decode", "-", "--json", input=value)).stdout) == info


def test_decode_needs_no_database(store, run):
    value = store.codec.encode({"user": 5})
    r = CliRunner().invoke(
        cli,
        ["--db", "postgresql+psycopg://nobody@127.0.0.1:1/x", "decode", value, "--json"],
        env={"SESSCTL_SECRET_KEY": store.settings.secret_key},
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["data"] == {"user": 5}


def test_decode_no_verify(store, run):
    value = store.codec.encode({"user": 5})
    info = json.loads(ok(run("decode", value, "--json", "--no-verify", secret="wrong")).stdout)
    assert info["verified"] is False and info["data"] == {"user": 5}


# -- lifetimes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "seconds"), [("3600", 3600), ("90m", 5400), ("2h", 7200), ("7d", 604800), ("1h30m", 5400)]
)
def test_set_life_gives_an_absolute_deadline(store, run, duration, seconds):
    key = save(store, None, {"user": 1})
    before = store.now()
    r = ok(run("set-life", key, duration))
    assert f"session {key}: absolute" in r.stderr and r.stdout == ""
    row = store.get_row(key)
    data = store.codec.decode(row.session_data)
    deadline = datetime.fromisoformat(data[EXPIRY_KEY])
    assert close_to(deadline, before + timedelta(seconds=seconds))
    assert abs((row.expire_date - deadline).total_seconds()) < 0.001
    assert data["user"] == 1 and data[RESEND_KEY] is True


def test_set_life_idle(store, run):
    key = save(store, None, {"user": 1})
    ok(run("set-life", key, "30m", "--idle"))
    row = store.get_row(key)
    data = store.codec.decode(row.session_data)
    assert data[EXPIRY_KEY] == 1800
    assert close_to(row.expire_date, store.now() + timedelta(minutes=30))
    info = json.loads(ok(run("show", key, "--json")).stdout)
    assert info["lifetime"] == {"kind": "idle", "seconds": 1800}


@pytest.mark.parametrize(
    ("args", "expiry", "idle"),
    [
        (["30m", "--idle"], 1800, None),  # the SPEC's form: DURATION is an idle timeout
        (["--idle", "{key}", "30m"], 1800, None),  # the bare flag first, before KEY
        (["--idle", "30m"], 1800, None),  # the value went to --idle: still an idle timeout
        (["8h", "--idle", "30m"], "deadline", 1800),  # both limits
        (["--idle=30m", "8h"], "deadline", 1800),
        (["8h", "--idle", "--", "1800"], "bad usage", None),
    ],
)
def test_set_life_idle_forms(store, run, args, expiry, idle):
    from sessctl.policy import IDLE_KEY

    key = save(store, None, {"user": 1})
    if expiry == "bad usage":
        # `--idle --` is the bare flag, so 1800 is one argument too many.
        r = run("set-life", key, *args)
        assert r.exit_code == 2, r.output
        return
    if "{key}" in args:
        ok(run("set-life", *[a.format(key=key) for a in args]))
    else:
        ok(run("set-life", key, *args))
    data = store.codec.decode(store.get_row(key).session_data)
    if expiry == "deadline":
        deadline = datetime.fromisoformat(data[EXPIRY_KEY])
        assert close_to(deadline, store.now() + timedelta(hours=8))
        assert close_to(store.get_row(key).expire_date, store.now() + timedelta(seconds=idle))
    else:
        assert data[EXPIRY_KEY] == expiry
    assert data.get(IDLE_KEY) == idle


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Missing argument 'DURATION'"),
        (["--idle"], "Missing argument 'DURATION'"),
        (["8h", "--idle", "0"], "Invalid value for '--idle'"),
        (["8h", "--idle", "90x"], "unexpected extra argument (90x)"),  # not a duration: the bare flag
    ],
)
def test_set_life_idle_usage_errors(store, run, args, message):
    key = save(store, None, {"user": 1})
    before = store.get_row(key)
    r = run("set-life", key, *args)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert store.get_row(key) == before


def test_lifetime_with_both_limits_is_shown_everywhere(store, run):
    key = save(store, None, {"user": 1})
    ok(run("set-life", key, "8h", "--idle", "30m"))
    assert "or after 30m idle" in ok(run("show", key)).stdout
    line = next(line for line in ok(run("list")).stdout.splitlines() if line.startswith(key))
    assert "absolute+idle" in line and ("in 30m" in line or "in 29m" in line)
    info = json.loads(ok(run("show", key, "--json")).stdout)
    assert info["lifetime"]["idle_seconds"] == 1800 and info["lifetime"]["kind"] == "absolute"
    report = json.loads(ok(run("stats", "--json")).stdout)
    assert report["by_kind"]["absolute"] == 1 and report["absolute_with_idle"] == 1


def test_till_browser_close_and_reset_life(store, run):
    key = save(store, None, {"user": 1, EXPIRY_KEY: 60})
    assert close_to(store.get_row(key).expire_date, store.now() + timedelta(seconds=60))
    age = timedelta(seconds=store.settings.cookie_age)

    r = ok(run("till-browser-close", key))
    assert "until the browser closes" in r.stderr
    row = store.get_row(key)
    assert store.codec.decode(row.session_data)[EXPIRY_KEY] == 0
    assert close_to(row.expire_date, store.now() + age)

    ok(run("set-life", key, "5m"))
    assert close_to(store.get_row(key).expire_date, store.now() + timedelta(minutes=5))

    r = ok(run("reset-life", key))
    assert "default (global policy)" in r.stderr
    row = store.get_row(key)
    data = store.codec.decode(row.session_data)
    assert EXPIRY_KEY not in data and data["user"] == 1
    assert close_to(row.expire_date, store.now() + age)


# -- delete -----------------------------------------------------------------


def test_delete_some_keys(store, run):
    keys = [save(store, None, {"n": i}) for i in range(3)]
    r = ok(run("delete", keys[0], keys[1], keys[0]))
    assert "deleted 2 sessions" in r.stderr
    assert set(rows(store)) == {keys[2]}


def test_delete_mix_of_existing_and_missing(store, run):
    keys = [save(store, None, {"n": i}) for i in range(2)]
    r = run("delete", keys[0], "missingkey0001", keys[1], "missingkey0002", secret=None)
    assert r.exit_code == 1, r.output
    assert rows(store) == {}
    assert "deleted 2 sessions" in r.stderr
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: no session with keys missingkey0001, missingkey0002")


# -- purge --------------------------------------------------------------------


def test_purge_deletes_exactly_the_expired_rows(store, run):
    live = {save(store, None, {"n": i}) for i in range(2)}
    old = {add_expired(store, ago=timedelta(minutes=i + 1)) for i in range(5)}

    r = ok(run("purge", "--expired", "--dry-run", "--json"))
    report = json.loads(r.stdout)
    assert report["dry_run"] is True and report["deleted"] == 0 and report["would_delete"] == 5
    assert set(rows(store)) == live | old

    r = ok(run("purge", "--expired", "--batch-size", "2", "--json", secret=None))
    report = json.loads(r.stdout)
    assert report["deleted"] == 5 and report["batches"] == 3
    assert report["complete"] is True and report["remaining"] == 0 and report["dry_run"] is False
    assert datetime.fromisoformat(report["cutoff"]).utcoffset() == timedelta(0)
    assert set(rows(store)) == live

    r = ok(run("purge", "--expired"))
    assert r.stdout == "" and "deleted 0 expired sessions" in r.stderr


def test_purge_stops_after_max_seconds(store, run):
    for i in range(4):
        add_expired(store, ago=timedelta(minutes=i + 1))
    report = json.loads(ok(run("purge", "--expired", "--batch-size", "1", "--max-seconds", "1e-9", "--json")).stdout)
    assert (report["deleted"], report["batches"], report["complete"], report["remaining"]) == (1, 1, False, 3)
    assert len(rows(store)) == 3
    r = ok(run("purge", "--expired", "--batch-size", "1", "--max-seconds", "1e-9"))
    assert "stopped after --max-seconds with 2 left: re-run to go on" in r.stderr
    ok(run("purge", "--expired"))
    assert rows(store) == {}


def test_purge_summary_line_without_a_terminal(store, run):
    add_expired(store)
    r = ok(run("purge", "--expired", "--batch-size", "1"))
    assert r.stdout == ""
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0]
    assert r.stderr.startswith("deleted 1 expired session in 2 batches (")
    assert "━" not in r.stderr  # no progress bar in cron


def test_purge_progress_on_a_terminal(store, run):
    for _ in range(3):
        add_expired(store)
    r = ok(run("purge", "--expired", "--batch-size", "1", env={"TTY_INTERACTIVE": "1", "TTY_COMPATIBLE": "1", "TERM": "xterm"}))
    assert "purging expired sessions" in r.stderr and "deleted 3 expired sessions" in r.stderr
    assert rows(store) == {}


def test_purge_exits_0_when_another_purge_holds_the_lock(store, run):
    old = add_expired(store)
    with store.exclusive("purge") as got:
        assert got
        for args in (["purge", "--expired"], ["purge", "--all", "--yes"]):
            r = ok(run(*args))
            assert r.stdout == ""
            assert r.stderr == "another purge is running on this table; exiting (pass --wait to wait for it instead)\n"
        report = json.loads(ok(run("purge", "--expired", "--json")).stdout)
        assert report["skipped"] == "another purge is running on this table; exiting" and report["deleted"] == 0
        # A dry run deletes nothing, so it takes no lock.
        assert json.loads(ok(run("purge", "--expired", "--dry-run", "--json")).stdout)["would_delete"] == 1
        assert old in rows(store)
    assert "deleted 1 expired session" in ok(run("purge", "--expired")).stderr


def test_purge_all(store, run):
    save(store, None, {"n": 1})
    add_expired(store)
    r = ok(run("purge", "--all", "--dry-run", "--json"))
    assert json.loads(r.stdout)["would_delete"] == 2 and len(rows(store)) == 2
    r = ok(run("purge", "--all", "--yes", "--json"))
    assert json.loads(r.stdout)["deleted"] == 2
    assert rows(store) == {}


def test_quiet_purge_prints_nothing(store, run):
    add_expired(store)
    r = CliRunner().invoke(
        cli, ["-q", "--db", store.settings.database_url, "--table", store.settings.table, "purge", "--expired"]
    )
    assert r.exit_code == 0, r.output
    assert r.output == "" and rows(store) == {}


# -- stats ------------------------------------------------------------------


def test_stats_json(store, run):
    save(store, None, {"n": 1})
    save(store, None, {"n": 2, EXPIRY_KEY: 0})
    save(store, None, {"n": 3, EXPIRY_KEY: 1800})
    save(store, None, {"n": 4, EXPIRY_KEY: (store.now() + timedelta(hours=12)).isoformat()})
    store.create_row("garbage", store.now() + timedelta(days=3))
    add_expired(store)
    report = json.loads(ok(run("stats", "--json", secret=None)).stdout)
    assert (report["total"], report["active"], report["expired"]) == (6, 5, 1)
    assert report["by_kind"] == {"default": 1, "browser_close": 1, "absolute": 1, "idle": 1, "unreadable": 1}
    assert report["absolute_with_idle"] == 0
    assert report["expiring"] == {"1h": 1, "1d": 2, "7d": 3}
    assert sum(b["count"] for b in report["histogram"]) == 5
    assert {b["label"]: b["count"] for b in report["histogram"]}["<1h"] == 1


def test_stats_plain_and_rich(store, run):
    save(store, None, {"n": 1})
    add_expired(store)
    out = ok(run("stats")).stdout
    assert "  total           2" in out and "  expired         1" in out
    assert "expiry histogram (active):" in out
    assert "7d-14d          1" in out
    out = ok(run("stats", env={"TTY_COMPATIBLE": "1", "COLUMNS": "100"})).stdout
    assert "expiry of active sessions" in out and "█" in out


# -- the group ----------------------------------------------------------------


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0, r.output
    from sessctl import __version__

    assert r.stdout == f"sessctl {__version__}\n"


def test_settings_come_from_env_then_flags(store, run, tmp_path):
    key = save(store, None, {"n": 1})
    env = {"SESSCTL_DB": store.settings.database_url, "SESSCTL_TABLE": store.settings.table}
    r = CliRunner().invoke(cli, ["list", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert _keys(r) == [key]
    # A flag beats the environment.
    env["SESSCTL_TABLE"] = "no_such_table"
    r = CliRunner().invoke(cli, ["--table", store.settings.table, "list", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert _keys(r) == [key]


def test_settings_from_a_config_file(store, tmp_path):
    key = save(store, None, {"n": 1})
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{store.settings.secret_key}\n")
    (tmp_path / "sessctl.toml").write_text(
        f'db = "{store.settings.database_url}"\ntable = "{store.settings.table}"\nsecret_key_file = "secret"\n'
    )
    # ./sessctl.toml is read from the working folder (the test's tmp_path).
    r = CliRunner().invoke(cli, ["show", key, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["data"] == {"n": 1}
    elsewhere = tmp_path / "conf" / "other.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f'db = "{store.settings.database_url}"\ntable = "{store.settings.table}"\n')
    r = CliRunner().invoke(cli, ["--config", str(elsewhere), "--secret-key-file", str(secret_file), "show", key])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["show", key], env={"SESSCTL_CONFIG": str(elsewhere)})
    assert r.exit_code == 1 and "no secret key configured" in r.stderr
