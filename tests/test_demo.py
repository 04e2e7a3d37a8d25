"""`sessctl demo` tells its story truthfully and quickly; `sessctl demo --serve` serves and stops on Ctrl-C."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from sessctl.cli import cli

SCRIPT = Path(sys.executable).with_name("sessctl")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SESSCTL_", "_SESSCTL_", "TTY_", "FORCE_COLOR"))}


def folder_of(output: str) -> Path:
    return Path(re.search(r"database  sqlite:///(\S+)/sessions\.db", output).group(1))


def check_story(output: str) -> None:
    """The facts the narration must show."""
    assert re.search(r"mallory +GET / with a forged id +Not logged in\.", output)
    assert "her forged id was not adopted" in output
    carol = re.search(r"^  carol +(\w{32})$", output, re.M).group(1)
    assert f"$ sessctl set-life {carol} 2s\n" in output
    assert re.search(r"carol +GET / +Not logged in\.\n.*expired on the server", output)
    assert re.search(r"bob +restarts, GET / +Not logged in\.", output)
    assert re.search(r"alice +restarts, GET / +Logged in as alice; this session ends 20", output)
    assert re.search(r"alice +POST /comment +You've already commented\.\n.*data came back", output)
    deleted = re.search(r"^deleted (\d+) expired sessions? in", output, re.M)
    assert deleted and int(deleted.group(1)) >= 1
    assert "Traceback" not in output and "Error" not in output


def test_demo_in_process_with_keep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["demo", "--keep"], prog_name="sessctl")
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert took < 30
    check_story(result.output)
    folder = folder_of(result.output)
    try:
        # --keep leaves the database and prints commands that work on it.
        command = shlex.split(re.search(r"^  sessctl (--db .+) list --all$", result.output, re.M).group(1))
        listed = CliRunner().invoke(cli, [*command, "list", "--all"], prog_name="sessctl")
        assert listed.exit_code == 0, listed.output
        assert len(listed.stdout.splitlines()) == 1 + 3  # header; bob, mallory and dave are left
    finally:
        shutil.rmtree(folder)
    assert not (tmp_path / "sessions.db").exists()


def test_demo_through_the_installed_script(tmp_path):
    if not SCRIPT.exists():
        pytest.skip(f"the sessctl console script is not installed next to {sys.executable}")
    started = time.monotonic()
    r = subprocess.run([str(SCRIPT), "demo"], capture_output=True, text=True, env=clean_env(), cwd=tmp_path,
                       timeout=60)
    took = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    assert took < 30
    assert r.stderr == ""  # the whole story is on stdout, in order
    check_story(r.stdout)
    assert not folder_of(r.stdout).exists()
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_serve_answers_and_stops_on_ctrl_c(tmp_path):
    if not SCRIPT.exists():
        pytest.skip(f"the sessctl console script is not installed next to {sys.executable}")
    with subprocess.Popen([str(SCRIPT), "demo", "--serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=clean_env(), cwd=tmp_path) as proc:
        try:
            first = proc.stdout.readline()
            match = re.search(r"at (http://127\.0\.0\.1:\d+/) ", first)
            assert match, first
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(match.group(1) + "login", timeout=10) as response:
                assert response.status == 200
                assert '<form id="login" method="post" action="/login">' in response.read().decode()
                assert "sessionid=" in response.headers["Set-Cookie"]  # the test cookie's session
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
            out, err = proc.stdout.read(), proc.stderr.read()  # not communicate(): readline() buffered some
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    output = first + out
    assert "set-life KEY 2s" in output
    assert '"GET /login HTTP/1.1" 200' in err and err.endswith("stopped\n")
    assert not folder_of(output).exists()
