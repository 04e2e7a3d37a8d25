"""Real Django as the oracle: its rows load here, ours load there, on every backend.

Django runs in a subprocess (tests/django_peer.py) configured with
TIME_ZONE="America/Chicago", so a time-zone slip on either side shows.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from sessctl import SessionStore, TILL_BROWSER_CLOSE
from sessctl.middleware import SessionMiddleware
from sessctl.policy import EXPIRY_KEY, lifetime_of

from helpers import SECRET, django
from helpers import save, load
from sessctl.session import Session

UTC = timezone.utc


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def django_table(settings):
    """A session table made by Django's own migration/schema editor."""
    django(settings, "migrate")
    return settings


@pytest.mark.parametrize(
    "expiry,kind",
    [(None, "default"), ("0", "browser_close"), ("3600", "idle"), ("2031-05-01T10:00:00+00:00", "absolute")],
)
def test_django_sessions_load_here(django_table, expiry, kind):
    settings = django_table
    data = {"user": 42, "name": "Zoë", "cart": [1, {"x": None}]}
    args = ["create", "--data", json.dumps(data)] + (["--expiry", expiry] if expiry else [])
    made = django(settings, *args)
    store = SessionStore(settings)
    try:
        row = store.load_row(made["key"])
        assert row is not None and row.expire_date == iso(made["expire_date"])
        loaded = load(store, made["key"])
        assert loaded is not None
        assert {k: v for k, v in loaded.items() if k != EXPIRY_KEY} == data
        assert lifetime_of(loaded).kind == kind
        session = Session(store, made["key"])
        oracle = django(settings, "load", "--key", made["key"])
        assert session.get_expire_at_browser_close() == oracle["browser_close"]
        assert abs(session.get_expiry_age() - oracle["expiry_age"]) <= 2
    finally:
        store.close()


@pytest.mark.parametrize(
    "life",
    [None, TILL_BROWSER_CLOSE, 7200, ("idle", 900)],
    ids=["default", "browser-close", "absolute", "idle"],
)
def test_our_sessions_load_in_django(store, life):
    session = Session(store)
    session["user"] = 7
    session["greeting"] = "héllo [b]markup[/b]"
    if isinstance(life, tuple):
        session.set_life(life[1], idle=True)
    elif life is not None:
        session.set_life(life)
    key = session.save()
    # Django answers from a subprocess: its clock runs ahead of ours by however long that took.
    started = time.monotonic()
    oracle = django(store.settings, "load", "--key", key)
    slack = 2 + (time.monotonic() - started)
    assert oracle["key_after"] == key
    assert {k: v for k, v in oracle["data"].items() if k != EXPIRY_KEY} == {"user": 7, "greeting": "héllo [b]markup[/b]"}
    assert oracle["browser_close"] == session.get_expire_at_browser_close()
    assert abs(oracle["expiry_age"] - session.get_expiry_age()) <= slack
    assert iso(oracle["expiry_date"]) - session.expiry.expire_date < timedelta(seconds=slack)


def test_django_writes_to_our_session_and_we_see_it(store):
    key = save(store, None, {"a": 1})
    written = django(store.settings, "set-item", "--key", key, "--name", "b", "--value", '"from django"')
    assert written["key"] == key
    assert load(store, key) == {"a": 1, "b": "from django"}


def test_encoding_is_identical_to_djangos(settings):
    from sessctl.codec import Codec

    data = {"a": [1, 2, 3] * 20, "é": "ü", "n": None, "f": 1.5}
    ours = Codec(SECRET).encode(data, timestamp=1700000000)
    theirs = django(settings, "encode", "--data", json.dumps(data), "--timestamp", "1700000000")
    assert ours == theirs["session_data"]


def test_fallback_key_rotation_both_ways(settings):
    old = settings.replace(secret_key="the-old-key")
    django(old, "migrate")
    made = django(old, "create", "--data", '{"k": "v"}')
    rotated = settings.replace(secret_key="the-new-key", secret_key_fallbacks=("the-old-key",))
    store = SessionStore(rotated)
    try:
        assert load(store, made["key"]) == {"k": "v"}
        save(store, made["key"], {"k": "v2"})  # re-signed with the new key
    finally:
        store.close()
    assert django(rotated, "load", "--key", made["key"])["data"] == {"k": "v2"}
    assert django(settings.replace(secret_key="the-new-key"), "load", "--key", made["key"])["data"] == {"k": "v2"}


