"""The README's cron lines, run as cron runs them (sh -c, cron's PATH, a venv's absolute path):
quiet on success, non-zero with one line on failure; purge appends JSON Lines; stats writes
OpenMetrics for node_exporter's textfile collector atomically, valid to prometheus_client."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
CRON_ENV = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}  # what cron gives a job (plus HOME, LOGNAME)
pytestmark = pytest.mark.usefixtures("isolated")


def readme_cron_lines() -> dict[str, str]:
    """The command of each crontab line in the README's ```cron blocks, by sessctl command."""
    readme = (ROOT / "README.md").read_text()
    lines = {}
    for block in re.findall(r"```cron\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            if line.strip() and not line.startswith("#"):
                command = line.split(None, 5)[5]
                name = "purge" if " purge " in command else "stats"
                lines[name] = command
    return lines


@pytest.fixture
def cron(tmp_path, settings, store):
    """A machine where the README's paths exist under tmp_path: /srv/app holds sessctl.toml and
    the venv (this test run's own), /var/log and the textfile collector's folder are writable."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "sessctl").exists():
        pytest.skip("the sessctl script is not installed in this Python's environment (not a venv install)")
    root = tmp_path / "root"
    app = root / "srv" / "app"
    app.mkdir(parents=True)
    (app / ".venv").symlink_to(venv)
    (root / "var" / "log").mkdir(parents=True)
    (root / "var" / "lib" / "node_exporter" / "textfile").mkdir(parents=True)
    (app / "sessctl.toml").write_text(f'db = "{settings.database_url}"\ntable = "{settings.table}"\n')
    home = tmp_path / "home"
    home.mkdir()

    def run(command: str) -> subprocess.CompletedProcess:
        for path in ("/srv/app", "/var/log", "/var/lib/node_exporter"):
            command = command.replace(path, f"{root}{path}")
        env = {**CRON_ENV, "HOME": str(home), "LOGNAME": "cron"}
        return subprocess.run(["/bin/sh", "-c", command], cwd=home, env=env, capture_output=True, text=True, timeout=120)

    run.root = root
    return run


def _fill(store, live: int, expired: int) -> None:
    now = store.now()
    rows = [
        {"session_key": f"{'l' if i < live else 'e'}{i:031d}", "session_data": "e30:1:x",
         "expire_date": now + (timedelta(hours=2 + i) if i < live else -timedelta(hours=1 + i))}
        for i in range(live + expired)
    ]
    with store.engine.begin() as conn:
        conn.execute(insert(store.table), rows)


def test_readme_has_both_cron_lines_with_absolute_paths():
    lines = readme_cron_lines()
    assert set(lines) == {"purge", "stats"}
    for command in lines.values():
        assert command.startswith("/srv/app/.venv/bin/sessctl ")


def test_readme_purge_cron_line_as_printed(cron, store):
    _fill(store, live=3, expired=5)
    command = readme_cron_lines()["purge"]
    r = cron(command)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")  # cron mails any output
    r = cron(command)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    log = (cron.root / "var/log/sessctl-purge.log").read_text().splitlines()
    assert len(log) == 2  # JSON Lines: one object per run
    first, second = (json.loads(line) for line in log)
    assert first["deleted"] == 5 and first["complete"] is True and second["deleted"] == 0
    assert first["table"] == store.settings.table


def test_readme_purge_cron_line_fails_loudly(cron, store):
    command = readme_cron_lines()["purge"]
    (cron.root / "srv/app/sessctl.toml").write_text('db = "sqlite:///gone/nowhere.db"\n')
    r = cron(command)
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("Error: ")


def _metrics(text: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
    from prometheus_client.parser import text_string_to_metric_families as prometheus

    values = {}
    for family in openmetrics(text):  # strict OpenMetrics: # EOF, types, names
        assert family.type == "gauge"  # no counters: nothing here only goes up
        for sample in family.samples:
            assert sample.timestamp is None  # the textfile collector refuses timestamps
            labels = {k: v for k, v in sample.labels.items() if k not in ("database", "table")}
            values[(sample.name, tuple(sorted(labels.items())))] = sample.value
    legacy = {s.name for f in prometheus(text) for s in f.samples}  # the 0.0.4 format node_exporter reads
    assert legacy == {name for name, _ in values}
    return values


def test_stats_openmetrics_counts(store, settings):
    from click.testing import CliRunner

    from sessctl.cli import cli

    _fill(store, live=4, expired=2)
    r = CliRunner().invoke(cli, ["--db", settings.database_url, "--table", settings.table, "stats", "--format", "openmetrics"])
    assert r.exit_code == 0, r.output
    assert r.stdout.endswith("# EOF\n")
    m = _metrics(r.stdout)
    assert m[("sessctl_session_rows", ())] == 6
    assert m[("sessctl_sessions", (("state", "active"),))] == 4
    assert m[("sessctl_sessions", (("state", "expired"),))] == 2
    assert m[("sessctl_active_sessions", (("lifetime", "default"),))] == 4
    assert m[("sessctl_active_sessions", (("lifetime", "idle"),))] == 0
    assert m[("sessctl_sessions_expiring", (("within", "1h"),))] == 0
    assert m[("sessctl_sessions_expiring", (("within", "1d"),))] == 4
    # Row i of the expired ones (i = 4, 5) expired 1 + i hours ago: the oldest, 6 hours ago.
    assert 6 * 3600 - 60 < m[("sessctl_oldest_expired_session_age_seconds", ())] < 6 * 3600 + 60
    labels = re.findall(r'table="([^"]*)"', r.stdout)
    assert set(labels) == {settings.table}


def test_readme_metrics_cron_line_as_printed(cron, store):
    _fill(store, live=3, expired=2)
    purge, stats = readme_cron_lines()["purge"], readme_cron_lines()["stats"]
    prom = cron.root / "var/lib/node_exporter/textfile/sessctl.prom"
    r = cron(stats)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    m = _metrics(prom.read_text())
    assert m[("sessctl_sessions", (("state", "expired"),))] == 2
    assert not any(name.startswith("sessctl_purge_") for name, _ in m)  # no purge run known yet
    before = prom.stat().st_ino
    with prom.open() as reader:  # a collector reading the old file meanwhile
        assert cron(purge).returncode == 0
        r = cron(stats)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert reader.read().endswith("# EOF\n")  # the old file stays whole: replaced, never rewritten
    assert prom.stat().st_ino != before
    m = _metrics(prom.read_text())
    assert m[("sessctl_sessions", (("state", "expired"),))] == 0
    assert m[("sessctl_purge_last_run_deleted", ())] == 2
    assert m[("sessctl_purge_last_run_complete", ())] == 1
    assert abs(m[("sessctl_purge_last_run_timestamp_seconds", ())] - store.now().timestamp()) < 120
    assert sorted(p.name for p in prom.parent.iterdir()) == ["sessctl.prom"]  # no temporary files left


def test_metrics_cron_line_on_failure_keeps_the_last_good_file(cron, store):
    stats = readme_cron_lines()["stats"]
    prom = cron.root / "var/lib/node_exporter/textfile/sessctl.prom"
    assert cron(stats).returncode == 0
    good = prom.read_text()
    (cron.root / "srv/app/sessctl.toml").write_text('db = "sqlite:///gone/nowhere.db"\n')
    r = cron(stats)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and len(r.stderr.splitlines()) == 1
    assert prom.read_text() == good
    assert sorted(p.name for p in prom.parent.iterdir()) == ["sessctl.prom"]
