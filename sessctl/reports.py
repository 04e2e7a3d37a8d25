"""What the command line reports about sessions, computed here; the CLI only formats it.

A row's summary reads its lifetime without verifying the signature (no secret
key needed); the stats count live sessions by lifetime kind and by time left,
from every live row or, above ``sample`` of them, from a random sample.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from .codec import decode_unverified
from .policy import KINDS as POLICY_KINDS
from .policy import lifetime_of

UNREADABLE = "unreadable"
KINDS = (*POLICY_KINDS, UNREADABLE)
HISTOGRAM = [
    ("<1h", 3600),
    ("1h-6h", 6 * 3600),
    ("6h-1d", 86400),
    ("1d-7d", 7 * 86400),
    ("7d-14d", 14 * 86400),
    ("14d-30d", 30 * 86400),
    (">=30d", None),
]


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def row_summary(row: Any, now: datetime) -> dict[str, Any]:
    """What ``list`` shows of a row; the lifetime is read without verifying the signature."""
    try:
        lifetime = lifetime_of(decode_unverified(row.session_data)).to_json()
    except Exception:  # any undecodable value, however malformed
        lifetime = {"kind": UNREADABLE}
    return {
        "key": row.key,
        "expire_date": iso(row.expire_date),
        "expired": row.expired(now),
        "lifetime": lifetime,
        "size": len(row.session_data.encode("utf-8")),
    }


def active_breakdown(rows: Iterable, now: datetime) -> tuple[dict[str, int], int, list[dict[str, Any]]]:
    """Count live rows by lifetime kind (and deadlines that carry an idle limit too) and by time left."""
    kinds = dict.fromkeys(KINDS, 0)
    with_idle = 0
    buckets = [0] * len(HISTOGRAM)
    for row in rows:
        lifetime = row_summary(row, now)["lifetime"]
        kinds[lifetime["kind"]] += 1
        if lifetime.get("idle_seconds") is not None:
            with_idle += 1
        left = (row.expire_date - now).total_seconds()
        index = next(i for i, (_, upto) in enumerate(HISTOGRAM) if upto is None or left <= upto)
        buckets[index] += 1
    histogram = [
        {"label": label, "upto_seconds": upto, "count": n} for (label, upto), n in zip(HISTOGRAM, buckets)
    ]
    return kinds, with_idle, histogram


def oldest_expired_age(store: Any, now: datetime) -> float:
    """Seconds since the oldest expired row expired (0 when none): the purge backlog's age."""
    from sqlalchemy import func, select

    exp = store.table.c.expire_date
    with store.connect() as conn:  # the expire_date index answers it at once
        oldest = conn.execute(select(func.min(exp)).where(exp < now)).scalar()
    return 0.0 if oldest is None else max(0.0, round((now - oldest).total_seconds(), 3))


def stats(store: Any, *, sample: int | None = None) -> dict[str, Any]:
    """Counts by state, lifetime kind, expiry window and histogram (``sessctl stats --json``).

    Above ``sample`` live sessions the kinds and histogram are estimated from a
    random sample of that size; with ``sample`` None every live row is read.
    """
    now = store.now()
    counts = store.counts(now)
    sampled = None
    if sample is None or counts["active"] <= sample:
        with contextlib.closing(store.iter_rows("active", now=now)) as rows:
            kinds, with_idle, histogram = active_breakdown(rows, now)
    else:
        # Keys are random, so a run of them is a fair sample: one range scan, not a table pass.
        rows = store.sample_rows(sample, now=now)
        kinds, with_idle, histogram = active_breakdown(rows, now)
        sampled = len(rows)
        scale = counts["active"] / max(sampled, 1)
        kinds = {k: round(n * scale) for k, n in kinds.items()}
        with_idle = round(with_idle * scale)
        for bucket in histogram:
            bucket["count"] = round(bucket["count"] * scale)
    return {
        "total": counts["total"],
        "active": counts["active"],
        "expired": counts["expired"],
        "by_kind": kinds,
        "absolute_with_idle": with_idle,
        "expiring": {"1h": counts["expiring_1h"], "1d": counts["expiring_1d"], "7d": counts["expiring_7d"]},
        "oldest_expired_age_seconds": oldest_expired_age(store, now),
        "histogram": histogram,
        "sampled": sampled,
        "at": iso(now),
    }
