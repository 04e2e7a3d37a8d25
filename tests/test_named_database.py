"""The database you named: commands that change data say which database and table; an
environment variable that disagrees with an explicit --config file is named on stderr; the
demo's commands stand on their own; secrets from the environment and key files keep every
character that belongs to them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sessctl import Settings
from sessctl.cli import cli

from helpers import SECRET, save

pytestmark = pytest.mark.usefixtures("isolated")


def sessctl(*args, env=None, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, input=input, prog_name="sessctl")


def where(settings) -> tuple[str, str]:
    """(table, database) as a command names them: the URL without its password."""
    url = settings.database_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(Path(url[len("sqlite:///"):]).resolve())
    return settings.table, url


def test_every_data_changing_command_names_database_and_table(store):
    s = store.settings
    table, database = where(s)
    db = ["--db", s.database_url, "--table", s.table]
    keys = [save(store, None, {"n": i}) for i in range(4)]
    env = {"SESSCTL_SECRET_KEY": SECRET}
    for args in (
        ["init"],
        ["set-life", keys[0], "2h"],
        ["till-browser-close", keys[1]],
        ["reset-life", keys[1]],
        ["delete", keys[2]],
        ["purge", "--expired"],
        ["purge", "--all", "--yes"],
    ):
        r = sessctl(*db, *args, env=env)
        assert r.exit_code == 0, (args, r.output)
        assert table in r.stderr and database in r.stderr, (args, r.stderr)
    r = sessctl(*db, "purge", "--expired", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["table"] == table and out["database"] == database


def test_the_password_is_never_shown(store, backend):
    if backend != "postgres":
        pytest.skip("the shared PostgreSQL trusts the user sessctl, so any password connects")
    s = store.settings
    url = s.database_url.replace("sessctl@", "sessctl:hunter2-pw@", 1)
    r = sessctl("--db", url, "--table", s.table, "purge", "--expired", "--json")
    assert r.exit_code == 0, r.output
    assert "hunter2" not in r.output
    assert json.loads(r.stdout)["database"] == s.database_url.replace("sessctl@", "sessctl:***@", 1)


# -- environment versus an explicit --config file ------------------------------------------------


def _two_databases(tmp_path):
    """A "real" database with a live session, and a config file naming another one."""
    real = Settings(database_url=f"sqlite:///{tmp_path / 'real.db'}", secret_key=SECRET)
    from sessctl import SessionStore

    st = SessionStore(real)
    st.create_table()
    save(st, None, {"user": "real"})
    st.close()
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "sessctl.toml").write_text('db = "sqlite:///sessions.db"\ntable = "demo_t"\n')
    assert sessctl("--config", demo / "sessctl.toml", "init").exit_code == 0
    return real, demo


def test_explicit_config_outranks_the_environment_and_says_so(tmp_path):
    real, demo = _two_databases(tmp_path)
    env = {"SESSCTL_DB": real.database_url, "SESSCTL_TABLE": "django_session"}
    r = sessctl("--config", demo / "sessctl.toml", "purge", "--all", "--yes", "--json", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["database"] == f"sqlite:///{demo / 'sessions.db'}"
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, r.stderr  # one line per setting
    db_line = next(line for line in warnings if "SESSCTL_DB" in line)
    assert str(demo / "sessctl.toml") in db_line and "using the config file" in db_line
    assert "table" in next(line for line in warnings if "SESSCTL_TABLE" in line)
    # The real database was not touched.
    r = sessctl("--db", real.database_url, "stats", "--json")
    assert json.loads(r.stdout)["total"] == 1


def test_config_from_the_environment_stays_below_other_variables(tmp_path):
    real, demo = _two_databases(tmp_path)
    env = {"SESSCTL_DB": real.database_url, "SESSCTL_CONFIG": str(demo / "sessctl.toml"), "SESSCTL_TABLE": "django_session"}
    r = sessctl("stats", "--json", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["total"] == 1  # SESSCTL_DB won
    assert "SESSCTL_DB" in r.stderr and "using SESSCTL_DB" in r.stderr


def test_no_warning_when_sources_agree_or_a_flag_decides(tmp_path):
    _real, demo = _two_databases(tmp_path)
    same = {"SESSCTL_TABLE": "demo_t"}
    r = sessctl("--config", demo / "sessctl.toml", "stats", env=same)
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr
    # A flag outranks both: the environment and the file are not in conflict with what is used.
    r = sessctl("--config", demo / "sessctl.toml", "--table", "demo_t", "stats", env={"SESSCTL_TABLE": "other"})
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr


def test_settings_load_with_an_explicit_config_matches_the_command_line(tmp_path):
    (tmp_path / "app.toml").write_text('table = "from_file"\n')
    s = Settings.load(tmp_path / "app.toml", environ={"SESSCTL_TABLE": "from_env"})
    assert s.table == "from_file"
    s = Settings.load(environ={"SESSCTL_TABLE": "from_env", "SESSCTL_CONFIG": str(tmp_path / "app.toml")})
    assert s.table == "from_env"


def test_secret_conflict_is_named_without_the_secret(tmp_path):
    (tmp_path / "key").write_text("file-secret\n")
    (tmp_path / "c.toml").write_text('secret_key_file = "key"\n')
    r = sessctl("--config", tmp_path / "c.toml", "decode", "--no-verify", "eyJhIjoxfQ:1:x",
                env={"SESSCTL_SECRET_KEY": "env-secret"})
    line = next(line for line in r.stderr.splitlines() if line.startswith("warning:"))
    assert "SESSCTL_SECRET_KEY" in line and "secret" in line
    assert "env-secret" not in r.output and "file-secret" not in r.output


# -- demo --keep -------------------------------------------------------------------------------------


def test_demo_keep_prints_commands_that_stand_alone(tmp_path):
    """With SESSCTL_* pointing at a real database, every printed command acts on the demo's."""
    real, _ = _two_databases(tmp_path)
    env = {**os.environ, "SESSCTL_DB": real.database_url, "SESSCTL_TABLE": "django_session",
           "SESSCTL_SECRET_KEY": "not-the-demo-key", "SESSCTL_CONFIG": str(tmp_path / "demo" / "sessctl.toml")}
    bindir = Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    r = subprocess.run([sys.executable, "-m", "sessctl", "demo", "--keep"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("look around:\n", 1)[1].split("  rm -r ", 1)[0].splitlines()
    commands = [line.strip() for line in lines if line.strip().startswith("sessctl ")]
    assert [c.split()[-1] for c in commands][-1] == "--yes"  # ends with the purge
    folder = None
    for command in commands:
        words = shlex.split(command)
        assert "--db" in words and "--secret-key-file" in words and "--table" in words, command
        folder = Path(words[words.index("--secret-key-file") + 1]).parent
        out = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, (command, out.stderr)
        assert "real.db" not in out.stderr
    r = sessctl("--db", real.database_url, "stats", "--json")
    assert json.loads(r.stdout)["total"] == 1  # the real session survived the demo's purge --all
    assert folder is not None and folder.name.startswith("sessctl-demo-")
    import shutil

    shutil.rmtree(folder)


# -- secrets: commas, spaces ----------------------------------------------------------------------


def test_fallback_keys_with_a_comma_through_the_environment():
    s = Settings.load(environ={"SESSCTL_SECRET_KEY": "k", "SESSCTL_SECRET_KEY_FALLBACKS": '["old,with,commas", " spaced "]'})
    assert s.secret_key_fallbacks == ("old,with,commas", " spaced ")
    s = Settings.load(environ={"SESSCTL_SECRET_KEY": "k", "SESSCTL_SECRET_KEY_FALLBACKS": "a, b,"})
    assert s.secret_key_fallbacks == ("a", "b")  # the comma-separated form is unchanged


def test_a_malformed_json_fallback_list_is_one_clear_error():
    r = sessctl("decode", "eyJhIjoxfQ:1:x", env={"SESSCTL_SECRET_KEY": "k", "SESSCTL_SECRET_KEY_FALLBACKS": '["a", 3]'})
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: SESSCTL_SECRET_KEY_FALLBACKS") and "JSON" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_comma_key_verifies_data_signed_with_it(store):
    from sessctl.codec import Codec

    old = "old,key with spaces "
    data = Codec(old).encode({"user": "x"})
    env = {"SESSCTL_SECRET_KEY": "new-key", "SESSCTL_SECRET_KEY_FALLBACKS": json.dumps([old])}
    r = sessctl("decode", "--json", data, env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verified"] is True


def test_key_file_keeps_spaces_that_belong_to_the_key(tmp_path):
    (tmp_path / "key").write_text("  spaced key  \r\n old fallback \n\n")
    s = Settings.load(environ={}, secret_key_file=tmp_path / "key")
    assert s.secret_key == "  spaced key  "
    assert s.secret_key_fallbacks == (" old fallback ",)


def test_key_file_saved_with_a_byte_order_mark_reads_the_key_without_it(tmp_path):
    """Windows editors save UTF-8 with a BOM; it is not part of the key (sessions would not verify)."""
    (tmp_path / "key").write_text("the-key\nold-key\n", encoding="utf-8-sig")
    s = Settings.load(environ={}, secret_key_file=tmp_path / "key")
    assert s.secret_key == "the-key" and s.secret_key_fallbacks == ("old-key",)


def test_a_key_file_flag_leaves_a_broken_key_file_variable_unread(tmp_path):
    (tmp_path / "key").write_text("flag-key\n")
    s = Settings.load(environ={"SESSCTL_SECRET_KEY_FILE": str(tmp_path / "missing")}, secret_key_file=tmp_path / "key")
    assert s.secret_key == "flag-key"


def test_fallbacks_from_the_environment_join_a_key_file_without_fallback_lines(tmp_path):
    (tmp_path / "key").write_text("flag-key\n")
    s = Settings.load(environ={"SESSCTL_SECRET_KEY_FALLBACKS": "old"}, secret_key_file=tmp_path / "key")
    assert (s.secret_key, s.secret_key_fallbacks) == ("flag-key", ("old",))
    (tmp_path / "c.toml").write_text('secret_key_file = "key"\n')
    s = Settings.load(tmp_path / "c.toml", environ={"SESSCTL_SECRET_KEY_FALLBACKS": "old"})
    assert (s.secret_key, s.secret_key_fallbacks) == ("flag-key", ("old",))
