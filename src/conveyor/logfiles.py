"""Reading the logs Conveyor saved: ``logs/<job>/stdout|stderr`` and their ``.times`` index.

Saved logs can be gigabytes: everything here reads in blocks, and ``tail`` reads backwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from .logtimes import format_ns, read_times, times_path

STREAMS = ("stdout", "stderr")


def iter_chunks(path: Path, offset: int = 0, size: int = 1 << 16) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(size):
            yield chunk


def saved_logs(logs_dir: Path, streams: tuple[str, ...], tail: int | None, timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
    """``(stream, chunk)`` of the saved logs: whole, or the last ``tail`` lines of each."""
    for name in streams:
        path = logs_dir / name
        if not path.exists():
            continue
        if timestamps:
            # The last N lines start this many bytes before the end; the index says when.
            start = 0 if tail is None else os.path.getsize(path) - len(last_lines(path, tail))
            for chunk in timestamped(path, start):
                yield name, chunk
        elif tail is None:
            for chunk in iter_chunks(path):
                yield name, chunk
        else:
            data = last_lines(path, tail)
            if data:
                yield name, data


def saved_after(logs_dir: Path, streams: tuple[str, ...], sent: dict[str, int], timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
    """What the saved logs hold past ``sent[stream]`` bytes: the rest of a live stream that
    ended (or broke) before the job did."""
    for name in streams:
        path = logs_dir / name
        if path.exists():
            chunks = timestamped(path, sent[name]) if timestamps else iter_chunks(path, offset=sent[name])
            for chunk in chunks:
                yield name, chunk


def last_lines(path, n: int, block: int = 1 << 16) -> bytes:
    """The last ``n`` lines of a file, reading backwards."""
    if n <= 0:
        return b""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        pos = f.tell()
        data = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
            # one more newline than lines wanted, ignoring a trailing newline
            if data.count(b"\n", 0, len(data) - 1 if data.endswith(b"\n") else len(data)) >= n:
                break
    body = data[:-1] if data.endswith(b"\n") else data
    lines = body.split(b"\n")[-n:]
    return b"\n".join(lines) + (b"\n" if data.endswith(b"\n") else b"")


def timestamped(path: Path, start: int = 0, block: int = 1 << 16) -> Iterator[bytes]:
    """The saved log from byte ``start`` on, each message prefixed with its time and a space
    as ``docker logs --timestamps`` prints it. A message cut by ``start`` keeps its time.
    Without an index the plain bytes are yielded (nothing can be made up)."""
    entries = read_times(times_path(path))
    size = os.path.getsize(path)
    if entries is None:
        yield from iter_chunks(path, offset=start)
        return
    # Bytes past the last indexed message (an index cut short) share the last known time.
    bounds = [off for off, _ in entries[1:]] + [size]
    out: list[bytes] = []
    pending = 0
    with open(path, "rb") as f:
        for (off, ns), end in zip(entries, bounds):
            end = max(end, off)
            if end <= start:
                continue
            begin = max(off, start)
            if begin >= size:
                break
            f.seek(begin)
            out.append(format_ns(ns) + b" " + f.read(min(end, size) - begin))
            pending += len(out[-1])
            if pending >= block:
                yield b"".join(out)
                out, pending = [], 0
    if out:
        yield b"".join(out)
