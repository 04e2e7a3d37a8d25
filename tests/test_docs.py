"""Help is the documentation: every command has a purpose line and an example."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sessctl.cli import cli

COMMANDS = list(cli.commands)


def test_spec_commands_exist():
    assert COMMANDS == [
        "init", "list", "show", "decode", "set-life", "till-browser-close", "reset-life", "delete", "purge", "stats", "users",
        "demo", "completion",
    ]


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_has_purpose_and_example(name):
    r = CliRunner().invoke(cli, [name, "--help"], prog_name="sessctl", terminal_width=80)
    assert r.exit_code == 0, r.output
    text = r.stdout
    assert text.startswith(f"Usage: sessctl {name} ")
    purpose = text.split("\n\n")[1].strip()
    assert purpose.endswith(".") and "\n" not in purpose
    assert "Example:\n" in text
    examples = text.split("Example:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    # A \b block keeps each example on its own, unwrapped line.
    assert examples and all(line.startswith("    ") for line in examples)
    assert any(f"sessctl {name}" in line or "sessctl --" in line for line in examples)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_short_help_is_not_cut(name):
    assert not cli.commands[name].get_short_help_str(limit=60).endswith("...")


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_every_option_has_help(name):
    command = cli if name is None else cli.commands[name]
    for param in command.params:
        if param.param_type_name == "option":
            assert param.help, f"{name or 'sessctl'} {param.opts[0]} has no help"


def test_group_help_documents_exit_codes_and_environment():
    r = CliRunner().invoke(cli, ["--help"], prog_name="sessctl")
    assert r.exit_code == 0, r.output
    for text in ("Exit codes:", "0  success", "1  the operation failed", "2  bad usage", "Example:"):
        assert text in r.stdout
    for var in ("SESSCTL_DB", "SESSCTL_TABLE", "SESSCTL_SECRET_KEY_FILE", "SESSCTL_SECRET_KEY",
                "SESSCTL_SECRET_KEY_FALLBACKS", "SESSCTL_CONFIG"):
        assert var in r.stdout
    for name in COMMANDS:
        assert f"\n  {name} " in r.stdout
