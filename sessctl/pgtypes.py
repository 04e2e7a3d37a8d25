"""PostgreSQL timestamps that Python's datetime cannot hold, read as the nearest one it can.

``timestamp with time zone`` reaches from 4713 BC to 294276 AD and holds ``infinity``; psycopg
renders a value in the connection's time zone, so ``9999-12-31 23:59:59+00`` read by a server set
east of UTC is ``10000-01-01 08:59:59+09``. psycopg raises DataError for all of these, and one
such row (written by Django, or by hand) would break every query that reads it: the loader
installed here maps them to the first or last instant Python can represent instead. That
instant is never live for long (the policy clamps what sessctl writes to 100 years), and a
value before year 1 is simply expired.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .tz import EARLIEST, LATEST
_LOADER: Any = None


def _loader_class() -> Any:
    global _LOADER
    if _LOADER is None:
        from psycopg import DataError
        from psycopg.types.datetime import TimestamptzLoader

        class ClampedTimestamptzLoader(TimestamptzLoader):
            def load(self, data: Any) -> datetime:
                try:
                    return super().load(data)
                except DataError as exc:
                    text = bytes(data).decode("ascii", "replace").strip().lower()
                    if "too small" in str(exc) or text.startswith("-") or text.endswith("bc"):
                        return EARLIEST
                    return LATEST

        _LOADER = ClampedTimestamptzLoader
    return _LOADER


def install(dbapi_connection: Any) -> None:
    """Make ``dbapi_connection`` (psycopg 3) read out-of-range timestamptz values as the bounds."""
    adapters = getattr(dbapi_connection, "adapters", None)
    if adapters is not None:
        adapters.register_loader("timestamptz", _loader_class())
