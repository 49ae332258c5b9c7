"""The engine's log stream, saved fast and atomically; TTY streams regrouped into lines.

Saving logs is on every job's path to its final state, so this was profiled: the engine's
chunked HTTP body is taken apart here in big blocks (see `_body_blocks`), and frames are split
in one flat loop (`save_frames`). Keep it that way.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
from pathlib import Path
from typing import Iterator

from ...errors import ConveyorError
from ...logtimes import TimesWriter, times_path
from ..base import ContainerNotFound, EngineError, EngineUnavailable
from .translate import engine_errors

_BLOCK = 1 << 20
STREAM_FD = {"stdout": 1, "stderr": 2}


def _body_blocks(res) -> Iterator[bytes]:
    """The body of a streamed engine response in blocks of up to 1 MiB.

    The engine sends its log as one HTTP chunk per message; http.client decodes those one
    at a time with several calls each, which was 60% of the time spent saving a big log.
    So when the body is chunked and untouched, the chunk framing is taken apart here, a
    block at a time. The connection is closed afterwards, never reused."""
    inner = getattr(res.raw, "_fp", None)
    fp = getattr(inner, "fp", None)
    if not (getattr(inner, "chunked", False) and inner.chunk_left is None and hasattr(fp, "read1")):
        while block := res.raw.read(_BLOCK):
            yield block
        return
    try:
        buf, pos = b"", 0
        while True:
            more = fp.read1(_BLOCK)
            buf = buf[pos:] + more if pos < len(buf) else more
            pos, out, find, size = 0, [], buf.find, len(buf)
            while True:
                eol = find(b"\r\n", pos)
                if eol < 0:
                    break
                try:
                    length = int(buf[pos:eol], 16)
                except ValueError:  # a chunk extension (";name=value"): the engine sends none
                    length = int(buf[pos:eol].split(b";", 1)[0], 16)
                if length == 0:
                    if out:
                        yield b"".join(out)
                    return
                start = eol + 2
                end = start + length
                if end + 2 > size:
                    break
                out.append(buf[start:end])
                pos = end + 2
            if out:
                yield b"".join(out)
            if not more:
                raise EngineUnavailable("the engine's log stream ended in the middle of a chunk")
    finally:
        res.close()


def copy_raw(res, out) -> int:
    written = 0
    for block in _body_blocks(res):
        out.write(block)
        written += len(block)
    return written


def _split_time(message: bytes | memoryview) -> tuple[bytes, bytes | memoryview]:
    """b"<time> <payload>" -> (time, payload); the time is at most ~35 bytes."""
    space = bytes(message[:40]).find(b" ")
    if space < 0:
        return b"", message
    return bytes(message[:space]), message[space + 1 :]


_HEADER = struct.Struct(">BxxxI")  # a frame's header: stream fd, 3 zero bytes, payload length


def save_frames(res, by_fd: dict[int, "AtomicLog"]) -> None:
    """Split a multiplexed, timestamped log stream (8-byte header: fd, 0, 0, 0, big-endian
    length; then b"<time> <payload>") into each stream's file and times index.

    This loop runs once per log message (a million for 100 MB of short lines), so it is
    written flat and does only what must be done per message: payloads are views into the
    block, written together per block, and their lengths and times are indexed per block
    (``TimesWriter.add_many``)."""
    buf = b""
    unpack = _HEADER.unpack_from
    pending: dict[int, tuple[list, list, list]] = {fd: ([], [], []) for fd in by_fd}  # views, lengths, times
    for block in _body_blocks(res):
        buf = buf + block if buf else block
        view, pos, size, find = memoryview(buf), 0, len(buf), buf.find
        while pos + 8 <= size:
            fd, length = unpack(buf, pos)
            start = pos + 8
            end = start + length
            if end > size:
                break
            pos = end
            lists = pending.get(fd)
            if lists is not None:  # else a stream that was not asked for
                space = find(b" ", start, start + 48 if start + 48 < end else end)
                if space >= 0:
                    lists[2].append(buf[start:space])
                    start = space + 1
                else:
                    lists[2].append(b"")
                lists[0].append(view[start:end])
                lists[1].append(end - start)
        for fd, (views, lengths, stamps) in pending.items():
            if views:
                log = by_fd[fd]
                log.out.writelines(views)
                log.written += sum(lengths)
                log.times.add_many(lengths, stamps)
                views.clear()
                lengths.clear()
                stamps.clear()
        view.release()
        buf = buf[pos:]


class AtomicLog:
    """A log file and its times index, written to temp files and renamed into place."""

    def __init__(self, path: Path):
        self.path, self.times_path = path, times_path(path)
        self.tmp = path.with_name(f".{path.name}.partial")
        self.times_tmp = self.times_path.with_name(f".{self.times_path.name}.partial")
        self.out = open(self.tmp, "wb")
        self._index = open(self.times_tmp, "wb")
        self.times = TimesWriter(self._index)
        self.written = 0

    def commit(self) -> None:
        self.times.flush()
        for f in (self.out, self._index):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        os.replace(self.times_tmp, self.times_path)  # the index first: a saved log always has its times
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        for f in (self.out, self._index):
            try:
                f.close()
            except OSError:
                # A full disk fails the flush of what was buffered: the file must still go,
                # or the half-written copy keeps the space the rest of the node needs.
                pass
        for tmp in (self.tmp, self.times_tmp):
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def timestamped_lines(res) -> Iterator[tuple[bytes, bytes]]:
    """Messages of a raw (TTY) log stream: each line starts with its time."""
    rest = b""
    for block in _body_blocks(res):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield _split_time(line + b"\n")
    if rest:
        yield _split_time(rest)


def whole_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        if b"\n" in chunk:
            *lines, rest = rest.split(b"\n")
            yield from (line + b"\n" for line in lines)
    if rest:
        yield rest


def _as_bytes(chunks: Iterator[bytes | str]) -> Iterator[bytes]:
    """The SDK's log stream as bytes: for a TTY job it decodes the body when the engine calls
    it text (podman answers text/plain; charset=utf-8, where dockerd sends a raw stream)."""
    for chunk in chunks:
        yield chunk.encode() if isinstance(chunk, str) else chunk


class LogsMixin:
    """Part of DockerBackend: saving and following a container's log. Needs ``self.api``."""

    def save_logs(self, handle: str, paths: dict[str, Path]) -> dict[str, int]:
        """Copy the engine's log of each stream in ``paths`` ("stdout", "stderr") to its path,
        and when each message was written to ``<path>.times`` (see logtimes), all atomically
        (temp file + rename). The plain files are exactly the job's bytes. One engine read
        for both streams. Returns the bytes saved per stream."""
        with engine_errors():
            tty = bool(self.api.inspect_container(handle)["Config"].get("Tty"))
            files = {name: AtomicLog(path) for name, path in paths.items()}
            try:
                if tty:
                    # Raw stream: message bounds are only the line ends, so the plain copy is
                    # taken on its own and only the index comes from the timestamped stream.
                    for name, log in files.items():
                        log.written = copy_raw(self._log_response(handle, (name,), timestamps=False), log.out)
                        for ts, payload in timestamped_lines(self._log_response(handle, (name,), timestamps=True)):
                            log.times.add(len(payload), ts)
                else:
                    by_fd = {STREAM_FD[name]: log for name, log in files.items()}
                    save_frames(self._log_response(handle, tuple(files), timestamps=True), by_fd)
                for log in files.values():
                    log.commit()
            finally:
                for log in files.values():
                    log.discard()
        return {name: log.written for name, log in files.items()}

    def _log_response(self, handle: str, streams: tuple[str, ...], timestamps: bool):
        """The engine's /logs response, read raw in big blocks (logs.py): the SDK's iterator
        makes two reads per frame (one byte per read for TTY jobs), which dominates saving."""
        params = {"stdout": int("stdout" in streams), "stderr": int("stderr" in streams), "timestamps": int(timestamps), "follow": 0}
        res = self.api._get(self.api._url("/containers/{0}/logs", handle), params=params, stream=True)
        self.api._raise_for_status(res)
        return res

    def follow_logs(
        self,
        handle: str,
        streams: tuple[str, ...],
        tail: int | None = None,
        follow: bool = True,
        timestamps: bool = False,
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` from the engine's log, stdout and stderr kept apart.

        The engine's log driver records from the first byte, so following after start
        loses nothing. One reader thread per stream while the caller iterates. With
        ``timestamps`` every chunk is one whole message, b"<RFC3339Nano time> <bytes>".
        The container going away ends the stream; other failures raise after what was read."""
        chunks: queue.Queue = queue.Queue(maxsize=256)
        # A TTY job's stream is raw bytes: regroup it into whole lines so every chunk carries
        # its own time (a multiplexed stream already gives one frame per message).
        with engine_errors():
            by_line = timestamps and bool(self.api.inspect_container(handle)["Config"].get("Tty"))
        handles = []
        done = object()

        def pump(name: str) -> None:
            try:
                with engine_errors():
                    stream = self.api.logs(
                        handle,
                        stdout=name == "stdout",
                        stderr=name == "stderr",
                        stream=True,
                        follow=follow,
                        tail="all" if tail is None else tail,
                        timestamps=timestamps,
                    )
                    handles.append(stream)
                    chunks_of = _as_bytes(stream)
                    for chunk in whole_lines(chunks_of) if by_line else chunks_of:
                        chunks.put((name, chunk))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer below
                chunks.put((name, exc))
            finally:
                chunks.put((name, done))

        readers = [threading.Thread(target=pump, args=(s,), daemon=True, name=f"logs-{s}") for s in streams]
        for r in readers:
            r.start()
        open_streams = len(readers)
        error: Exception | None = None
        try:
            while open_streams:
                name, item = chunks.get()
                if item is done:
                    open_streams -= 1
                elif isinstance(item, Exception):
                    error = error or item
                else:
                    yield name, item
        finally:
            for stream in handles:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001 - closing a dead stream
                    pass
        if isinstance(error, ContainerNotFound):
            return  # removed while followed: its log ends here
        if isinstance(error, ConveyorError):
            raise error
        if error is not None:
            raise EngineError(f"log stream failed: {error}") from error
