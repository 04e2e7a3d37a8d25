"""Disk space: how big the session table is, how much of it is dead or free, and handing it back.

Deleting rows does not shrink a database on any backend: SQLite keeps the
freed pages in its file's freelist, PostgreSQL leaves dead tuples until a
VACUUM makes their space reusable, InnoDB keeps freed pages inside the
tablespace (``data_free``). :func:`space` reports what there is;
:func:`reclaim` hands space back only where that is safe beside a live app:

* PostgreSQL: a plain ``VACUUM`` (no exclusive lock; the space becomes
  reusable, and empty pages at the end of the table go back to the OS);
* SQLite: ``PRAGMA incremental_vacuum`` in short steps, only in a file with
  ``auto_vacuum=INCREMENTAL`` (in any other file it takes a full ``VACUUM``,
  which rewrites and locks the whole file);
* MariaDB/MySQL: nothing (``OPTIMIZE TABLE`` rebuilds the table).

Never ``VACUUM FULL``, ``VACUUM`` on SQLite, or ``OPTIMIZE TABLE``: those are
the operator's decision, for a maintenance window; :func:`space` says which.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import text

from .db import sqlite_path, then

STEP_SECONDS = 0.02  # one incremental_vacuum step holds SQLite's write lock about this long


def space(store: Any) -> dict[str, Any]:
    """Bytes on disk and dead/free bytes of ``store``'s table, per backend (see the module)."""
    dialect = store.dialect
    q = store.engine.dialect.identifier_preparer.quote_identifier
    table = store.settings.table
    with store.connect() as conn:
        if dialect == "sqlite":
            # One read transaction: the page counts and every dbstat walk see the same snapshot,
            # whatever the app commits meanwhile (the table's bytes are a difference of them).
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql("SELECT 1 FROM sqlite_master LIMIT 1").all()  # the snapshot starts here
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("page_size", "page_count", "freelist_count", "auto_vacuum")}
            page = int(pragma["page_size"])
            path = sqlite_path(store.settings.database_url)
            wal = os.path.getsize(f"{path}-wal") if path and os.path.exists(f"{path}-wal") else 0
            table_bytes = _sqlite_table_bytes(conn, table, page, int(pragma["page_count"]),
                                              int(pragma["freelist_count"]), int(pragma["auto_vacuum"]),
                                              _reserved_bytes(path))
            conn.rollback()  # only read
            mode = {0: "none", 1: "full", 2: "incremental"}.get(int(pragma["auto_vacuum"]), "unknown")
            return {
                "backend": "sqlite",
                "file_bytes": int(pragma["page_count"]) * page,
                "table_bytes": table_bytes,
                "free_bytes": int(pragma["freelist_count"]) * page,
                "wal_bytes": wal,
                "auto_vacuum": mode,
                "reclaim": ("sessctl purge --expired --reclaim (incremental vacuum, in short steps)"
                            if mode == "incremental" else
                            "VACUUM (rewrites and locks the whole file: a maintenance window); "
                            "freed pages are reused by new rows meanwhile"),
            }
        if dialect == "postgresql":
            row = conn.execute(text(
                "SELECT pg_total_relation_size(c.oid), pg_relation_size(c.oid), pg_indexes_size(c.oid), "
                "coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0), "
                "greatest(s.last_vacuum, s.last_autovacuum) "
                "FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid "
                "WHERE c.oid = CAST(:t AS regclass)"), {"t": q(table)}).one()
            total, heap, indexes, live, dead, vacuumed = row
            dead_bytes = round(heap * dead / (live + dead)) if live + dead else 0
            return {
                "backend": "postgresql",
                "table_bytes": int(total),
                "heap_bytes": int(heap),
                "index_bytes": int(indexes),
                "live_rows": int(live),
                "dead_rows": int(dead),
                "free_bytes": dead_bytes,
                "last_vacuum": vacuumed.isoformat() if vacuumed is not None else None,
                "reclaim": "sessctl purge --expired --reclaim (plain VACUUM: reusable, no exclusive lock); "
                           "VACUUM FULL or pg_repack return it to the OS but lock or rewrite the table",
            }
        if dialect in ("mysql", "mariadb"):
            row = conn.execute(text(
                "SELECT data_length, index_length, data_free FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = :t"), {"t": table}).one()
            data, index, free = (int(v or 0) for v in row)
            return {
                "backend": dialect,
                "table_bytes": data + index,
                "data_bytes": data,
                "index_bytes": index,
                "free_bytes": free,
                "reclaim": "InnoDB reuses the free pages for new rows; OPTIMIZE TABLE returns them to the OS "
                           "by rebuilding the table (a maintenance window)",
            }
    return {"backend": dialect}


def _reserved_bytes(path: str | None) -> int:
    """Bytes at the end of every page that SQLite leaves to an extension (byte 20 of the file header)."""
    try:
        with open(path, "rb") as fh:  # type: ignore[arg-type]
            head = fh.read(21)
    except (OSError, TypeError):
        return 0
    return head[20] if len(head) == 21 and head.startswith(b"SQLite format 3\x00") else 0


