"""Values at the edges of their ranges (issue 11, items 8, 12, 18): far-future and far-past
deadlines, an east-of-UTC PostgreSQL session, rows a person or another program wrote by hand.

Whatever a session's lifetime says, the row's expire_date and the cookie stay within
policy.MAX_LIFETIME (100 years) of now, every request answers, and one odd row never breaks
list, stats or show for the whole table.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from conftest import SECRET
from httpserver import Client, cookie_attrs, routes_app, serve
from sessctl import Settings, SessionMiddleware, SessionStore
from sessctl.cli import cli
from sessctl.codec import Codec
from sessctl.session import Session

pytestmark = pytest.mark.usefixtures("isolated")
UTC = timezone.utc
HUNDRED_YEARS = 100 * 365 * 86400
EAST = "Pacific/Kiritimati"  # UTC+14: the farthest east a server can be


@pytest.fixture
def east_store(settings, backend):
    """The test's store; on PostgreSQL its connections run in a time zone east of UTC."""
    url = settings.database_url
    if backend == "postgres":
        url += ("&" if "?" in url else "?") + f"options=-c%20TimeZone%3D{EAST.replace('/', '%2F')}"
    st = SessionStore(settings.replace(database_url=url))
    st.create_table()
    yield st
    st.close()


def cli_run(store, *args):
    s = store.settings
    return CliRunner().invoke(
        cli, ["--db", s.database_url, "--table", s.table, *args], env={"SESSCTL_SECRET_KEY": SECRET}
    )


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def raw_insert(store, key, data, expire_literal):
    """A row as another program (or a person with psql) could write it."""
    q = store.engine.dialect.identifier_preparer.quote
    with store.engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO {q(store.settings.table)} (session_key, session_data, expire_date) "
                 f"VALUES (:k, :d, {expire_literal})"),
            {"k": key, "d": data},
        )


@pytest.mark.parametrize("life", [10**12, timedelta(days=3_000_000), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)],
                         ids=["1e12s", "timedelta", "year9999"])
def test_a_far_future_deadline_is_clamped_and_reads_back(east_store, life):
    s = Session(east_store)
    s["user"] = 1
    s.set_life(life)
    key = s.save()
    now = east_store.now()
    assert s.expiry.expire_date <= now + timedelta(seconds=HUNDRED_YEARS + 5)
    assert s.expiry.max_age is not None and 0 < s.expiry.max_age <= HUNDRED_YEARS
    again = Session(east_store, key)
    assert again["user"] == 1  # the user's next request still finds the session
    again["n"] = 2
    assert again.save() == key
    for args in (["list", "--json"], ["stats", "--json"], ["show", key, "--json"], ["list"]):
        ok(cli_run(east_store, *args))


def test_idle_and_cookie_age_beyond_range_are_clamped(store):
    s = Session(store)
    s["user"] = 1
    s.set_life(10**15, idle=True)
    s.save()
    assert 0 < s.expiry.max_age <= HUNDRED_YEARS
    assert s.expiry.expire_date <= store.now() + timedelta(seconds=HUNDRED_YEARS + 5)


