"""Purge, one concern: the library's batched delete of expired rows (exact batches, and
the adaptive storage-order walk on a large random table), and the cross-process lock that
keeps two purges apart: in one process, and as real ``sessctl purge`` processes.

Elsewhere, by concern: the command's output in test_cli.py; kill -9 and a server lost
mid-purge in test_faults.py; purge racing the app's requests in test_reliability.py and
test_concurrency.py; Django's clearsessions as the oracle in test_django_compat.py.
"""

from __future__ import annotations

import json
import random
import select
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import insert

from helpers import T, all_keys, clocked, invoke, popen, put, save, sessctl
from sessctl import SessionStore

LOCKED = "another purge is running on this table; exiting"


# -- batches, the cut-off, a time budget ---------------------------------------------------------------------


def _populate(store, expired=31, live=20):
    exp_keys = [put(store, T - timedelta(seconds=1000 - i)) for i in range(expired)]
    live_keys = [put(store, T + timedelta(seconds=1 + i)) for i in range(live)]
    boundary = put(store, T)  # expire_date == cutoff: not "< cutoff", so it stays
    return exp_keys, live_keys, boundary


def test_purge_deletes_exactly_the_expired_rows_in_batches(store):
    exp_keys, live_keys, boundary = _populate(store)
    assert store.count_expired(T) == 31
    sizes = []
    result = store.purge_expired(batch_size=7, cutoff=T, on_batch=sizes.append)
    assert result.deleted == 31
    assert sizes == [7, 7, 7, 7, 3]
    assert result.batches == 5 and result.complete is True
    assert all_keys(store) == sorted(live_keys + [boundary])
    again = store.purge_expired(batch_size=7, cutoff=T)
    assert again.deleted == 0 and again.batches == 1


def test_purge_spares_a_row_refreshed_between_batches(store):
    exp_keys, live_keys, boundary = _populate(store)
    last = exp_keys[-1]  # the latest-expiring expired row: the last batch would take it
    refreshed = []

    def refresh(deleted):
        if not refreshed:
            row = store.get_row(last)
            assert row is not None  # not deleted by the first batch
            assert store.swap_row(row, row.session_data, T + timedelta(days=1))
            refreshed.append(last)

    result = store.purge_expired(batch_size=7, cutoff=T, on_batch=refresh)
    assert refreshed == [last]
    assert result.deleted == 30
    assert all_keys(store) == sorted(live_keys + [boundary, last])


def test_purge_can_stop_on_a_time_budget_and_resume(store):
    _populate(store)
    first = store.purge_expired(batch_size=7, cutoff=T, max_seconds=0)
    assert first.deleted == 7 and first.complete is False and first.remaining == 24
    rest = store.purge_expired(batch_size=7, cutoff=T)
    assert rest.deleted == 24
    assert store.count_expired(T) == 0
    with pytest.raises(ValueError):
        store.purge_expired(batch_size=0)


def test_purge_default_cutoff_is_now(store):
    now = [T]
    st = clocked(store, now)
    dead = put(store, T - timedelta(seconds=1))
    live = put(store, T + timedelta(seconds=1))
    assert st.purge_expired().deleted == 1
    assert all_keys(store) == [live]
    assert dead not in all_keys(store)


# -- the adaptive walk on a large random table ---------------------------------------------


def _fill(store, n: int, seed: int = 7):
    rng = random.Random(seed)
    now = store.now()
    rows = [
        {
            "session_key": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32)),
            "session_data": "x" * rng.randint(50, 400),
            "expire_date": now + timedelta(seconds=rng.choice([-1, 1]) * rng.randint(60, 86400 * 30)),
        }
        for _ in range(n)
    ]
    with store.engine.begin() as conn:
        conn.execute(insert(store.table), rows)
    live = {r["session_key"] for r in rows if r["expire_date"] > now}
    return now, live, n - len(live)


def test_adaptive_purge_deletes_exactly_the_expired(store):
    cutoff, live, expired = _fill(store, 3000)
    result = store.purge_expired(cutoff=cutoff)
    assert result.complete and result.deleted == expired
    assert set(all_keys(store)) == live


def test_adaptive_purge_reaches_keys_that_sort_below_the_empty_string(store):
    # Hand-made keys (the table is the operator's): under MariaDB's PAD SPACE collations a key
    # starting below " " sorts before "", so a walk that starts at key > "" never reached it.
    cutoff, live, expired = _fill(store, 400)
    odd = ["\tabcdefgh1234567", " abcdefgh12345678", "\x01" + "a" * 20]
    with store.engine.begin() as conn:
        conn.execute(insert(store.table), [
            {"session_key": k, "session_data": "x", "expire_date": cutoff - timedelta(days=1)} for k in odd])
    result = store.purge_expired(cutoff=cutoff)
    assert result.complete and result.deleted == expired + len(odd)
    assert set(all_keys(store)) == live


def test_adaptive_purge_spares_a_row_refreshed_meanwhile(store):
    cutoff, live, _ = _fill(store, 4000)
    # The victim comes last in every walk order: latest expiry, highest key, last inserted.
    victim = "z" * 32
    t = store.table
    with store.engine.begin() as conn:
        conn.execute(insert(t), [{"session_key": victim, "session_data": "v", "expire_date": cutoff - timedelta(seconds=1)}])
    refreshed = []

    def refresh_once(_deleted):
        if not refreshed:  # after the first batch, the app refreshes the expired session
            with store.engine.begin() as conn:
                conn.execute(t.update().where(t.c.session_key == victim).values(expire_date=cutoff + timedelta(days=1)))
            refreshed.append(victim)

    result = store.purge_expired(cutoff=cutoff, on_batch=refresh_once)
    assert refreshed and result.batches > 1
    assert set(all_keys(store)) == live | {victim}


