"""The logs Conveyor saved: ``logs/<job>/stdout|stderr`` and their ``.times`` index; reading
them, and keeping them to the size retention allows (:func:`cap`, :func:`drop`).

Saved logs can be gigabytes: everything here reads in blocks, and ``tail`` reads backwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from .logtimes import HEADER, format_ns, read_times, times_path

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


# ----------------------------------------------------------------------------- retention

def cap(path: Path, max_bytes: int) -> int:
    """Keep a saved log to ``max_bytes``: its first and last halves (cut at line ends where a
    line ends within them), and between them a line that says where and how much was cut (a
    reader sees the cut; nothing is cut silently). The times index follows, so --timestamps
    still dates every kept byte. Bytes cut (0: the log was within its cap)."""
    size = path.stat().st_size if path.exists() else 0
    if size <= max_bytes:
        return 0
    with open(path, "rb") as src:
        head = _line_end_before(src, max_bytes // 2)
        tail_start = _line_start_after(src, size - (max_bytes - max_bytes // 2), size)
        src.seek(head - 1)
        newline = src.read(1) == b"\n"
    marker = (f"{'' if newline else chr(10)}[conveyor: {tail_start - head} bytes cut here, bytes {head} to {tail_start} "
              f"of {size}: this log keeps its first and last lines to {max_bytes} bytes (retention log_max_bytes)]\n").encode()
    partial = path.with_name(f".{path.name}.cap")
    with open(path, "rb") as src, open(partial, "wb") as out:
        _copy(src, out, head)
        out.write(marker)
        src.seek(tail_start)
        _copy(src, out, size - tail_start)
        out.flush()
        os.fsync(out.fileno())
    _cap_times(times_path(path), head, tail_start, size, len(marker))
    os.replace(partial, path)
    return tail_start - head


def drop(logs_dir: Path, why: str) -> int:
    """Replace a job's saved logs, its earlier attempts' (attempt-N/) too, by one line saying
    they were removed and why (retention's total cap): bytes freed."""
    freed = 0
    for path in (d / name for d in (logs_dir, *sorted(logs_dir.glob("attempt-*"))) for name in STREAMS):
        if path.exists():
            freed += path.stat().st_size
            path.write_bytes(f"[conveyor: the {path.stat().st_size} bytes of this log were removed: {why}]\n".encode())
        times = times_path(path)
        if times.exists():
            freed += times.stat().st_size
            times.unlink()
    return freed


def _line_end_before(f, n: int) -> int:
    """The end of the last whole line in the first ``n`` bytes (``n`` if none ends there)."""
    f.seek(0)
    end = f.read(n).rfind(b"\n")
    return end + 1 if end >= 0 else n


def _line_start_after(f, pos: int, size: int, block: int = 1 << 16) -> int:
    """The start of the first line that begins at or after ``pos`` within a block (else ``pos``)."""
    f.seek(pos - 1)
    found = f.read(block).find(b"\n")
    return pos - 1 + found + 1 if 0 <= found and pos + found < size else pos


def _copy(src, out, n: int, block: int = 1 << 20) -> None:
    while n > 0 and (chunk := src.read(min(block, n))):
        out.write(chunk)
        n -= len(chunk)


def _cap_times(index: Path, head: int, tail_start: int, size: int, marker: int) -> None:
    """The times index of a capped log: messages cut to the head, the marker dated as the
    first byte it stands for, the tail's messages as they were."""
    entries = read_times(index)
    if entries is None:
        return
    ends = [off for off, _ in entries[1:]] + [size]
    kept: list[tuple[int, int]] = []  # (length, epoch ns)
    marked = False
    for (off, ns), end in zip(entries, ends):
        if off < head:
            kept.append((min(end, head) - off, ns))
        if not marked and end > head and off < tail_start:
            kept.append((marker, ns))  # dated as the first message the cut takes
            marked = True
        if end > tail_start:
            kept.append((end - max(off, tail_start), ns))
    lines, prev = [HEADER], 0
    for length, ns in kept:
        if length > 0:
            lines.append(f"{length} {ns - prev}\n".encode())
            prev = ns
    partial = index.with_name(f".{index.name}.cap")
    partial.write_bytes(b"".join(lines))
    os.replace(partial, index)
