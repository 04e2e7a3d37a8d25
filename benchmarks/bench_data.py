"""Build, copy and verify the benchmark tables on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
import base64
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench_common import (
    SECRET,
    UTC,
    DataSet,
    db_value,
    ddl,
    drop_table,
    key_digest,
    log,
    param,
    payload_pool,
    quote,
    raw_connect,
    sqlite_text,
)

# -- purge data sets ----------------------------------------------------------------


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


def build_sqlite_template(ds: DataSet, path: Path, table: str) -> None:
    """One file in WAL mode, as ``sessctl init`` leaves it, holding the whole data set."""
    remove_sqlite(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-500000")
        stmts = ddl("sqlite", table)
        conn.execute(stmts[0])
        conn.execute("BEGIN")
        sql = f'INSERT INTO "{table}" (session_key, session_data, expire_date) VALUES (?, ?, ?)'
        for rows in ds.chunks():
            conn.executemany(sql, [(k, d, sqlite_text(e)) for k, d, _, e in rows])
        conn.execute("COMMIT")
        for stmt in stmts[1:]:
            conn.execute(stmt)
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def copy_sqlite(template: Path, dest: Path) -> None:
    """A copy of the file, on disk before it is used: otherwise the first fsync of a trial (a purge's
    first checkpoint; not a raw DELETE's commit, which syncs only its log) writes the whole copy."""
    remove_sqlite(dest)
    shutil.copyfile(template, dest)
    os.sync()


def build_server_template(backend: str, url: str, ds: DataSet, tpl: str) -> None:
    """The data set in a plain table ``tpl`` that each trial copies from."""
    drop_table(backend, url, tpl)
    if backend == "postgres":
        conn = raw_connect(backend, url)
        try:
            conn.execute(f'CREATE TABLE "{tpl}" (session_key varchar(40) NOT NULL, '
                         "session_data text NOT NULL, expire_date timestamp with time zone NOT NULL)")
            with conn.cursor() as cur:
                with cur.copy(f'COPY "{tpl}" (session_key, session_data, expire_date) FROM STDIN') as copy:
                    for rows in ds.chunks():
                        for k, d, _, e in rows:
                            copy.write_row((k, d, e.replace(tzinfo=UTC)))
            conn.commit()
        finally:
            conn.close()
        return
    # MariaDB: clustered on the key, so load it in key order (LOAD DATA when allowed).
    lines = []
    for rows in ds.chunks():
        lines.extend(f"{k}\t{d}\t{e.isoformat(sep=' ', timespec='microseconds')}\n" for k, d, _, e in rows)
    lines.sort()
    conn = raw_connect(backend, url, local_infile=True)
    try:
        with conn.cursor() as cur:
            cur.execute(ddl(backend, tpl)[0])
            fd, name = tempfile.mkstemp(suffix=".tsv")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.writelines(lines)
                del lines
                try:
                    cur.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE `{tpl}` FIELDS TERMINATED BY '\\t' "
                                "LINES TERMINATED BY '\\n' (session_key, session_data, expire_date)", (name,))
                except Exception as exc:  # local_infile off: multi-row INSERTs instead
                    log(f"LOAD DATA failed ({exc}); using multi-row INSERTs")
                    conn.rollback()
                    _mysql_insert_file(cur, name, tpl)
            finally:
                os.unlink(name)
        conn.commit()
    finally:
        conn.close()


def _mysql_insert_file(cur: Any, name: str, tpl: str, batch: int = 2000) -> None:
    with open(name) as fh:
        chunk: list[tuple[str, ...]] = []
        for line in fh:
            chunk.append(tuple(line.rstrip("\n").split("\t")))
            if len(chunk) == batch:
                cur.executemany(f"INSERT INTO `{tpl}` (session_key, session_data, expire_date) VALUES (%s, %s, %s)", chunk)
                chunk = []
        if chunk:
            cur.executemany(f"INSERT INTO `{tpl}` (session_key, session_data, expire_date) VALUES (%s, %s, %s)", chunk)


def make_trial_table(backend: str, url: str, tpl: str, table: str) -> None:
    """A fresh, identical session table ``table`` (Django's DDL) filled from ``tpl``."""
    drop_table(backend, url, table)
    stmts = ddl(backend, table)
    conn = raw_connect(backend, url)
    try:
        if backend == "postgres":
            conn.execute(stmts[0])
            conn.execute(f'INSERT INTO "{table}" SELECT session_key, session_data, expire_date FROM "{tpl}"')
            for s in stmts[1:]:
                conn.execute(s)
            conn.commit()
            conn.autocommit = True
            conn.execute(f'VACUUM ANALYZE "{table}"')
        else:
            with conn.cursor() as cur:
                cur.execute(stmts[0])
                cur.execute(f"INSERT INTO `{table}` SELECT session_key, session_data, expire_date FROM `{tpl}` "
                            "ORDER BY session_key")
                conn.commit()
                for s in stmts[1:]:
                    cur.execute(s)
                cur.execute(f"ANALYZE TABLE `{table}`")
                cur.fetchall()
            conn.commit()
            took, state = settle_innodb(conn, reconnect=lambda: raw_connect(backend, url))
            log(f"  InnoDB settled in {took:.1f} s: {state}")
    finally:
        conn.close()


