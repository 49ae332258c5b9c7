"""Units a user types: sizes in bytes (``512m``, docker's binary units) and durations
(``90``, ``1h30m``, ``500ms``). Plain parsers, no pydantic: the CLI uses them too."""

from __future__ import annotations

import math
import re
from typing import Any

_BYTE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
BYTES_HINT = "use a number of bytes with an optional unit b, k, m, g, t (binary, as docker: 512m, 2g, 1.5Gi)"


def parse_bytes(value: Any) -> Any:
    """``"512m"`` -> 536870912. Units are binary (k=1024), like docker's. ``-1`` passes through."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "-1":
            return -1
        m = _BYTES_RE.match(text)
        if m and not (m.group(2) == "" and m.group(3).lower() == "i"):
            return int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()])
    raise ValueError(BYTES_HINT)


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_HINT = "use seconds or a duration like 90, 30s, 5m, 1h30m, 500ms"


def parse_duration(value: Any) -> Any:
    """``"1h30m"`` -> 5400.0 seconds; plain numbers are seconds."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(DURATION_HINT)
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
            raise ValueError(DURATION_HINT)
        pos, total = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        else:
            if pos == len(text) and pos > 0:
                return total
    raise ValueError(DURATION_HINT)
