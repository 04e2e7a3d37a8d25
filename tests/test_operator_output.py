"""Output for machines and for people at a terminal: one-line JSON, JSON Lines, the RELATIVE
header, usage errors that say where an option belongs, the four-slash hint, completions."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from sessctl.cli import cli

from helpers import save

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("isolated")


def sessctl(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, prog_name="sessctl")


@pytest.fixture
def db(store):
    for i in range(3):
        save(store, None, {"n": i})
    return ["--db", store.settings.database_url, "--table", store.settings.table]


def test_purge_and_stats_json_are_exactly_one_line(db):
    for args in (["purge", "--expired", "--json"], ["purge", "--expired", "--dry-run", "--json"],
                 ["purge", "--all", "--dry-run", "--json"], ["stats", "--json"]):
        r = sessctl(*db, *args)
        assert r.exit_code == 0, r.output
        assert r.stdout.count("\n") == 1 and r.stdout.endswith("}\n"), (args, r.stdout)
        json.loads(r.stdout)


def test_list_json_stays_an_array_and_jsonl_streams_objects(db):
    r = sessctl(*db, "list", "--json")
    assert r.exit_code == 0, r.output
    items = json.loads(r.stdout)
    assert isinstance(items, list) and len(items) == 3
    r = sessctl(*db, "list", "--jsonl")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert [json.loads(line) for line in lines] == items
    r = sessctl(*db, "list", "--expired", "--jsonl")
    assert r.exit_code == 0 and r.stdout == ""
    r = sessctl(*db, "list", "--json", "--jsonl")
    assert r.exit_code == 2 and "--json" in r.stderr and "--jsonl" in r.stderr


def test_relative_header_on_a_terminal(db):
    """Drawn on a real pseudo-terminal, the table's relative-time column has its header."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSCTL_", "FORCE_COLOR", "TTY_"))}
    env.update(COLUMNS="140", TERM="xterm")
    pid, fd = pty.fork()
    if pid == 0:  # the child: sessctl on the terminal
        os.execve(sys.executable, [sys.executable, "-m", "sessctl", *db, "list"], env)
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.decode())
    header = next(line for line in text.splitlines() if "Key" in line or "KEY" in line)
    assert re.search(r"Relative|RELATIVE", header), text
    assert re.search(r"in 13d23h|in 14d", text)


@pytest.mark.parametrize(
    "args,option,fixed",
    [
        (["list", "--table", "x"], "--table", "sessctl --table x list"),
        (["stats", "--db=sqlite:///a.db", "--json"], "--db", "sessctl --db=sqlite:///a.db stats --json"),
        (["purge", "--expired", "--config", "c.toml"], "--config", "sessctl --config c.toml purge --expired"),
        (["list", "--debug"], "--debug", "sessctl --debug list"),
        (["show", "KEY", "-q"], "-q", "sessctl -q show KEY"),
    ],
)
def test_a_global_option_after_the_command_says_where_it_belongs(args, option, fixed):
    r = sessctl(*args)
    assert r.exit_code == 2
    assert f"{option} is a global option: put it before the command: {fixed}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_an_unknown_option_still_gets_clicks_suggestion():
    r = sessctl("list", "--expird")
    assert r.exit_code == 2 and "Did you mean '--expired'?" in r.stderr and "global" not in r.stderr


def test_a_missing_relative_sqlite_file_names_the_absolute_path_and_four_slashes(tmp_path):
    r = sessctl("--db", "sqlite:///srv/app/db.sqlite3", "stats")
    assert r.exit_code == 1
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1
    assert str(tmp_path / "srv/app/db.sqlite3") in line
    assert "sqlite:////srv/app/db.sqlite3" in line and "four slashes" in line
    r = sessctl("--db", f"sqlite:///{tmp_path}/missing.db", "stats")  # absolute: no hint needed
    assert r.exit_code == 1 and "four slashes" not in r.stderr and "sessctl init" in r.stderr


# -- completions --------------------------------------------------------------------------------

SHELLS = ["bash", "zsh", "fish"]
FILES = {"bash": "sessctl.bash", "zsh": "sessctl.zsh", "fish": "sessctl.fish"}


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_command_prints_the_committed_script(shell):
    r = sessctl("completion", shell)
    assert r.exit_code == 0, r.output
    committed = (ROOT / "completions" / FILES[shell]).read_text()
    assert r.stdout == committed, f"regenerate: sessctl completion {shell} > completions/{FILES[shell]}"
    assert "_SESSCTL_COMPLETE" in r.stdout


def test_completion_rejects_an_unknown_shell():
    r = sessctl("completion", "tcsh")
    assert r.exit_code == 2 and "bash" in r.stderr and "zsh" in r.stderr and "fish" in r.stderr


def test_readme_shows_how_to_install_each_completion():
    readme = (ROOT / "README.md").read_text()
    for shell in SHELLS:
        assert f"sessctl completion {shell} >" in readme


def test_the_wheel_ships_the_completions(tmp_path):
    pytest.importorskip("hatchling")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("sessctl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        expected = {
            "bash": "share/bash-completion/completions/sessctl",
            "zsh": "share/zsh/site-functions/_sessctl",
            "fish": "share/fish/vendor_completions.d/sessctl.fish",
        }
        for shell, target in expected.items():
            (name,) = [n for n in names if n.endswith(".data/data/" + target)]
            assert zf.read(name).decode() == sessctl("completion", shell).stdout