def test_a_time_budget_stops_cleanly_and_a_rerun_finishes(store):
    cutoff, live, expired = _fill(store, 3000)
    first = store.purge_expired(cutoff=cutoff, max_seconds=1e-9)
    assert not first.complete and first.remaining == expired - first.deleted
    second = store.purge_expired(cutoff=cutoff)
    assert first.deleted + second.deleted == expired
    assert set(all_keys(store)) == live


# -- the lock, in one process ---------------------------------------------------------------


def test_second_holder_is_refused_then_admitted(store):
    other = SessionStore(store.settings)
    try:
        with store.exclusive() as first:
            assert first is True
            with other.exclusive() as second:
                assert second is False
        with other.exclusive() as again:
            assert again is True
    finally:
        other.close()


def test_wait_blocks_until_released(store):
    other = SessionStore(store.settings)
    got_at = []
    try:
        with store.exclusive():
            def waiter():
                with other.exclusive(wait=True) as got:
                    got_at.append((got, time.monotonic()))

            thread = threading.Thread(target=waiter)
            thread.start()
            time.sleep(0.3)
            assert not got_at  # still waiting
            released = time.monotonic()
        thread.join(10)
        assert got_at and got_at[0][0] is True and got_at[0][1] >= released
    finally:
        other.close()


def test_locks_are_per_table(store, settings):
    other = SessionStore(settings.replace(table=settings.table + "_x"))
    try:
        with store.exclusive() as a, other.exclusive() as b:
            assert a and b
    finally:
        other.close()


# -- the lock between real processes --------------------------------------------------------


def _table_with_expired(store, expired=40, live=5):
    from sqlalchemy import insert

    from sessctl.store import new_key

    data, now = store.codec.encode({"n": 1}), store.now()
    old = {new_key() for _ in range(expired)}
    with store.engine.begin() as conn:
        conn.execute(insert(store.table), [
            {"session_key": key, "session_data": data, "expire_date": now - timedelta(minutes=1)} for key in old
        ])
    alive = {save(store, None, {"live": i}) for i in range(live)}
    return old, alive


def test_second_purge_exits_at_once_while_one_runs(store):
    old, alive = _table_with_expired(store)
    with store.exclusive("purge") as got:  # a purge in progress, in this process
        assert got
        start = time.monotonic()
        r = sessctl(store.settings, "purge", "--expired")
        assert time.monotonic() - start < 15
        assert r.returncode == 0, r.stderr
        assert r.stdout == "" and r.stderr == f"{LOCKED} (pass --wait to wait for it instead)\n"
        # The same from the command in this process: --all too, --quiet silences it, --json reports it.
        assert invoke(store.settings, "purge", "--all", "--yes", secret=None, code=0).stderr == f"{LOCKED} (pass --wait to wait for it instead)\n"
        quiet = invoke(store.settings, "--quiet", "purge", "--expired", secret=None, code=0)
        assert quiet.stdout == quiet.stderr == ""
        report = json.loads(invoke(store.settings, "purge", "--expired", "--json", secret=None, code=0).stdout)
        assert report["deleted"] == 0 and report["skipped"] == LOCKED
        assert {r.key for r in store.iter_rows("all")} == old | alive  # nothing touched
    r = invoke(store.settings, "purge", "--expired", secret=None, code=0)
    assert r.stderr.startswith(f"deleted {len(old)} expired sessions")
    assert {r.key for r in store.iter_rows("all")} == alive


def test_purge_with_wait_runs_once_the_other_ends(store):
    old, alive = _table_with_expired(store)
    with store.exclusive("purge"):
        waiting = popen(store.settings, "purge", "--expired", "--wait")
        ready, _, _ = select.select([waiting.stderr], [], [], 30)
        assert ready, "the second purge said nothing in 30 s"
        first = waiting.stderr.readline()
        assert first == "another purge is running on this table; waiting for it to end (--wait)\n"
        time.sleep(0.5)
        assert waiting.poll() is None, waiting.communicate()  # still waiting its turn
        assert {r.key for r in store.iter_rows("all")} == old | alive
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert err.startswith(f"deleted {len(old)} expired sessions") and len(err.splitlines()) == 1
    assert {r.key for r in store.iter_rows("all")} == alive


@pytest.mark.scenario("overlapping purges (cron)")
def test_two_purges_started_together(store):
    """Two real processes at once on a slow purge: both exit 0, no deadlock, no error; between
    them every expired row is deleted exactly once and no live row is touched."""
    old, alive = _table_with_expired(store, expired=300, live=10)
    procs = [popen(store.settings, "purge", "--expired", "--batch-size", "5", "--json") for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append((json.loads(out), err))
    assert sum(report["deleted"] for report, _ in results) == len(old)
    for report, err in results:
        assert err == "" or err == f"{LOCKED} (pass --wait to wait for it instead)\n"
        assert report.get("skipped") in (None, LOCKED)
    assert {r.key for r in store.iter_rows("all")} == alive
