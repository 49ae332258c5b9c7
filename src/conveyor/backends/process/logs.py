"""A process job's logs: the shim's two files (``stdout``, ``stderr``, exactly the job's bytes)
and their ``.idx`` (one ``<bytes> <epoch ns>`` line per chunk the shim read from the pipe)."""

from __future__ import annotations

import bisect
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

from ...logtimes import TimesWriter, format_ns, times_path


def read_index(data: Path) -> list[tuple[int, int]]:
    """[(offset, ns)] per chunk of ``data``, from its ``.idx``."""
    out, offset = [], 0
    try:
        text = data.with_name(data.name + ".idx").read_bytes()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((offset, int(parts[1])))
            offset += int(parts[0])
    return out


def save(data: Path, dest: Path) -> int:
    """Copy ``data`` to ``dest`` and its times to ``dest``'s times index, both by
    write-then-rename (the index first: a saved log always has its times). The bytes saved."""
    tmp, times_tmp = dest.with_name(f".{dest.name}.partial"), times_path(dest).with_name(f".{dest.name}.times.partial")
    try:
        if data.exists():
            shutil.copyfile(data, tmp)
        else:
            tmp.write_bytes(b"")
        size = tmp.stat().st_size
        with open(times_tmp, "wb") as out:
            writer = TimesWriter(out)
            chunks = read_index(data)
            for (offset, ns), nxt in zip(chunks, [c[0] for c in chunks[1:]] + [size]):
                if offset < size:
                    writer.add(min(nxt, size) - offset, format_ns(ns))
            if not chunks and size:
                writer.add(size, format_ns(time.time_ns()))  # no index (a crash mid-write): one time
            writer.flush()
            out.flush()
            os.fsync(out.fileno())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(times_tmp, times_path(dest))
        os.replace(tmp, dest)
        return size
    finally:
        for p in (tmp, times_tmp):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def tail_offset(data: bytes, lines: int | None) -> int:
    """Where the last ``lines`` lines of ``data`` start (a last line without a newline counts)."""
    if lines is None:
        return 0
    if lines <= 0:
        return len(data)
    pos = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            return 0
    return pos + 1


def follow(rundir: Path, streams: tuple[str, ...], tail: int | None, follow: bool, timestamps: bool,
           ended: Callable[[], bool], poll: float = 0.1) -> Iterator[tuple[str, bytes]]:
    """``(stream, chunk)`` from the shim's files; with ``follow``, until the job has ended and
    everything it wrote is out. With ``timestamps`` each chunk is one line, b"<time> <line>"."""
    readers = {s: _Reader(rundir / s, tail, timestamps) for s in streams}
    while True:
        done = not follow or ended()  # read before looking: what was written by the end is out
        for name, reader in readers.items():
            for chunk in reader.more(final=done):
                yield name, chunk
        if done:
            return
        time.sleep(poll)


class _Reader:
    def __init__(self, path: Path, tail: int | None, timestamps: bool):
        self.path, self.timestamps = path, timestamps
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        self.offset = tail_offset(data, tail)
        self.rest = b""

    def more(self, final: bool) -> Iterator[bytes]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        start, self.offset = self.offset - len(self.rest), self.offset + len(data)
        if not self.timestamps:
            if data:
                yield data
            return
        data, self.rest = self.rest + data, b""
        index = read_index(self.path)
        offsets = [o for o, _ in index]
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0 and not final:
                self.rest = data[pos:]
                return
            end = len(data) if end < 0 else end + 1
            i = bisect.bisect_right(offsets, start + pos) - 1
            ns = index[i][1] if i >= 0 else time.time_ns()
            yield format_ns(ns) + b" " + data[pos:end]
            pos = end
