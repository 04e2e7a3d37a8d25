"""Naive times, as a Django project with USE_TZ = False stores them, on every backend.

Real Django (a project on disk with a settings module, TIME_ZONE America/New_York) is the
oracle: sessctl must delete, report and write exactly what Django would. Every case also
runs with USE_TZ = True (aware times: no regression).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from django_project import django, django_batch, make_project, sessctl, sessctl_many

pytest.importorskip("django")
pytestmark = pytest.mark.usefixtures("isolated")

NY = ZoneInfo("America/New_York")
UTC = timezone.utc


@pytest.fixture(params=[False, True], ids=["naive", "aware"])
def use_tz(request):
    return request.param


def make_site(settings, tmp_path, use_tz, **kw):
    root = make_project(
        tmp_path / "site", db_url=settings.database_url, table=settings.table, use_tz=use_tz,
        secret=settings.secret_key, extra="SESSION_COOKIE_AGE = 3600\n", **kw,
    )
    django(root, "migrate")
    return root


@pytest.fixture
def site(settings, tmp_path, use_tz):
    return make_site(settings, tmp_path, use_tz)


def deadline(use_tz: bool, delta: timedelta) -> str:
    """What a Django view would pass to set_expiry(): local wall time, or aware UTC."""
    if use_tz:
        return (datetime.now(UTC) + delta).isoformat()
    return (datetime.now(NY).replace(tzinfo=None) + delta).isoformat()


def instant(value: str) -> datetime:
    """A datetime Django returned (naive = New York wall time) as an aware UTC instant."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=NY)
    return moment.astimezone(UTC)


def test_every_command_with_the_projects_settings_alone(site, use_tz):
    """`--django-settings proj.settings` and nothing else: database, table, key, time zone,
    cookie age all come from the project; sessctl and Django agree on every session."""
    made = django_batch(
        site,
        ["create", "--data", '{"u": 1}', "--expiry", "-10"],
        ["create", "--data", '{"u": 2}', "--expiry", deadline(use_tz, -timedelta(hours=2))],
        ["create", "--data", '{"u": 3}', "--expiry", "300"],  # 5 minutes ahead
        ["create", "--data", '{"u": 4}', "--expiry", deadline(use_tz, timedelta(hours=2))],
        ["create", "--data", '{"u": 5}'],
    )
    gone, gone_2h, soon, later, plain = (m["key"] for m in made)
    later_made, plain_made = made[3], made[4]

    def run(*commands):
        answers = sessctl_many(site, *(["--django-settings", "proj.settings", *c] for c in commands))
        for command, answer in zip(commands, answers):
            assert answer["code"] == 0, (command, answer)
        return answers

    init, everything, live, shown, stats, decoded, purged = run(
        ["init"], ["list", "--all", "--json"], ["list", "--json"], ["show", later, "--json"],
        ["stats", "--json"], ["decode", plain_made["row"]["session_data"], "--json"], ["purge", "--expired", "--json"],
    )
    assert "already exists" in init["stderr"]

    listed = {item["key"]: item for item in json.loads(everything["stdout"])}
    assert set(listed) == {gone, gone_2h, soon, later, plain}
    for m in made:
        item = listed[m["key"]]
        assert datetime.fromisoformat(item["expire_date"]) == instant(m["row"]["expire_date"]), m
        assert item["expired"] is (m["key"] in (gone, gone_2h)), m
    assert [i["key"] for i in json.loads(live["stdout"])] == [soon, plain, later]  # soonest first

    shown = json.loads(shown["stdout"])
    assert shown["lifetime"]["kind"] == "absolute"
    assert datetime.fromisoformat(shown["lifetime"]["deadline"]) == instant(later_made["expiry"])
    assert shown["expired"] is False and shown["data"]["u"] == 4

    stats = json.loads(stats["stdout"])
    assert (stats["total"], stats["active"], stats["expired"]) == (5, 3, 2)
    assert stats["expiring"]["1h"] == 2  # `soon` (5 minutes) and `plain` (the project's 1 hour)

    assert json.loads(decoded["stdout"])["data"] == {"u": 5}

    assert json.loads(purged["stdout"])["deleted"] == 2
    assert django(site, "clear-expired")["keys"] == sorted([soon, later, plain])  # nothing more for Django

    run(["reset-life", later], ["till-browser-close", soon], ["set-life", plain, "2h"])
    saved, reset, closing = django_batch(
        site,
        ["save", "--key", plain, "--name", "x", "--value", "1"],  # Django modifies and saves it
        ["load", "--key", later],
        ["load", "--key", soon],
    )
    assert 7140 <= saved["expiry_age"] <= 7200  # about 2 hours (a busy machine takes a while)
    assert saved["expiry"].endswith("+00:00") is use_tz  # naive deadline where Django writes naive ones
    assert instant(saved["row"]["expire_date"]) - datetime.now(UTC) > timedelta(hours=1, minutes=58)

    assert reset["expiry_age"] == 3600  # the project's SESSION_COOKIE_AGE
    assert closing["browser_close"] is True and closing["live"]
    assert set(closing["data"]) == {"u", "_session_expiry"}  # no marker of ours in a Django session

    sessctl(site, "--django-settings", "proj.settings", "delete", plain)  # a command of its own process too
    assert django(site, "load", "--key", plain)["live"] is False