@pytest.mark.parametrize("age", [99999999999999, HUNDRED_YEARS + 1, 10**30])
def test_absurd_cookie_age_is_rejected_at_config_time(age, tmp_path):
    from sessctl.config import ConfigError

    with pytest.raises(ConfigError, match="cookie_age"):
        Settings(cookie_age=age)
    (tmp_path / "sessctl.toml").write_text(f"cookie_age = {age}\n")
    r = CliRunner().invoke(cli, ["--config", str(tmp_path / "sessctl.toml"), "stats"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "cookie_age" in r.stderr, r.output


def test_the_cookie_of_a_far_future_session_is_sane_over_http(store):
    def login(session, environ):
        session["user"] = 1
        session.set_life(10**12)

    def me(session, environ):
        return {"user": session.get("user")}

    with serve(SessionMiddleware(routes_app({"/login": login, "/me": me}), store=store)) as server:
        c = Client(server)
        r = c.get("/login")
        assert r.status == 200
        _, _, attrs = cookie_attrs(r.cookie())
        assert 0 < int(attrs["max-age"]) <= HUNDRED_YEARS
        assert c.get("/me").json() == {"user": 1}
        server.assert_no_errors()


# -- rows as other writers leave them ------------------------------------------------------


def _far_literal(backend):
    # The largest instant each column can hold, as Django would store datetime.max.
    return {
        "sqlite": "'9999-12-31 23:59:59.999999'",
        "postgres": "'9999-12-31 23:59:59.999999+00'",
        "mysql": "'9999-12-31 23:59:59.999999'",
    }[backend]


def test_one_row_at_the_end_of_time_breaks_nothing(east_store, backend):
    codec = Codec(SECRET)
    far = secrets.token_hex(16)
    raw_insert(east_store, far, codec.encode({"user": "far"}), _far_literal(backend))
    normal = Session(east_store)
    normal["user"] = "normal"
    key = normal.save()
    assert Session(east_store, key)["user"] == "normal"
    assert Session(east_store, far)["user"] == "far"
    rows = json.loads(ok(cli_run(east_store, "list", "--all", "--json")).stdout)
    assert {r["key"] for r in rows} == {far, key}
    assert json.loads(ok(cli_run(east_store, "stats", "--json")).stdout)["total"] == 2
    ok(cli_run(east_store, "show", far))
    ok(cli_run(east_store, "show", key))


@pytest.mark.parametrize("literal", ["'infinity'", "'-infinity'", "'20000-01-01 00:00:00+00'", "'4000-01-01 00:00:00+00 BC'"])
def test_postgres_out_of_range_timestamps_break_nothing(east_store, backend, literal):
    if backend != "postgres":
        pytest.skip("values only PostgreSQL's timestamptz can hold")
    odd = secrets.token_hex(16)
    raw_insert(east_store, odd, Codec(SECRET).encode({"user": "odd"}), literal)
    normal = Session(east_store)
    normal["user"] = "normal"
    key = normal.save()
    assert Session(east_store, key)["user"] == "normal"
    Session(east_store, odd).get("user")  # answers (live or not), never raises
    rows = json.loads(ok(cli_run(east_store, "list", "--all", "--json")).stdout)
    assert {r["key"] for r in rows} == {odd, key}
    ok(cli_run(east_store, "stats"))
    ok(cli_run(east_store, "show", odd))
    ok(cli_run(east_store, "purge", "--expired"))
    assert Session(east_store, key)["user"] == "normal"


@pytest.mark.parametrize("literal", ["'not a date'", "''", "'2024-13-45 99:99:99'", "12345"])
def test_sqlite_unreadable_expire_date_breaks_nothing(store, backend, literal):
    if backend != "sqlite":
        pytest.skip("only SQLite's datetime column holds any text")
    odd = secrets.token_hex(16)
    raw_insert(store, odd, Codec(SECRET).encode({"user": "odd"}), literal)
    normal = Session(store)
    normal["user"] = "normal"
    key = normal.save()
    assert Session(store, key)["user"] == "normal"
    assert Session(store, odd).get("user") is None  # an unreadable deadline is not a live session
    rows = json.loads(ok(cli_run(store, "list", "--all", "--json")).stdout)
    assert {r["key"] for r in rows} == {odd, key}
    ok(cli_run(store, "stats"))
    ok(cli_run(store, "show", odd))


def test_list_pads_year_one(store):
    key = store.create_row(Codec(SECRET).encode({"u": 1}), datetime(1, 1, 2, tzinfo=UTC))
    out = ok(cli_run(store, "list", "--all")).stdout
    line = next(line for line in out.splitlines() if line.startswith(key))
    assert "0001-01-02 00:00:00" in line
    assert "0001-01-02 00:00:00 UTC" in ok(cli_run(store, "show", key)).stdout


# -- _session_expiry at the edge of the date range (item 12) ---------------------------------


EDGES = [
    "9999-12-31T23:00:00-05:00",  # after the end of time once in UTC
    "0001-01-01T00:00:00+05:00",  # before the start of time once in UTC
    "9999-12-31T23:59:59.999999",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00+00:00",
    -10**20,  # an idle timeout that puts the deadline before the start of time
    -1e308,
]
# Read in UTC (USE_TZ = True), and as naive wall times west and east of UTC (USE_TZ = False):
# the first instant in UTC is before the start of time in New York, the last after its end in Tokyo.
ZONES = [None, "America/New_York", "Asia/Tokyo"]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("value", EDGES)
def test_session_expiry_at_the_edge_of_the_date_range(store, value, zone):
    """A row (Django's, or tampered with and re-signed) whose _session_expiry is at the edge:
    every request answers, the readers answer, and a save writes a row within range."""
    store = SessionStore(store.settings.replace(time_zone=zone), engine=store.engine)
    key = store.create_row(Codec(SECRET).encode({"user": 1, "_session_expiry": value}),
                           store.now() + timedelta(hours=1))
    s = Session(store, key)
    assert s["user"] == 1
    s.get_expiry_date()
    s.get_expiry_age()
    s.get_expire_at_browser_close()
    s["n"] = 1
    s.save()  # may end the session (a deadline in the past) but never raises
    for args in (["list", "--all", "--json"], ["stats"], ["show", key]):
        r = cli_run(store, *args)
        assert r.exit_code in (0, 1) and "unexpected" not in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("value", EDGES)
def test_session_expiry_at_the_edge_over_http(store, value, zone):
    store = SessionStore(store.settings.replace(time_zone=zone), engine=store.engine)
    key = store.create_row(Codec(SECRET).encode({"user": 1, "_session_expiry": value}),
                           store.now() + timedelta(hours=1))

    def write(session, environ):
        session["n"] = session.get("n", 0) + 1
        return {"user": session.get("user")}

    def read(session, environ):
        return {"user": session.get("user")}  # read-only: the activity touch may write

    with serve(SessionMiddleware(routes_app({"/w": write, "/r": read}), store=store)) as server:
        from httpserver import raw_get

        for path in ("/r", "/w", "/r"):
            r = raw_get(server, path, cookie=f"sessionid={key}")
            assert r.status == 200, (path, r.body)
        server.assert_no_errors()
