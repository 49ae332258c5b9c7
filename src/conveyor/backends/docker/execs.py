"""Commands run inside a running container (``docker exec``): started on the engine's hijacked
exec connection and handed over as they run, stdin, stdout and stderr apart (the engine's
multiplexed frames) or one terminal stream, resizable, with the exit code once they end."""

from __future__ import annotations

import re
import socket
import time

from ...spec import ExecSpec
from ..base import EngineError, ExecProcess
from .translate import engine_errors

# The engine's multiplexed stream: an 8-byte header (stream id, 3 zero bytes, big-endian
# length) before each frame; 1 is stdout, 2 stderr.
_STREAMS = {1: "stdout", 2: "stderr"}
_HEADER = 8
# What the runtime says when the program is missing (runc: `exec: "x": executable file not
# found in $PATH`, or `exec: "/x": stat /x: no such file or directory`). The engine says 126
# for every exec that could not start; docker's CLI and `docker run` say 127 for these.
_NOT_FOUND = re.compile(rb'exec: "[^"]*": (?:executable file not found|(?:stat [^:]*: )?no such file or directory)')
_HEAD = 1024  # output kept to tell why an exec could not start


class ExecMixin:
    """Part of DockerBackend: needs ``self.api``."""

    def open_exec(self, handle: str, spec: ExecSpec) -> "DockerExec":
        """EngineConflict ("... is not running", "... is paused") when the container is not running."""
        with engine_errors():
            exec_id = self.api.exec_create(
                handle, spec.command, stdin=spec.stdin, stdout=True, stderr=True, tty=spec.tty, user=spec.user or "",
                workdir=spec.workdir, environment=spec.env or None,
            )["Id"]
            attached = self.api.exec_start(exec_id, tty=spec.tty, socket=True)
        process = DockerExec(self.api, exec_id, getattr(attached, "_sock", attached), spec.tty)
        if spec.tty and spec.console_size is not None:
            try:
                process.resize(*spec.console_size)  # the engine takes a size once the exec runs
            except EngineError:
                pass  # it has ended already
        return process


class DockerExec(ExecProcess):
    """One exec on its hijacked connection (a raw socket: reads return what came)."""

    def __init__(self, api, exec_id: str, sock: socket.socket, tty: bool):
        self.api, self.exec_id, self.sock, self.tty = api, exec_id, sock, tty
        self.head = b""

    def read(self) -> tuple[str, bytes] | None:
        if self.tty:
            data = self._recv(65536)
            return self._seen("stdout", data) if data else None
        header = self._recv_exactly(_HEADER)
        if len(header) < _HEADER:
            return None
        data = self._recv_exactly(int.from_bytes(header[4:8], "big"))
        return self._seen(_STREAMS.get(header[0], "stdout"), data)

    def _seen(self, stream: str, data: bytes) -> tuple[str, bytes]:
        if len(self.head) < _HEAD:
            self.head += data[:_HEAD - len(self.head)]
        return stream, data

    def _recv(self, n: int) -> bytes:
        try:
            return self.sock.recv(n)
        except OSError:
            return b""  # closed under us (close()): the end

    def _recv_exactly(self, n: int) -> bytes:
        parts, left = [], n
        while left:
            data = self._recv(left)
            if not data:
                break
            parts.append(data)
            left -= len(data)
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # it ended, or closed its stdin: its exit code says how it went

    def close_stdin(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def resize(self, height: int, width: int) -> None:
        with engine_errors():
            self.api.exec_resize(self.exec_id, height=height, width=width)

    def wait(self, settle: float = 5.0) -> int:
        """The exit code once it has ended: its output can end first (the command closed it),
        and the engine records the code just after the process is reaped."""
        pause, deadline = 0.01, time.monotonic() + settle
        while True:
            with engine_errors():
                info = self.api.exec_inspect(self.exec_id)
            if info.get("ExitCode") is not None and not info.get("Running"):
                return self._docker_code(info)
            if not info.get("Running") and time.monotonic() > deadline:
                raise EngineError(f"exec {self.exec_id[:12]} ended without an exit code")
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _docker_code(self, info: dict) -> int:
        never_ran = not info.get("Pid")
        if never_ran and info["ExitCode"] == 126 and _NOT_FOUND.search(self.head):
            return 127
        return info["ExitCode"]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv; close alone may not
        except OSError:
            pass
        self.sock.close()