@pytest.mark.parametrize("how", ["flag", "env"])
def test_time_zone_option_keeps_sessions_ahead_in_local_time(settings, tmp_path, how):
    """Without the project's settings: `--time-zone` (or SESSCTL_TIME_ZONE) alone fixes the
    data loss: rows 5 minutes and 2 hours ahead in New York time survive purge."""
    site = make_site(settings, tmp_path, use_tz=False)
    gone, soon, later = (m["key"] for m in django_batch(
        site,
        ["create", "--expiry", "-10"],
        ["create", "--data", '{"u": 1}', "--expiry", "300"],
        ["create", "--data", '{"u": 2}', "--expiry", deadline(False, timedelta(hours=2))],
    ))

    env = {"SESSCTL_SECRET_KEY": settings.secret_key}
    zone = ["--time-zone", "America/New_York"] if how == "flag" else []
    if how == "env":
        env["SESSCTL_TIME_ZONE"] = "America/New_York"

    def run(*args):
        r = CliRunner().invoke(
            __import__("sessctl.cli", fromlist=["cli"]).cli,
            ["--db", settings.database_url, "--table", settings.table, *zone, *args], env=env,
        )
        assert r.exit_code == 0, r.output
        return r

    assert [i["key"] for i in json.loads(run("list", "--json").stdout)] == [soon, later]
    assert json.loads(run("purge", "--expired", "--json").stdout)["deleted"] == 1
    assert django(site, "keys")["keys"] == sorted([soon, later])
    assert "America/New_York" in run("show", later).stdout  # the zone is named where it matters

    run("set-life", later, "2h")
    saved, dead = django_batch(site, ["save", "--key", later, "--name", "x", "--value", "1"], ["load", "--key", gone])
    assert 7140 <= saved["expiry_age"] <= 7200 and "+" not in saved["expiry"]
    assert dead["live"] is False


# ---------------------------------------------------------------------------- DST


def _store(settings, use_tz, moment):
    from sessctl import SessionStore

    zone_settings = settings.replace(time_zone=None if use_tz else "America/New_York")
    return SessionStore(zone_settings, clock=lambda: moment[0])


def _django_now(use_tz, at: datetime) -> str:
    return at.astimezone(UTC).isoformat() if use_tz else at.astimezone(NY).replace(tzinfo=None).isoformat()


FOLD_START = datetime(2026, 11, 1, 4, 30, tzinfo=UTC)  # 00:30 EDT, the night clocks go back at 02:00
GAP_START = datetime(2027, 3, 14, 6, 30, tzinfo=UTC)  # 01:30 EST, the night clocks skip 02:00-03:00


