"""The host database's own settings never change a result.

A database is often shared with an app that set it up its own way: ``ALTER DATABASE ... SET
DateStyle = 'SQL, DMY'``, a ``TimeZone`` east of UTC, ``IntervalStyle = sql_standard`` on
PostgreSQL; ``sql_mode`` and ``time_zone`` on MariaDB (set here per session through an init
command in the URL, never globally). The same rows, the same requests and the same commands
must give exactly the same answers as on a database left at its defaults.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import make_url

from httpserver import serve
from lifecycle import Browser, handle, with_query
from sessctl import SessionMiddleware, SessionStore
from helpers import sessctl

UTC = timezone.utc

PG_SETTINGS = {
    "DateStyle": "SQL, DMY",
    "TimeZone": "Pacific/Kiritimati",  # UTC+14
    "IntervalStyle": "sql_standard",
}
MARIADB_SESSION = (
    "SET SESSION sql_mode='ANSI_QUOTES,NO_BACKSLASH_ESCAPES,PAD_CHAR_TO_FULL_LENGTH,NO_ZERO_DATE,"
    "NO_ZERO_IN_DATE,ONLY_FULL_GROUP_BY,STRICT_ALL_TABLES', time_zone='+13:00'"
)


@contextlib.contextmanager
def odd_host(store):
    """Settings like ``store``'s on a host configured its own way (a database of our own on PG)."""
    if store.dialect == "postgresql":
        name = f"sessctl_t_{secrets.token_hex(4)}"
        admin = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
            for key, value in PG_SETTINGS.items():
                conn.exec_driver_sql(f"ALTER DATABASE {name} SET {key} = '{value}'")
        url = make_url(store.settings.database_url).set(database=name).render_as_string(hide_password=False)
        try:
            yield store.settings.replace(database_url=url)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        url = with_query(store.settings.database_url, init_command=MARIADB_SESSION)
        other = store.settings.replace(database_url=url, table=f"{store.settings.table}_odd")
        try:
            yield other
        finally:
            with store.engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {other.table}")


def _app(store):
    from sessctl.middleware import get_session

    def view(environ, start_response):
        status, payload = handle(get_session(environ), environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [json.dumps(payload).encode()]

    return SessionMiddleware(view, store=store)


def _same_rows(store: SessionStore, keys: list[str], data: list[str]) -> None:
    """Rows with fixed keys and dates: a past one, an edge at a day boundary, far ones."""
    base = datetime(2031, 3, 4, 23, 59, 59, 123456, tzinfo=UTC)
    dates = [datetime(2020, 1, 31, 12, tzinfo=UTC), base, base + timedelta(microseconds=876544),
             datetime(2099, 12, 31, 23, 0, tzinfo=UTC), datetime(2031, 12, 13, 1, 2, 3, tzinfo=UTC)]
    for key, date, value in zip(keys, dates, data, strict=True):
        assert store.insert_row(key, value, date)


def _outputs(settings, keys: list[str]) -> dict:
    out = {}
    for name, args in {"list": ["list", "--all", "--json"], "stats": ["stats", "--exact", "--json"],
                       "show": ["show", keys[1], "--json"], "show-past": ["show", keys[0], "--json"]}.items():
        r = sessctl(settings, *args)
        assert r.returncode == 0, (name, r.stderr)
        out[name] = json.loads(r.stdout)
    r = sessctl(settings, "set-life", keys[4], "2h")
    assert r.returncode == 0, r.stderr
    r = sessctl(settings, "purge", "--expired", "--json")
    assert r.returncode == 0, r.stderr
    out["purged"] = json.loads(r.stdout)["deleted"]
    return out


def _drop_clock(value):
    """Fields that depend on when the command ran (not on the host's settings)."""
    if isinstance(value, dict):
        return {k: _drop_clock(v) for k, v in value.items()
                # space: the server's own statistics (pg_stat's live rows lag a new database's)
                if k not in ("seconds", "cutoff", "now", "at", "oldest_expired_age_seconds", "space", "expires_in", "age", "left", "expire_in")}
    if isinstance(value, list):
        return [_drop_clock(v) for v in value]
    return value


def _diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
@pytest.mark.scenario("host settings: DateStyle, TimeZone, sql_mode")
def test_requests_and_commands_ignore_the_hosts_own_settings(store):
    keys = [f"hostsettings{i:02d}{secrets.token_hex(6)}" for i in range(5)]
    data = [store.codec.encode({"i": i, "text": "it's \\ \"quoted\""}) for i in range(5)]  # signed once
    _same_rows(store, keys, data)
    with odd_host(store) as odd:
        odd_store = SessionStore(odd)
        try:
            assert odd_store.create_table()
            _same_rows(odd_store, keys, data)
            # Requests with a cookie: load, save, cycle, over real HTTP.
            with serve(_app(odd_store)) as server:
                browsers = [Browser(server) for _ in range(3)]
                for i, b in enumerate(browsers):
                    assert b.call(f"/login?user=u{i}").status == 200
                for _ in range(3):
                    for i, b in enumerate(browsers):
                        r = b.call("/bump")
                        assert r.status == 200 and r.json()["user"] == f"u{i}", (r.status, r.body[:300])
                assert [b.call("/whoami").json()["n"] for b in browsers] == [3, 3, 3]
                server.assert_no_errors()
            row = odd_store.get_row(keys[1])
            assert row is not None and row.expire_date == datetime(2031, 3, 4, 23, 59, 59, 123456, tzinfo=UTC)
            assert odd_store.load_row(keys[3]).expire_date == datetime(2099, 12, 31, 23, 0, tzinfo=UTC)
            assert odd_store.load_row(keys[0]) is None  # expired is expired, whatever the zone
            for b in browsers:  # the app's own rows must not disturb the comparison
                odd_store.delete(b.cookie_value())
            got, expected = _outputs(odd, keys), _outputs(store.settings, keys)
        finally:
            odd_store.close()
    assert _diff(_drop_clock(got), _drop_clock(expected)) == []
    assert got["purged"] == 1