def settle_innodb(conn: Any, limit: float = 120.0, reconnect: Any = None) -> tuple[float, dict[str, int]]:
    """Write back InnoDB's dirty pages and let its checkpoint catch up before a trial; the seconds
    it took and the server's state at the end.

    The copy leaves ~60 MB of a 96 MB redo log unreclaimed behind dirty pages, which an idle
    MariaDB 10.11 at its defaults (``innodb_max_dirty_pages_pct_lwm = 0``) never flushes. The
    next trial's deletes then push the checkpoint age to where InnoDB flushes in a hurry, which
    stalled the app's commits at random (p99 100-300 ms in some rounds, 6-8 ms in others). So,
    as each SQLite copy is synced to disk: ``innodb_max_dirty_pages_pct`` is 0 until the pages
    are written back (needs SUPER; without it, only the undo history is waited for). Both it and
    ``_lwm`` (which the server lowers with it) are restored, on a new connection (``reconnect``)
    if this one died; a 0 found at the start is what a killed run left, and restores to 90.
    """
    import time

    start = time.monotonic()
    status: dict[str, int] = {}
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.innodb_max_dirty_pages_pct, @@GLOBAL.innodb_max_dirty_pages_pct_lwm")
        saved_max, saved_lwm = (float(v) for v in cur.fetchone())
        if saved_max == 0:  # left by a run that was killed before it restored it (the default is 90)
            saved_max = 90.0
        try:
            try:
                cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
            except Exception:  # no SUPER: the history wait alone
                pass
            cur.execute("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
            forced = float(cur.fetchone()[0]) == 0
            while time.monotonic() - start < limit:
                cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_buffer_pool_pages_dirty', "
                            "'Innodb_history_list_length', 'Innodb_checkpoint_age')")
                status = {name: int(value) for name, value in cur.fetchall()}
                if status.get("Innodb_history_list_length", 0) < 64 and (
                        not forced or (status.get("Innodb_buffer_pool_pages_dirty", 0) < 64
                                       and status.get("Innodb_checkpoint_age", 0) < 2**20)):
                    break
                time.sleep(0.1)
        finally:
            restore = (f"SET GLOBAL innodb_max_dirty_pages_pct = {saved_max}",
                       f"SET GLOBAL innodb_max_dirty_pages_pct_lwm = {saved_lwm}")
            try:
                for sql in restore:
                    cur.execute(sql)
            except Exception:
                if reconnect is None:
                    raise
                other = reconnect()
                try:
                    with other.cursor() as again:
                        for sql in restore:
                            again.execute(sql)
                finally:
                    other.close()
    status["forced"] = int(forced)
    return time.monotonic() - start, status


def verify_purged(backend: str, target: str, table: str, ds: DataSet) -> list[str]:
    """Problems with the table after a purge: it must hold exactly the live rows."""
    conn = raw_connect(backend, target)
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT session_key FROM {quote(backend, table)}")
        count = 0
        checksum = 0
        for (key,) in cur.fetchall():
            count += 1
            checksum = (checksum + key_digest(key)) % 2**64
        cur.execute(f"SELECT COUNT(*) FROM {quote(backend, table)} WHERE expire_date < {param(backend)}",
                    (db_value(backend, datetime.fromtimestamp(ds.t_build, UTC)),))
        expired_left = cur.fetchone()[0]
    finally:
        conn.close()
    problems = []
    if count != ds.live:
        problems.append(f"{count} rows left, expected the {ds.live} live rows")
    if expired_left:
        problems.append(f"{expired_left} expired rows were not purged")
    if checksum != ds.live_checksum:
        problems.append("the keys left are not exactly the live keys (checksum differs)")
    return problems


# -- runtime tables ------------------------------------------------------------------


def runtime_keys(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    raw = base64.b32encode(rng.randbytes(20 * n)).decode("ascii").lower()
    return [raw[32 * i: 32 * i + 32] for i in range(n)]


def make_runtime_table(backend: str, target: str, table: str, keys: list[str], *, journal: str = "WAL") -> None:
    """A session table holding ``keys`` as live sessions (no "n" yet)."""
    pool = payload_pool()
    exp = datetime.now(UTC) + timedelta(days=14)
    rows = [(k, pool[i % len(pool)], db_value(backend, exp)) for i, k in enumerate(keys)]
    stmts = ddl(backend, table)
    if backend == "sqlite":
        remove_sqlite(Path(target))
        conn = sqlite3.connect(target, isolation_level=None)
        try:
            conn.execute(f"PRAGMA journal_mode={journal}")
            for s in stmts:
                conn.execute(s)
            conn.execute("BEGIN")
            conn.executemany(f'INSERT INTO "{table}" VALUES (?, ?, ?)', rows)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    drop_table(backend, target, table)
    conn = raw_connect(backend, target)
    try:
        cur = conn.cursor()
        for s in stmts:
            cur.execute(s)
        cur.executemany(f"INSERT INTO {quote(backend, table)} VALUES (%s, %s, %s)", rows)
        conn.commit()
    finally:
        conn.close()


def sum_counter(backend: str, target: str, table: str) -> tuple[int, int]:
    """(sum of the "n" counters, rows) over the table, decoding every session."""
    from sessctl.codec import Codec

    codec = Codec(SECRET)
    conn = raw_connect(backend, target)
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT session_data FROM {quote(backend, table)}")
        total = rows = 0
        for (data,) in cur.fetchall():
            rows += 1
            total += int(codec.decode(data).get("n", 0))
        return total, rows
    finally:
        conn.close()
