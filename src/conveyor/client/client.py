"""Client: the Executor's interface, served by a running agent (`conveyor serve`).

    from conveyor import Client, Executor, JobSpec
    ex = Executor()                        # embedded: this process runs the jobs
    ex = Client()                          # the agent of the same state directory (unix socket)
    ex = Client(url="http://10.0.0.5:8471", token="...")   # an agent elsewhere
    job = ex.run(JobSpec(image="busybox", command=["echo", "hi"]))

Same methods (:class:`~conveyor.interface.ExecutorInterface`), same
:class:`~conveyor.job.Job` results, same errors as :class:`~conveyor.executor.Executor`.
Each method is one request (or a loop of long-polls) through :class:`.transport.Transport`;
the job-control verbs and their array forms come from :mod:`conveyor.operations`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator
from urllib.parse import quote

from ..agent import home_root, socket_path
from ..agent.auth import read_token
from ..errors import AgentError, ConveyorError, WaitTimeout
from ..job import Job, Transition
from ..operations import OPERATIONS, Verb, with_verbs
from ..spec import JobSpec
from ..state import JobState
from .transport import Transport

STREAMS = ("stdout", "stderr")
POLL = 30.0  # seconds per long-poll request
LONG = 3600.0  # requests that may pull an image or hash the content store


@dataclasses.dataclass(frozen=True)
class RemoteJob(Job):
    """A Job whose stdout/stderr are fetched from the agent when its files are not local."""

    client: "Client | None" = dataclasses.field(default=None, repr=False, compare=False)

    def _read(self, stream: str) -> bytes:
        if self.client is None or self.client.local:
            return super()._read(stream)
        return b"".join(chunk for _, chunk in self.client.logs(self.id, stream))


def _path(name: str, ref: str | None = None) -> str:
    """The route of an operation in the table, with its job or array reference filled in."""
    path = OPERATIONS[name].path
    return path if ref is None else path.replace("{ref}", quote(str(ref), safe=""))


@with_verbs
class Client:
    """Talks to the agent of ``home`` (its ``agent.sock``), or to ``url``
    (``http://HOST:PORT``, ``unix:///path/agent.sock``; default ``$CONVEYOR_HOST``).

    The token is ``token``, else ``$CONVEYOR_TOKEN``, else the state directory's agent.token."""

    # The agent supervises; this object's process does not (ExecutorInterface.supervising).
    supervising = False

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
        token = token or os.environ.get("CONVEYOR_TOKEN") or read_token(root)
        self._http = Transport(url, str(socket_path(root)), token, timeout)
        self.url = self._http.url
        # The agent's files (logs) are readable here when we talk to it over its local socket.
        self.local = url is None
        self.root = root if self.local else None
        self._info: dict | None = None

    def close(self) -> None:
        """Drop this thread's connection. The agent and its jobs are not affected."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _job(self, data: dict) -> Job:
        return RemoteJob(**Job.fields_from_dict(data), client=self)

    # ------------------------------------------------------------------ the agent

    def agent_info(self) -> dict:
        """The agent: version, pid, state directory, executor id, backend, policy."""
        return self._http.call("GET", _path("agent_info"))

    @property
    def _agent(self) -> dict:
        if self._info is None:
            self._info = self.agent_info()
        return self._info

    @property
    def executor_id(self) -> str:
        return self._agent["executor_id"]

    def capabilities(self):
        from ..backends.base import Capabilities

        caps = dict(self._agent["backend"]["capabilities"])
        caps["gpus"] = frozenset(caps.get("gpus", ()))
        return Capabilities(**caps)

    def ping(self) -> bool:
        try:
            return bool(self._http.call("GET", _path("ping"), timeout=5).get("ok"))
        except AgentError:
            return False

    # ------------------------------------------------------------------ submit and run

    def ensure_image(self, spec: JobSpec) -> None:
        """Make the spec's image present on the agent's node (its pull policy applies)."""
        self._http.call("POST", _path("ensure_image"), body={"spec": _spec_json(spec)}, timeout=max(self._http.timeout, LONG))

    def submit(self, spec: JobSpec, *, hold: bool = False, idempotency_key: str | None = None, image_ready: bool = False) -> str:
        if not isinstance(spec, JobSpec):
            raise TypeError("submit() takes a JobSpec; build one with JobSpec(...) or JobSpec.from_file()")
        body = {"spec": _spec_json(spec), "hold": hold, "idempotency_key": idempotency_key}
        # the agent checks (and pulls) the image itself: allow a pull's time
        return self._http.call("POST", _path("submit"), body=body, timeout=max(self._http.timeout, LONG))["id"]

    def submit_array(
        self, spec: JobSpec, begin: int, end: int, step: int = 1, max_parallel: int | None = None,
        *, hold: bool = False, image_ready: bool = False,
    ) -> str:
        """Queue one task per index in ``begin..end`` by ``step``; return the array id."""
        body = {"spec": _spec_json(spec), "begin": begin, "end": end, "step": step, "max_parallel": max_parallel, "hold": hold}
        return self._http.call("POST", _path("submit_array"), body=body, timeout=max(self._http.timeout, LONG))["id"]

    def start(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        stdin: BinaryIO | None = None,
        image_ready: bool = False,
    ) -> str:
        """Submit and return once the job runs (or failed to start).

        ``stdin`` works with an agent on this machine only (it is fed through the local engine)."""
        feeds_stdin = stdin is not None and spec.stdin_open
        if feeds_stdin and not self.local:
            raise ConveyorError("stdin (-i) cannot be sent to a remote agent; run the job without it")
        job_id = self.submit(spec, idempotency_key=idempotency_key, image_ready=image_ready)
        job = self.wait_started(job_id)
        if feeds_stdin and job.container_id and not job.state.is_final:
            from ..backends import open_backend

            try:
                backend = open_backend(self._agent["backend"]["name"], self.executor_id)
                backend.attach_stdin(job.container_id, stdin)
            except ConveyorError:
                pass  # it ended before we could attach
        return job_id

    def run(self, spec: JobSpec, timeout: float | None = None) -> Job:
        return self.wait(self.start(spec), timeout=timeout)

    # ------------------------------------------------------------------ verbs (operations.VERBS)

    def _perform(self, verb: Verb, ref: str, params: dict[str, Any], wait: bool) -> Job | None:
        timeout = max(self._http.timeout, 120) if verb.method == "DELETE" else None
        path = verb.route.replace("{ref}", quote(str(ref), safe=""))
        answer = self._http.call(verb.method, path, params, timeout=timeout)
        if not verb.returns_job:
            return None
        job = self._job(answer)
        return self.wait(job.id) if wait else job

    def _apply_to_array(self, verb: Verb, ref: str, params: dict[str, Any]) -> dict:
        path = verb.array_route.replace("{ref}", quote(str(ref), safe=""))
        return self._http.call("POST", path, params, timeout=max(self._http.timeout, 600))

    # ------------------------------------------------------------------ reading

    def info(self, ref: str) -> Job:
        return self._job(self._http.call("GET", _path("info", ref)))

    def list(
        self,
        states: Iterable[JobState | str] | None = None,
        labels: dict[str, str] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Job]:
        params = _list_params(states, labels)
        if params is None:
            return []
        jobs: list[Job] = []
        params["offset"] = offset
        while limit is None or len(jobs) < limit:
            params["limit"] = 1000 if limit is None else min(1000, limit - len(jobs))
            got = self._http.call("GET", _path("list"), params)
            jobs += [self._job(j) for j in got["jobs"]]
            if got["next_offset"] is None:
                break
            params["offset"] = got["next_offset"]
        return jobs

    def count(self, states: Iterable[JobState | str] | None = None, labels: dict[str, str] | None = None) -> int:
        params = _list_params(states, labels)
        return 0 if params is None else self._http.call("GET", _path("list"), {**params, "limit": 1, "offset": 0})["total"]

    def attempts(self, ref: str) -> list[dict]:
        return self._http.call("GET", _path("attempts", ref))

    def array(self, ref: str) -> dict:
        return self._http.call("GET", _path("array", ref))

    def array_tasks(self, ref: str) -> list[tuple[str, int, JobState]]:
        return [(t["id"], t["index"], JobState(t["state"])) for t in self._http.call("GET", _path("array_tasks", ref))]

    def logs(
        self, ref: str, stream: str = "all", *, tail: int | None = None, follow: bool = False, timestamps: bool = False
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` pairs, stdout and stderr kept apart (streamed over HTTP)."""
        if stream not in (*STREAMS, "all"):
            raise ValueError("stream must be 'stdout', 'stderr' or 'all'")
        params = {"stream": stream, "tail": tail, "follow": follow, "timestamps": timestamps or None}
        return self._frames(self._http.stream(_path("logs", ref), params))

    def _frames(self, resp) -> Iterator[tuple[str, bytes]]:
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
            self._http.close_stream(resp)

    def events(self, job: str | None = None, *, since: int | None = None, follow: bool = True) -> Iterator[Transition]:
        """State transitions in commit order (Server-Sent Events): from now on, or after ``since``
        (a transition's seq; 0 for the whole history). ``follow=False`` ends at the present."""
        return self._events(self._http.stream(_path("events"), {"job": job, "since": since, "follow": follow}))

    def _events(self, resp) -> Iterator[Transition]:
        try:
            data: list[str] = []
            while line := resp.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith("data:"):
                    data.append(text[5:].lstrip())
                elif not text and data:
                    yield Transition.from_dict(json.loads("\n".join(data)))
                    data = []
        finally:
            self._http.close_stream(resp)

    # ------------------------------------------------------------------ waiting (long-polls)

    def _long_poll(self, request, what: str, timeout: float | None) -> Job:
        """``request(step)`` long-polls for at most ``step`` seconds; again until ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
            try:
                return self._job(request(round(step, 3)))
            except WaitTimeout as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(exc.job_id, what, timeout or 0) from None

    def _wait(self, ref: str, until: str, timeout: float | None) -> Job:
        def request(step: float) -> dict:
            return self._http.call("GET", _path("wait", ref), {"timeout": step, "until": until}, timeout=step + 30)

        return self._long_poll(request, until, timeout)

    def wait(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job is Done or Failed; WaitTimeout after ``timeout`` seconds."""
        return self._wait(ref, "finished", timeout)

    def wait_started(self, ref: str, timeout: float | None = None) -> Job:
        return self._wait(ref, "started", timeout)

    def wait_any(self, refs: Iterable[str], timeout: float | None = None) -> Job:
        ids = list(refs)
        if not ids:
            raise ValueError("wait_any needs at least one job")

        def request(step: float) -> dict:
            return self._http.call("POST", _path("wait_any"), body={"ids": ids, "timeout": step}, timeout=step + 30)

        return self._long_poll(request, "finished", timeout)

    def future(self, ref: str, *, until: str = "finished") -> "Future[Job]":
        """A future resolved with the Job once it finished (or started); one thread
        long-polls for it."""
        fut: Future = Future()
        job_id = self.info(ref).id

        def poll() -> None:
            try:
                fut.set_result(self._wait(job_id, until, None))
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
            finally:
                self.close()

        threading.Thread(target=poll, daemon=True, name="conveyor-client-future").start()
        return fut

    # ------------------------------------------------------------------ the node

    def queue(self, limit: int | None = None) -> dict:
        return self._http.call("GET", _path("queue"), {"limit": limit})

    def machine(self) -> dict:
        return self._http.call("GET", _path("machine"))

    def cleanup(self) -> dict[str, int]:
        return self._http.call("POST", _path("cleanup"), timeout=max(self._http.timeout, 600))

    # ------------------------------------------------------------------ data (README: Data)

    def filesets(self, ref: str, role: str = "output") -> dict[str, str]:
        if role != "output":
            return {i.target: i.source for i in self.info(ref).spec.inputs}
        return self._http.call("GET", _path("outputs", ref))["filesets"]

    def outputs(self, ref: str) -> list[dict]:
        return self._http.call("GET", _path("outputs", ref))["files"]

    def read_output(self, ref: str, path: str, out: BinaryIO | None = None) -> bytes | int:
        resp = self._http.stream(_path("read_output", ref), {"path": path})
        try:
            if out is None:
                return resp.read()
            n = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                n += len(chunk)
            return n
        finally:
            self._http.close_stream(resp)

    def restore_outputs(self, ref: str, target: str | os.PathLike) -> list[str]:
        """Write every output file under ``target`` (output /out lands in target/out), each
        verified by the agent as it is read. Nothing is written outside ``target``."""
        from ..cas import check_path

        written = []
        for f in self.outputs(ref):
            dest = Path(target, check_path(f["path"].lstrip("/")))
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(f".{dest.name}.partial")
            with open(partial, "wb") as out:
                self.read_output(ref, f["path"], out=out)
            os.chmod(partial, f["mode"] & 0o7777)
            os.replace(partial, dest)
            written.append(str(dest))
        return written

    def verify(self, ref: str | None = None) -> dict:
        return self._http.call("POST", _path("verify"), {"job": ref}, timeout=max(self._http.timeout, LONG))

    def gc(self, dry_run: bool = False, grace: float = 600.0) -> dict:
        return self._http.call("POST", _path("gc"), {"dry_run": dry_run, "grace": grace}, timeout=max(self._http.timeout, LONG))

    def load_image(self, path: str | os.PathLike) -> dict:
        """Send an image tarball (docker save) to the agent, which loads it into its engine."""
        with open(path, "rb") as f:
            result = self._http.call("POST", _path("load_image"), {"name": os.path.basename(str(path))},
                                     upload=f, timeout=max(self._http.timeout, LONG))
        return {**result, "file": str(path)}


def _spec_json(spec: JobSpec) -> dict:
    return spec.model_dump(mode="json", exclude_defaults=True)


def _list_params(states, labels) -> dict[str, Any] | None:
    """Query parameters of GET /jobs; None when no state was asked for (nothing matches)."""
    params: dict[str, Any] = {}
    if states is not None:
        params["state"] = [JobState(s).value for s in states]
        if not params["state"]:
            return None
    if labels:
        params["label"] = [f"{k}={v}" for k, v in labels.items()]
    return params
