"""What the command line reports about sessions, computed here; the CLI only formats it.

A row's summary reads its lifetime without verifying the signature (no secret
key needed); the stats count sessions by time left with SQL, and live sessions
by lifetime kind from every live row or, above ``sample`` of them, from a
random sample.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, func, literal_column, select

from .codec import decode_unverified, payload_json
from .policy import ABSOLUTE, DEFAULT_LIFETIME, EXPIRY_KEY
from .policy import KINDS as POLICY_KINDS
from .policy import lifetime_of
from .tz import shift

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
    return shift(moment, timezone.utc).isoformat()


def lifetime_reader(zone: Any = None, *, django: bool = False) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """data -> its lifetime as JSON, as the serving app reads it: a naive deadline in ``zone``
    (sessctl.tz); for a Django app without the idle limit sessctl's runtime keeps beside a
    deadline (``_sessctl_idle``): Django's next save drops it, so it is not reported."""

    def read(data: dict[str, Any]) -> dict[str, Any]:
        out = lifetime_of(data, zone).to_json()
        if django:
            out.pop("idle_seconds", None)
        return out

    return read


def row_summary(
    row: Any, now: datetime, user_key: str | None = None,
    read: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What ``list`` shows of a row; the lifetime (and user, given ``user_key``) read without verifying."""
    from .userindex import user_of

    data = None
    try:
        data = decode_unverified(row.session_data)
        lifetime = (read or lifetime_reader())(data)
    except Exception:  # any undecodable value, however malformed
        lifetime = {"kind": UNREADABLE}
    out = {
        "key": row.key,
        "expire_date": iso(row.expire_date),
        "expired": row.expired(now),
        "lifetime": lifetime,
        "size": len(row.session_data.encode("utf-8")),
    }
    if user_key is not None:
        out["user"] = user_of(data, user_key)
    return out


_EXPIRY_NAME = EXPIRY_KEY.encode("ascii")
# Longer JSON is parsed in full even by the quick read: within this size no number reaches
# Python's 4,300-digit limit and no nesting its recursion limit, which the full decode refuses.
QUICK_MAX = 1024


def kinds_of(values: Iterable[str], *, django: bool = False, quick: bool = False) -> tuple[dict[str, int], int]:
    """Count stored values by lifetime kind (read unverified), and the deadlines that carry an idle limit too.

    With ``quick`` (a sample's estimate), a short payload (``QUICK_MAX``) whose JSON text is an
    object that cannot hold the expiry key (the key's name nowhere in it, and no escape that could
    spell it) is counted under the global policy without parsing it: the JSON parse is a third of a decode, and most
    sessions keep the global policy. Everything else is decoded in full, as without ``quick``.
    """
    kinds = dict.fromkeys(KINDS, 0)
    with_idle = 0
    default = DEFAULT_LIFETIME.kind
    for value in values:
        try:
            if quick:
                raw = payload_json(value).strip(b" \t\r\n")  # JSON's whitespace, no other
                if (len(raw) <= QUICK_MAX and raw[:1] == b"{" and raw[-1:] == b"}"
                        and _EXPIRY_NAME not in raw and b"\\" not in raw):
                    kinds[default] += 1
                    continue
            lifetime = lifetime_of(decode_unverified(value))
        except Exception:  # any undecodable value, however malformed
            kinds[UNREADABLE] += 1
            continue
        kinds[lifetime.kind] += 1
        if lifetime.kind == ABSOLUTE and lifetime.deadline is not None and lifetime.seconds is not None and not django:
            with_idle += 1
    return kinds, with_idle


def live_data(store: Any, now: datetime, *, sample: int | None = None) -> list[str]:
    """``session_data`` of the live rows: all of them, or about ``sample`` picked at random.

    The sample is unbiased without a pass over the table: on SQLite, runs
    of ~100 rows in storage (rowid) order from random points, so it reads
    a few hundred runs of neighbouring pages instead of one random page
    per row; elsewhere a run of consecutive keys from a random key (keys
    are random). Only the data column is read: no dates are converted.
    """
    t = store.table
    live = t.c.expire_date > now
    with store.connect() as conn:
        if sample is None:
            return [v for (v,) in conn.execute(select(t.c.session_data).where(live))]
        if store.dialect != "sqlite":
            return [r.session_data for r in store.sample_rows(sample, now=now)]
        rowid = literal_column("rowid")
        top = conn.execute(select(func.max(rowid)).select_from(t)).scalar() or 0
        runs = max(1, min(sample // 100, top // 100 or 1))
        rng = secrets.SystemRandom()  # the package draws from no other source (test_security)
        starts = sorted(rng.randrange(top + 1) for _ in range(runs))
        per, out, taken, reached = -(-sample // runs), [], set(), -1
        stmt = (select(rowid, t.c.session_data).where(rowid >= bindparam("lo"), live)
                .order_by(rowid).limit(bindparam("n")))
        for start in starts:
            found = conn.execute(stmt, {"lo": max(start, reached + 1), "n": min(per, sample - len(out))}).all()
            out.extend(v for _, v in found)
            taken.update(r for r, _ in found)
            if found:
                reached = found[-1][0]
            if len(out) >= sample:
                return out
        # Runs pushed past the end of a small table: fill up with rows no run took.
        for r, v in conn.execute(select(rowid, t.c.session_data).where(live).order_by(rowid)):
            if r not in taken:
                out.append(v)
                if len(out) >= sample:
                    break
        return out


def oldest_expired_age(store: Any, now: datetime) -> float:
    """Seconds since the oldest expired row expired (0 when none): the purge backlog's age."""
    oldest = store.oldest_expired(now)
    if oldest is None:
        return 0.0
    # Elapsed time, in UTC: two wall times of one zone would subtract as wall clocks (an hour
    # off across a DST change), and PostgreSQL hands back instants where the others give wall times.
    return max(0.0, round((shift(now, timezone.utc) - shift(oldest, timezone.utc)).total_seconds(), 3))


def stats(store: Any, *, sample: int | None = None, django: bool = False) -> dict[str, Any]:
    """Counts by state, lifetime kind, expiry window and histogram, and disk space (``sessctl stats --json``).

    Totals, expiry windows and the histogram are exact: counts over ranges of
    the expire_date index, in one statement. Lifetime kinds live in the
    encoded data, so they are read row by row: above ``sample`` live
    sessions from a random sample of that size (see ``SessionStore.live_data``).
    With ``django``, an idle limit beside a deadline is not counted: Django does not keep it.
    """
    from .space import space

    now = store.now()
    bounds = [upto for _, upto in HISTOGRAM if upto is not None]
    total, buckets = store.expiry_counts(now, bounds)
    active = sum(buckets)

    def within(seconds: int) -> int:
        return sum(n for (_, upto), n in zip(HISTOGRAM, buckets) if upto is not None and upto <= seconds)

    sampled = None
    if sample is None or active <= sample:
        kinds, with_idle = kinds_of(live_data(store, now), django=django)
    else:
        values = live_data(store, now, sample=sample)
        kinds, with_idle = kinds_of(values, django=django, quick=True)
        sampled = len(values)
        scale = active / max(sampled, 1)
        kinds = {k: round(n * scale) for k, n in kinds.items()}
        with_idle = round(with_idle * scale)
    return {
        "total": total,
        "active": active,
        "expired": total - active,
        "by_kind": kinds,
        "absolute_with_idle": with_idle,
        "expiring": {"1h": within(3600), "1d": within(86400), "7d": within(7 * 86400)},
        "oldest_expired_age_seconds": oldest_expired_age(store, now),
        "histogram": [{"label": label, "upto_seconds": upto, "count": n}
                      for (label, upto), n in zip(HISTOGRAM, buckets)],
        "sampled": sampled,
        "at": iso(now),
        "space": space(store),
    }
