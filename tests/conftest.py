"""Shared fixtures: every store, session, middleware and CLI test runs on
SQLite, PostgreSQL and MariaDB, against real servers.

PostgreSQL and MariaDB URLs come from ``SESSCTL_TEST_POSTGRES`` and
``SESSCTL_TEST_MYSQL`` (``eval "$(scripts/test-databases.sh)"`` exports them).
Locally a missing URL skips that backend, and the end of the run says so loudly;
under CI (``CI=true``) it fails.
"""

from __future__ import annotations

import functools
import os
import secrets

import pytest

from helpers import SECRET, invoke
BACKENDS = {
    "sqlite": None,
    "postgres": "SESSCTL_TEST_POSTGRES",
    "mysql": "SESSCTL_TEST_MYSQL",
}


ENABLE = 'eval "$(scripts/test-databases.sh)"'
NAMES = {"postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}
_not_tested: dict[str, int] = {}  # backend -> tests skipped for want of its server


def _server_url(backend: str) -> str:
    var = BACKENDS[backend]
    url = os.environ.get(var or "")
    if not url:
        message = f"{var} is not set: run {ENABLE} first"
        if os.environ.get("CI"):
            pytest.fail(message)
        _not_tested[backend] = _not_tested.get(backend, 0) + 1
        pytest.skip(message)
    return url


class _BackendsNotTested:
    """A plugin object, so that this hook sits beside the stress table's own pytest_terminal_summary."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after pytest's own summaries
    def pytest_terminal_summary(self, terminalreporter):
        """Say loudly, last, which database backends this run did not test and how to test them."""
        yield
        if not _not_tested:
            return
        tr = terminalreporter
        tr.section("DATABASE BACKENDS NOT TESTED", red=True, bold=True)
        for backend, count in _not_tested.items():
            tr.write_line(f"{NAMES[backend]}: {count} tests skipped, {BACKENDS[backend]} is not set", red=True, bold=True)
        tested = ", ".join(["SQLite", *(NAMES[b] for b in NAMES if b not in _not_tested)])
        tr.write_line(f"Tested only: {tested}. To test every backend: {ENABLE} && python -m pytest", bold=True)
        tr.write_line("(it finds, starts or, as root, installs the servers; README: Development)")


def pytest_configure(config):
    config.pluginmanager.register(_BackendsNotTested(), "sessctl-backends-not-tested")


@pytest.fixture(params=list(BACKENDS))
def backend(request) -> str:
    return request.param


@pytest.fixture
def table_name(backend) -> str:
    # A table of its own per test, so runs never see each other's rows.
    return "django_session" if backend == "sqlite" else f"sess_{secrets.token_hex(5)}"


@pytest.fixture
def db_url(backend, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    return _server_url(backend)


def _drop(url: str, table: str) -> None:
    from sqlalchemy import text

    from sessctl.store import make_engine
    from sessctl.userindex import side_name

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            q = engine.dialect.identifier_preparer.quote
            conn.execute(text(f"DROP TABLE IF EXISTS {q(side_name(table))}"))  # its user index
            conn.execute(text(f"DROP TABLE IF EXISTS {q(table)}"))
    finally:
        engine.dispose()


@pytest.fixture
def settings(db_url, table_name, backend):
    from sessctl import Settings

    if backend != "sqlite":
        _drop(db_url, table_name)
    yield Settings(database_url=db_url, secret_key=SECRET, table=table_name)
    if backend != "sqlite":
        _drop(db_url, table_name)


@pytest.fixture
def store(settings):
    from sessctl import SessionStore

    st = SessionStore(settings)
    st.create_table()
    yield st
    st.close()


@pytest.fixture
def log(store):
    """The kinds of the statements sent on the test's table (``log.kinds``; ``log.clear()``)."""
    from httpserver import StatementLog

    with StatementLog(store.engine, store.settings.table) as statements:
        yield statements


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Run in an empty folder with no SESSCTL_* variable or sessctl.toml from the developer's
    shell, and none of rich's switches that force a terminal."""
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith(("SESSCTL_", "TTY_", "FORCE_COLOR")) and not var.startswith("SESSCTL_TEST_"):
            monkeypatch.delenv(var)


@pytest.fixture
def run(settings):
    """``run(*args, secret=, env=, input=, db=, code=)``: sessctl in-process on the test's table."""
    return functools.partial(invoke, settings)


@pytest.fixture
def run_ok(settings):
    """As ``run``, asserting exit 0 unless ``code=`` says otherwise."""
    return functools.partial(invoke, settings, code=0)


# -- stress: the reliability scenarios, repeated with counts (pytest -m stress) ------------------
#
# A test marked ``@pytest.mark.scenario("title")`` runs once in the default suite and, under
# ``pytest -m stress``, ``--stress-rounds`` more times per backend; the run ends with a table
# of rounds, failures and time per scenario and backend (``--stress-table FILE`` also writes
# it as Markdown). The default run leaves the repeats out (addopts: -m "not stress").

_stress_rows: dict[tuple[str, str], dict[str, float]] = {}


def pytest_addoption(parser):
    group = parser.getgroup("sessctl stress")
    group.addoption("--stress-rounds", type=int, default=5, metavar="N",
                    help="repeats of each scenario per backend under -m stress (default 5)")
    group.addoption("--stress-table", metavar="FILE", help="also write the stress table to FILE (Markdown)")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("scenario") is None:
        return
    rounds = metafunc.config.getoption("stress_rounds")
    metafunc.fixturenames.append("stress_round")
    metafunc.parametrize("stress_round", [
        pytest.param(0, id="once"),
        *(pytest.param(i, id=f"stress{i}", marks=pytest.mark.stress) for i in range(1, rounds + 1)),
    ])


def pytest_collection_modifyitems(items):
    for item in items:
        params = getattr(item, "callspec", None) and item.callspec.params
        if params and params.get("stress_round"):
            title = item.get_closest_marker("scenario").args[0]
            item.user_properties.append(("stress", (title, params.get("backend", "-"))))


def pytest_runtest_logreport(report):
    found = [value for name, value in report.user_properties if name == "stress"]
    if not found or (report.when != "call" and not report.failed):
        return
    row = _stress_rows.setdefault(found[0], {"rounds": 0, "failed": 0, "skipped": 0, "seconds": 0.0})
    row["rounds"] += 1
    row["failed"] += report.failed
    row["skipped"] += report.skipped
    row["seconds"] += report.duration


def stress_table() -> list[str]:
    lines = ["| scenario | backend | rounds | failed | skipped | seconds |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for (title, backend), row in sorted(_stress_rows.items()):
        lines.append(f"| {title} | {backend} | {row['rounds']} | {row['failed']} | {row['skipped']} | {row['seconds']:.1f} |")
    return lines


def pytest_terminal_summary(terminalreporter, config):
    if not _stress_rows:
        return
    terminalreporter.section("stress")
    for line in stress_table():
        terminalreporter.write_line(line)
    if path := config.getoption("stress_table"):
        from pathlib import Path

        Path(path).write_text("\n".join(stress_table()) + "\n")
