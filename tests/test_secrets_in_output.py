"""Secrets never reach the output (issue 11, items 9 and 18): the database password in every form
a URL can carry it, and the secret key however it was misconfigured, in every command's stdout and
stderr, with and without --debug, on success and on every kind of failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from sessctl.cli import cli

pytestmark = pytest.mark.usefixtures("isolated")
PASSWORD = "Pw-CANARY/7?x#y"  # '/', '?' and '#' inside: each once escaped a redaction
SECRET = "KEY-CANARY-5b1e0c9d3a7f"
KEY = "k" * 32
COMMANDS = [
    ["init"],
    ["list"],
    ["list", "--all", "--json"],
    ["show", KEY],
    ["show", KEY, "--json"],
    ["decode", "e30:1:x"],
    ["set-life", KEY, "2h"],
    ["till-browser-close", KEY],
    ["reset-life", KEY],
    ["delete", KEY],
    ["purge", "--expired"],
    ["purge", "--expired", "--json"],
    ["purge", "--all", "--yes"],
    ["stats"],
    ["stats", "--json"],
]


def secret_forms(secret: str) -> list[str]:
    """The secret as it could appear: raw, percent-encoded, and each long enough piece of it."""
    forms = {secret, quote(secret, safe=""), quote(secret)}
    forms |= {part for part in secret.replace("?", "/").replace("#", "/").split("/") if len(part) >= 6}
    return sorted(forms)


def urls(host: str, port: int, db: str) -> dict[str, str]:
    """Every way a URL carries a password, towards ``host:port``."""
    enc = quote(PASSWORD, safe="")
    return {
        "encoded": f"postgresql+psycopg://sessctl:{enc}@{host}:{port}/{db}",
        "raw-slash": f"postgresql+psycopg://sessctl:Pw-CANARY/slash@{host}:{port}/{db}",
        "raw-at": f"mysql+pymysql://sessctl:Pw@CANARY-at@{host}:{port}/{db}",
        "raw-at-pg": f"postgresql+psycopg://sessctl:Pw@CANARY-at@{host}:{port}/{db}",
        "query": f"postgresql+psycopg://sessctl@{host}:{port}/{db}?password={enc}",
        "query-mysql": f"mysql+pymysql://sessctl@{host}:{port}/{db}?password={enc}",
        "query-and-bogus": f"postgresql+psycopg://sessctl@{host}:{port}/{db}?password={enc}&bogus=1",
        "sslpassword": f"postgresql+psycopg://sessctl@{host}:{port}/{db}?sslpassword={enc}",
        "mysql-encoded": f"mysql+pymysql://sessctl:{enc}@{host}:{port}/{db}",
        "ipv6-broken": f"postgresql+psycopg://sessctl:{enc}@[::1/{db}",
    }


CANARIES = ["Pw-CANARY", SECRET]


def assert_clean(text: str, where: str) -> None:
    for canary in CANARIES:
        for form in secret_forms(canary) + secret_forms(PASSWORD):
            assert form not in text, f"{where} printed a secret ({form!r}):\n{text}"
    assert "CANARY" not in text, f"{where} printed (part of) a secret:\n{text}"


@pytest.mark.parametrize("name", list(urls("127.0.0.1", 1, "x")))
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_no_command_prints_the_database_password(name, debug):
    url = urls("127.0.0.1", 1, "x")[name]  # nothing listens on port 1: every command fails
    for args in COMMANDS:
        r = CliRunner().invoke(cli, [*(["--debug"] if debug else []), "--db", url, *args],
                               env={"SESSCTL_SECRET_KEY": SECRET})
        assert_clean(r.output, f"{name} {' '.join(args)}")
        if args[0] != "decode":
            assert r.exit_code in (1, 2), r.output
        if not debug:
            assert "Traceback" not in r.output and "unexpected" not in r.output, r.output


@pytest.mark.parametrize("name", ["encoded", "query", "sslpassword"])
def test_a_reachable_server_with_a_password_in_the_url(name, settings, backend):
    """Successful commands too: init's and --debug's messages name the database without its password."""
    if backend != "postgres":
        pytest.skip("the local PostgreSQL trusts sessctl, so any password gets in")
    from sqlalchemy.engine import make_url

    base = make_url(settings.database_url)
    url = urls(base.host, base.port, base.database)[name]
    for args in (["init"], ["list"], ["stats"], ["purge", "--expired"], ["init"]):
        r = CliRunner().invoke(cli, ["--debug", "--db", url, "--table", settings.table, *args],
                               env={"SESSCTL_SECRET_KEY": SECRET})
        assert_clean(r.output, " ".join(args))
        assert r.exit_code == 0, r.output


def test_the_password_is_not_in_a_real_process_output_either():
    url = urls("127.0.0.1", 1, "x")["raw-slash"]
    exe = Path(sys.executable).with_name("sessctl")
    for args in (["--debug", "list"], ["init"], ["stats"]):
        p = subprocess.run([str(exe), "--db", url, *args], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "SESSCTL_SECRET_KEY": SECRET})
        assert_clean(p.stdout + p.stderr, " ".join(args))
        assert p.returncode == 1


@pytest.mark.parametrize("name", ["raw-at", "raw-at-pg", "ipv6-broken", "query-and-bogus"])
def test_unusable_urls_are_one_clear_line(name):
    url = urls("127.0.0.1", 1, "x")[name]
    r = CliRunner().invoke(cli, ["--db", url, "list"])
    assert r.exit_code in (1, 2), r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "unexpected" not in r.stderr and "Traceback" not in r.stderr


def test_bogus_query_option_says_which(settings, backend):
    if backend == "sqlite":
        pytest.skip("a server URL")
    r = CliRunner().invoke(cli, ["--db", settings.database_url + "?bogus=1", "--table", settings.table, "list"])
    assert r.exit_code in (1, 2), r.output
    assert "bogus" in r.stderr and "unexpected" not in r.stderr and r.stderr.count("\n") == 1, r.stderr


# -- the secret key, misconfigured --------------------------------------------------------


def test_the_key_itself_in_the_key_file_variable_is_never_echoed(store):
    s = store.settings
    for args in (["show", KEY], ["decode", "e30:1:x"], ["set-life", KEY, "2h"], ["--debug", "show", KEY]):
        r = CliRunner().invoke(cli, ["--db", s.database_url, "--table", s.table, *args],
                               env={"SESSCTL_SECRET_KEY_FILE": SECRET})
        assert r.exit_code == 1, r.output
        assert_clean(r.output, " ".join(args))
        assert "SESSCTL_SECRET_KEY_FILE" in r.stderr


def test_the_key_itself_given_to_the_flag_is_never_echoed(store):
    s = store.settings
    r = CliRunner().invoke(cli, ["--db", s.database_url, "--table", s.table, "--secret-key-file", SECRET, "show", KEY])
    assert r.exit_code == 1 and "secret key file" in r.stderr, r.output
    assert_clean(r.output, "--secret-key-file KEY")


def test_a_key_in_the_config_file_path_is_never_echoed(store, tmp_path):
    (tmp_path / "sessctl.toml").write_text(f'secret_key_file = "{SECRET}"\n')
    s = store.settings
    r = CliRunner().invoke(cli, ["--db", s.database_url, "--table", s.table, "show", KEY])
    assert r.exit_code == 1, r.output
    assert_clean(r.output, "config secret_key_file")


@pytest.mark.parametrize("args", [["stats"], ["list"], ["list", "--json"], ["purge", "--expired"], ["init"]])
def test_commands_that_need_no_key_ignore_a_bad_key_file(store, args):
    s = store.settings
    r = CliRunner().invoke(cli, ["--db", s.database_url, "--table", s.table, *args],
                           env={"SESSCTL_SECRET_KEY_FILE": "/nonexistent/secret"})
    assert r.exit_code == 0, r.output


def test_delete_needs_no_key_either(store):
    from sessctl.session import Session

    session = Session(store)
    session["u"] = 1
    key = session.save()
    s = store.settings
    r = CliRunner().invoke(cli, ["--db", s.database_url, "--table", s.table, "delete", key],
                           env={"SESSCTL_SECRET_KEY_FILE": "/nonexistent/secret"})
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("url", [
    "postgresql://u@127.0.0.1:1/x?password=Sekr3t%20x9",
    "mysql+pymysql://u@127.0.0.1:1/x?password=Sekr3t%20x9%2Fz",
])
def test_a_percent_encoded_password_in_the_query_is_never_printed(url, tmp_path, monkeypatch):
    """SQLAlchemy renders query values form-encoded (a space as '+'): that form is the password too."""
    from click.testing import CliRunner

    from sessctl.cli import cli

    monkeypatch.chdir(tmp_path)
    for args in (["list"], ["--debug", "list"], ["stats", "--json"]):
        r = CliRunner().invoke(cli, ["--db", url, "--timeout", "5", *args], prog_name="sessctl")
        out = r.output + (r.stderr or "")
        assert r.exit_code == 1, out
        assert "Sekr3t" not in out and "password=***" in out
