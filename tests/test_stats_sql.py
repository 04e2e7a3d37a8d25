"""`stats` counts from SQL: totals, expiry windows and the histogram are exact range counts over
the expire_date index on every backend (also when the lifetime kinds come from a sample), and
the edges of each window are where `list` and Django put them."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from helpers import T, Clock, put
from sessctl import SessionStore, Settings
from sessctl.cli import cli


@pytest.mark.backends
def test_expiry_counts_partition_the_live_rows_at_their_edges(store, settings):
    clock = Clock(T)
    at = SessionStore(settings, engine=store.engine, clock=clock)
    put(store, T)  # expire_date == now: expired (live means expire_date > now)
    put(store, T - timedelta(seconds=5))
    put(store, T + timedelta(microseconds=1))
    put(store, T + timedelta(hours=1))  # the last instant of "within 1 h"
    put(store, T + timedelta(hours=1, microseconds=1))
    put(store, T + timedelta(days=1))
    put(store, T + timedelta(days=7, seconds=1))
    total, buckets = at.expiry_counts(T, (3600, 86400))
    assert total == 7
    assert buckets == [2, 2, 1]
    assert at.counts(T) == {"total": 7, "active": 5, "expired": 2,
                            "expiring_1h": 2, "expiring_1d": 4, "expiring_7d": 4}



@pytest.mark.backends
@pytest.mark.parametrize("zone", [None, "America/New_York", "Asia/Tokyo"])
def test_counts_and_the_oldest_expired_row_are_exact_in_every_zone(settings, zone):
    """The counts and the oldest expired deadline are driver SQL: each bound and result goes
    through the zone's conversion as a typed statement would (naive wall time under USE_TZ = False)."""
    zoned = SessionStore(settings.replace(time_zone=zone))
    zoned.create_table()
    try:
        oldest = T - timedelta(hours=6, microseconds=250)
        for moment in (oldest, T - timedelta(seconds=1), T, T + timedelta(hours=1), T + timedelta(hours=1, microseconds=1)):
            put(zoned, moment)
        assert zoned.expiry_counts(T, (3600,)) == (5, [1, 1])
        assert zoned.oldest_expired(T) == oldest
        assert zoned.oldest_expired(oldest) is None
        assert zoned.expiry_counts(oldest, ()) == (5, [4])
    finally:
        zoned.close()


@pytest.mark.backends
def test_the_oldest_expired_age_is_elapsed_time_across_a_dst_change(settings):
    """Under USE_TZ = False in New York, a row that expired at noon the day before DST began
    is 23 hours old at noon the next day, on every backend."""
    from datetime import datetime, timezone

    from sessctl.reports import oldest_expired_age

    zoned = SessionStore(settings.replace(time_zone="America/New_York"))
    zoned.create_table()
    try:
        noon_before = datetime(2024, 3, 9, 17, 0, tzinfo=timezone.utc)  # 12:00 EST
        put(zoned, noon_before)
        now = zoned.zone.now(datetime(2024, 3, 10, 16, 0, tzinfo=timezone.utc), zoned.dialect)  # 12:00 EDT
        assert oldest_expired_age(zoned, now) == 23 * 3600
    finally:
        zoned.close()

def test_sampled_stats_have_the_exact_histogram_and_windows(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = SessionStore(Settings(database_url=url, secret_key="k"))
    store.create_table()
    data = store.codec.encode({"u": 1})
    now = store.now()
    rows = [{"session_key": f"{i:032d}", "session_data": data,
             "expire_date": now + timedelta(minutes=30 + (i * 37) % (40 * 24 * 60))} for i in range(24_000)]
    with store.engine.begin() as conn:
        conn.execute(insert(store.table), rows)
    store.close()
    runner = CliRunner()
    sampled = json.loads(runner.invoke(cli, ["--db", url, "stats", "--json"], catch_exceptions=False).stdout)
    exact = json.loads(runner.invoke(cli, ["--db", url, "stats", "--exact", "--json"], catch_exceptions=False).stdout)
    assert sampled["sampled"] == 20_000 and exact["sampled"] is None
    assert sampled["histogram"] == exact["histogram"]
    assert sampled["expiring"] == exact["expiring"]
    assert sum(b["count"] for b in exact["histogram"]) == exact["active"] == 24_000
