"""Checks of the user settings (``user_key``, the touch, devices, the per-user limit), for :class:`Settings`.

Kept apart from :mod:`sessctl.config` so that module stays about loading; it
imports nothing heavy, since the command line builds Settings on every start.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

ON_MAX_SESSIONS = ("evict", "refuse")


def check(s: Any) -> None:
    """Raise ConfigError on a bad user setting; normalise ``trusted_proxies`` to a tuple."""
    if not isinstance(s.user_key, str) or not s.user_key:
        raise ConfigError(f"user_key must be a non-empty string, not {s.user_key!r}")
    t = s.touch_interval
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0):
        raise ConfigError(f"touch_interval must be a positive number of seconds, not {t!r}")
    proxies = s.trusted_proxies
    if isinstance(proxies, str):
        proxies = tuple(p.strip() for p in proxies.split(",") if p.strip())
    if not isinstance(proxies, (tuple, list)) or not all(isinstance(p, str) for p in proxies):
        raise ConfigError("trusted_proxies must be a list of IP addresses or networks")
    if proxies:
        from .devices import parse_networks

        try:
            parse_networks(proxies)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    object.__setattr__(s, "trusted_proxies", tuple(proxies))
    m = s.max_sessions_per_user
    if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
        raise ConfigError(f"max_sessions_per_user must be a whole number of at least 1, not {m!r}")
    if s.on_max_sessions not in ON_MAX_SESSIONS:
        raise ConfigError(f"on_max_sessions must be evict or refuse, not {s.on_max_sessions!r}")
