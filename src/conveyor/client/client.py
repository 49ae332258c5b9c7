"""Client: the Executor's interface, served by a running agent (`conveyor serve`).

    from conveyor import Client, Executor, JobSpec
    ex = Executor()                        # embedded: this process runs the jobs
    ex = Client()                          # the agent of the same state directory (unix socket)
    ex = Client(url="http://10.0.0.5:8471", token="...")   # an agent elsewhere
    job = ex.run(JobSpec(image="busybox", command=["echo", "hi"]))

Same methods (:class:`~conveyor.interface.ExecutorInterface`), same
:class:`~conveyor.job.Job` results, same errors as :class:`~conveyor.executor.Executor`. This is
the model layer over :class:`.api.AgentAPI` (the requests): JobSpec in, Job out, one line
each; the job-control verbs and their array forms come from :mod:`conveyor.operations`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from concurrent.futures import Future
from typing import Any, BinaryIO, Iterable, Iterator

from ..arguments import ARRAY_ID, job_ref, job_refs, job_spec, tcp_port
from ..errors import ConveyorError
from ..job import Job, Transition
from ..operations import Verb, with_verbs
from ..backends.base import ExecResult, collect
from ..spec import ExecSpec, JobSpec
from ..state import JobState
from .api import AgentAPI, list_query
from .parts import DataCalls, LeaseCalls, NodeCalls
from .streams import ExecSocket, PortSocket

STREAMS = ("stdout", "stderr")


@dataclasses.dataclass(frozen=True)
class RemoteJob(Job):
    """A Job whose stdout/stderr are fetched from the agent when its files are not local."""

    client: "Client | None" = dataclasses.field(default=None, repr=False, compare=False)

    def _read(self, stream: str) -> bytes:
        if self.client is None or self.client.local:
            return super()._read(stream)
        return b"".join(chunk for _, chunk in self.client.logs(self.id, stream))


@with_verbs
class Client(NodeCalls, DataCalls, LeaseCalls):
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
        self.api = AgentAPI(home, url=url, token=token, timeout=timeout)
        self.url, self.local = self.api.url, self.api.local
        self.root = self.api.root if self.local else None
        self._info: dict | None = None

    def close(self) -> None:
        """Drop this thread's connection. The agent and its jobs are not affected."""
        self.api.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _job(self, data: dict) -> Job:
        return RemoteJob(**Job.fields_from_dict(data), client=self)

    # ------------------------------------------------------------------ the agent

    def agent_info(self) -> dict:
        """The agent: version, pid, state directory, executor id, backend, policy."""
        return self.api.agent_info()

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
        return self.api.ping()

    # ------------------------------------------------------------------ submit and run

    def ensure_image(self, spec: JobSpec) -> None:
        self.api.ensure_image(_spec_json("ensure_image", spec))

    def submit(self, spec: JobSpec, *, hold: bool = False, idempotency_key: str | None = None, image_ready: bool = False) -> str:
        return self.api.submit(_spec_json("submit", spec), hold=hold, idempotency_key=idempotency_key,
                               image_ready=image_ready)["id"]

    def submit_many(self, specs: list[JobSpec], *, hold: bool = False, image_ready: bool = False) -> list[str]:
        texts: dict[int, dict] = {}  # one spec object given many times is serialised once
        for spec in specs:
            if id(spec) not in texts:
                texts[id(spec)] = _spec_json("submit_many", spec)
        return self.api.submit_many([texts[id(spec)] for spec in specs], hold=hold, image_ready=image_ready)

    def submit_array(
        self, spec: JobSpec, begin: int, end: int, step: int = 1, max_parallel: int | None = None,
        *, hold: bool = False, image_ready: bool = False,
    ) -> str:
        return self.api.submit_array(_spec_json("submit_array", spec), begin, end, step, max_parallel, hold=hold,
                                     image_ready=image_ready)["id"]

    def start(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        stdin: BinaryIO | None = None,
        image_ready: bool = False,
    ) -> str:
        """Submit and return once the job runs (or failed to start); ``stdin`` (with
        ``stdin_open`` in the spec) is streamed to it through the agent."""
        job_spec("start", spec)
        job_id = self.submit(spec, idempotency_key=idempotency_key, image_ready=image_ready)
        job = self.wait_started(job_id)
        if stdin is not None and spec.stdin_open and not job.state.is_final:
            self.attach_stdin(job_id, stdin)
        return job_id

    def attach_stdin(self, ref: str, source: BinaryIO) -> None:
        """Copy ``source`` to the job's stdin through the agent, in the background."""
        job_ref("attach_stdin", ref)

        def send() -> None:
            try:
                self.api.send_stdin(ref, source)
            except ConveyorError:
                pass  # it ended before it read everything

        threading.Thread(target=send, daemon=True, name="conveyor-stdin").start()

    def run(self, spec: JobSpec, timeout: float | None = None) -> Job:
        return self.wait(self.start(job_spec("run", spec)), timeout=timeout)

    def open_exec(self, ref: str, command: list[str], *, stdin: bool = False, tty: bool = False,
                  env: dict[str, str] | None = None, user: str | None = None, workdir: str | None = None,
                  console_size: tuple[int, int] | None = None) -> ExecSocket:
        """Start ``command`` in a running job (the agent's exec WebSocket); the Executor's methods."""
        job_ref("open_exec", ref)
        spec = ExecSpec(command=command, stdin=stdin, tty=tty, env=env or {}, user=user, workdir=workdir,
                        console_size=console_size)
        return self.api.open_exec(ref, spec.model_dump(mode="json", exclude_defaults=True))

    def exec(self, ref: str, command: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None,
             user: str | None = None, workdir: str | None = None) -> ExecResult:
        """Run ``command`` in a running job to its end: its exit code, stdout and stderr."""
        job_ref("exec", ref)
        return collect(self.open_exec(ref, command, stdin=stdin is not None, env=env, user=user, workdir=workdir), stdin)

    def open_port(self, ref: str, port: int) -> PortSocket:
        """A connection to TCP ``port`` of a running job (the agent's port-forward WebSocket)."""
        job_ref("open_port", ref)
        tcp_port(port)
        return self.api.open_port(ref, port)

    # ------------------------------------------------------------------ verbs (operations.VERBS)

    def _perform(self, verb: Verb, ref: str, params: dict[str, Any], wait: bool) -> Job | None:
        job_ref(verb.name, ref)  # the top of every verb method (operations.job_form)
        answer = self.api.perform(verb, ref, params)
        if not verb.returns_job:
            return None
        job = self._job(answer)
        return self.wait(job.id) if wait else job

    def _apply_to_array(self, verb: Verb, ref: str, params: dict[str, Any]) -> dict:
        job_ref(f"{verb.name}_array", ref, ARRAY_ID)  # the top of every <verb>_array method
        return self.api.perform_array(verb, ref, params)

    # ------------------------------------------------------------------ reading

    def info(self, ref: str) -> Job:
        return self._job(self.api.info(job_ref("info", ref)))

    def list(
        self,
        states: Iterable[JobState | str] | None = None,
        labels: dict[str, str | None] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
        ids: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        images: Iterable[str] | None = None,
        exit_codes: Iterable[int] | None = None,
        before: str | None = None,
        since: str | None = None,
    ) -> list[Job]:
        params = list_query(_state_names(states), labels, newest_first=newest_first, ids=ids, names=names,
                            images=images, exit_codes=exit_codes, before=before, since=since)
        return [] if params is None else [self._job(j) for j in self.api.list_all(params, limit=limit, offset=offset)]

    def count(
        self,
        states: Iterable[JobState | str] | None = None,
        labels: dict[str, str | None] | None = None,
        *,
        ids: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        images: Iterable[str] | None = None,
        exit_codes: Iterable[int] | None = None,
        before: str | None = None,
        since: str | None = None,
    ) -> int:
        params = list_query(_state_names(states), labels, ids=ids, names=names, images=images, exit_codes=exit_codes,
                            before=before, since=since)
        return 0 if params is None else self.api.list({**params, "limit": 1, "offset": 0})["total"]

    def attempts(self, ref: str) -> list[dict]:
        return self.api.attempts(job_ref("attempts", ref))

    def provenance(self, ref: str, attempt: int | None = None) -> dict:
        """Where and how a job's attempt ran (the last by default)."""
        return self.api.provenance(job_ref("provenance", ref), attempt)

    def provenance_diff(self, a: str, b: str) -> dict:
        """What differs between the provenance of two jobs, field by field."""
        return self.api.provenance_diff(job_ref("provenance_diff", a), job_ref("provenance_diff", b))

    def array(self, ref: str) -> dict:
        return self.api.array(job_ref("array", ref, ARRAY_ID))

    def array_tasks(self, ref: str) -> list[tuple[str, int, JobState]]:
        return [(t["id"], t["index"], JobState(t["state"])) for t in self.api.array_tasks(job_ref("array_tasks", ref, ARRAY_ID))]

    def logs(
        self, ref: str, stream: str = "all", *, tail: int | None = None, follow: bool = False, timestamps: bool = False
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` pairs, stdout and stderr kept apart (streamed over HTTP)."""
        job_ref("logs", ref)
        if stream not in (*STREAMS, "all"):
            raise ValueError("stream must be 'stdout', 'stderr' or 'all'")
        return self.api.logs(ref, stream, tail=tail, follow=follow, timestamps=timestamps)

    def events(self, job: str | None = None, *, since: int | None = None, follow: bool = True,
               since_time: float | None = None) -> Iterator[Transition]:
        """State transitions in commit order (Server-Sent Events): from now on, or after ``since``
        (a transition's seq; 0 for the whole history), or from time ``since_time`` (Unix
        seconds). ``follow=False`` ends at the present."""
        if job is not None:
            job_ref("events", job)
        return (Transition.from_dict(t) for t in self.api.events(job, since=since, follow=follow, since_time=since_time))

    # ------------------------------------------------------------------ waiting (long-polls)

    def wait(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job is Done or Failed; WaitTimeout after ``timeout`` seconds."""
        return self._job(self.api.wait(job_ref("wait", ref), "finished", timeout))

    def wait_started(self, ref: str, timeout: float | None = None) -> Job:
        return self._job(self.api.wait(job_ref("wait_started", ref), "started", timeout))

    def wait_any(self, refs: Iterable[str], timeout: float | None = None) -> Job:
        ids = job_refs("wait_any", refs)
        if not ids:
            raise ValueError("wait_any needs at least one job")
        return self._job(self.api.wait_any(ids, timeout))

    def future(self, ref: str, *, until: str = "finished") -> "Future[Job]":
        """A future resolved with the Job once it finished (or started); one thread
        long-polls for it."""
        fut: Future = Future()
        job_id = self.info(job_ref("future", ref)).id

        def poll() -> None:
            try:
                fut.set_result(self._job(self.api.wait(job_id, until, None)))
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
            finally:
                self.close()

        threading.Thread(target=poll, daemon=True, name="conveyor-client-future").start()
        return fut


def _spec_json(method: str, spec: JobSpec) -> dict:
    return job_spec(method, spec).model_dump(mode="json", exclude_defaults=True)


def _state_names(states: Iterable[JobState | str] | None) -> list[str] | None:
    return None if states is None else [JobState(s).value for s in states]
