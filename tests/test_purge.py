"""The adaptive purge (each backend's storage-order walk) leaves exactly the live rows."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import insert


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


def _keys(store):
    return {row.key for row in store.iter_rows("all")}


def test_adaptive_purge_deletes_exactly_the_expired(store):
    cutoff, live, expired = _fill(store, 3000)
    result = store.purge_expired(cutoff=cutoff)
    assert result.complete and result.deleted == expired
    assert _keys(store) == live


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
    assert _keys(store) == live | {victim}


def test_a_time_budget_stops_cleanly_and_a_rerun_finishes(store):
    cutoff, live, expired = _fill(store, 3000)
    first = store.purge_expired(cutoff=cutoff, max_seconds=1e-9)
    assert not first.complete and first.remaining == expired - first.deleted
    second = store.purge_expired(cutoff=cutoff)
    assert first.deleted + second.deleted == expired
    assert _keys(store) == live
