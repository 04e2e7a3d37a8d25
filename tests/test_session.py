"""The per-request Session object on every backend: dict behaviour and flags, lazy
loading, keys, cycle_key/flush, the lifetime API and its readers, JSON-only data,
and saves that never lose a concurrent change nor re-create a deleted row.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sessctl import SessionStore, TILL_BROWSER_CLOSE
from sessctl.policy import EXPIRY_KEY, RESEND_KEY
from sessctl.session import Session
from sessctl.errors import SessionGone
from sessctl.store import new_key

from helpers import AGE, KEY_RE, Clock, save

UTC = timezone.utc
T0 = datetime(2031, 5, 17, 8, 30, 15, tzinfo=UTC)


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def cstore(store, clock):
    """The test store, on the same engine, with a frozen clock."""
    return SessionStore(store.settings, engine=store.engine, clock=clock)


def stored_data(store, key):
    row = store.get_row(key)
    return None if row is None else store.codec.decode(row.session_data)


# -- mapping and flags ------------------------------------------------------------


def test_new_session_is_neither_accessed_nor_modified(store):
    s = Session(store)
    assert not s.accessed and not s.modified and s.session_key is None
    assert s.get("missing") is None and s.get("missing", 5) == 5
    assert s.accessed and not s.modified


def test_mapping_api_and_flags(store):
    s = Session(store)
    s["a"] = 1
    assert s.modified and s.accessed

    s = Session(store, save(store, None, {"a": 1, "b": 2}))
    assert "a" in s and "zz" not in s
    assert s.accessed and not s.modified
    assert sorted(s.keys()) == ["a", "b"] and sorted(s.values()) == [1, 2] and sorted(s.items()) == [("a", 1), ("b", 2)]
    assert len(s) == 2 and sorted(s) == ["a", "b"]
    assert not s.modified
    assert s.pop("zz", "dflt") == "dflt" and s.pop("zz", default=None) is None and not s.modified
    with pytest.raises(KeyError):
        s.pop("zz")
    assert not s.modified
    assert s.setdefault("a", 99) == 1 and not s.modified
    assert s.pop("a") == 1 and s.modified and "a" not in s

    s = Session(store, save(store, None, {"a": 1}))
    assert s.setdefault("c", 3) == 3 and s.setdefault("c", 4) == 3 and s.modified

    s = Session(store, save(store, None, {"a": 1}))
    s.update({"b": 2}, c=3)
    assert s.modified and dict(s.items()) == {"a": 1, "b": 2, "c": 3}

    s = Session(store, save(store, None, {"a": 1}))
    del s["a"]
    assert s.modified and len(s) == 0

    s = Session(store, save(store, None, {"a": 1}))
    s.clear()
    assert s.modified and s.accessed and dict(s) == {}


def test_loading_is_lazy_and_costs_one_select(store, log):
    key = save(store, None, {"a": 1})
    log.clear()
    s = Session(store, key)
    assert log.kinds == [] and not s.is_loaded and not s.accessed
    assert s["a"] == 1
    assert log.kinds == ["SELECT"]
    assert s.get("a") == 1 and "a" in s and list(s) == ["a"]
    assert log.kinds == ["SELECT"]  # loaded once


def test_save_does_not_clear_data_and_gives_a_fresh_key(store):
    s = Session(store)
    s["a"] = [1, 2]
    key = s.save()
    assert KEY_RE.fullmatch(key) and s.session_key == key
    assert s["a"] == [1, 2]
    assert stored_data(store, key) == {"a": [1, 2]}


def test_nested_mutation_is_only_saved_when_marked_modified(store):
    key = save(store, None, {"foo": {}})
    s = Session(store, key)
    s["foo"]["bar"] = 1
    assert not s.modified  # the gotcha: an in-place change is invisible
    s.modified = True
    s.save()
    assert stored_data(store, key) == {"foo": {"bar": 1}}


# -- keys ------------------------------------------------------------------------


BAD_KEYS = ["", "short", "1", "../../x", "a" * 41, "a" * 500, "é" * 32, "A" * 32, "abc def ghi jkl mno", "a/b" * 11, None]


def test_invalid_client_keys_are_never_looked_up_nor_adopted(store, log):
    for bad in BAD_KEYS:
        log.clear()
        s = Session(store, bad)
        assert s.session_key is None, bad
        assert dict(s) == {}, bad
        assert log.kinds == [], bad  # nothing to look up
        s["x"] = 1
        key = s.save()
        assert KEY_RE.fullmatch(key) and key != bad


def test_unknown_key_is_not_adopted(store):
    unknown = new_key()
    s = Session(store, unknown)
    assert dict(s) == {}
    assert s.session_key is None
    s["x"] = 1
    key = s.save()
    assert key != unknown and store.get_row(unknown) is None
    assert stored_data(store, key) == {"x": 1}


def test_expired_row_is_a_fresh_empty_session(cstore, clock):
    key = save(cstore, None, {"secret": "old"})
    clock.advance(AGE)  # expire_date == now: dead
    s = Session(cstore, key)
    assert dict(s) == {} and s.session_key is None
    s["x"] = 1
    new = s.save()
    assert new != key
    assert stored_data(cstore, new) == {"x": 1}
    assert stored_data(cstore, key) == {"secret": "old"}  # left for purge


def test_tampered_or_foreign_rows_are_never_trusted(store):
    key = save(store, None, {"user": 1})
    row = store.get_row(key)
    payload, ts, sig = row.session_data.split(":")
    forged = store.codec.encode({"user": 2}).split(":")[0] + f":{ts}:{sig}"
    assert store.swap_row(row, forged, row.expire_date)
    s = Session(store, key)
    assert dict(s) == {} and s.session_key is None
    s["x"] = 1
    assert s.save() != key

    foreign_store = SessionStore(store.settings.replace(secret_key="someone-else"), engine=store.engine)
    foreign = save(foreign_store, None, {"user": 3})
    s = Session(store, foreign)
    assert dict(s) == {} and s.session_key is None


def test_rows_signed_with_a_fallback_key_still_load(store):
    old = SessionStore(store.settings.replace(secret_key="retired-key"), engine=store.engine)
    key = save(old, None, {"user": 4})
    rotated = SessionStore(
        store.settings.replace(secret_key="new-key", secret_key_fallbacks=("retired-key",)), engine=store.engine
    )
    s = Session(rotated, key)
    assert s["user"] == 4 and s.session_key == key
    s["seen"] = True
    s.save()
    # Re-signed with the first key: the retired key alone no longer verifies it.
    assert Session(SessionStore(store.settings.replace(secret_key="new-key"), engine=store.engine), key)["seen"]
    assert dict(Session(old, key)) == {}


# -- cycle_key, flush, test cookie -------------------------------------------------


def test_cycle_key_new_key_same_data_old_row_gone(store):
    key = save(store, None, {"cart": [1, 2]})
    s = Session(store, key)
    s.get("cart")
    s.cycle_key()
    assert s.modified
    new = s.save()
    assert new != key and KEY_RE.fullmatch(new)
    assert stored_data(store, new) == {"cart": [1, 2]}
    assert store.get_row(key) is None


def test_cycle_key_on_a_never_loaded_session_carries_the_data(store):
    key = save(store, None, {"cart": [3]})
    s = Session(store, key)
    assert not s.is_loaded
    s.cycle_key()
    new = s.save()
    assert new != key
    assert stored_data(store, new) == {"cart": [3]}
    assert store.get_row(key) is None


def test_cycle_key_does_not_resurrect_a_session_deleted_meanwhile(store):
    """Logged out elsewhere (or ``sessctl delete``) while this request cycles the key:
    the save must not bring the deleted session back under a new key."""
    key = save(store, None, {"user": 1})
    s = Session(store, key)
    s.get("user")
    s.cycle_key()
    assert store.delete(key)  # another writer ends the session now
    try:
        s.save()
    except SessionGone:
        pass
    assert [r.key for r in store.iter_rows("all")] == []


def test_cycle_key_keeps_changes_made_meanwhile(store):
    """A login (cycle_key) racing another writer: the lifetime the command line set and the
    key another request added to the old row both survive on the new key."""
    key = save(store, None, {"user": 1})
    s = Session(store, key)
    s.get("user")
    store.update(key, lambda d: d.__setitem__(EXPIRY_KEY, 0), resend=True)  # sessctl till-browser-close
    store.update(key, lambda d: d.__setitem__("cart", [9]))  # another request of the session
    s.cycle_key()
    s["user"] = 2
    new = s.save()
    assert new != key and store.get_row(key) is None
    assert stored_data(store, new) == {"user": 2, EXPIRY_KEY: 0, "cart": [9]}
    assert s.expiry.max_age is None  # the new cookie ends with the browser, as set


def test_flush_deletes_row_and_key(store):
    key = save(store, None, {"user": 1})
    s = Session(store, key)
    s.get("user")
    s.flush()
    assert s.session_key is None and s.modified and s.accessed and dict(s) == {}
    assert store.get_row(key) is None
    # Never loaded: flush still ends it.
    key2 = save(store, None, {"user": 2})
    s2 = Session(store, key2)
    s2.flush()
    assert store.get_row(key2) is None and s2.session_key is None
    # Data set after a flush starts a brand-new session.
    s2["flash"] = "bye"
    new = s2.save()
    assert new not in (key, key2) and stored_data(store, new) == {"flash": "bye"}


def test_saving_an_emptied_session_deletes_its_row(store):
    key = save(store, None, {"a": 1})
    s = Session(store, key)
    del s["a"]
    assert s.save() is None
    assert store.get_row(key) is None
    assert Session(store).save() is None  # a new empty session makes no row
    assert list(store.iter_rows("all")) == []


def test_test_cookie_helpers(store):
    s = Session(store)
    assert not s.test_cookie_worked()
    s.set_test_cookie()
    assert s["testcookie"] == "worked"
    key = s.save()
    s2 = Session(store, key)
    assert s2.test_cookie_worked()
    s2.delete_test_cookie()
    assert "testcookie" not in s2 and not s2.test_cookie_worked()
    s2.delete_test_cookie()  # a second delete is harmless


# -- lifetimes ---------------------------------------------------------------------------


def test_default_lifetime(cstore, clock):
    s = Session(cstore)
    assert s.get_expiry_age() == AGE
    assert s.get_expiry_date() == T0 + timedelta(seconds=AGE)
    assert s.get_expire_at_browser_close() is False
    s["a"] = 1
    key = s.save()
    assert s.expiry.max_age == AGE and s.expiry.expires == T0 + timedelta(seconds=AGE)
    assert cstore.get_row(key).expire_date == T0 + timedelta(seconds=AGE)
    clock.advance(100)
    s2 = Session(cstore, key)
    s2["b"] = 2
    s2.save()
    assert cstore.get_row(key).expire_date == clock.now + timedelta(seconds=AGE)  # renewed by each save


def test_absolute_lifetime_is_fixed(cstore, clock):
    s = Session(cstore)
    s.set_life(100)
    assert s.modified
    assert s[EXPIRY_KEY] == (T0 + timedelta(seconds=100)).isoformat()
    assert s.get_expiry_age() == 100 and s.get_expiry_date() == T0 + timedelta(seconds=100)
    assert not s.get_expire_at_browser_close()
    key = s.save()
    assert s.expiry.max_age == 100
    assert cstore.get_row(key).expire_date == T0 + timedelta(seconds=100)
    clock.advance(40)
    s2 = Session(cstore, key)
    assert s2.get_expiry_age() == 60
    s2["more"] = 1
    s2.save()
    assert s2.expiry.max_age == 60
    assert cstore.get_row(key).expire_date == T0 + timedelta(seconds=100)  # a save does not extend it
    clock.advance(60)
    assert dict(Session(cstore, key)) == {}  # dead at the deadline


def test_absolute_lifetime_from_timedelta_and_datetime(cstore):
    s = Session(cstore)
    s.set_life(timedelta(minutes=5))
    assert s.get_expiry_date() == T0 + timedelta(minutes=5) and s.get_expiry_age() == 300
    deadline = T0 + timedelta(days=2)
    s.set_life(deadline)
    assert s.get_expiry_date() == deadline and s.get_expiry_age() == 2 * 86400
    s.set_life(deadline.astimezone(timezone(timedelta(hours=-7))))  # any zone: the same instant
    assert s.get_expiry_date() == deadline


def test_idle_lifetime_slides_on_each_save(cstore, clock):
    s = Session(cstore)
    s.set_life(10, idle=True)
    assert s[EXPIRY_KEY] == 10
    assert s.get_expiry_age() == 10 and s.get_expiry_date() == T0 + timedelta(seconds=10)
    key = s.save()
    assert s.expiry.max_age == 10
    for _ in range(3):
        clock.advance(8)
        s = Session(cstore, key)
        s["tick"] = s.get("tick", 0) + 1
        s.save()
        assert cstore.get_row(key).expire_date == clock.now + timedelta(seconds=10)
    clock.advance(9)
    assert Session(cstore, key)["tick"] == 3  # 33 s after creation, alive thanks to the saves
    clock.advance(1)
    assert dict(Session(cstore, key)) == {}


def test_deadline_and_idle_limit_together_the_earlier_wins(cstore, clock):
    s = Session(cstore)
    s.set_life(100, idle=10)
    key = s.save()
    assert s.expiry.max_age == 10
    assert cstore.get_row(key).expire_date == T0 + timedelta(seconds=10)
    for _ in range(11):  # saves every 9 s keep it alive...
        clock.advance(9)
        s = Session(cstore, key)
        s["t"] = clock.now.isoformat()
        s.save()
    # ...but never past the deadline
    assert clock.now == T0 + timedelta(seconds=99)
    assert s.expiry.max_age == 1
    assert cstore.get_row(key).expire_date == T0 + timedelta(seconds=100)
    clock.advance(1)
    assert dict(Session(cstore, key)) == {}
    # Going back to one kind of limit drops the other.
    s = Session(cstore)
    s.set_life(100, idle=10)
    s.set_life(50)
    assert s.get_expiry_age() == 50
    for bad in (dict(value=TILL_BROWSER_CLOSE, idle=10), dict(value=100, idle=0), dict(value=None, idle=5)):
        with pytest.raises(ValueError):
            s.set_life(**bad)


def test_till_browser_close(cstore, clock):
    s = Session(cstore)
    s.set_life(TILL_BROWSER_CLOSE)
    assert s[EXPIRY_KEY] == 0
    assert s.get_expire_at_browser_close() is True
    assert s.get_expiry_age() == AGE  # the server still caps it
    key = s.save()
    assert s.expiry.max_age is None and s.expiry.expires is None
    assert cstore.get_row(key).expire_date == T0 + timedelta(seconds=AGE)


def test_set_life_none_returns_to_the_global_policy(cstore, store):
    key = save(cstore, None, {"a": 1})
    s = Session(cstore, key)
    s.set_life(None)  # nothing to remove: not a change
    assert s.accessed and not s.modified
    s.set_life(60, idle=True)
    s.save()
    s = Session(cstore, key)
    s.set_life(None)
    assert s.modified and EXPIRY_KEY not in s
    assert s.get_expiry_age() == AGE
    s.save()
    assert stored_data(store, key) == {"a": 1}


BAD_LIVES = [
    (0, False), (-1, False), (0.0, False), (-0.5, False), (timedelta(0), False), (timedelta(seconds=-5), False),
    (0, True), (-30, True), (timedelta(0), True), (float("nan"), False), (float("inf"), True),
]


def test_zero_or_negative_lifetimes_are_refused(store):
    key = save(store, None, {"a": 1})
    s = Session(store, key)
    s.get("a")
    for value, idle in BAD_LIVES:
        with pytest.raises(ValueError):
            s.set_life(value, idle=idle)
        assert not s.modified and EXPIRY_KEY not in s, (value, idle)


def test_past_deadline_is_refused(cstore):
    s = Session(cstore)
    with pytest.raises(ValueError):
        s.set_life(T0 - timedelta(seconds=1))
    with pytest.raises(ValueError):
        s.set_life(T0)
    assert not s.modified


@pytest.mark.parametrize(
    "global_close,life,expect_close",
    [
        (False, None, False),
        (True, None, True),
        (False, TILL_BROWSER_CLOSE, True),
        (True, TILL_BROWSER_CLOSE, True),
        (True, 3600, False),  # a per-session life overrides the global one, in both directions
        (True, "idle", False),
    ],
)
def test_browser_close_matrix(store, clock, global_close, life, expect_close):
    st = SessionStore(store.settings.replace(expire_at_browser_close=global_close), engine=store.engine, clock=clock)
    s = Session(st)
    s["a"] = 1
    if life == "idle":
        s.set_life(3600, idle=True)
    elif life is not None:
        s.set_life(life)
    assert s.get_expire_at_browser_close() is expect_close
    key = s.save()
    assert (s.expiry.max_age is None) is expect_close
    if life is None:
        assert s.get_expiry_age() == AGE and st.get_row(key).expire_date == T0 + timedelta(seconds=AGE)
    elif life == 3600 or life == "idle":
        assert s.get_expiry_age() == 3600 and s.expiry.max_age == 3600


def test_django_style_negative_expiry_ends_the_session(cstore):
    s = Session(cstore)
    s["a"] = 1
    s.set_expiry(-3600)
    key = s.save()
    assert cstore.get_row(key).expire_date == T0 - timedelta(seconds=3600)
    assert dict(Session(cstore, key)) == {}


# -- JSON only ----------------------------------------------------------------------------


def test_non_json_value_raises_type_error_naming_its_key(store):
    key = save(store, None, {"ok": 1})
    before = store.get_row(key)
    s = Session(store, key)
    s["when"] = datetime.now()
    with pytest.raises(TypeError, match="'when'"):
        s.save()
    assert store.get_row(key) == before
    fresh = Session(store)
    fresh["blob"] = b"bytes"
    with pytest.raises(TypeError, match="'blob'"):
        fresh.save()
    assert [r.key for r in store.iter_rows("all")] == [key]


# -- concurrency at the session level ------------------------------------------------------


def test_concurrent_saves_keep_both_changes(store):
    key = save(store, None, {"shared": 0, "gone": 1})
    a, b = Session(store, key), Session(store, key)
    a.get("x"), b.get("x")  # both loaded the same row
    a["from_a"] = 1
    del a["gone"]
    b["from_b"] = 2
    b["shared"] = 5
    a.save()
    b.save()
    assert stored_data(store, key) == {"shared": 5, "from_a": 1, "from_b": 2}
    assert b["from_a"] == 1 and "gone" not in b  # the saving session sees the merged data


def test_save_keeps_a_lifetime_set_meanwhile_by_another_writer(cstore, clock):
    key = save(cstore, None, {"user": 1})
    s = Session(cstore, key)
    s.get("user")
    cstore.update(key, lambda d: d.__setitem__(EXPIRY_KEY, 0), resend=True)  # the command line
    s["cart"] = [1]
    s.save()
    data = stored_data(cstore, key)
    assert data == {"user": 1, EXPIRY_KEY: 0, "cart": [1]}
    assert s.expiry.max_age is None  # this response's cookie already matches the new lifetime
    assert cstore.get_row(key).expire_date == T0 + timedelta(seconds=AGE)


def test_resend_marker_is_consumed_on_load(store):
    key = save(store, None, {"user": 1})
    store.update(key, lambda d: d.__setitem__(EXPIRY_KEY, 600), resend=True)
    s = Session(store, key)
    assert s["user"] == 1
    assert RESEND_KEY not in s and s.modified  # the cookie must be re-sent
    s.save()
    assert s.expiry.max_age == 600
    assert RESEND_KEY not in stored_data(store, key)
    again = Session(store, key)
    assert again["user"] == 1 and not again.modified  # consumed: sent once


def test_save_after_a_concurrent_delete_raises_and_does_not_recreate(store):
    key = save(store, None, {"user": 1})
    s = Session(store, key)
    s.get("user")
    store.delete(key)
    s["more"] = 1
    with pytest.raises(SessionGone):
        s.save()
    assert store.get_row(key) is None
    assert list(store.iter_rows("all")) == []


def test_save_after_a_concurrent_purge_raises_and_does_not_recreate(cstore, clock):
    key = save(cstore, None, {"user": 1})
    s = Session(cstore, key)
    s.get("user")
    cstore.purge_expired(cutoff=T0 + timedelta(seconds=AGE + 1))  # the row is purged meanwhile
    s["more"] = 1
    with pytest.raises(SessionGone):
        s.save()
    assert list(cstore.iter_rows("all")) == []
