"""Bytes into and out of a job's container: its stdin (and its terminal's size), and its
files as a tar stream."""

from __future__ import annotations

import io
import socket
import threading
from typing import BinaryIO

from ..base import ContainerNotFound, EngineError
from .translate import engine_errors


class FilesMixin:
    """Part of DockerBackend: needs ``self.api``."""

    def resize(self, handle: str, height: int, width: int) -> None:
        with engine_errors():
            self.api.resize(handle, height=height, width=width)

    def attach_output(self, handle: str) -> BinaryIO:
        with engine_errors():
            attached = self.api.attach_socket(handle, params={"stdout": 1, "stderr": 1, "stream": 1})
        return _SocketStream(getattr(attached, "_sock", attached))  # unbuffered: each read returns what came

    def attach_stdin(self, handle: str, source: BinaryIO) -> None:
        """Copy ``source`` into the container's stdin in a daemon thread; its stdin is closed
        at EOF. Attach before start and the job misses none of it."""
        with engine_errors():
            attached = self.api.attach_socket(handle, params={"stdin": 1, "stream": 1})
        threading.Thread(target=_pump_stdin, args=(source, attached), daemon=True, name="conveyor-stdin").start()

    def read_archive(self, handle: str, path: str) -> BinaryIO | None:
        """A tar stream (file object) of ``path`` in the container, running or stopped; None
        when the engine answers 404 (no such path there). Reading it raises EngineUnavailable
        if the connection breaks."""
        # The raw response, not the SDK's get_archive: its chunk iterator hands out the
        # HTTP chunks (~32 KB) one by one, a third of the capture time for a large output.
        with engine_errors():
            res = self.api._get(
                self.api._url("/containers/{0}/archive", handle),
                params={"path": path},
                stream=True,
                headers={"Accept-Encoding": "identity"},  # a tar of the job's files: no gzip round trip
            )
        try:
            with engine_errors():
                self.api._raise_for_status(res)
        except EngineError as exc:
            res.close()
            if isinstance(exc, ContainerNotFound):
                return None  # the engine's 404: no such path (or no such container)
            raise
        res.raw.decode_content = True
        return io.BufferedReader(_EngineStream(res), buffer_size=1 << 20)


class _EngineStream(io.RawIOBase):
    """A streamed engine response as a raw file whose reads raise EngineUnavailable, not
    urllib3's errors, when the connection breaks. A BufferedReader goes on top: this is
    called once per 1 MiB, never per tar header."""

    def __init__(self, res):
        self._res = res

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with engine_errors():
            return self._res.raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._res.close()
        super().close()


def _pump_stdin(source: BinaryIO, attached) -> None:
    """Copy the caller's stdin into the container, then close the container's stdin."""
    sock = getattr(attached, "_sock", attached)
    try:
        while chunk := (source.read1(65536) if hasattr(source, "read1") else source.read(65536)):
            sock.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _SocketStream(io.RawIOBase):
    """An attached container's raw output socket as a file (a tty job's stream is raw bytes)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            return self._sock.recv_into(buffer)
        except OSError:
            return 0  # closed under us: the end

    def close(self) -> None:
        if not self.closed:
            self._sock.close()
        super().close()
