"""WebSocket sessions with the agent: a command inside a job (exec) and a job's TCP port
(port-forward) each take one, on the agent's unix socket or TCP address, with the token.

A refusal before the upgrade (a bad token: the agent's JSON error answer) and an error frame
after it (``{"error": {...}}``) are raised as the library's own exceptions, as every other
call raises them. The ``websockets`` package is imported only here, when a session opens: the
CLI's other commands never load it.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..errors import AgentUnreachable, ConveyorError, error_from_wire
from .transport import Transport, error_from

STREAMS = {1: "stdout", 2: "stderr"}


class AgentSocket:
    """One WebSocket to the agent's route ``path``, opened with ``request`` as its first
    message. Sends may come from several threads (stdin, resizes); one thread receives."""

    def __init__(self, transport: Transport, path: str, request: dict[str, Any]):
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect, unix_connect

        self.url = transport.url
        self.remote = transport.remote
        options: dict[str, Any] = {
            "additional_headers": {"Authorization": f"Bearer {transport.token}"} if transport.token else {},
            "compression": None,  # terminal keystrokes and already-compressed data: not worth the CPU
            "max_size": None,  # the agent sends at most what one engine read gave
            "open_timeout": transport.timeout,
            "legacy": True,  # the connection itself, closed by close(), not a context manager
        }
        target = transport.target(path)
        try:
            if isinstance(transport.address, str):
                self.ws = unix_connect(transport.address, uri=f"ws://localhost{target}", **options)
            else:
                host, port = transport.address
                host = f"[{host}]" if ":" in host else host
                self.ws = connect(f"ws://{host}:{port}{target}", proxy=None, **options)
        except InvalidStatus as exc:
            raise error_from(exc.response.status_code, exc.response.body or b"") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise AgentUnreachable(self.url, str(exc) or type(exc).__name__, self.remote) from None
        self._sending = threading.Lock()
        self.send(request)

    def send(self, message: bytes | dict) -> None:
        """A binary frame for bytes, a JSON text frame for a dict; nothing once the session
        has ended (what was sent late is lost, as a write to an ended command is)."""
        from websockets.exceptions import ConnectionClosed

        data = message if isinstance(message, bytes) else json.dumps(message)
        with self._sending:
            try:
                self.ws.send(data)
            except ConnectionClosed:
                pass

    def receive(self) -> bytes | dict | None:
        """The next frame: bytes, or a JSON object; None once the agent closed the session
        normally. An error frame raises its exception; a broken session AgentUnreachable."""
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        try:
            message = self.ws.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            raise AgentUnreachable(self.url, f"the session broke ({exc})", self.remote) from None
        if isinstance(message, bytes):
            return message
        frame = json.loads(message)
        if "error" in frame:
            error = frame["error"]
            raise error_from_wire(500, error.get("code", ConveyorError.code), error.get("message", "the session failed"),
                                  error.get("field"), error.get("details") or {})
        return frame

    def close(self) -> None:
        self.ws.close()


class ExecSocket:
    """A command running inside a job, through the agent (routers/execs.py): the shape of the
    embedded Executor's exec session (:class:`~conveyor.backends.base.ExecProcess`)."""

    def __init__(self, socket: AgentSocket):
        self.socket = socket
        self.exit_code: int | None = None
        try:
            self.job = socket.receive()["started"]["job"]  # the agent ran it, or raised why not
        except BaseException:
            socket.close()
            raise

    def read(self) -> tuple[str, bytes] | None:
        while self.exit_code is None:
            frame = self.socket.receive()
            if frame is None:
                raise AgentUnreachable(self.socket.url, "the agent ended the session before the command's end",
                                       self.socket.remote)
            if isinstance(frame, bytes):
                return STREAMS.get(frame[0], "stdout"), frame[1:]
            if "exit" in frame:
                self.exit_code = int(frame["exit"])
        return None

    def write(self, data: bytes) -> None:
        self.socket.send(data)

    def close_stdin(self) -> None:
        self.socket.send({"close_stdin": True})

    def resize(self, height: int, width: int) -> None:
        self.socket.send({"resize": [height, width]})

    def wait(self) -> int:
        while self.read() is not None:
            pass  # output nobody asked for
        return self.exit_code  # type: ignore[return-value] - read() returns None only once it is set

    def close(self) -> None:
        self.socket.close()


class PortSocket:
    """A connection to a TCP port of a job, through the agent (routers/ports.py): what the
    embedded Executor's ``open_port`` gives as a socket, with a socket's ``recv``,
    ``sendall``, ``shutdown`` and ``close``."""

    def __init__(self, socket: AgentSocket):
        self.socket = socket
        self._rest = b""
        try:
            socket.receive()  # {"connected": ...}, or the agent raised why not
        except BaseException:
            socket.close()
            raise

    def recv(self, size: int = 65536) -> bytes:
        """Up to ``size`` bytes; b"" once the job's side has closed."""
        while not self._rest:
            frame = self.socket.receive()
            if frame is None:
                return b""
            if isinstance(frame, bytes):
                self._rest = frame
        data, self._rest = self._rest[:size], self._rest[size:]
        return data

    def sendall(self, data: bytes) -> None:
        self.socket.send(data)

    def shutdown(self, how: int) -> None:
        """SHUT_WR (or SHUT_RDWR): the job's side reads EOF."""
        import socket

        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self.socket.send({"close_write": True})

    def close(self) -> None:
        self.socket.close()
