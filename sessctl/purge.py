"""Purge: delete expired rows in short batches, and the lock that lets one purge run at a time.

One adaptive loop (:func:`purge_expired`) drives a *walker*, a function that
deletes the expired rows of the next stretch of the table and says how far it
got. Each dialect walks the table in its storage order, so a batch rewrites a
run of neighbouring pages instead of one random page per row; an explicit
``batch_size`` (or an unknown dialect) deletes the ``n`` oldest expired rows
per batch instead. Every DELETE re-checks ``expire_date < cutoff`` itself, so
a session refreshed meanwhile survives, and a purge may be killed at any
moment and re-run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, text

from .db import is_deadlock
from .errors import StoreError
from .userindex import side_name
from .users import index_ready

DEADLOCK_RETRIES = 5
# Purge batch sizing: how long one batch should hold its locks, per dialect.
# SQLite's 30 ms: measured beside the app at 200 req/s (benchmarks), 20 ms batches ran at 0.6x of
# one raw DELETE, 40 ms at 0.94x with the app's p99 at 60 ms, 30 ms at 0.74-0.83x with 42-59 ms.
BATCH_SECONDS = {"sqlite": 0.03, "postgresql": 0.25, "mysql": 0.1, "mariadb": 0.1}
BATCH_PAUSE = {"sqlite": 0.002}  # after a fixed-size batch; the adaptive walk yields to waiting writers instead
# --maintenance: batches that hold their locks this long, on purpose (the app's writes wait).
MAINTENANCE_SECONDS = 2.0
# The user index's rows of purged sessions: swept for a share of the batches' own time.
SWEEP_SHARE = 0.1
SWEEP_MIN_SECONDS = 0.05
# ... and where the batches delete their own index rows (PostgreSQL), only rows others deleted are left:
TIDY_SWEEP_SHARE = 0.03
TIDY_SWEEP_MIN_SECONDS = 0.05
FIRST_BATCH, MIN_BATCH, MAX_BATCH = 500, 50, 50_000


@dataclass(slots=True)
class PurgeResult:
    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0
    complete: bool = True
    cutoff: datetime | None = None
    remaining: int | None = None
    index_deleted: int = 0  # rows of the user index whose session was gone, swept after the batches
    stopped: str | None = None  # why an incomplete purge stopped, when not --max-seconds


@dataclass(slots=True)
class Walker:
    """``step(n) -> (deleted, more)`` deletes the next stretch of about ``n`` rows (or pages)."""

    step: Callable[[int], tuple[int, bool]]
    first: int
    smallest: int
    largest: int
    recount: bool = False  # when done, count what is left (rows skipped while locked)
    empty: bool = False  # nothing to walk: no batch at all
    after: Callable[[], str | None] | None = None  # between batches (pacing, checkpoints); a reason to stop
    tidy: bool = False  # the batches delete the user index rows of the rows they delete
    close: Callable[[], None] | None = None  # at the end, whatever happened
    budget: Callable[[float], None] | None = None  # the most the next batch may wait for locks (--max-seconds)


def purge_expired(
    store: Any,
    *,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    cutoff: datetime | None = None,
    on_batch: Callable[[int], None] | None = None,
    maintenance: bool = False,
) -> PurgeResult:
    """Delete ``store``'s rows whose ``expire_date`` is before ``cutoff`` (default: now), batch by batch.

    Without ``batch_size`` the batches are sized to last about
    ``BATCH_SECONDS[dialect]``: short on SQLite, where a batch holds the only
    write lock and the app waits for it; longer elsewhere, where it locks only
    the rows it deletes. ``max_seconds`` stops cleanly after that budget
    (``complete`` is then False, ``remaining`` says how many expired rows are left).
    ``maintenance`` sizes the batches to hold their locks for
    :data:`MAINTENANCE_SECONDS` on purpose (the app's writes wait that long):
    for a maintenance window, or a table bloated by years of no purging.
    """
    if batch_size is not None and batch_size <= 0:
        raise ValueError("batch_size must be positive")
    cutoff = store.now() if cutoff is None else cutoff
    dialect = store.dialect
    walk = _WALKS.get(dialect) if batch_size is None else None
    if walk is not None:
        walker = walk(store, cutoff, maintenance)
    elif batch_size is not None:
        walker = Walker(_oldest_first(store, cutoff), batch_size, batch_size, batch_size, dialect == "postgresql")
    else:
        walker = Walker(_oldest_first(store, cutoff), FIRST_BATCH, MIN_BATCH, MAX_BATCH, dialect == "postgresql")
    target = MAINTENANCE_SECONDS if maintenance else BATCH_SECONDS.get(dialect, 0.1)
    pause = 0.0 if maintenance else BATCH_PAUSE.get(dialect, 0.0)
    result = PurgeResult(cutoff=cutoff)
    try:
        _loop(store, walker, target, pause, max_seconds, on_batch, result)
    finally:
        if walker.close is not None:
            walker.close()
    return result


def _loop(store, walker: Walker, target: float, pause: float, max_seconds, on_batch, result: PurgeResult) -> None:
    cutoff = result.cutoff
    start = time.monotonic()
    # --max-seconds is a promise: checked before each batch, and each batch's statements (lock
    # waits included) may take only what is left of it (on the purge lock's connection).
    deadline = None if max_seconds is None else start + max_seconds
    pin = store._pin
    store._purge_deadline = deadline
    step = walker.first
    try:
        while not walker.empty:
            if pin is not None and pin.conn is None:
                pin.verify()  # SQLite: the lock file is still the one we locked
            if deadline is not None:  # the first batch always runs: every run makes progress
                left = deadline - time.monotonic()
                if left <= 0 and result.batches:
                    _stop(store, cutoff, result, pin)
                    break
                if pin is not None:
                    pin.budget = max(left, 0.5)
                if walker.budget is not None:  # a walker on a connection of its own (SQLite)
                    walker.budget(max(left, 0.5))
            began = time.monotonic()
            try:
                deleted, more = walker.step(step)
            except StoreError as err:
                if deadline is not None and time.monotonic() >= deadline - 0.6 and _ran_out(err):
                    _stop(store, cutoff, result, pin)  # a lock held by someone else outlasted the budget
                    break
                raise
            took = time.monotonic() - began
            result.batches += 1
            result.deleted += deleted
            if on_batch is not None and deleted:
                on_batch(deleted)
            if not more:
                if walker.recount:  # SKIP LOCKED may have passed rows by
                    if pin is not None and deadline is not None:
                        pin.budget = max(1.0, deadline - time.monotonic())
                    result.remaining = store.count_expired(cutoff)
                    result.complete = result.remaining == 0
                break
            if deadline is not None and time.monotonic() >= deadline:
                _stop(store, cutoff, result, pin)
                break
            # Aim the next batch at the target duration, changing by at most 4x at a time.
            step = int(min(max(step * target / max(took, 1e-4), step / 4, walker.smallest), step * 4, walker.largest))
            if walker.after is not None:
                why = walker.after()
                if why:  # the walker cannot go on safely now (a reader pins SQLite's log)
                    _stop(store, cutoff, result, pin)
                    result.stopped = why
                    break
            elif pause:
                time.sleep(pause)  # a gap for the app's writers (SQLite has one write lock)
        if result.complete:
            # Index rows whose session is gone (purged by batches that leave them, or deleted by
            # Django) are harmless until swept, since every read joins the live table: the sweep
            # gets a share of the batches' time from a random key round the index, so successive
            # purges cover the whole index. On PostgreSQL the batches delete their own index rows
            # (``tidy``), and the sweep is only for what Django deleted: a smaller share.
            from .model import new_key
            from .users import sweep

            took = time.monotonic() - start
            if walker.tidy:  # left: only index rows of sessions that Django (or a hand) deleted
                budget = max(TIDY_SWEEP_MIN_SECONDS, TIDY_SWEEP_SHARE * took)
            else:
                budget = max(SWEEP_MIN_SECONDS, SWEEP_SHARE * took)
            if max_seconds is not None:
                budget = min(budget, max(0.001, max_seconds - took))
            result.index_deleted, _ = sweep(store, max_seconds=budget, start=new_key())
    finally:
        store._purge_deadline = None
        if pin is not None:
            pin.budget = None
    result.seconds = time.monotonic() - start


def _stop(store: Any, cutoff: datetime, result: PurgeResult, pin: Any) -> None:
    """Out of time: incomplete, with what is left if a short count can tell (else None)."""
    result.complete = False
    if pin is not None:
        pin.budget = 0.5
    try:
        result.remaining = store.count_expired(cutoff)
    except StoreError as err:
        if type(err).__name__ in ("LockLost", "ConnectionLost"):
            raise
        result.remaining = None


def _ran_out(err: StoreError) -> bool:
    """A lock wait or statement cut short by its time bound (the statement was rolled back)."""
    orig = getattr(err.__cause__, "orig", err.__cause__)
    if is_deadlock(orig) or getattr(orig, "sqlstate", None) == "57014":
        return True
    args = getattr(orig, "args", ())
    return (bool(args) and args[0] in (1969, 3024)) or "locked" in str(err).lower()


def _retrying(work: Callable[[], Any], store: Any = None) -> Any:
    """Run one purge batch, again after a deadlock or lock timeout (its transaction was rolled back),
    unless the purge's --max-seconds is spent."""
    for attempt in range(DEADLOCK_RETRIES):
        try:
            return work()
        except StoreError as err:
            deadline = getattr(store, "_purge_deadline", None)
            spent = deadline is not None and time.monotonic() >= deadline - 0.1
            if attempt + 1 == DEADLOCK_RETRIES or spent or not is_deadlock(err.__cause__):
                raise
            time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


def _count(store: Any, stmt: Any, params: dict | None = None, *, counted: bool = False) -> int:
    """Run one DELETE in its own transaction (retried after a deadlock); the rows it deleted
    (``counted``: the statement selects that number itself)."""

    def once() -> int:
        with store.connect(write=True) as conn:
            result = conn.execute(stmt, params or {})
            return int(result.scalar_one()) if counted else result.rowcount

    return _retrying(once, store)


def _names(store: Any) -> tuple[str, str]:
    name, exp, _ = store.sql_names()
    return name, exp


def _typed_cutoff(store: Any) -> Any:
    return bindparam("cutoff", type_=store.table.c.expire_date.type)


def _oldest_first(store: Any, cutoff: datetime) -> Callable[[int], tuple[int, bool]]:
    """Delete up to ``n`` rows expired before ``cutoff``, oldest first; ``more`` while batches come back full."""
    t = store.table
    name, exp = _names(store)
    dialect = store.dialect

    def batch(conn: Any, n: int) -> tuple[int, bool]:
        params = {"cutoff": cutoff, "n": n}
        if dialect == "sqlite":
            sql = (
                f"DELETE FROM {name} WHERE rowid IN (SELECT rowid FROM {name} WHERE {exp} < :cutoff "
                f"ORDER BY {exp} LIMIT :n) AND {exp} < :cutoff"
            )
        elif dialect == "postgresql":
            sql = (
                f"DELETE FROM {name} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {name} WHERE {exp} < :cutoff "
                f"ORDER BY {exp} LIMIT :n FOR UPDATE SKIP LOCKED)) AND {exp} < :cutoff"
            )
        elif dialect in ("mysql", "mariadb"):
            # Find the keys first, then delete by key: a DELETE that walks the
            # expire_date index locks index-then-row, the app's UPDATE by key
            # row-then-index, and InnoDB deadlocks on the opposite orders.
            keys = [k for (k,) in conn.execute(
                select(t.c.session_key).where(t.c.expire_date < cutoff).order_by(t.c.expire_date).limit(n)
            )]
            if not keys:
                return 0, False
            deleted = conn.execute(delete(t).where(t.c.session_key.in_(keys), t.c.expire_date < cutoff)).rowcount
            return deleted, len(keys) == n
        else:
            keys = select(t.c.session_key).where(t.c.expire_date < cutoff).limit(n).scalar_subquery()
            deleted = conn.execute(delete(t).where(t.c.session_key.in_(keys), t.c.expire_date < cutoff)).rowcount
            return deleted, deleted == n
        deleted = conn.execute(text(sql).bindparams(_typed_cutoff(store), bindparam("n")), params).rowcount
        return deleted, deleted == n

    def step(n: int) -> tuple[int, bool]:
        def once() -> tuple[int, bool]:
            with store.connect(write=True) as conn:
                return batch(conn, n)

        return _retrying(once, store)

    return step


def _heap_pages(store: Any, cutoff: datetime, maintenance: bool = False) -> Walker:
    """PostgreSQL: delete the expired rows of one range of heap pages at a time.

    A TID range scan reads the pages in physical order and touches no index
    to find its rows; each DELETE still re-checks the cutoff, and a row being
    updated meanwhile is re-checked on its new version.
    """
    name, exp = _names(store)
    with store.connect() as conn:
        pages = conn.execute(
            text("SELECT pg_relation_size(CAST(:t AS regclass)) / current_setting('block_size')::int"),
            {"t": name},
        ).scalar_one()
    delete_range = f"DELETE FROM {name} WHERE ctid >= CAST(:lo AS tid) AND ctid < CAST(:hi AS tid) AND {exp} < :cutoff"
    tidy = index_ready(store)
    if tidy:  # the index rows of the deleted rows go in the same statement (rows first, as the runtime locks)
        q = store.engine.dialect.identifier_preparer.quote_identifier
        key = q("session_key")
        delete_range = (
            f"WITH gone AS ({delete_range} RETURNING {key}), "
            f"side AS (DELETE FROM {q(side_name(store.settings.table))} WHERE {key} IN (SELECT {key} FROM gone)) "
            f"SELECT count(*) FROM gone"
        )
    stmt = text(delete_range).bindparams(_typed_cutoff(store))
    pos = 0

    def step(n: int) -> tuple[int, bool]:
        nonlocal pos
        deleted = _count(store, stmt, {"lo": f"({pos},0)", "hi": f"({pos + n},0)", "cutoff": cutoff}, counted=tidy)
        pos += n
        return deleted, pos < pages

    return Walker(step, 64, 8, 1 << 20, empty=pages <= 0, tidy=tidy)


def _rowids(store: Any, cutoff: datetime, maintenance: bool = False) -> Walker:
    """SQLite: delete the expired rows of one rowid range at a time, on a connection of its own.

    Rowid order is the table's storage order, so a batch rewrites a run of
    neighbouring table pages (the indexes are touched at random whatever the
    order). Batches are short, since each holds SQLite's one write lock while
    the app waits; the connection checkpoints the WAL on its own terms and
    yields to app writers that wait (see :mod:`sessctl.sqlitewal`).
    """
    name, exp = _names(store)
    stmt = text(f"DELETE FROM {name} WHERE rowid >= :lo AND rowid < :hi AND {exp} < :cutoff").bindparams(
        _typed_cutoff(store)
    )
    # The user index's rows of these rows are left to the sweep after the batches (purge_expired):
    # deleted here, in the batches' transactions or after them in key order, they cost purge
    # 1.5-2.6x its time without the index (benchmarks/README.md), against 1.1x for the sweep.
    from .sqlitewal import PurgeConnection

    wal = PurgeConnection(store, maintenance)
    try:
        top = wal.guarded(lambda: wal.conn.execute(text(f"SELECT max(rowid) FROM {name}")).scalar()) or 0
        wal.conn.commit()
    except BaseException:
        wal.close()
        raise
    pos = 0

    def step(n: int) -> tuple[int, bool]:
        nonlocal pos
        deleted = _retrying(lambda: wal.delete(stmt, {"lo": pos, "hi": pos + n, "cutoff": cutoff}), store)
        pos += n
        return deleted, pos <= top

    return Walker(step, 1000, 50, 1 << 22, after=wal.after_batch, close=wal.close, budget=wal.set_budget)


def _primary_keys(store: Any, cutoff: datetime, maintenance: bool = False) -> Walker:
    """MySQL/MariaDB: delete the expired rows of one primary-key range at a time.

    InnoDB keeps rows in primary-key order, so each batch reads a run of
    neighbouring pages instead of one random page per row (which is what
    walking the expire_date index costs with a small buffer pool).
    """
    t = store.table
    key, exp = t.c.session_key, t.c.expire_date
    last = None  # the first range has no lower end: under a PAD SPACE collation "\tx" < "" (a hand-made key)

    def step(n: int) -> tuple[int, bool]:
        nonlocal last
        after = [] if last is None else [key > last]
        with store.connect() as conn:
            bound = conn.execute(select(key).where(*after).order_by(key).limit(1).offset(n - 1)).scalar()
        cond = [*after, exp < cutoff] + ([key <= bound] if bound is not None else [])
        deleted = _count(store, delete(t).where(*cond))
        if bound is not None:
            last = bound
        return deleted, bound is not None

    return Walker(step, 1000, 100, 200_000)


# Dialects whose adaptive purge walks the table in storage order.
_WALKS: dict[str, Callable[[Any, datetime, bool], Walker]] = {
    "sqlite": _rowids,
    "postgresql": _heap_pages,
    "mysql": _primary_keys,
    "mariadb": _primary_keys,
}


def open_sqlite_lock(db_path: str, name: str, table: str) -> tuple[int, str]:
    """Open the file whose ``flock`` is a SQLite table's ``name`` lock; returns (fd, its path).

    Beside the database when its folder lets us (the place every sessctl used so far); where
    that folder is read-only to this user (a Django ``db.sqlite3`` in a deploy folder), in a
    folder of this user's own, ``$XDG_RUNTIME_DIR/sessctl`` or ``<tmp>/sessctl-<uid>``,
    under a name made from the database's absolute path, so every purge of that file by this
    user meets the same lock.
    """
    import errno
    import hashlib
    import tempfile

    beside = f"{db_path}.sessctl-{name}-{table}.lock"
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):  # flock needs no write access
        try:
            return os.open(beside, flags, 0o644), beside  # readable: another user can flock it too
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
                raise
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = os.path.join(runtime, "sessctl") if runtime and os.path.isdir(runtime) \
        else os.path.join(tempfile.gettempdir(), f"sessctl-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if not os.path.isdir(folder) or os.path.islink(folder) or info.st_uid != os.getuid():
        raise PermissionError(errno.EACCES, "not a private folder of this user", folder)
    real = os.path.realpath(db_path)
    digest = hashlib.sha256(f"{real}\0{table}".encode()).hexdigest()[:16]
    lock = os.path.join(folder, f"{os.path.basename(real)}.sessctl-{name}-{table}.{digest}.lock")
    return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600), lock
