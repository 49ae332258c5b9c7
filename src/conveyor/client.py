"""Client: the Executor's interface, served by a running agent (`conveyor serve`).

    from conveyor import Client, Executor, JobSpec
    ex = Executor()                        # embedded: this process runs the jobs
    ex = Client()                          # the agent of the same state directory (unix socket)
    ex = Client(url="http://10.0.0.5:8471", token="...")   # an agent elsewhere
    job = ex.run(JobSpec(image="busybox", command=["echo", "hi"]))

Same methods, same :class:`~conveyor.job.Job` results, same errors as :class:`Executor`.
Only the standard library is used (http.client), so the CLI stays quick to start.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import socket
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator
from urllib.parse import quote, urlencode, urlsplit

from .agent import API_PREFIX, home_root, socket_path
from .agent.auth import read_token
from .errors import (
    AgentError,
    ConveyorError,
    EngineUnavailable,
    ImageNotFound,
    InvalidSpec,
    InvalidState,
    JobNotFound,
    PolicyRefused,
    WaitTimeout,
)
from .job import Job
from .spec import JobSpec
from .state import JobState
from .store import Transition
from .spec import spec_from_json as _parse_spec

STREAMS = ("stdout", "stderr")
POLL = 30.0  # seconds per long-poll request


@dataclasses.dataclass(frozen=True)
class RemoteJob(Job):
    """A Job whose stdout/stderr are fetched from the agent when its files are not local."""

    client: "Client | None" = dataclasses.field(default=None, repr=False, compare=False)

    def _read(self, stream: str) -> bytes:
        if self.client is None or self.client.local:
            return super()._read(stream)
        return b"".join(chunk for _, chunk in self.client.logs(self.id, stream))


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


class _RemoteBackend:
    """What callers use of ``Executor.backend`` that makes sense through an agent."""

    def __init__(self, client: "Client"):
        self._client = client

    def ensure_image(self, spec: JobSpec, refresh: bool = True) -> None:
        self._client.ensure_image(spec)


class Client:
    """Talks to the agent of ``home`` (its ``agent.sock``), or to ``url``
    (``http://HOST:PORT``, ``unix:///path/agent.sock``; default ``$CONVEYOR_HOST``).

    The token is ``token``, else ``$CONVEYOR_TOKEN``, else the state directory's agent.token."""

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
    ):
        root = home_root(home)
        url = url or os.environ.get("CONVEYOR_HOST") or None
        self._uds: str | None = None
        self._host: tuple[str, int] | None = None
        if url is None:
            self._uds = str(socket_path(root))
        elif url.startswith("unix:"):
            self._uds = url[len("unix://"):] if url.startswith("unix://") else url[len("unix:"):]
        else:
            parts = urlsplit(url if "://" in url else "http://" + url)
            if parts.scheme != "http" or not parts.hostname:
                raise AgentError(f"agent address {url!r}: use http://HOST:PORT or unix:///path/agent.sock")
            self._host = (parts.hostname, parts.port or 80)
        self.url = url or f"unix://{self._uds}"
        # The agent's files (logs) are readable here when we talk to it over its local socket.
        self.local = url is None
        self.root = root if self.local else None
        self._token = token or os.environ.get("CONVEYOR_TOKEN") or read_token(root)
        self.timeout = timeout
        self._tls = threading.local()
        self._closed = False
        self.backend = _RemoteBackend(self)
        self._info: dict | None = None

    # ------------------------------------------------------------------ plumbing

    def _new_connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._uds is not None:
            return _UnixConnection(self._uds, timeout)
        return http.client.HTTPConnection(self._host[0], self._host[1], timeout=timeout)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._tls, "conn", None)
        if conn is None:
            conn = self._tls.conn = self._new_connection(self.timeout)
        return conn

    def _headers(self, body: bytes | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    @staticmethod
    def _target(path: str, params: dict | None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        for k, v in query.items():
            if isinstance(v, bool):
                query[k] = "true" if v else "false"
        return API_PREFIX + path + ("?" + urlencode(query, doseq=True) if query else "")

    def _call(self, method: str, path: str, params: dict | None = None, body: Any = None, timeout: float | None = None) -> Any:
        """One request on this thread's kept-alive connection; the decoded JSON answer."""
        if self._closed:
            raise AgentError("this Client is closed")
        data = None if body is None else json.dumps(body).encode()
        target = self._target(path, params)
        for attempt in (0, 1):
            conn = self._connection()
            reused = conn.sock is not None
            if conn.sock is not None:
                conn.sock.settimeout(timeout or self.timeout)
            conn.timeout = timeout or self.timeout
            try:
                conn.request(method, target, body=data, headers=self._headers(data))
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                self._tls.conn = None
                if reused and attempt == 0:
                    continue  # the agent closed an idle kept-alive connection: once more on a fresh one
                raise AgentError(f"the agent at {self.url} closed the connection: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._tls.conn = None
                if isinstance(exc, (TimeoutError, socket.timeout)):
                    raise AgentError(f"the agent at {self.url} did not answer within {conn.timeout:g}s") from None
                raise AgentError(f"cannot reach the agent at {self.url}: {exc}") from None
            if resp.status >= 400:
                raise _error_from(resp.status, payload)
            if resp.status == 204 or not payload:
                return None
            return json.loads(payload)
        raise AssertionError("unreachable")

    def _stream(self, path: str, params: dict | None = None) -> http.client.HTTPResponse:
        """A streamed answer on a connection of its own (closed with the response)."""
        conn = self._new_connection(None)  # follows may be silent for a long time
        target = self._target(path, params)
        try:
            conn.request("GET", target, headers=self._headers(None))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise AgentError(f"cannot reach the agent at {self.url}: {exc}") from None
        if resp.status >= 400:
            payload = resp.read()
            conn.close()
            raise _error_from(resp.status, payload)
        resp._conveyor_conn = conn  # type: ignore[attr-defined]
        return resp

    def _job(self, data: dict) -> Job:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(Job):
            value = data.get(f.name)
            if f.name == "spec":
                # validated once per distinct spec, as the store does: a 10,000-job list
                # of array tasks shares one spec
                value = _parse_spec(json.dumps(value, sort_keys=True))
            elif f.name == "state":
                value = JobState(value)
            elif f.name == "logs_dir":
                value = Path(value)
            values[f.name] = value
        return RemoteJob(**values, client=self)

    @staticmethod
    def _ref(ref: str) -> str:
        return quote(str(ref), safe="")

    def close(self) -> None:
        """Drop this thread's connection. The agent and its jobs are not affected."""
        conn = getattr(self._tls, "conn", None)
        if conn is not None:
            conn.close()
            self._tls.conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def supervising(self) -> bool:
        """The agent supervises the jobs (what a supervising Executor would do here)."""
        return True

    def agent_info(self) -> dict:
        """The agent: version, pid, state directory, executor id, policy."""
        return self._call("GET", "/info")

    @property
    def executor_id(self) -> str:
        if self._info is None:
            self._info = self.agent_info()
        return self._info["executor_id"]

    def ping(self) -> bool:
        try:
            return bool(self._call("GET", "/ping", timeout=5).get("ok"))
        except AgentError:
            return False

    # ------------------------------------------------------------------ submit and run

    def ensure_image(self, spec: JobSpec) -> None:
        """Make the spec's image present on the agent's node (its pull policy applies)."""
        self._call("POST", "/images/ensure", body={"spec": _spec_json(spec)}, timeout=max(self.timeout, 3600))

    def submit(self, spec: JobSpec, *, hold: bool = False, idempotency_key: str | None = None, image_ready: bool = False) -> str:
        if not isinstance(spec, JobSpec):
            raise TypeError("submit() takes a JobSpec; build one with JobSpec(...) or JobSpec.from_file()")
        body = {"spec": _spec_json(spec), "hold": hold, "idempotency_key": idempotency_key}
        # the agent checks (and pulls) the image itself: allow a pull's time
        return self._call("POST", "/jobs", body=body, timeout=max(self.timeout, 3600))["id"]

    def start(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        stdin: BinaryIO | None = None,
        image_ready: bool = False,
    ) -> str:
        """Submit and return once the job runs (or failed to start), like a supervising Executor.

        ``stdin`` works with an agent on this machine only (it is fed through the local engine)."""
        if stdin is not None and spec.stdin_open and not self.local:
            raise ConveyorError("stdin (-i) cannot be sent to a remote agent; run the job without it")
        job_id = self.submit(spec, idempotency_key=idempotency_key, image_ready=image_ready)
        job = self.wait_started(job_id)
        if stdin is not None and spec.stdin_open and job.container_id and not job.state.is_final:
            from .backends.docker import DockerBackend
            from .executor import _pump_stdin

            try:
                attached = DockerBackend(self.executor_id).attach_stdin(job.container_id)
            except Exception:  # noqa: BLE001 - it ended before we could attach
                return job_id
            threading.Thread(target=_pump_stdin, args=(stdin, attached), daemon=True, name="conveyor-stdin").start()
        return job_id

    def run(self, spec: JobSpec, timeout: float | None = None) -> Job:
        return self.wait(self.start(spec), timeout=timeout)

    # ------------------------------------------------------------------ arrays and views

    def submit_array(
        self, spec: JobSpec, begin: int, end: int, step: int = 1, max_parallel: int | None = None,
        *, hold: bool = False, image_ready: bool = False,
    ) -> str:
        """Queue one task per index in ``begin..end`` by ``step``; return the array id."""
        body = {"spec": _spec_json(spec), "begin": begin, "end": end, "step": step, "max_parallel": max_parallel, "hold": hold}
        return self._call("POST", "/arrays", body=body, timeout=max(self.timeout, 3600))["id"]

    def array(self, ref: str) -> dict:
        return self._call("GET", f"/arrays/{self._ref(ref)}")

    def array_tasks(self, ref: str) -> list[tuple[str, int, JobState]]:
        return [(t["id"], t["index"], JobState(t["state"])) for t in self._call("GET", f"/arrays/{self._ref(ref)}/tasks")]

    def hold_array(self, ref: str) -> dict:
        return self._call("POST", f"/arrays/{self._ref(ref)}/hold")

    def release_array(self, ref: str) -> dict:
        return self._call("POST", f"/arrays/{self._ref(ref)}/release")

    def suspend_array(self, ref: str) -> dict:
        return self._call("POST", f"/arrays/{self._ref(ref)}/suspend")

    def resume_array(self, ref: str) -> dict:
        return self._call("POST", f"/arrays/{self._ref(ref)}/resume")

    def cancel_array(self, ref: str, grace: float | None = None) -> dict:
        return self._call("POST", f"/arrays/{self._ref(ref)}/cancel", {"grace": grace}, timeout=max(self.timeout, 600))

    def attempts(self, ref: str) -> list[dict]:
        return self._call("GET", f"/jobs/{self._ref(ref)}/attempts")

    def queue(self, limit: int | None = None) -> dict:
        return self._call("GET", "/queue", {"limit": limit})

    def machine(self) -> dict:
        return self._call("GET", "/machine")

    # ------------------------------------------------------------------ data (README: Data)

    def filesets(self, ref: str, role: str = "output") -> dict[str, str]:
        if role != "output":
            return {i.target: i.source for i in self.info(ref).spec.inputs}
        return self._call("GET", f"/jobs/{self._ref(ref)}/outputs")["filesets"]

    def outputs(self, ref: str) -> list[dict]:
        return self._call("GET", f"/jobs/{self._ref(ref)}/outputs")["files"]

    def read_output(self, ref: str, path: str, out: BinaryIO | None = None) -> bytes | int:
        resp = self._stream(f"/jobs/{self._ref(ref)}/outputs/content", {"path": path})
        try:
            if out is None:
                return resp.read()
            n = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                n += len(chunk)
            return n
        finally:
            resp.close()
            resp._conveyor_conn.close()  # type: ignore[attr-defined]

    def verify(self, ref: str | None = None) -> dict:
        return self._call("POST", "/data/verify", {"job": ref}, timeout=max(self.timeout, 3600))

    def gc(self, dry_run: bool = False, grace: float = 600.0) -> dict:
        return self._call("POST", "/data/gc", {"dry_run": dry_run, "grace": grace}, timeout=max(self.timeout, 3600))

    # ------------------------------------------------------------------ waiting

    def _wait(self, ref: str, until: str, what: str, timeout: float | None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        path = f"/jobs/{self._ref(ref)}/wait"
        while True:
            step = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
            try:
                return self._job(self._call("GET", path, {"timeout": round(step, 3), "until": until}, timeout=step + 30))
            except WaitTimeout as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(exc.job_id, what, timeout or 0) from None

    def wait(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job is Done or Failed; WaitTimeout after ``timeout`` seconds."""
        return self._wait(ref, "finished", "finished", timeout)

    def wait_started(self, ref: str, timeout: float | None = None) -> Job:
        return self._wait(ref, "started", "started", timeout)

    def wait_any(self, refs: Iterable[str], timeout: float | None = None) -> Job:
        ids = list(refs)
        if not ids:
            raise ValueError("wait_any needs at least one job")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
            try:
                return self._job(self._call("POST", "/wait-any", body={"ids": ids, "timeout": round(step, 3)}, timeout=step + 30))
            except WaitTimeout as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(exc.job_id, "finished", timeout or 0) from None

    def future(self, ref: str) -> "Future[Job]":
        """A future resolved with the final Job (one thread long-polls for it)."""
        fut: Future = Future()
        job_id = self.info(ref).id

        def poll() -> None:
            try:
                fut.set_result(self.wait(job_id))
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
            finally:
                self.close()

        threading.Thread(target=poll, daemon=True, name="conveyor-client-future").start()
        return fut

    # ------------------------------------------------------------------ control

    def _control(self, ref: str, action: str, params: dict | None = None) -> Job:
        return self._job(self._call("POST", f"/jobs/{self._ref(ref)}/{action}", params))

    def cancel(self, ref: str, grace: float | None = None, *, wait: bool = True) -> Job:
        job = self._control(ref, "cancel", {"grace": grace})
        return self.wait(job.id) if wait else job

    def hold(self, ref: str) -> Job:
        return self._control(ref, "hold")

    def release(self, ref: str) -> Job:
        return self._control(ref, "release")

    def suspend(self, ref: str) -> Job:
        return self._control(ref, "suspend")

    def resume(self, ref: str) -> Job:
        return self._control(ref, "resume")

    # ------------------------------------------------------------------ reading

    def info(self, ref: str) -> Job:
        return self._job(self._call("GET", f"/jobs/{self._ref(ref)}"))

    def list(
        self,
        states: Iterable[JobState | str] | None = None,
        labels: dict[str, str] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Job]:
        page = self._list_page(states, labels, 0, 0)
        if page is None:
            return []
        jobs: list[Job] = []
        params = page
        params["offset"] = offset
        while limit is None or len(jobs) < limit:
            params["limit"] = 1000 if limit is None else min(1000, limit - len(jobs))
            got = self._call("GET", "/jobs", params)
            jobs += [self._job(j) for j in got["jobs"]]
            if got["next_offset"] is None:
                break
            params["offset"] = got["next_offset"]
        return jobs

    def count(self, states: Iterable[JobState | str] | None = None, labels: dict[str, str] | None = None) -> int:
        params = self._list_page(states, labels, 1, 0)
        return 0 if params is None else self._call("GET", "/jobs", params)["total"]

    @staticmethod
    def _list_page(states, labels, limit: int, offset: int) -> dict[str, Any] | None:
        """Query parameters of GET /jobs; None when no state was asked for (nothing matches)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if states is not None:
            params["state"] = [JobState(s).value for s in states]
            if not params["state"]:
                return None
        if labels:
            params["label"] = [f"{k}={v}" for k, v in labels.items()]
        return params

    def logs(
        self, ref: str, stream: str = "all", *, tail: int | None = None, follow: bool = False, timestamps: bool = False
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` pairs, stdout and stderr kept apart (streamed over HTTP)."""
        if stream not in (*STREAMS, "all"):
            raise ValueError("stream must be 'stdout', 'stderr' or 'all'")
        params = {"stream": stream, "tail": tail, "follow": follow, "timestamps": timestamps or None}
        resp = self._stream(f"/jobs/{self._ref(ref)}/logs", params)
        return self._frames(resp)

    def _frames(self, resp: http.client.HTTPResponse) -> Iterator[tuple[str, bytes]]:
        try:
            ended = False
            while line := resp.readline():
                frame = json.loads(line)
                if "data" in frame:
                    yield frame["stream"], base64.b64decode(frame["data"])
                elif "error" in frame:
                    raise ConveyorError(frame["error"].get("message", "log stream failed"))
                elif frame.get("end"):
                    ended = True
                    break
            if not ended:
                raise AgentError("the agent closed the log stream before its end")
        finally:
            resp.close()
            resp._conveyor_conn.close()  # type: ignore[attr-defined]

    def events(self, job: str | None = None, *, since: int | None = None, follow: bool = True) -> Iterator[Transition]:
        """State transitions in commit order (Server-Sent Events): from now on, or after ``since``
        (a transition's seq; 0 for the whole history). ``follow=False`` ends at the present."""
        resp = self._stream("/events", {"job": job, "since": since, "follow": follow})
        return self._events(resp)

    def _events(self, resp: http.client.HTTPResponse) -> Iterator[Transition]:
        try:
            data: list[str] = []
            while line := resp.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith("data:"):
                    data.append(text[5:].lstrip())
                elif not text and data:
                    t = json.loads("\n".join(data))
                    data = []
                    yield Transition(
                        t["seq"], t["job_id"], t["at"], JobState(t["from_state"]) if t["from_state"] else None,
                        JobState(t["to_state"]), t["substate"], t["reason"],
                    )
        finally:
            resp.close()
            resp._conveyor_conn.close()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ removal

    def discard_container(self, ref: str) -> None:
        self._call("DELETE", f"/jobs/{self._ref(ref)}/container")

    def remove(self, ref: str, force: bool = False) -> None:
        self._call("DELETE", f"/jobs/{self._ref(ref)}", {"force": force}, timeout=max(self.timeout, 120))

    def cleanup(self) -> dict[str, int]:
        return self._call("POST", "/cleanup", timeout=max(self.timeout, 600))


def _spec_json(spec: JobSpec) -> dict:
    return spec.model_dump(mode="json", exclude_defaults=True)


def _error_from(status: int, payload: bytes) -> ConveyorError:
    """The agent's JSON error -> the exception the Executor would have raised."""
    try:
        body = json.loads(payload)
        code, message = body["code"], body["message"]
        field, details = body.get("field"), body.get("details") or {}
    except (ValueError, KeyError, TypeError):
        return AgentError(f"the agent answered {status}: {payload[:200]!r}", status)
    exc: ConveyorError
    if code == "invalid_spec":
        problems = [(p["field"].removeprefix("spec."), p.get("value"), p["hint"]) for p in details.get("problems", [])]
        exc = InvalidSpec(problems)
        return exc  # its message is rebuilt from the problems, as the library's
    if code == "job_not_found":
        exc = JobNotFound(details.get("ref", ""))
    elif code == "invalid_state":
        exc = InvalidState(details.get("job_id", ""), details.get("state", ""), details.get("action", ""))
    elif code == "wait_timeout":
        exc = WaitTimeout(details.get("job_id", ""), "finished", 0)
    elif code == "image_not_found":
        exc = ImageNotFound(details.get("image", ""), message, details.get("job_id"))
    elif code == "policy_refused":
        exc = PolicyRefused(details.get("rule", ""), field, message)
    elif code == "engine_unavailable":
        exc = EngineUnavailable(message)
    elif code == "conveyor_error":
        exc = ConveyorError(message)
    else:
        exc = AgentError(message, status, code)
    exc.args = (message,)  # the agent's own words
    return exc