@pytest.mark.parametrize(
    "start,life,probes",
    [
        # 2 hours across the fold; probes in the repeated hour and just after the wall deadline
        (FOLD_START, 7200, [timedelta(hours=1, minutes=15), timedelta(hours=2, minutes=15),
                            timedelta(hours=3, minutes=1)]),
        # 1 hour into the gap: the wall deadline 02:30 does not exist
        (GAP_START, 3600, [timedelta(minutes=15), timedelta(minutes=45), timedelta(minutes=61)]),
    ],
    ids=["fold", "gap"],
)
def test_a_deadline_across_daylight_saving(settings, tmp_path, use_tz, start, life, probes):
    """Django adds durations to its clock as it reads it: in wall time under USE_TZ = False.
    sessctl's reads and writes agree with Django's at every probe, on every backend."""
    site = make_site(settings, tmp_path, use_tz)
    at = _django_now(use_tz, start)
    theirs, ours = (m["key"] for m in django_batch(
        site,
        ["--now", at, "create", "--data", '{"who": "django"}', "--expiry", str(life)],
        ["--now", at, "create", "--data", '{"who": "sessctl"}'],
    ))
    moment = [start]
    store = _store(settings, use_tz, moment)
    try:
        from sessctl.session import Session

        mine = Session(store, ours)
        mine.set_life(life)  # an absolute deadline, now + life, as Django's set_expiry(timedelta)
        mine.save()
        assert django(site, "--now", at, "load", "--key", ours)["expiry_age"] == life  # Django's arithmetic
        for probe in probes:
            moment[0] = start + probe
            at = _django_now(use_tz, moment[0])
            oracle = [o["live"] for o in django_batch(site, ["--now", at, "load", "--key", theirs],
                                                      ["--now", at, "load", "--key", ours])]
            assert oracle[0] == oracle[1], (probe, oracle)
            assert [store.load_row(k) is not None for k in (theirs, ours)] == oracle, probe
        # at the last probe, purge deletes what clearsessions deletes
        deleted = store.purge_expired().deleted
        assert deleted == (0 if oracle[0] else 2)
        assert len(django(site, "keys")["keys"]) == 2 - deleted
    finally:
        store.close()


def test_the_runtime_reads_and_writes_a_naive_table(settings, tmp_path, use_tz):
    """sessctl's own middleware on a table Django uses with USE_TZ = False (and True):
    Django's sessions load, and what the middleware saves Django loads, modifies and saves."""
    from sessctl import SessionMiddleware, SessionStore

    site = make_site(settings, tmp_path, use_tz)
    made = django(site, "create", "--data", '{"user": "ann"}', "--expiry", deadline(use_tz, timedelta(hours=2)))
    ours = settings.replace(time_zone=None if use_tz else "America/New_York", cookie_age=3600)
    store = SessionStore(ours)

    def app(environ, start_response):
        session = environ["sessctl.session"]
        body = json.dumps({"user": session.get("user")}).encode()
        if environ["PATH_INFO"] == "/life":
            session.set_life(7200)
        elif environ["PATH_INFO"] == "/new":
            session["user"] = "bob"
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    def get(path, key=None):
        seen = {}

        def start_response(status, headers, exc_info=None):
            seen["cookie"] = next((v for k, v in headers if k == "Set-Cookie"), None)

        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.url_scheme": "http"}
        if key:
            environ["HTTP_COOKIE"] = f"sessionid={key}"
        body = json.loads(b"".join(SessionMiddleware(app, store=store)(environ, start_response)))
        return body, seen["cookie"]

    try:
        assert get("/", made["key"])[0] == {"user": "ann"}  # live: 2 hours ahead in New York
        _, cookie = get("/life", made["key"])
        assert "Max-Age=7" in cookie  # about 7200 s
        _, cookie = get("/new")
        new_key = cookie.split(";")[0].split("=", 1)[1]
    finally:
        store.close()
    changed, fresh = django_batch(
        site, ["save", "--key", made["key"], "--name", "x", "--value", "1"], ["load", "--key", new_key]
    )
    assert 7140 <= changed["expiry_age"] <= 7200 and changed["expiry"].endswith("+00:00") is use_tz
    assert fresh["live"] and fresh["data"] == {"user": "bob"} and 3540 <= fresh["expiry_age"] <= 3600
    assert abs(instant(fresh["row"]["expire_date"]) - datetime.now(UTC) - timedelta(hours=1)) < timedelta(minutes=1)
