"""Start-up: a database command imports what it needs and no more (timed in benchmarks/, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import fill

PROBE = """
import json, sys
from sessctl.cli import main
sys.argv = ["sessctl", "--db", sys.argv[1], "--table", sys.argv[2], *sys.argv[3:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("sessctl", "rich", "psycopg", "pymysql")))),
      file=sys.stderr)
"""


def _modules(settings, *args) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, settings.database_url, settings.table, *args],
                          capture_output=True, text=True, timeout=120)
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


def test_stats_loads_neither_the_runtime_nor_purge_nor_rich(store, settings):
    fill(store, expired=3, live=3)
    loaded = _modules(settings, "stats", "--json")
    assert "sessctl.reports" in loaded  # it did run
    unwanted = {"sessctl.fastpath", "sessctl.sqlitewal", "sessctl.purge", "sessctl.session",
                "sessctl.middleware", "rich"}
    assert loaded & unwanted == set()


def test_purge_loads_purge_but_not_the_runtime(store, settings):
    fill(store, expired=3, live=3)
    loaded = _modules(settings, "purge", "--expired", "--json")
    assert "sessctl.purge" in loaded
    assert loaded & {"sessctl.fastpath", "sessctl.session", "sessctl.middleware", "rich"} == set()


def test_a_command_loads_its_own_module_and_not_the_user_api(store, settings):
    fill(store, expired=3, live=3)
    loaded = _modules(settings, "stats", "--json")
    assert "sessctl.reports" in loaded  # it did run
    assert {m for m in loaded if m.startswith("sessctl.cli.commands.")} == {"sessctl.cli.commands.stats"}
    assert loaded & {"sessctl.users", "sessctl.devices", "click.shell_completion"} == set()


def test_the_lazy_command_table_is_a_mapping_of_commands():
    """Tools that copy a click group's commands see every command, loaded, in --help's order."""
    import click

    from sessctl.cli import cli

    for copy in (dict(cli.commands), {**cli.commands}, cli.commands.copy(), dict(cli.commands.items())):
        assert list(copy) == list(cli.list_commands(None)) and len(copy) == 13
        assert all(isinstance(c, click.Command) and c.name == name for name, c in copy.items())
