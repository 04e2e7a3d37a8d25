"""completions/ holds click's generated scripts; KEY arguments complete from the database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sessctl.cli import cli
from helpers import save

ROOT = Path(__file__).resolve().parent.parent
SHELLS = ["bash", "zsh", "fish"]
pytestmark = pytest.mark.usefixtures("isolated")  # no SESSCTL_* or sessctl.toml from the shell


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_script_is_what_click_generates(shell):
    r = CliRunner().invoke(cli, env={"_SESSCTL_COMPLETE": f"{shell}_source"}, prog_name="sessctl")
    assert r.exit_code == 0, r.output
    committed = (ROOT / "completions" / f"sessctl.{shell}").read_text()
    assert r.stdout == committed, (
        f"completions/sessctl.{shell} is stale; regenerate it with: "
        f"_SESSCTL_COMPLETE={shell}_source sessctl > completions/sessctl.{shell}"
    )


def complete(words: list[str], env: dict | None = None) -> list[str]:
    """What bash would offer for the last word of ``words``."""
    r = CliRunner().invoke(
        cli,
        env={
            "_SESSCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(["sessctl", *words]),
            "COMP_CWORD": str(len(words)),
            **(env or {}),
        },
        prog_name="sessctl",
    )
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    return [line.split(",", 1)[1] for line in r.stdout.splitlines() if line]


def test_command_names():
    assert complete(["s"]) == ["show", "set-life", "stats"]
    assert "--expired" in complete(["purge", "--"])


def test_keys_complete_from_the_database(store):
    keys = sorted(save(store, None, {"n": i}) for i in range(3))
    db = ["--db", store.settings.database_url, "--table", store.settings.table]
    assert complete([*db, "show", ""]) == keys
    assert complete([*db, "show", keys[1][:6]]) == [k for k in keys if k.startswith(keys[1][:6])]
    assert complete([*db, "set-life", keys[0][:10]]) == [keys[0]]
    assert complete([*db, "delete", keys[0], keys[2][:10]]) == [keys[2]]
    assert complete([*db, "show", "zzzz-none"]) == []
    env = {"SESSCTL_DB": store.settings.database_url, "SESSCTL_TABLE": store.settings.table}
    assert complete(["till-browser-close", ""], env=env) == keys
    # A wrong secret setting does not matter: completion never needs it.
    env["SESSCTL_SECRET_KEY_FILE"] = "/nonexistent/secret"
    assert complete(["reset-life", ""], env=env) == keys


@pytest.mark.parametrize(
    "db",
    ["postgresql+psycopg://sessctl@127.0.0.1:1/x", "mysql+pymysql://sessctl@127.0.0.1:1/x", "nosuchdriver://x"],
)
def test_keys_complete_to_nothing_when_the_database_is_unreachable(db):
    assert complete(["--db", db, "show", ""]) == []


def test_keys_complete_to_nothing_without_a_table(tmp_path, settings):
    path = tmp_path / "missing.db"
    assert complete(["--db", f"sqlite:///{path}", "show", ""]) == []
    assert not path.exists()
    assert complete(["--db", settings.database_url, "--table", settings.table, "show", ""]) == []


def test_keys_complete_to_nothing_with_a_broken_config(tmp_path):
    (tmp_path / "sessctl.toml").write_text("this is = not [toml")
    assert complete(["show", ""]) == []


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_script_end_to_end(tmp_path):
    """Source the committed script in a real bash and let it call the installed command."""
    scripts = os.path.dirname(sys.executable)
    if not os.path.exists(os.path.join(scripts, "sessctl")):
        pytest.skip("the sessctl script is not installed next to this Python")
    script = ROOT / "completions" / "sessctl.bash"
    line = (
        f"source {script}; COMP_WORDS=(sessctl purge --ex); COMP_CWORD=2; "
        '_sessctl_completion sessctl; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", "--norc", "-c", line], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["--expired"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_keys_after_a_url_bash_split_at_its_colon(store, tmp_path):
    """Bash splits ``--db sqlite:///x.db`` at ':' (COMP_WORDBREAKS): keys must complete anyway.
    A real bash builds COMP_WORDS from a real line, as it does on <TAB>."""
    scripts = os.path.dirname(sys.executable)
    if not os.path.exists(os.path.join(scripts, "sessctl")):
        pytest.skip("the sessctl script is not installed next to this Python")
    keys = sorted(save(store, None, {"n": i}) for i in range(2))
    url, table = store.settings.database_url, store.settings.table
    typed = f"sessctl --db={url} --table {table} show {keys[0][:5]}"
    line = (
        f"source {ROOT / 'completions' / 'sessctl.bash'}; "
        # What bash does on <TAB>: split the line at blanks and at COMP_WORDBREAKS.
        f"COMP_LINE='{typed}'; COMP_POINT=${{#COMP_LINE}}; "
        "read -ra _w <<< \"$(sed -E 's/([:=])/ \\1 /g' <<< \"$COMP_LINE\")\"; "
        "COMP_WORDS=(\"${_w[@]}\"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); "
        '_sessctl_completion sessctl; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", "--norc", "-c", line], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [keys[0]]
