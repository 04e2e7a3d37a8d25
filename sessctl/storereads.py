"""The store's reads of many rows: streaming, sampling, completion, counts.

:class:`StoreReads` is mixed into :class:`~sessctl.store.SessionStore`
(it needs its ``table``, ``now()`` and ``connect()``). Every read here is a
series of short statements: none holds a transaction or a snapshot for long.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select

from .model import Row, new_key, placeholder, read_datetime


class StoreReads:
    """Iteration and reports over the session table."""

    def iter_rows(
        self,
        state: str = "all",
        *,
        now: datetime | None = None,
        limit: int | None = None,
        batch: int = 1000,
    ) -> Iterator[Row]:
        """Rows ordered by ``expire_date``, streamed; ``state`` is active, expired or all."""
        now = self.now() if now is None else now
        t = self.table
        stmt = select(t.c.session_key, t.c.session_data, t.c.expire_date)
        if state == "active":
            stmt = stmt.where(t.c.expire_date > now)
        elif state == "expired":
            stmt = stmt.where(t.c.expire_date <= now)
        elif state != "all":
            raise ValueError(f"state must be active, expired or all, not {state!r}")
        # In chunks of ``batch`` rows, each its own short read (keyset on expire_date, key): a long
        # read never holds a transaction (SQLite's rollback journal: a lock the app's writes wait
        # for; elsewhere a snapshot) nor a statement past the time bound.
        exp, key = t.c.expire_date, t.c.session_key
        last: tuple[datetime, str] | None = None
        left = limit
        while left is None or left > 0:
            n = batch if left is None else min(batch, left)
            chunk = stmt
            if last is not None:
                chunk = chunk.where(exp >= last[0], or_(exp > last[0], key > last[1]))
            with self.connect() as conn:
                rows = conn.execute(chunk.order_by(exp, key).limit(n)).all()
            for k, data, e in rows:
                yield Row(k, data, e)
            if len(rows) < n or (last is not None and (rows[-1][2], rows[-1][0]) == last):
                return
            last = (rows[-1][2], rows[-1][0])
            left = None if left is None else left - len(rows)

    def sample_rows(self, size: int, *, now: datetime | None = None) -> list[Row]:
        """About ``size`` live rows from a random point of the key space (for estimates).

        Keys are random, so a run of consecutive keys is an unbiased sample;
        it costs one index range scan, not a pass over the table.
        """
        now = self.now() if now is None else now
        t = self.table
        start = new_key()
        out: list[Row] = []
        for cond in (t.c.session_key >= start, t.c.session_key < start):
            stmt = (
                select(t.c.session_key, t.c.session_data, t.c.expire_date)
                .where(cond, t.c.expire_date > now)
                .order_by(t.c.session_key)
                .limit(size - len(out))
            )
            with self.connect() as conn:
                out.extend(Row(*r) for r in conn.execute(stmt))
            if len(out) >= size:
                break
        return out

    def keys_with_prefix(self, prefix: str, limit: int = 100) -> list[str]:
        """Keys starting with ``prefix`` (for shell completion)."""
        t = self.table
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = (
            select(t.c.session_key)
            .where(t.c.session_key.like(escaped + "%", escape="\\"))
            .order_by(t.c.session_key)
            .limit(limit)
        )
        with self.connect() as conn:
            return [k for (k,) in conn.execute(stmt)]

    def counts(self, now: datetime | None = None) -> dict[str, int]:
        """Total, active and expired rows, and live rows expiring within 1 h, 1 d and 7 d."""
        total, (h1, d1, d7, later) = self.expiry_counts(now, (3600, 86400, 7 * 86400))
        active = h1 + d1 + d7 + later
        return {
            "total": total,
            "active": active,
            "expired": total - active,
            "expiring_1h": h1,
            "expiring_1d": h1 + d1,
            "expiring_7d": h1 + d1 + d7,
        }

    def expiry_counts(self, now: datetime | None = None, bounds: Sequence[float] = ()) -> tuple[int, list[int]]:
        """All rows, and live rows per stretch of time left: ``(0, b0], (b0, b1], ... (b_last, ∞)`` seconds.

        One statement of counts over ranges of the ``expire_date`` index (one
        snapshot; no row is read, nor any CASE evaluated per row): on a big
        table that is several times faster than one pass over every row.
        """
        now = self.now() if now is None else now
        edges = [now] + [now + timedelta(seconds=b) for b in bounds]
        t, exp, p = self.sql_names()
        # Driver SQL, not a select(): compiling nine subqueries was a tenth of a command's own time.
        parts = [f"(SELECT COUNT(*) FROM {t})"]
        parts += [f"(SELECT COUNT(*) FROM {t} WHERE {exp} > {p} AND {exp} <= {p})"] * len(bounds)
        parts.append(f"(SELECT COUNT(*) FROM {t} WHERE {exp} > {p})")
        bind = self.zone.bind
        params = [bind(lo, self.dialect) for pair in zip(edges, edges[1:]) for lo in pair]
        params.append(bind(edges[-1], self.dialect))
        with self.connect() as conn:
            row = conn.exec_driver_sql("SELECT " + ", ".join(parts), tuple(params)).one()
        return int(row[0]), [int(v) for v in row[1:]]

    def oldest_expired(self, now: datetime | None = None) -> datetime | None:
        """The earliest ``expire_date`` before ``now`` (the expire_date index answers at once)."""
        now = self.now() if now is None else now
        t, exp, p = self.sql_names()
        with self.connect() as conn:
            value = conn.exec_driver_sql(f"SELECT MIN({exp}) FROM {t} WHERE {exp} < {p}",
                                         (self.zone.bind(now, self.dialect),)).scalar()
        return None if value is None else read_datetime(value, self.settings.time_zone, self.dialect)

    def sql_names(self) -> tuple[str, str, str]:
        """The quoted table and ``expire_date``, and the driver's placeholder, for driver SQL."""
        dialect = self.engine.dialect
        q = dialect.identifier_preparer.quote_identifier
        return q(self.settings.table), q("expire_date"), placeholder(dialect)

    def count_expired(self, cutoff: datetime | None = None) -> int:
        cutoff = self.now() if cutoff is None else cutoff
        t = self.table
        with self.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t).where(t.c.expire_date < cutoff)).scalar_one())
