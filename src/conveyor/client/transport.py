"""The client's transport: requests to the agent over its unix socket or TCP, with one
kept-alive connection per thread, the bearer token, and the agent's JSON errors raised as the
library's own exceptions (:func:`conveyor.errors.error_from_wire`).

Only the standard library, and little of it (see wire.py): the CLI imports this on every call.
"""

from __future__ import annotations

import json
import threading
from typing import Any, BinaryIO, Iterable
from urllib.parse import quote, urlencode, urlsplit

from ..agent import API_PREFIX
from ..errors import AgentError, AgentUnreachable, ConveyorError, error_from_wire
from .wire import Connection, Response, WireError


class Transport:
    """Requests to one agent: ``url`` is ``http://HOST:PORT``, ``unix:///path/agent.sock``, or
    None for the unix socket ``socket_path``."""

    def __init__(self, url: str | None, socket_path: str, token: str | None, timeout: float):
        self.address: str | tuple[str, int]
        if url is None:
            self.address = socket_path
        elif url.startswith("unix:"):
            self.address = url[len("unix://"):] if url.startswith("unix://") else url[len("unix:"):]
        else:
            parts = urlsplit(url if "://" in url else "http://" + url)
            if parts.scheme != "http" or not parts.hostname:
                raise AgentError(f"agent address {url!r}: use http://HOST:PORT or unix:///path/agent.sock")
            self.address = (parts.hostname, parts.port or 80)
        self.url = url or f"unix://{self.address}"
        self.remote = url is not None  # given by the caller ($CONVEYOR_HOST), not this state directory's
        self.timeout = timeout
        self.token = token
        self._tls = threading.local()

    def _connection(self) -> Connection:
        conn = getattr(self._tls, "conn", None)
        if conn is None:
            conn = self._tls.conn = Connection(self.address, self.timeout)
        return conn

    def headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    @staticmethod
    def target(path: str, params: dict | None = None) -> str:
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
        upload: BinaryIO | Iterable[bytes] | None = None,
    ) -> Any:
        """One request on this thread's kept-alive connection; the decoded JSON answer.
        ``upload`` streams a file or an iterable of blocks as the body instead of JSON."""
        data: Any = None if body is None else json.dumps(body).encode()
        content_type = None if body is None else "application/json"
        if upload is not None:
            data, content_type = upload, "application/octet-stream"
        target = self.target(path, params)
        for attempt in (0, 1):
            conn = self._connection()
            reused = conn.is_open
            conn.set_timeout(timeout or self.timeout)
            try:
                resp = conn.request(method, target, self.headers(content_type), data)
                payload = resp.read()
            except (WireError, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if reused and attempt == 0 and upload is None:
                    continue  # the agent closed an idle kept-alive connection: once more on a fresh one
                raise AgentUnreachable(self.url, f"the connection broke: {exc}", self.remote) from None
            except TimeoutError:
                conn.close()
                raise AgentError(f"the agent at {self.url} did not answer within {conn.timeout:g}s") from None
            except OSError as exc:
                conn.close()
                raise AgentUnreachable(self.url, exc.strerror or str(exc), self.remote) from None
            if resp.status >= 400:
                raise error_from(resp.status, payload)
            if resp.status == 204 or not payload:
                return None
            return json.loads(payload)
        raise AssertionError("unreachable")

    def stream(
        self, path: str, params: dict | None = None, *, method: str = "GET", body: Any = None,
        upload: BinaryIO | Iterable[bytes] | None = None,
    ) -> Response:
        """A streamed answer on a connection of its own (follows may be silent for a long time);
        ``resp.close()`` ends it."""
        conn = Connection(self.address, None)
        data: Any = None if body is None else json.dumps(body).encode()
        content_type = "application/json" if body is not None else None
        if upload is not None:
            data, content_type = upload, "application/octet-stream"
        try:
            resp = conn.request(method, self.target(path, params), self.headers(content_type), data)
        except OSError as exc:
            conn.close()
            raise AgentUnreachable(self.url, getattr(exc, "strerror", None) or str(exc), self.remote) from None
        if resp.status >= 400:
            payload = resp.read()
            conn.close()
            raise error_from(resp.status, payload)
        return resp

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


def quoted(ref: str) -> str:
    return quote(str(ref), safe="")
