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

from .db import sqlite_path

STEP_SECONDS = 0.02  # one incremental_vacuum step holds SQLite's write lock about this long


def space(store: Any) -> dict[str, Any]:
    """Bytes on disk and dead/free bytes of ``store``'s table, per backend (see the module)."""
    dialect = store.dialect
    q = store.engine.dialect.identifier_preparer.quote_identifier
    table = store.settings.table
    with store.connect() as conn:
        if dialect == "sqlite":
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("page_size", "page_count", "freelist_count", "auto_vacuum")}
            page = int(pragma["page_size"])
            path = sqlite_path(store.settings.database_url)
            wal = os.path.getsize(f"{path}-wal") if path and os.path.exists(f"{path}-wal") else 0
            table_bytes = _sqlite_table_bytes(conn, table)
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


def _sqlite_table_bytes(conn: Any, table: str) -> int | None:
    """Bytes of the table and its indexes (the ``dbstat`` table, where SQLite was built with it)."""
    try:
        names = [table] + [n for (n,) in conn.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"), {"t": table})]
        marks = ", ".join(f":n{i}" for i in range(len(names)))
        found = conn.execute(text(f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})"),
                             {f"n{i}": n for i, n in enumerate(names)}).scalar()
        return None if found is None else int(found)
    except Exception:  # no dbstat in this build
        return None


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
                conn.exec_driver_sql(f"VACUUM (ANALYZE) {q(store.settings.table)}")
            except Exception as exc:
                if "statement timeout" not in str(exc).lower():
                    raise
                return {"done": False, "how": "VACUUM", "why": "stopped by --max-seconds; run it again"}
            finally:
                if max_seconds is not None:
                    conn.exec_driver_sql("RESET statement_timeout")
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
