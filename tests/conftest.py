"""Shared fixtures: every store, session, middleware and CLI test runs on
SQLite, PostgreSQL and MariaDB, against real servers.

PostgreSQL and MariaDB URLs come from ``SESSCTL_TEST_POSTGRES`` and
``SESSCTL_TEST_MYSQL`` (``eval "$(../shared/services.sh)"`` exports them).
Locally a missing URL skips that backend; under CI (``CI=true``) it fails.
"""

from __future__ import annotations

import os
import secrets

import pytest

SECRET = "test-secret-key-for-sessctl"
BACKENDS = {
    "sqlite": None,
    "postgres": "SESSCTL_TEST_POSTGRES",
    "mysql": "SESSCTL_TEST_MYSQL",
}


def _server_url(backend: str) -> str:
    var = BACKENDS[backend]
    url = os.environ.get(var or "")
    if not url:
        message = f"{var} is not set: run eval \"$(../shared/services.sh)\" first"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


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

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            q = engine.dialect.identifier_preparer.quote
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


# The developer's shell must not leak into command-line tests: sessctl
# settings, or rich's switches that force a terminal.
SHELL_VARS = (
    "SESSCTL_DB",
    "SESSCTL_TABLE",
    "SESSCTL_CONFIG",
    "SESSCTL_SECRET_KEY",
    "SESSCTL_SECRET_KEY_FILE",
    "SESSCTL_SECRET_KEY_FALLBACKS",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Run in an empty folder with no SESSCTL_* variable or sessctl.toml from the shell."""
    monkeypatch.chdir(tmp_path)
    for var in SHELL_VARS:
        monkeypatch.delenv(var, raising=False)
