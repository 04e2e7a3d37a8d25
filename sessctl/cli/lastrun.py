"""Purge's last run, remembered for `stats --format openmetrics` (best effort).

A purge run by the command line writes one small JSON file per database and table under
``$XDG_STATE_HOME/sessctl/`` (default ``~/.local/state/sessctl/``); stats reads it back. A
purge run elsewhere (another user, another machine, the library) is not known here, so the
metrics then omit it rather than guess. Failing to write it never fails the purge.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def _path(database: str, table: str) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    digest = hashlib.sha256(f"{database}\0{table}".encode()).hexdigest()[:16]
    return Path(state) / "sessctl" / f"purge-{table}-{digest}.json"


def record(database: str, table: str, result: dict[str, Any], finished: float) -> None:
    """Remember a finished purge (``database`` is the redacted URL, so no password is stored)."""
    path = _path(database, table)
    entry = {"database": database, "table": table, "finished": round(finished, 3),
             "deleted": result["deleted"], "complete": bool(result["complete"])}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or missing home: the metric is simply not known


def last(database: str, table: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(_path(database, table).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("database") != database or entry.get("table") != table:
        return None
    return entry
