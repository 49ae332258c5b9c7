"""The pieces that let a capture keep up with the engine: :class:`ReadAhead` reads the
archive stream in one thread, :class:`BlobWriter` writes the blob files in another, and the
caller between them parses the tar and hashes each file. Socket reads, sha256 and file
writes all release the GIL, so the three overlap; each thread is joined before the capture
returns or raises, and nothing it read or wrote is kept without the caller's digest."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import queue
import threading
from pathlib import Path
from typing import BinaryIO, Callable

CHUNK = 1 << 20


class Forward:
    """A read-only stream that can "seek" forward (by reading and discarding) and tell."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.pos = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n) if n is not None and n >= 0 else self.raw.read()
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self.pos
        elif whence != 0:
            raise io.UnsupportedOperation("only forward seeks from the start or the current position")
        if pos < self.pos:
            raise io.UnsupportedOperation(f"cannot seek back from {self.pos} to {pos} in a stream")
        while self.pos < pos:
            if not self.read(min(CHUNK, pos - self.pos)):
                break
        return self.pos


class ReadAhead(io.RawIOBase):
    """``src`` read in a thread up to ``depth`` blocks ahead of the reader. What ``src`` raises
    is raised to the reader, in order, after the bytes read before it. :meth:`close` stops the
    thread (it ends after the read it is in) and waits for it: nothing outlives the capture."""

    def __init__(self, src: BinaryIO, depth: int = 8):
        self._blocks: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._rest = memoryview(b"")
        self._end: BaseException | None = None
        self._eof = False
        self._thread = threading.Thread(target=self._pump, args=(src,), daemon=True, name="conveyor-capture-read")
        self._thread.start()

    def _pump(self, src: BinaryIO) -> None:
        try:
            while block := src.read(CHUNK):
                if not self._put(block):
                    return
            self._put(b"")
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._blocks.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            if self._end is not None:
                raise self._end
            if self._eof:
                return 0
            item = self._blocks.get()
            if isinstance(item, BaseException):
                self._end = item
            elif not item:
                self._eof = True
            else:
                self._rest = memoryview(item)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            while self._thread.is_alive():
                try:  # make room, so a pump blocked on a full queue sees the stop
                    self._blocks.get(timeout=0.05)
                except queue.Empty:
                    pass
        super().close()


class BlobWriter:
    """Blob files written in a thread, in the order asked: :meth:`open` a temp file,
    :meth:`write` to it, :meth:`commit` (close and rename it to its digest's path). The
    first failure is raised to the caller at its next call or at :meth:`close`; the temp
    file being written then is removed. Unsynced, like ``put_stream(sync=False)``: the
    caller syncs the store before anything names the blobs."""

    _names = itertools.count()

    def __init__(self, tmp_dir: Path, depth: int = 16):
        self._tmp_dir = tmp_dir
        self._ops: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._abort = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="conveyor-capture-write")
        self._thread.start()

    def open(self) -> None:
        self._submit(("open", self._tmp_dir / f"{os.getpid()}-w{threading.get_ident()}-{next(self._names)}"))

    def write(self, data: bytes) -> None:
        self._submit(("write", data))

    def commit(self, final: Path) -> None:
        self._submit(("commit", final))

    def close(self, abort: bool = False) -> None:
        """Wait until every blob asked for is written (``abort``: drop what is pending)."""
        self._abort = self._abort or abort
        self._ops.put(None)
        self._thread.join()
        if self._error is not None and not abort:
            raise self._error

    def _submit(self, op) -> None:
        if self._error is not None:
            raise self._error
        self._ops.put(op)

    def _run(self) -> None:
        fd, tmp = -1, None
        try:
            while (op := self._ops.get()) is not None:
                if self._error is not None or self._abort:
                    continue  # drained, so the caller never blocks on a full queue
                kind, arg = op
                try:
                    if kind == "open":
                        tmp = arg
                        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o444)
                    elif kind == "write":
                        write_all(fd, arg)
                    else:
                        os.close(fd)
                        fd = -1
                        try:
                            os.rename(tmp, arg)  # always renamed: a blob torn by a crash is replaced
                        except FileNotFoundError:  # the first blob under this prefix
                            arg.parent.mkdir(exist_ok=True)
                            os.rename(tmp, arg)
                        tmp = None
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._error = exc
                    fd, tmp = discard(fd, tmp)
        finally:
            discard(fd, tmp)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def discard(fd: int, tmp: Path | None) -> tuple[int, None]:
    """Close a half-written temp file and remove it (either may be absent: -1, None)."""
    if fd >= 0:
        os.close(fd)
    if tmp is not None:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return -1, None


def hash_through(src: BinaryIO, writer: BlobWriter, path_of: Callable[[str], Path]) -> tuple[str, int]:
    """A blob hashed here while ``writer`` writes it: (digest, size), as ``put_stream``."""
    h = hashlib.sha256()
    size = 0
    writer.open()
    while chunk := src.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
        writer.write(chunk)
    digest = "sha256:" + h.hexdigest()
    writer.commit(path_of(digest))
    return digest, size
