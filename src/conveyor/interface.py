"""The one interface of Conveyor's Python API, shared by the embedded Executor and the
remote Client: code written against it runs the same with either.

    def nightly(ex: ExecutorInterface) -> None:
        job = ex.run(JobSpec(image="busybox", command=["true"]))

``tests/test_interface.py`` checks that both classes have every member with this signature.
The job-control verbs (hold, cancel, ...) and their array forms are declared in
:mod:`conveyor.operations`; their signatures here must match that table (also checked).
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from typing import TYPE_CHECKING, BinaryIO, Iterable, Iterator, Protocol

if TYPE_CHECKING:
    import contextlib
    import socket

    from .backends.base import Capabilities, ExecProcess, ExecResult
    from .leasing import Lease
    from .job import Job, Transition
    from .spec import JobSpec
    from .state import JobState


class ExecutorInterface(Protocol):
    executor_id: str  # the persistent id the engine's labels carry
    supervising: bool  # this object's own process supervises the jobs (an embedded supervisor)

    def close(self) -> None: ...
    def __enter__(self) -> "ExecutorInterface": ...
    def __exit__(self, *exc: object) -> None: ...

    def capabilities(self) -> "Capabilities":
        """What the node's backend can do (pause, exec, GPUs, ports, stdin, ...)."""

    # ---- submit and run
    def ensure_image(self, spec: "JobSpec") -> None:
        """Make the spec's image present on the node, as its pull policy says."""

    def submit(self, spec: "JobSpec", *, hold: bool = False, idempotency_key: str | None = None,
               image_ready: bool = False) -> str:
        """Queue a job (QueuedHeld with ``hold``) and return its id at once."""

    def submit_many(self, specs: "list[JobSpec]", *, hold: bool = False, image_ready: bool = False) -> list[str]:
        """Queue many jobs in one request and one transaction (all, or none); their ids."""

    def submit_array(self, spec: "JobSpec", begin: int, end: int, step: int = 1, max_parallel: int | None = None,
                     *, hold: bool = False, image_ready: bool = False) -> str:
        """Queue one task per index in ``begin..end`` by ``step``; return the array id."""

    def start(self, spec: "JobSpec", *, idempotency_key: str | None = None, stdin: BinaryIO | None = None,
              image_ready: bool = False) -> str:
        """Submit a job and return its id once it runs (or failed to start)."""

    def run(self, spec: "JobSpec", timeout: float | None = None) -> "Job":
        """Start a job and wait for its end."""

    # ---- reading
    def info(self, ref: str) -> "Job": ...
    def list(self, states: "Iterable[JobState | str] | None" = None, labels: dict[str, str | None] | None = None, *,
             limit: int | None = None, offset: int = 0, newest_first: bool = False,
             ids: Iterable[str] | None = None, names: Iterable[str] | None = None,
             images: Iterable[str] | None = None, exit_codes: Iterable[int] | None = None,
             before: str | None = None, since: str | None = None) -> "list[Job]":
        """Jobs oldest first (``newest_first``: the most recent first, as ``docker ps``), only those
        every given filter matches; the values of one filter are alternatives. ``labels``: KEY:
        VALUE, or KEY: None for any value (all must match). ``ids``: id prefixes. ``names``:
        regular expressions searched in the name (and in "/name"). ``images``: references
        (busybox = busybox:latest). ``exit_codes``. ``before``/``since``: a job (id, prefix or
        name) the listed ones were created before / after. An empty filter matches nothing."""
    def count(self, states: "Iterable[JobState | str] | None" = None, labels: dict[str, str | None] | None = None, *,
              ids: Iterable[str] | None = None, names: Iterable[str] | None = None,
              images: Iterable[str] | None = None, exit_codes: Iterable[int] | None = None,
              before: str | None = None, since: str | None = None) -> int:
        """How many jobs list() would return with these filters and no limit."""
    def attempts(self, ref: str) -> list[dict]: ...
    def provenance(self, ref: str, attempt: int | None = None) -> dict: ...
    def provenance_diff(self, a: str, b: str) -> dict: ...
    def logs(self, ref: str, stream: str = "all", *, tail: int | None = None, follow: bool = False,
             timestamps: bool = False) -> Iterator[tuple[str, bytes]]: ...
    def events(self, job: str | None = None, *, since: int | None = None,
               follow: bool = True, since_time: float | None = None) -> "Iterator[Transition]": ...

    # ---- waiting
    def future(self, ref: str, *, until: str = "finished") -> "Future[Job]":
        """Resolved with the Job once it has finished (or, with until="started", started)."""
    def wait(self, ref: str, timeout: float | None = None) -> "Job": ...
    def wait_started(self, ref: str, timeout: float | None = None) -> "Job": ...
    def wait_any(self, refs: Iterable[str], timeout: float | None = None) -> "Job": ...

    # ---- control (operations.VERBS)
    def hold(self, ref: str) -> "Job": ...
    def release(self, ref: str) -> "Job": ...
    def suspend(self, ref: str) -> "Job": ...
    def resume(self, ref: str) -> "Job": ...
    def cancel(self, ref: str, grace: float | None = None, *, wait: bool = True) -> "Job": ...
    def remove(self, ref: str, force: bool = False) -> None: ...
    def discard_container(self, ref: str) -> None: ...
    def resize(self, ref: str, height: int, width: int) -> None: ...
    def signal(self, ref: str, signal: str = "KILL") -> "Job": ...

    def attach_stdin(self, ref: str, source: BinaryIO) -> None:
        """Copy ``source`` to a running job's stdin in the background (the job sees EOF at its
        end); the job must have been submitted with ``stdin_open``."""

    # ---- commands inside a running job (docker exec)
    def open_exec(self, ref: str, command: list[str], *, stdin: bool = False, tty: bool = False,
                  env: dict[str, str] | None = None, user: str | None = None, workdir: str | None = None,
                  console_size: tuple[int, int] | None = None) -> "ExecProcess":
        """Start ``command`` in a running job and hand it over as it runs: ``read()`` its output
        (``(stream, chunk)``, None at its end), ``write()``/``close_stdin()`` with ``stdin``,
        ``resize()`` with ``tty``, ``wait()`` for its exit code, ``close()``. Recorded in the
        job's events. InvalidState, saying why, when the job is not running."""
    def exec(self, ref: str, command: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None,
             user: str | None = None, workdir: str | None = None) -> "ExecResult":
        """Run ``command`` in a running job to its end: its exit code, stdout and stderr."""

    def open_port(self, ref: str, port: int) -> "socket.socket":
        """A connection to TCP ``port`` of a running job (a socket, or through the agent an
        object with its ``recv``, ``sendall``, ``shutdown`` and ``close``). Refused, saying
        why, for a job that is not running or runs with network none."""

    # ---- arrays
    def array(self, ref: str) -> dict: ...
    def array_tasks(self, ref: str) -> "list[tuple[str, int, JobState]]": ...
    def hold_array(self, ref: str) -> dict: ...
    def release_array(self, ref: str) -> dict: ...
    def suspend_array(self, ref: str) -> dict: ...
    def resume_array(self, ref: str) -> dict: ...
    def cancel_array(self, ref: str, grace: float | None = None) -> dict: ...

    # ---- the node
    def queue(self, limit: int | None = None) -> dict: ...
    def machine(self) -> dict: ...
    def usage(self, jobs: list[str] | None = None, series: bool = False) -> list[dict]:
        """Each job's usage: a sample read now, its totals and, with ``series``, the samples kept."""
    def top(self, ref: str) -> dict:
        """{"job", "titles", "processes"}: the processes in a running job."""
    def metrics(self) -> str: ...
    def backends(self) -> list[dict]: ...
    def cleanup(self) -> dict[str, int]: ...

    # ---- leases (README: Leases)
    def lease_create(self, cpus: float = 0.0, memory: int | str = 0, gpus: int = 0, keepalive: float | str = 30.0,
                     labels: dict[str, str] | None = None, gpu_vendor: str = "nvidia") -> dict: ...
    def lease(self, cpus: float = 0.0, memory: int | str = 0, gpus: int = 0, keepalive: float | str = 30.0,
              labels: dict[str, str] | None = None, drain: bool = False) -> "contextlib.AbstractContextManager[Lease]": ...
    def lease_list(self, all: bool = False) -> list[dict]: ...
    def lease_info(self, ref: str) -> dict: ...
    def lease_renew(self, ref: str) -> dict: ...
    def lease_resize(self, ref: str, cpus: float | None = None, memory: int | str | None = None) -> dict: ...
    def lease_release(self, ref: str, drain: bool = False) -> dict: ...

    # ---- the engine's own documents (Docker: its Engine API's), passed through
    def images(self) -> list[dict]:
        """The engine's image summaries (Docker: GET /images/json)."""
    def image_inspect(self, name: str) -> dict:
        """One image as the engine describes it; ImageNotFound when it has none."""
    def pull(self, name: str) -> Iterator[dict]:
        """Pull an image: the engine's progress messages as they come."""
    def engine(self) -> dict:
        """{"version": ..., "info": ...}: the engine as it describes itself."""
    def stats(self, ref: str) -> dict:
        """{"job": id, "stats": one sample of its resource usage, or None unless it runs}."""

    # ---- data
    def filesets(self, ref: str, role: str = "output") -> dict[str, str]: ...
    def outputs(self, ref: str) -> list[dict]: ...
    def read_output(self, ref: str, path: str, out: BinaryIO | None = None) -> bytes | int: ...
    def restore_outputs(self, ref: str, target: str | os.PathLike) -> list[str]: ...
    def verify(self, ref: str | None = None) -> dict: ...
    def gc(self, dry_run: bool = False, grace: float = 600.0) -> dict: ...
    def prune(self, dry_run: bool = False, until: float | None = None) -> dict: ...
    def fsck(self, repair: bool = False) -> dict: ...
    def load_image(self, path: str | os.PathLike) -> dict: ...
