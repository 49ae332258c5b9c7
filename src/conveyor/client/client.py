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

import os
from typing import Any, BinaryIO
from urllib.parse import quote

from ..agent import home_root, socket_path
from ..agent.auth import read_token
from ..arguments import ARRAY_ID, job_ref, job_spec
from ..errors import AgentError, ConveyorError
from ..job import Job
from ..operations import Verb, with_verbs
from ..spec import JobSpec
from .base import route
from .data import DataMixin
from .reading import ReadMixin
from .transport import Transport
from .waiting import WaitMixin

LONG = 3600.0  # requests that may pull an image


@with_verbs
class Client(ReadMixin, WaitMixin, DataMixin):
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

    # ------------------------------------------------------------------ the agent

    def agent_info(self) -> dict:
        """The agent: version, pid, state directory, executor id, backend, policy."""
        return self._http.call("GET", route("agent_info"))

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
            return bool(self._http.call("GET", route("ping"), timeout=5).get("ok"))
        except AgentError:
            return False

    # ------------------------------------------------------------------ submit and run

    def ensure_image(self, spec: JobSpec) -> None:
        """Make the spec's image present on the agent's node (its pull policy applies)."""
        job_spec("ensure_image", spec)
        self._http.call("POST", route("ensure_image"), body={"spec": _spec_json(spec)}, timeout=max(self._http.timeout, LONG))

    def submit(self, spec: JobSpec, *, hold: bool = False, idempotency_key: str | None = None, image_ready: bool = False) -> str:
        job_spec("submit", spec)
        body = {"spec": _spec_json(spec), "hold": hold, "idempotency_key": idempotency_key}
        # the agent checks (and pulls) the image itself: allow a pull's time
        return self._http.call("POST", route("submit"), body=body, timeout=max(self._http.timeout, LONG))["id"]

    def submit_array(
        self, spec: JobSpec, begin: int, end: int, step: int = 1, max_parallel: int | None = None,
        *, hold: bool = False, image_ready: bool = False,
    ) -> str:
        """Queue one task per index in ``begin..end`` by ``step``; return the array id."""
        job_spec("submit_array", spec)
        body = {"spec": _spec_json(spec), "begin": begin, "end": end, "step": step, "max_parallel": max_parallel, "hold": hold}
        return self._http.call("POST", route("submit_array"), body=body, timeout=max(self._http.timeout, LONG))["id"]

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
        job_spec("start", spec)
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
        job_spec("run", spec)
        return self.wait(self.start(spec), timeout=timeout)

    # ------------------------------------------------------------------ verbs (operations.VERBS)

    def _perform(self, verb: Verb, ref: str, params: dict[str, Any], wait: bool) -> Job | None:
        job_ref(verb.name, ref)  # the top of every verb method (operations.job_form)
        timeout = max(self._http.timeout, 120) if verb.method == "DELETE" else None
        path = verb.route.replace("{ref}", quote(str(ref), safe=""))
        answer = self._http.call(verb.method, path, params, timeout=timeout)
        if not verb.returns_job:
            return None
        job = self._job(answer)
        return self.wait(job.id) if wait else job

    def _apply_to_array(self, verb: Verb, ref: str, params: dict[str, Any]) -> dict:
        job_ref(f"{verb.name}_array", ref, ARRAY_ID)  # the top of every <verb>_array method
        path = verb.array_route.replace("{ref}", quote(str(ref), safe=""))
        return self._http.call("POST", path, params, timeout=max(self._http.timeout, 600))

    # ------------------------------------------------------------------ the node

    def queue(self, limit: int | None = None) -> dict:
        return self._http.call("GET", route("queue"), {"limit": limit})

    def machine(self) -> dict:
        return self._http.call("GET", route("machine"))

    def cleanup(self) -> dict[str, int]:
        return self._http.call("POST", route("cleanup"), timeout=max(self._http.timeout, 600))

def _spec_json(spec: JobSpec) -> dict:
    return spec.model_dump(mode="json", exclude_defaults=True)
