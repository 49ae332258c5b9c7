"""HTTP/1.1 over a socket, just what the agent's API needs: a request with a JSON, file or
streamed body, and a response read whole, by lines, or by blocks, with chunked transfer
decoding. Connections are kept alive between requests.

Why not http.client: importing it (and the email parser it pulls in) costs ~45 ms, which
every `conveyor` command would pay before doing anything; the CLI's start-up is part of the
time a workflow engine waits for each step. This module needs only ``socket``.
"""

from __future__ import annotations

import socket
from typing import BinaryIO, Iterable

MAX_HEADER = 64 * 1024


class WireError(OSError):
    """The connection broke or the peer spoke something other than HTTP/1.1."""


class Response:
    def __init__(self, conn: "Connection", status: int, reason: str, headers: dict[str, str]):
        self._conn = conn
        self.status, self.reason, self.headers = status, reason, headers
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        length = headers.get("content-length")
        self._left = int(length) if length is not None and not self._chunked else None  # None: chunked or to EOF
        self._chunk_left = 0
        no_body = status in (204, 304) or self._left == 0
        self._done = no_body
        # The body's end is known without closing the connection: it can carry the next request.
        self.keeps_alive = headers.get("connection", "").lower() != "close" and (
            no_body or self._chunked or self._left is not None
        )

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the body (all of it with -1); b"" at its end."""
        out = []
        while not self._done and (n < 0 or n > 0):
            block = self._read_some(65536 if n < 0 else n)
            if not block:
                break
            out.append(block)
            if n > 0:
                n -= len(block)
        data = b"".join(out)
        if self._done:
            self._conn._response_done(self)
        return data

    def readline(self) -> bytes:
        """One line of the body, with its newline (the last may have none); b"" at the end."""
        line = bytearray()
        while not self._done:
            if self._chunked and self._chunk_left == 0:
                self._next_chunk()
                continue
            limit = self._chunk_left if self._chunked else self._left
            piece = self._conn._readline(limit)
            if not piece:
                self._finish_eof()
                break
            self._consumed(len(piece))
            line += piece
            if piece.endswith(b"\n"):
                break
        if self._done:
            self._conn._response_done(self)
        return bytes(line)

    def close(self) -> None:
        """Stop reading: the connection cannot be reused for another request."""
        self._done = True
        self._conn.close()

    # ---- body framing

    def _read_some(self, n: int) -> bytes:
        if self._chunked:
            if self._chunk_left == 0:
                self._next_chunk()
                if self._done:
                    return b""
            data = self._conn._read(min(n, self._chunk_left))
        else:
            data = self._conn._read(n if self._left is None else min(n, self._left))
        if not data:
            self._finish_eof()
            return b""
        self._consumed(len(data))
        return data

    def _consumed(self, n: int) -> None:
        if self._chunked:
            self._chunk_left -= n
            if self._chunk_left == 0:
                if self._conn._readline(2) != b"\r\n":
                    raise WireError("bad chunk terminator from the agent")
        elif self._left is not None:
            self._left -= n
            if self._left == 0:
                self._done = True

    def _next_chunk(self) -> None:
        line = self._conn._readline(1024)
        if not line:
            raise WireError("the agent closed the connection in the middle of a response")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while self._conn._readline(MAX_HEADER) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self._done = True
        self._chunk_left = size

    def _finish_eof(self) -> None:
        if self._left is None and not self._chunked:
            self._done = True  # the body ends with the connection
            return
        raise WireError("the agent closed the connection in the middle of a response")


class Connection:
    """One connection to ``address``: a unix socket path or a (host, port) pair."""

    def __init__(self, address: str | tuple[str, int], timeout: float | None):
        self.address, self.timeout = address, timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._busy: Response | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        if isinstance(self.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        if not isinstance(self.address, str):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._buf = sock, bytearray()

    def set_timeout(self, timeout: float | None) -> None:
        self.timeout = timeout
        if self._sock is not None:
            self._sock.settimeout(timeout)

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | BinaryIO | Iterable[bytes] | None = None,
    ) -> Response:
        """Send a request and read the response's head. A file or iterable body is sent with
        chunked encoding as it is read (stdin of a job, an image tarball)."""
        if self._busy is not None:
            self.close()  # the last response was not read to its end
        if self._sock is None:
            self.connect()
        head = [f"{method} {target} HTTP/1.1", "Host: localhost"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if isinstance(body, (bytes, bytearray)):
            head.append(f"Content-Length: {len(body)}")
        elif body is not None:
            head.append("Transfer-Encoding: chunked")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        try:
            if isinstance(body, (bytes, bytearray)):
                self._sock.sendall(data + body)
            else:
                self._sock.sendall(data)
                if body is not None:
                    self._send_chunked(body)
            return self._read_head()
        except OSError:
            self.close()
            raise

    def _send_chunked(self, body) -> None:
        chunks = iter(lambda: body.read(1 << 20), b"") if hasattr(body, "read") else body
        for chunk in chunks:
            if chunk:
                self._sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self._sock.sendall(b"0\r\n\r\n")

    def _read_head(self) -> Response:
        status_line = self._readline(MAX_HEADER)
        if not status_line:
            raise WireError("the agent closed the connection before answering")
        try:
            _, code, *reason = status_line.decode("latin-1").split(" ", 2)
            status = int(code)
        except ValueError:
            raise WireError(f"not an HTTP answer: {status_line[:80]!r}") from None
        headers: dict[str, str] = {}
        while True:
            line = self._readline(MAX_HEADER)
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise WireError("the agent closed the connection in the middle of its answer")
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        resp = self._busy = Response(self, status, reason[0].strip() if reason else "", headers)
        if resp._done:  # no body: the connection is free again
            self._response_done(resp)
        return resp

    def _response_done(self, resp: Response) -> None:
        if self._busy is resp:
            self._busy = None
            if not resp.keeps_alive:
                self.close()

    # ---- buffered reading

    def _fill(self) -> bool:
        if self._sock is None:
            return False
        try:
            data = self._sock.recv(65536)
        except OSError:
            self.close()
            raise
        if not data:
            return False
        self._buf += data
        return True

    def _read(self, n: int) -> bytes:
        if not self._buf and not self._fill():
            return b""
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _readline(self, limit: int | None) -> bytes:
        while True:
            end = self._buf.find(b"\n", 0, limit if limit is not None else len(self._buf))
            if end >= 0:
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                return line
            if limit is not None and len(self._buf) >= limit:
                line = bytes(self._buf[:limit])
                del self._buf[:limit]
                return line
            if not self._fill():
                line = bytes(self._buf)
                self._buf.clear()
                return line

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
        self._busy = None
        self._buf = bytearray()