def test_init_on_a_django_table_changes_nothing(django_table):
    store = SessionStore(django_table)
    try:
        before = _schema(store)
        assert store.create_table() is False
        assert _schema(store) == before
    finally:
        store.close()


def test_our_table_is_djangos_table(settings, tmp_path, backend):
    """The DDL we run equals what Django's migration runs (SQLite: compared literally)."""
    store = SessionStore(settings)
    try:
        store.create_table()
        ours = _schema(store)
    finally:
        store.close()
    if backend == "sqlite":
        twin = settings.replace(database_url=f"sqlite:///{tmp_path / 'django.db'}")
        django(twin, "migrate")
        theirs_store = SessionStore(twin)
        try:
            assert _schema(theirs_store) == ours
        finally:
            theirs_store.close()
    else:
        sql = django(settings, "sqlmigrate")["sql"]
        for index_name in re.findall(r'CREATE INDEX [`"]([^`"]+)[`"]', sql):
            assert index_name in ours["indexes"], (index_name, ours)
    made = django(settings, "create", "--data", '{"ok": true}')
    assert django(settings, "load", "--key", made["key"])["data"] == {"ok": True}


def test_purge_and_clearsessions_agree(store):
    live = [save(store, None, {"i": i}) for i in range(3)]
    dead = []
    for i in range(4):
        s = Session(store)
        s["i"] = i
        s.set_expiry(-3600)  # Django's own way to make an expired session
        dead.append(s.save())
    assert all(store.get_row(k) for k in dead)
    result = django(store.settings, "clear-expired")
    assert result["remaining"] == len(live)
    for k in live:
        assert load(store, k) is not None
    for k in dead:
        assert store.get_row(k) is None


def _mask(header: str) -> str:
    header = re.sub(r"^(\w+)=[a-z0-9]{32}", r"\1=KEY", header)
    return re.sub(r"expires=[^;]+GMT", "expires=DATE", header)


@pytest.mark.parametrize(
    "action,expiry",
    [("write", None), ("set-expiry", "0"), ("set-expiry", "3600"), ("flush", None)],
)
def test_cookie_headers_match_djangos(store, action, expiry):
    key = save(store, None, {"seed": 1})
    args = ["middleware", "--cookie", key, "--action", action] + (["--expiry", expiry] if expiry else [])
    theirs = django(store.settings, *args)

    def app(environ, start_response):
        session = environ["sessctl.session"]
        if action == "write":
            session["x"] = 1
        elif action == "flush":
            session.flush()
        else:
            session.set_expiry(int(expiry))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    headers = {}

    def start_response(status, hdrs, exc_info=None):
        headers.update({})
        headers["all"] = hdrs

    key2 = save(store, None, {"seed": 1})
    list(SessionMiddleware(app, store=store)({"HTTP_COOKIE": f"sessionid={key2}"}, start_response))
    ours = [v for n, v in headers["all"] if n == "Set-Cookie"]
    assert len(ours) == 1
    assert _mask(ours[0]) == _mask(theirs["set_cookie"])
    assert ("Vary", "Cookie") in headers["all"] and theirs["vary"] == "Cookie"


def _schema(store: SessionStore) -> dict:
    from sqlalchemy import inspect

    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            rows = conn.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY type, name", (store.settings.table,)
            ).all()
            return {"sqlite_master": [tuple(r) for r in rows], "indexes": [r[1] for r in rows if r[0] == "index"]}
        insp = inspect(conn)
        cols = [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(store.settings.table)]
        idx = sorted(i["name"] for i in insp.get_indexes(store.settings.table))
        return {"columns": cols, "indexes": idx, "pk": insp.get_pk_constraint(store.settings.table)["constrained_columns"]}
