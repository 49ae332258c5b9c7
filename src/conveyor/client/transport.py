"""The client's transport: HTTP/1.1 to the agent over its unix socket or TCP, with one
kept-alive connection per thread, the bearer token, and the agent's JSON errors raised as the
library's own exceptions (:func:`conveyor.errors.error_from_wire`).

Only the standard library (http.client): the CLI imports this on every call, and httpx cost
0.34 s of its start-up.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from ..agent import API_PREFIX
from ..errors import AgentError, ConveyorError, error_from_wire


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Transport:
    """Requests to one agent: ``url`` is ``http://HOST:PORT``, ``unix:///path/agent.sock``, or
    None for the unix socket ``socket_path``."""

    def __init__(self, url: str | None, socket_path: str, token: str | None, timeout: float):
        self._uds: str | None = None
        self._host: tuple[str, int] | None = None
        if url is None:
            self._uds = socket_path
        elif url.startswith("unix:"):
            self._uds = url[len("unix://"):] if url.startswith("unix://") else url[len("unix:"):]
        else:
            parts = urlsplit(url if "://" in url else "http://" + url)
            if parts.scheme != "http" or not parts.hostname:
                raise AgentError(f"agent address {url!r}: use http://HOST:PORT or unix:///path/agent.sock")
            self._host = (parts.hostname, parts.port or 80)
        self.url = url or f"unix://{self._uds}"
        self.timeout = timeout
        self._token = token
        self._tls = threading.local()
        self.closed = False

    def _new_connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._uds is not None:
            return _UnixConnection(self._uds, timeout)
        return http.client.HTTPConnection(self._host[0], self._host[1], timeout=timeout)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._tls, "conn", None)
        if conn is None:
            conn = self._tls.conn = self._new_connection(self.timeout)
        return conn

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    @staticmethod
    def target(path: str, params: dict | None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        for k, v in query.items():
            if isinstance(v, bool):
                query[k] = "true" if v else "false"
        return API_PREFIX + path + ("?" + urlencode(query, doseq=True) if query else "")

    def call(
        self,
        method: str,
        path: str,
        params: dict | None = None,
        body: Any = None,
        timeout: float | None = None,
        upload: BinaryIO | None = None,
    ) -> Any:
        """One request on this thread's kept-alive connection; the decoded JSON answer.
        ``upload`` sends a file as the body instead of JSON."""
        if self.closed:
            raise AgentError("this Client is closed")
        data: Any = None if body is None else json.dumps(body).encode()
        content_type = None if body is None else "application/json"
        if upload is not None:
            data, content_type = upload, "application/octet-stream"
        target = self.target(path, params)
        for attempt in (0, 1):
            conn = self._connection()
            reused = conn.sock is not None
            if conn.sock is not None:
                conn.sock.settimeout(timeout or self.timeout)
            conn.timeout = timeout or self.timeout
            try:
                conn.request(method, target, body=data, headers=self._headers(content_type))
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                self._tls.conn = None
                if reused and attempt == 0 and upload is None:
                    continue  # the agent closed an idle kept-alive connection: once more on a fresh one
                raise AgentError(f"the agent at {self.url} closed the connection: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._tls.conn = None
                if isinstance(exc, (TimeoutError, socket.timeout)):
                    raise AgentError(f"the agent at {self.url} did not answer within {conn.timeout:g}s") from None
                raise AgentError(f"cannot reach the agent at {self.url}: {exc}") from None
            if resp.status >= 400:
                raise error_from(resp.status, payload)
            if resp.status == 204 or not payload:
                return None
            return json.loads(payload)
        raise AssertionError("unreachable")

    def stream(self, path: str, params: dict | None = None) -> http.client.HTTPResponse:
        """A streamed answer on a connection of its own; ``close_stream`` ends both."""
        conn = self._new_connection(None)  # follows may be silent for a long time
        try:
            conn.request("GET", self.target(path, params), headers=self._headers(None))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise AgentError(f"cannot reach the agent at {self.url}: {exc}") from None
        if resp.status >= 400:
            payload = resp.read()
            conn.close()
            raise error_from(resp.status, payload)
        resp._conveyor_conn = conn  # type: ignore[attr-defined]
        return resp

    @staticmethod
    def close_stream(resp: http.client.HTTPResponse) -> None:
        resp.close()
        resp._conveyor_conn.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Drop this thread's connection."""
        conn = getattr(self._tls, "conn", None)
        if conn is not None:
            conn.close()
            self._tls.conn = None


def error_from(status: int, payload: bytes) -> ConveyorError:
    """The agent's JSON error -> the exception the Executor would have raised."""
    try:
        body = json.loads(payload)
        code, message = body["code"], body["message"]
        field, details = body.get("field"), body.get("details") or {}
    except (ValueError, KeyError, TypeError):
        return AgentError(f"the agent answered {status}: {payload[:200]!r}", status)
    return error_from_wire(status, code, message, field, details)
