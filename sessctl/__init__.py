"""sessctl: server-side sessions with per-session lifetimes, and their admin command line.

The public names are imported lazily, so that ``import sessctl`` (which the
``sessctl`` command does on every start) costs nothing: SQLAlchemy is only
loaded when a store is actually built.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "Settings",
    "SessionMiddleware",
    "SessionStore",
    "Session",
    "TILL_BROWSER_CLOSE",
    "__version__",
]

_LAZY = {
    "Settings": "sessctl.config",
    "SessionMiddleware": "sessctl.middleware",
    "SessionStore": "sessctl.store",
    "Session": "sessctl.session",
    "TILL_BROWSER_CLOSE": "sessctl.policy",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sessctl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
