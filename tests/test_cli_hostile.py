"""Hostile input to the command line (issue 11, item 18 and the classes behind it).

Each command's options and arguments get a table of hostile values; the contract holds for each:
one `Error: ...` line on stderr (or click's usage block for exit 2), a documented exit code
(0, 1 or 2), no traceback, no "unexpected", and nothing in the table lost.
Also: keys compare exactly on MariaDB's case-insensitive collation, `sessctl list | head` exits 0
quietly, and SQLite files are created readable by their owner only.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SECRET
from sessctl.cli import cli
from sessctl.codec import Codec
from sessctl.session import Session

pytestmark = pytest.mark.usefixtures("isolated")
EXE = Path(sys.executable).with_name("sessctl")

HOSTILE_NUMBERS = ["nan", "-nan", "inf", "-inf", "1e309", "-1", "0", "", " ", "1e-320", "0x10", "٣", "1_000",
                   "99999999999999999999999", "\x00", "1\n2"]
HOSTILE_TEXT = ["", " ", "\x00", "\x1b[31mred", "a\r\nb", "\udcff", "é" * 50, "../../etc/passwd", "-", "--", "%s%n",
                "K" * 41, "UPPERCASEKEY0000000000000000000000", "'; DROP TABLE x; --"]


def run(store, *args, env=None):
    s = store.settings
    return CliRunner().invoke(cli, ["--db", s.database_url, "--table", s.table, *args],
                              env={"SESSCTL_SECRET_KEY": SECRET, **(env or {})})


def snapshot(store):
    return {r.key: (r.session_data, r.expire_date) for r in store.iter_rows("all")}


def contract(result, *, allowed=(0, 1, 2)):
    assert result.exit_code in allowed, result.output
    assert "Traceback" not in result.output and "Error: unexpected" not in result.output, result.output
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    if result.exit_code == 2:
        assert "Error: " in result.stderr, result.stderr


@pytest.fixture
def rows(store):
    codec = Codec(SECRET)
    live = store.create_row(codec.encode({"user": 1}), store.now() + timedelta(hours=1))
    old = store.create_row(codec.encode({"user": 2}), store.now() - timedelta(hours=1))
    return live, old


@pytest.mark.parametrize("value", HOSTILE_NUMBERS, ids=repr)
@pytest.mark.parametrize("option", [["purge", "--expired", "--max-seconds"], ["purge", "--expired", "--batch-size"],
                                    ["list", "--limit"], ["set-life", "KEY"], ["set-life", "KEY", "1h", "--idle"]],
                         ids=" ".join)
def test_numbers(store, rows, option, value):
    live, old = rows
    args = [live if a == "KEY" else a for a in option]
    before = snapshot(store)
    r = run(store, *args, value)
    contract(r)
    if r.exit_code != 0:
        assert snapshot(store) == before


@pytest.mark.parametrize("value", ["nan", "-nan", "inf", "NaN", "infinity"])
def test_max_seconds_must_be_a_finite_number(store, rows, value):
    r = run(store, "purge", "--expired", "--max-seconds", value)
    assert r.exit_code == 2 and "--max-seconds" in r.stderr, r.output


@pytest.mark.parametrize("value", HOSTILE_TEXT, ids=repr)
@pytest.mark.parametrize("command", ["show", "delete", "set-life", "till-browser-close", "reset-life", "decode"])
def test_keys_and_data(store, rows, command, value):
    before = snapshot(store)
    args = [command, value] + (["1h"] if command == "set-life" else [])
    r = run(store, *args)
    contract(r)
    if command != "decode" or r.exit_code != 0:
        assert snapshot(store) == before


@pytest.mark.parametrize("value", HOSTILE_TEXT, ids=repr)
@pytest.mark.parametrize("option", ["--db", "--table", "--config", "--secret-key-file"])
def test_global_options(store, rows, option, value):
    before = snapshot(store)
    r = CliRunner().invoke(cli, [option, value, "list"], env={"SESSCTL_SECRET_KEY": SECRET})
    contract(r)
    assert snapshot(store) == before


@pytest.mark.parametrize("value", HOSTILE_TEXT + ["sqlite://", "sqlite:////nonexistent/dir/x.db", "mysql://", "x://y",
                                                  "postgresql://u@[::1/x", "postgresql://u@h:99999/x",
                                                  "postgresql://u@h:-1/x", "sqlite:///?mode=ro"], ids=repr)
@pytest.mark.parametrize("var", ["SESSCTL_DB", "SESSCTL_TABLE", "SESSCTL_CONFIG", "SESSCTL_SECRET_KEY_FILE",
                                 "SESSCTL_SECRET_KEY_FALLBACKS", "SESSCTL_SECRET_KEY"])
def test_environment(tmp_path, var, value):
    if "\x00" in value:
        pytest.skip("an environment variable cannot hold NUL")
    for args in (["stats"], ["show", "k" * 32]):
        r = CliRunner().invoke(cli, args, env={"SESSCTL_SECRET_KEY": SECRET, var: value})
        contract(r)
    assert not any(p.name.startswith(("sessions.db",)) for p in tmp_path.iterdir()) or var == "SESSCTL_DB"


# -- MariaDB's case-insensitive collation --------------------------------------------------


def test_keys_compare_exactly(store, backend):
    s = Session(store)
    s["user"] = 1
    key = s.save()
    upper = key.upper()
    before = snapshot(store)
    for args in (["delete", upper], ["show", upper], ["set-life", upper, "2h"], ["reset-life", upper]):
        r = run(store, *args)
        assert r.exit_code in (1, 2), (backend, args, r.output)
        assert snapshot(store) == before, (backend, args)
    assert store.get_row(upper) is None
    assert store.get_row(key + " ") is None  # MariaDB's PAD SPACE collations: 'k ' = 'k'
    assert not store.delete_row(key + " ")
    assert not store.delete_row(upper)
    assert Session(store, key)["user"] == 1


# -- output to a closed pipe -------------------------------------------------------------


@pytest.mark.parametrize("args", [["list"], ["list", "--all", "--json"], ["stats"]])
def test_list_piped_into_head_exits_zero_quietly(store, args):
    codec = Codec(SECRET)
    for i in range(3000):
        store.create_row(codec.encode({"i": i}), store.now() + timedelta(hours=1))
    s = store.settings
    cmd = f"'{EXE}' --db '{s.database_url}' --table {s.table} {' '.join(args)} | head -1 >/dev/null; " \
          "echo ${PIPESTATUS[0]}"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SESSCTL_SECRET_KEY": SECRET})
    assert p.stdout.strip() == "0", (p.stdout, p.stderr)
    assert p.stderr == "", p.stderr


# -- SQLite files are the database's secrets: owner only ----------------------------------


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.name.startswith("s.db")}


@pytest.mark.parametrize("how", ["init", "store", "app-write", "purge"])
def test_sqlite_files_are_created_owner_only(tmp_path, how):
    folder = tmp_path / "db"
    folder.mkdir()
    url = f"sqlite:///{folder}/s.db"
    old = os.umask(0o022)
    try:
        code = (
            "import sys\n"
            "from sessctl import Settings, SessionStore\n"
            "from sessctl.session import Session\n"
            f"st = SessionStore(Settings(database_url={url!r}, secret_key='k'*20))\n"
            "st.create_table()\n"
            "s = Session(st); s['u'] = 1; s.save()\n"
            "import time\n"
        )
        if how == "init":
            p = subprocess.run([str(EXE), "--db", url, "init"], capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
            p = subprocess.run([str(EXE), "--db", url, "purge", "--expired"], capture_output=True, text=True,
                               timeout=60)
        elif how == "purge":
            subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
            p = subprocess.run([str(EXE), "--db", url, "purge", "--expired"], capture_output=True, text=True,
                               timeout=60)
        else:
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        # Hold a connection open so -wal and -shm exist while we look.
        holder = subprocess.Popen([sys.executable, "-c", code + "c = st.engine.connect()\n"
                                   "from sqlalchemy import text\n"
                                   "c.execute(text('select 1 from django_session')).all()\n"
                                   "print('ready', flush=True); sys.stdin.read()\n"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "ready"
            modes = _modes(folder)
        finally:
            holder.communicate("", timeout=30)
    finally:
        os.umask(old)
    assert "s.db" in modes and "s.db-wal" in modes, modes
    # The files that hold sessions (keys are passwords): the owner's only.
    data = {k: oct(v) for k, v in modes.items() if k in ("s.db", "s.db-wal", "s.db-shm", "s.db-journal")}
    assert set(data.values()) == {"0o600"}, data
    # Lock and signal files beside it hold nothing; they may be readable (another user's purge
    # flocks them too, by design) but never writable by others.
    for p in folder.iterdir():
        if p.name not in data:
            assert p.stat().st_size == 0 and not stat.S_IMODE(p.stat().st_mode) & 0o022, (p.name, oct(p.stat().st_mode))
