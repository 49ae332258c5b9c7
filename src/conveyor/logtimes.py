"""When each piece of a saved log was written: the side index ``logs/<job>/<stream>.times``.

The plain log file stays byte-identical to what the job wrote; its times live next to it,
one line per engine log message: ``<payload bytes> <nanoseconds since the previous
message>`` (the first one since the epoch). Deltas keep the index small (~10 bytes a line)
and the reader can put docker's ``--timestamps`` prefix back on every message.
"""

from __future__ import annotations

import operator
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

HEADER = b"# conveyor log times v1: payload_bytes delta_ns\n"
NS = 1_000_000_000


def times_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".times")


class EngineTimeParser:
    """Engine timestamps (RFC3339Nano, e.g. 2026-01-02T03:04:05.123456789Z) -> epoch ns.
    Called once per log line, so the seconds part is cached: it changes once a second."""

    def __init__(self) -> None:
        self._head = b""
        self._seconds_ns = 0

    def __call__(self, ts: bytes) -> int:
        # Fast path: the engine's own fixed-width UTC form, same second as the last line.
        if len(ts) == 30 and ts[29] == 90 and ts[:19] == self._head:  # 90: "Z"
            return self._seconds_ns + int(ts[20:29])
        return self._parse(ts)

    def _parse(self, ts: bytes) -> int:
        head, frac, zone = ts[:19], b"", ts[19:]
        if zone[:1] == b".":
            end = 1
            while end < len(zone) and 48 <= zone[end] <= 57:
                end += 1
            frac, zone = zone[1:end], zone[end:]
        text = (head + (b"+00:00" if zone in (b"Z", b"") else zone)).decode()
        seconds_ns = int(datetime.fromisoformat(text).timestamp()) * NS
        if zone == b"Z" and len(frac) == 9:
            self._head, self._seconds_ns = head, seconds_ns
        return seconds_ns + (int(frac[:9].ljust(9, b"0")) if frac else 0)


@lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def format_ns(ns: int) -> bytes:
    """Epoch ns -> docker's RFC3339NanoFixed in UTC (fixed width, always 9 digits)."""
    seconds, frac = divmod(ns, NS)
    return f"{_second(seconds)}.{frac:09d}Z".encode()


class TimesWriter:
    """Collects (payload length, engine timestamp) entries and writes the index."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self._parse = EngineTimeParser()
        self._prev = 0
        self._lines: list[str] = []
        out.write(HEADER)

    def add(self, length: int, ts: bytes) -> None:
        ns = self._parse(ts) if ts else self._prev  # a message without a time shares the last one
        self._lines.append(f"{length} {ns - self._prev}\n")
        self._prev = ns

    def add_many(self, lengths: list[int], stamps: list[bytes]) -> None:
        """``add`` for each pair, in one pass per list rather than calls per message (the
        engine's log of 100 MB is a million messages). The parser's fast path is inlined:
        same second as the one it last saw, fixed width, UTC."""
        if not lengths:
            return
        parse = self._parse
        head, base = parse._head, parse._seconds_ns
        times = [base + int(ts[20:29]) if ts[:19] == head and len(ts) == 30 and ts[29] == 90 else ts and parse(ts)
                 for ts in stamps]
        if b"" in times:  # messages without a time share the one before them
            for i, ns in enumerate(times):
                if ns == b"":
                    times[i] = times[i - 1] if i else self._prev
        self._lines.append("".join(map("{} {}\n".format, lengths, map(operator.sub, times, [self._prev, *times[:-1]]))))
        self._prev = times[-1]

    def flush(self) -> None:
        if self._lines:
            self._out.write("".join(self._lines).encode())
            self._lines.clear()


def read_times(path: Path) -> list[tuple[int, int]] | None:
    """[(payload offset, epoch ns)] per message, or None when no index was saved."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    out = []
    offset = ns = 0
    for line in data.splitlines():
        if not line or line.startswith(b"#"):
            continue
        length, delta = line.split()
        ns += int(delta)
        out.append((offset, ns))
        offset += int(length)
    return out
