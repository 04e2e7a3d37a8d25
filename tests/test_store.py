"""The session table on SQLite, PostgreSQL and MariaDB: schema, rows, CAS, purge, reports.

Every test runs once per backend (the ``store`` fixture), against a real
server and a throwaway table.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, inspect, text

from sessctl import SessionStore
from sessctl.model import django_index_name
from sessctl.policy import EXPIRY_KEY, RESEND_KEY
from sessctl.db import make_engine
from sessctl.errors import SessionGone
from sessctl.store import new_key
from helpers import T, all_keys, clocked, load, put, save

UTC = timezone.utc



# -- schema ----------------------------------------------------------------------


def test_create_table_is_idempotent(settings):
    st = SessionStore(settings)
    try:
        assert st.has_table() is False
        assert st.create_table() is True
        key = put(st, T)
        assert st.create_table() is False
        assert st.create_table() is False
        assert st.has_table() is True
        assert all_keys(st) == [key]  # re-running init never touches rows
    finally:
        st.close()


def test_schema_matches_djangos_migration(store, backend):
    table = store.settings.table
    insp = inspect(store.engine)
    assert insp.get_pk_constraint(table)["constrained_columns"] == ["session_key"]
    cols = {c["name"]: c for c in insp.get_columns(table)}
    assert list(cols) == ["session_key", "session_data", "expire_date"]
    assert not any(c["nullable"] for c in cols.values())
    indexes = {i["name"]: i["column_names"] for i in insp.get_indexes(table)}
    expire_index = django_index_name(table, ("expire_date",))
    assert indexes.get(expire_index) == ["expire_date"], indexes

    with store.engine.connect() as conn:
        if backend == "sqlite":
            # The exact declared types Django's migration writes.
            info = conn.exec_driver_sql(f'PRAGMA table_info("{table}")').all()
            declared = {row[1]: (row[2].lower(), row[3], row[5]) for row in info}
            assert declared == {
                "session_key": ("varchar(40)", 1, 1),
                "session_data": ("text", 1, 0),
                "expire_date": ("datetime", 1, 0),
            }
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type DESC", (table,)
            ).scalars().all()
            assert ddl == [
                'CREATE TABLE "django_session" ("session_key" varchar(40) NOT NULL PRIMARY KEY, '
                '"session_data" text NOT NULL, "expire_date" datetime NOT NULL)',
                'CREATE INDEX "django_session_expire_date_a5c62663" ON "django_session" ("expire_date")',
            ]
            # Django's own name for the index of its own table.
            assert expire_index == "django_session_expire_date_a5c62663"
        elif backend == "postgres":
            rows = conn.execute(
                text(
                    "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns "
                    "WHERE table_name = :t AND table_schema = current_schema()"
                ),
                {"t": table},
            ).all()
            assert {r[0]: (r[1], r[2]) for r in rows} == {
                "session_key": ("character varying", 40),
                "session_data": ("text", None),
                "expire_date": ("timestamp with time zone", None),
            }
            like = django_index_name(table, ("session_key",), "_like", max_length=63)
            assert indexes.get(like) == ["session_key"], indexes
        else:
            rows = conn.execute(
                text(
                    "SELECT column_name, column_type FROM information_schema.columns "
                    "WHERE table_name = :t AND table_schema = DATABASE()"
                ),
                {"t": table},
            ).all()
            assert {r[0]: r[1].lower() for r in rows} == {
                "session_key": "varchar(40)",
                "session_data": "longtext",
                "expire_date": "datetime(6)",
            }


def test_stored_expire_date_is_djangos_naive_utc(store, backend):
    with_fraction = put(store, T)
    whole = put(store, T.replace(microsecond=0) + timedelta(seconds=1))
    table = store.settings.table
    with store.engine.connect() as conn:

        def raw(key):
            if backend == "postgres":
                sql = f'SELECT expire_date AT TIME ZONE \'UTC\' FROM "{table}" WHERE session_key = %(k)s'
                return conn.exec_driver_sql(sql, {"k": key}).scalar_one()
            if backend == "sqlite":
                sql = f'SELECT expire_date, typeof(expire_date) FROM "{table}" WHERE session_key = ?'
                value, kind = conn.exec_driver_sql(sql, (key,)).one()
                assert kind == "text"
                return value
            sql = f"SELECT expire_date FROM `{table}` WHERE session_key = %s"
            return conn.exec_driver_sql(sql, (key,)).scalar_one()

        if backend == "sqlite":
            # Python's str(datetime): the fraction only when it is not zero.
            assert raw(with_fraction) == "2031-05-17 08:30:15.250000"
            assert raw(whole) == "2031-05-17 08:30:16"
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?", raw(whole))
        else:
            assert raw(with_fraction) == datetime(2031, 5, 17, 8, 30, 15, 250000)
            assert raw(whole) == datetime(2031, 5, 17, 8, 30, 16)
    # And it reads back as the same aware UTC instant.
    assert store.get_row(with_fraction).expire_date == T
    assert store.get_row(whole).expire_date == T.replace(microsecond=0) + timedelta(seconds=1)


# -- rows ----------------------------------------------------------------------------


def test_load_ignores_expired_rows_with_a_strict_boundary(store):
    before = put(store, T - timedelta(microseconds=1), {"n": "before"})
    exact = put(store, T, {"n": "exact"})
    after = put(store, T + timedelta(microseconds=1), {"n": "after"})
    assert store.load_row(before, T) is None
    assert store.load_row(exact, T) is None  # expire_date == now is already dead
    assert store.load_row(after, T).key == after
    # The session-level load uses the store's clock.
    now = [T]
    st = clocked(store, now)
    assert load(st, after) == {"n": "after"}
    assert load(st, exact) is None
    assert load(st, before) is None
    now[0] = T + timedelta(microseconds=1)
    assert load(st, after) is None
    # Expired rows are not deleted by reading them.
    assert all_keys(store) == sorted([before, exact, after])


def test_load_of_unknown_malformed_or_tampered_keys_is_none(store):
    good = put(store, T, {"a": 1})
    st = clocked(store, [T - timedelta(days=1)])
    assert load(st, good) == {"a": 1}
    for key in [new_key(), "", "short", "../../x", "a" * 500, "é" * 32, good.upper(), good + " ", "a" * 41]:
        assert load(st, key) is None, key
    tampered = put(store, T)
    data = store.get_row(tampered).session_data
    payload, ts, sig = data.split(":")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    with store.engine.begin() as conn:
        conn.execute(
            store.table.update().where(store.table.c.session_key == tampered).values(session_data=f"{flipped}:{ts}:{sig}")
        )
    assert load(st, tampered) is None
    other_secret = SessionStore(store.settings.replace(secret_key="another-secret"), engine=store.engine)
    foreign = put(other_secret, T)
    assert load(st, foreign) is None


def test_insert_never_overwrites(store):
    key = new_key()
    assert store.insert_row(key, store.codec.encode({"v": 1}), T) is True
    assert store.insert_row(key, store.codec.encode({"v": 2}), T + timedelta(days=1)) is False
    row = store.get_row(key)
    assert store.codec.decode(row.session_data) == {"v": 1}
    assert row.expire_date == T
    # An expired row still holds its key.
    old = put(store, datetime(2001, 1, 1, tzinfo=UTC))
    assert store.insert_row(old, store.codec.encode({"v": 3}), T) is False
    assert store.get_row(old).expire_date == datetime(2001, 1, 1, tzinfo=UTC)


def test_create_row_draws_fresh_random_keys(store):
    keys = {store.create_row(store.codec.encode({"i": i}), T) for i in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert re.fullmatch(r"[a-z0-9]{32}", key)
    assert sorted(keys) == all_keys(store)


def test_swap_row_is_a_compare_and_swap(store):
    key = put(store, T, {"v": 0})
    original = store.get_row(key)
    first = store.codec.encode({"v": 1})
    assert store.swap_row(original, first, T + timedelta(hours=1)) is True
    after_first = store.get_row(key)
    assert after_first.session_data == first and after_first.expire_date == T + timedelta(hours=1)
    # A writer still holding the original copy loses, and changes nothing.
    assert store.swap_row(original, store.codec.encode({"v": 2}), T + timedelta(hours=2)) is False
    assert store.get_row(key) == after_first
    # A swap never re-creates a deleted row.
    assert store.delete(key) is True
    assert store.swap_row(after_first, store.codec.encode({"v": 3}), T) is False
    assert store.get_row(key) is None
    assert all_keys(store) == []


def test_swap_with_identical_values_still_counts_as_a_match(store):
    """A re-save that changes nothing (same data, same fixed deadline) must not look like
    a lost race (MySQL reports changed rows, not matched rows, unless told otherwise)."""
    key = put(store, T, {"v": 0})
    row = store.get_row(key)
    assert store.swap_row(row, row.session_data, row.expire_date) is True
    assert store.get_row(key) == row


def test_large_sessions_round_trip(store):
    import secrets

    blob = secrets.token_urlsafe(150_000)  # ~200 KB that does not compress: past TEXT's 64 KiB
    key = save(store, None, {"blob": blob})
    assert len(store.get_row(key).session_data) > 200_000
    assert load(store, key) == {"blob": blob}


def test_delete_row_only_if_unchanged(store):
    key = put(store, T, {"v": 0})
    stale = store.get_row(key)
    assert store.swap_row(stale, store.codec.encode({"v": 1}), T)
    assert store.delete_row(key, only_if=stale) is False
    assert store.get_row(key) is not None
    assert store.delete_row(key, only_if=store.get_row(key)) is True
    assert store.delete(key) is False  # already gone


def test_save_creates_updates_and_never_recreates(store):
    now = [T]
    st = clocked(store, now)
    key = save(st, None, {"a": 1})
    assert re.fullmatch(r"[a-z0-9]{32}", key)
    assert load(st, key) == {"a": 1}
    assert st.get_row(key).expire_date == T + timedelta(seconds=st.settings.cookie_age)
    now[0] = T + timedelta(seconds=10)
    assert save(st, key, {"a": 2}) == key
    assert load(st, key) == {"a": 2}
    assert st.get_row(key).expire_date == T + timedelta(seconds=10 + st.settings.cookie_age)
    st.delete(key)
    with pytest.raises(SessionGone):
        save(st, key, {"a": 3})
    assert st.get_row(key) is None
    unknown = new_key()
    with pytest.raises(SessionGone):
        save(st, unknown, {"a": 4})
    assert all_keys(store) == []


def test_update_applies_atomically_and_recomputes_expiry(store):
    now = [T]
    st = clocked(store, now)
    key = save(st, None, {"user": 7})
    now[0] = T + timedelta(minutes=5)
    data, exp = st.update(key, lambda d: d.__setitem__(EXPIRY_KEY, 600), resend=True)
    assert data[EXPIRY_KEY] == 600 and data["user"] == 7 and data[RESEND_KEY] is True
    assert exp.expire_date == now[0] + timedelta(seconds=600) and exp.max_age == 600
    row = st.get_row(key)
    assert row.expire_date == now[0] + timedelta(seconds=600)
    assert st.codec.decode(row.session_data) == {"user": 7, EXPIRY_KEY: 600, RESEND_KEY: True}
    # Browser close: the server keeps it for cookie_age.
    _, exp = st.update(key, lambda d: d.__setitem__(EXPIRY_KEY, 0))
    assert exp.max_age is None
    assert st.get_row(key).expire_date == now[0] + timedelta(seconds=st.settings.cookie_age)


def test_update_raises_session_gone_on_missing_or_expired(store):
    now = [T]
    st = clocked(store, now)
    with pytest.raises(SessionGone):
        st.update(new_key(), lambda d: d.__setitem__("x", 1))
    dead = put(store, T, {"v": 1})  # expire_date == now: expired
    before = store.get_row(dead)
    with pytest.raises(SessionGone):
        st.update(dead, lambda d: d.__setitem__("x", 1))
    assert store.get_row(dead) == before  # untouched, and not revived
    live = put(store, T + timedelta(seconds=1), {"v": 1})
    st.update(live, lambda d: d.__setitem__("x", 1))
    assert store.codec.decode(store.get_row(live).session_data) == {"v": 1, "x": 1}
    st.delete(live)
    with pytest.raises(SessionGone):
        st.update(live, lambda d: d.__setitem__("y", 2))
    assert store.get_row(live) is None


# -- JSON only ----------------------------------------------------------------


def test_non_json_value_names_its_key_and_leaves_the_row(store):
    key = save(store, None, {"ok": 1})
    before = store.get_row(key)
    with pytest.raises(TypeError, match="'when'"):
        save(store, key, {"ok": 2, "when": datetime.now()})
    assert store.get_row(key) == before
    with pytest.raises(TypeError, match="'tags'"):
        store.update(key, lambda d: d.__setitem__("tags", {"a", "b"}))
    assert store.get_row(key) == before
    with pytest.raises(TypeError, match="'obj'"):
        save(store, None, {"fine": [1, 2], "obj": object()})
    assert all_keys(store) == [key]


def test_delete_all(store):
    for i in range(5):
        put(store, T + timedelta(seconds=i - 2))
    assert store.delete_all() == 5
    assert all_keys(store) == []


# -- iteration and reports ------------------------------------------------------


def test_iter_rows_states_order_and_limit(store):
    expired = [put(store, T - timedelta(minutes=m)) for m in (30, 10, 20)]
    boundary = put(store, T)
    live = [put(store, T + timedelta(minutes=m)) for m in (3, 1, 2)]
    by_expiry = lambda keys: sorted(keys, key=lambda k: store.get_row(k).expire_date)  # noqa: E731
    active = [r.key for r in store.iter_rows("active", now=T)]
    assert active == by_expiry(live)
    old = [r.key for r in store.iter_rows("expired", now=T)]
    assert old == by_expiry(expired + [boundary])
    everything = list(store.iter_rows("all", now=T))
    assert [r.key for r in everything] == by_expiry(expired + [boundary] + live)
    assert all(r.expire_date.tzinfo is not None for r in everything)
    assert [r.key for r in store.iter_rows("active", now=T, limit=2)] == by_expiry(live)[:2]
    assert [r.key for r in store.iter_rows("all", now=T, limit=1)] == by_expiry(expired)[:1]
    with pytest.raises(ValueError):
        list(store.iter_rows("stale"))


def test_counts(store):
    for minutes in (-120, -1, 0):  # 0: expire_date == now counts as expired
        put(store, T + timedelta(minutes=minutes))
    for delta in (timedelta(minutes=30), timedelta(hours=12), timedelta(days=3), timedelta(days=30)):
        put(store, T + delta)
    put(store, T + timedelta(hours=1))  # exactly one hour: within 1 h
    assert store.counts(T) == {
        "total": 8,
        "active": 5,
        "expired": 3,
        "expiring_1h": 2,
        "expiring_1d": 3,
        "expiring_7d": 4,
    }
    assert store.count_expired(T) == 2  # purge's "<" leaves the boundary row


def test_keys_with_prefix(store):
    keys = ["abc" + new_key()[3:], "abd" + new_key()[3:], "abx" + new_key()[3:], "zzz" + new_key()[3:]]
    for key in keys:
        put(store, T, key=key)
    assert store.keys_with_prefix("ab") == sorted(keys[:3])
    assert store.keys_with_prefix("abd") == [keys[1]]
    assert store.keys_with_prefix("") == sorted(keys)
    assert store.keys_with_prefix("ab", limit=2) == sorted(keys[:3])[:2]
    # LIKE wildcards in the prefix are literal.
    assert store.keys_with_prefix("a_") == []
    assert store.keys_with_prefix("%") == []
    assert store.keys_with_prefix("_bc") == []


# -- time zones ----------------------------------------------------------------------


@pytest.fixture
def far_time_zone(backend, settings, store):
    """A store whose database session, and this process, run at UTC+05:30."""
    engine = make_engine(settings.database_url)

    @event.listens_for(engine, "connect")
    def _tz(dbapi_conn, _record):
        if backend == "sqlite":
            return
        cur = dbapi_conn.cursor()
        if backend == "postgres":
            cur.execute("SET TIME ZONE 'Asia/Kolkata'")
        else:
            cur.execute("SET time_zone = '+05:30'")
        cur.close()
        dbapi_conn.commit()

    saved_tz = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        with engine.connect() as conn:
            if backend == "postgres":
                assert conn.exec_driver_sql("SHOW TIME ZONE").scalar_one() == "Asia/Kolkata"
            elif backend == "mysql":
                assert conn.exec_driver_sql("SELECT @@session.time_zone").scalar_one() == "+05:30"
        assert time.localtime().tm_gmtoff == 19800  # the host's zone really moved
        yield SessionStore(settings, engine=engine)
    finally:
        if saved_tz is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved_tz
        time.tzset()
        engine.dispose()


def test_results_do_not_depend_on_time_zones(store, far_time_zone):
    far = far_time_zone
    # Written from the far zone, read in UTC; and the other way round.
    k1 = put(far, T, {"who": "far"})
    k2 = put(store, T + timedelta(hours=1), {"who": "utc"})
    for st in (store, far):
        assert st.get_row(k1).expire_date == T
        assert st.get_row(k2).expire_date == T + timedelta(hours=1)
        assert st.load_row(k1, T - timedelta(seconds=1)) is not None
        assert st.load_row(k1, T) is None
        assert st.load_row(k2, T + timedelta(minutes=59)) is not None
        assert [r.key for r in st.iter_rows("active", now=T)] == [k2]
        assert st.counts(T)["expiring_1h"] == 1
        assert st.count_expired(T + timedelta(seconds=1)) == 1
    # A session saved "now" from the far zone lives cookie_age from the real UTC now.
    before = datetime.now(UTC)
    k3 = save(far, None, {"x": 1})
    after = datetime.now(UTC)
    age = timedelta(seconds=far.settings.cookie_age)
    assert before + age <= store.get_row(k3).expire_date <= after + age
    assert load(store, k3) == {"x": 1} and load(far, k3) == {"x": 1}
    assert far.delete(k3) is True
    assert far.purge_expired(cutoff=T + timedelta(minutes=30)).deleted == 1
    assert all_keys(store) == [k2]