def _sqlite_table_bytes(conn: Any, table: str, page: int, pages: int, free: int, mode: int,
                        reserved: int = 0) -> int | None:
    """Bytes of the table and its indexes, from SQLite's ``dbstat`` table (None where it is not built in).

    ``dbstat`` reads every page of the b-trees it is asked about (~0.1 s per 100k pages), so it is
    asked about every *other* b-tree instead, one at a time (a name and ``aggregate`` let it walk
    only that one), and the table's share is what remains of the pages in use: the sessions table
    is usually the big one. Pages in use that belong to no b-tree are taken out too: the
    pointer-map pages of an auto-vacuum file and the lock-byte page of a file over 1 GiB.
    """
    try:
        rows = conn.execute(text("SELECT name, tbl_name, type FROM sqlite_master WHERE rootpage > 0")).all()
        ours = {n for n, tbl, kind in rows if tbl == table and kind in ("table", "index")}
        if table not in ours:
            return None
        # Page 1 is "sqlite_schema" to dbstat (before SQLite 3.33, "sqlite_master"): ask for both.
        others = ["sqlite_schema", "sqlite_master"] + [n for n, _, _ in rows if n not in ours]
        other_bytes = 0
        for name in others:
            found = conn.execute(text("SELECT sum(pgsize) FROM dbstat WHERE name = :n AND aggregate = 1"),
                                 {"n": name}).scalar()
            other_bytes += int(found or 0)
    except Exception:  # no dbstat (or no aggregate column: SQLite before 3.31) in this build
        return None
    unowned = 0
    if mode and pages >= 2:  # pointer-map pages: page 2, then one every usable/5 + 1 pages
        unowned += (pages - 2) // ((page - reserved) // 5 + 1) + 1
    if pages * page > 2**30:  # the page holding byte 2^30 is never used
        unowned += 1
    return max(0, (pages - free - unowned) * page - other_bytes)


def reclaim(store: Any, max_seconds: float | None = None) -> dict[str, Any]:
    """Hand free space back where it is safe beside a live app; what was done, in one dict."""
    dialect = store.dialect
    start = time.monotonic()
    if dialect == "postgresql":
        q = store.engine.dialect.identifier_preparer.quote_identifier
        before = space(store)
        with store.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # VACUUM runs outside a transaction
            if max_seconds is not None:
                conn.exec_driver_sql(f"SET statement_timeout = {max(1, int(max_seconds * 1000))}")
            try:
                with then(lambda: max_seconds is None or conn.exec_driver_sql("RESET statement_timeout")):
                    conn.exec_driver_sql(f"VACUUM (ANALYZE) {q(store.settings.table)}")
            except Exception as exc:
                if "statement timeout" not in str(exc).lower():
                    raise
                return {"done": False, "how": "VACUUM", "why": "stopped by --max-seconds; run it again"}
        after = space(store)
        return {"done": True, "how": "VACUUM", "seconds": round(time.monotonic() - start, 3),
                "table_bytes_before": before["table_bytes"], "table_bytes_after": after["table_bytes"]}
    if dialect == "sqlite":
        with store.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA auto_vacuum").scalar()
        if int(mode) != 2:
            return {"done": False, "how": None,
                    "why": "the file has auto_vacuum=NONE: only a full VACUUM (which locks it) would shrink it"}
        return _sqlite_incremental(store, start, max_seconds)
    return {"done": False, "how": None,
            "why": "InnoDB reuses the free pages; only OPTIMIZE TABLE (a rebuild) returns them to the OS"}


def _sqlite_incremental(store: Any, start: float, max_seconds: float | None) -> dict[str, Any]:
    """Free pages in steps of ~STEP_SECONDS, each its own write transaction, with a gap after each.

    Python's sqlite3 steps a PRAGMA once, and ``incremental_vacuum`` frees one
    page per step: so one statement per page, inside one transaction per step.
    """
    step = 64
    with store.connect() as conn:
        raw = conn.connection.dbapi_connection
        page = raw.execute("PRAGMA page_size").fetchone()[0]
        before = left = raw.execute("PRAGMA freelist_count").fetchone()[0]
        while left:
            if max_seconds is not None and time.monotonic() - start >= max_seconds:
                return {"done": False, "how": "incremental_vacuum", "freed_bytes": (before - left) * page,
                        "why": "stopped by --max-seconds; run it again"}
            began = time.monotonic()
            raw.execute("BEGIN IMMEDIATE")
            try:
                for _ in range(min(step, left)):
                    raw.execute("PRAGMA incremental_vacuum(1)")
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            took = time.monotonic() - began
            left = raw.execute("PRAGMA freelist_count").fetchone()[0]
            step = int(min(max(step * STEP_SECONDS / max(took, 1e-4), step / 4, 16), step * 4, 1 << 20))
            time.sleep(0.002)  # a gap for the app's writers
    return {"done": True, "how": "incremental_vacuum", "freed_bytes": (before - left) * page,
            "seconds": round(time.monotonic() - start, 3)}
