"""JSON that every strict parser accepts, from session data that Python's json module accepted.

Django's JSON serializer (and ours, for compatibility) writes ``NaN``, ``Infinity`` and
``-Infinity`` as bare tokens, and ``json.loads`` turns a ``\\ud800`` escape into a lone surrogate:
neither is JSON (RFC 8259 has no such numbers; I-JSON forbids lone surrogates, and jq, Go and
serde reject or mangle them). For output, non-finite numbers become the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"``, and each lone surrogate becomes U+FFFD, in keys and values.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _text(value: str) -> str:
    return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value


def strict(value: Any) -> Any:
    """``value`` with non-finite floats and lone surrogates replaced (new containers; input untouched)."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE[repr(value)]
    if isinstance(value, dict):
        return {(_text(k) if isinstance(k, str) else k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict` ``(value)``; never emits NaN, Infinity or a lone surrogate."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)
