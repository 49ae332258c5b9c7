"""The backend (driver) interface: a small fixed set of calls, modelled on Nomad's task drivers.

The rest of Conveyor speaks only this. Everything engine-specific lives in one package per
engine (``backends/docker``); nothing else imports an engine's SDK or catches its exceptions.
A driver reports failures with the engine-neutral errors below, and says what it can do in
its :class:`Capabilities`, so what it cannot do is refused with a clear error, never faked.

A *handle* is the driver's id for one job's container or process (the store keeps it as the
job's ``container_id``). The router (router.py) puts a node's drivers behind this same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterable, Iterator, Protocol

from ..errors import (  # noqa: F401 - the errors every driver raises, named with the interface
    ContainerNotFound,
    EngineConflict,
    EngineError,
    EngineUnavailable,
    ImageNotFound,
    InvalidSpec,
    NotSupported,
)

if TYPE_CHECKING:  # the spec models import pydantic; a Slurm step that runs a process needs neither
    import socket

    from ..spec import ExecSpec, JobSpec

# Labels every Conveyor container (and volume, network) carries: the engine is a witness
# from which a restarted executor can rediscover its work.
LABEL_MANAGED = "conveyor.managed"
LABEL_EXECUTOR = "conveyor.executor"
LABEL_JOB = "conveyor.job"
LABEL_NAME = "conveyor.name"
# An array task for an engine that runs arrays itself (capability arrays): the array's
# max-parallel (0: none), with its index range in the task's CONVEYOR_TASK_FIRST/LAST/STEP.
LABEL_ARRAY = "conveyor.array"
LABEL_TASK = "conveyor.task"
LABEL_ARRAY_MAX = "conveyor.array_max"
# A dependent handed to an engine that holds it for its dependencies (capability dependencies):
# "ok:<handle> any:<handle>" for each dependency not ended yet, by its condition.
LABEL_AFTER = "conveyor.after"


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do. The executor, the agent and clients ask this before using one."""

    pause: bool = False  # suspend/resume (the cgroup freezer)
    exec: bool = False  # run another command inside a running job
    gpus: frozenset[str] = frozenset()  # GPU vendors it can give jobs: nvidia, amd, intel
    ports: bool = False  # publish a job's ports on the node
    stdin: bool = False  # feed the caller's stdin to a job
    recover: bool = False  # find its jobs again after the agent restarts (list by label, events)
    files: bool = False  # read files out of a job (output capture)
    image_load: bool = False  # load image tarballs
    images: bool = False  # list, inspect and pull images by name (the engine's own documents)
    stats: bool = False  # resource usage of a running job, the engine's own document
    # usage(handle): CPU, memory (and its peak), block and network IO, pids of a running job in
    # Conveyor's own terms (backends/usage.py), cheap enough for the sampler to read every job
    usage: bool = False
    top: bool = False  # the processes of a running job (docker top)
    tty: bool = False  # give a job a terminal, and resize it
    signals: bool = False  # send a job any signal (kill -s); without it only cancel (TERM, grace, KILL) stops it
    oom: bool = False  # tell an OOM kill from other ends (without it, an OOM kill is a plain exit 137)
    # The engine keeps a queue of its own (Slurm, Swarm): a started job may wait there, and is
    # Queued (Substate.ENGINE_QUEUED, the engine's reason as its message) until it runs.
    queues: bool = False
    # The engine runs an array as one array job of its own and limits its tasks to max-parallel
    # itself (Slurm's --array=...%max): Conveyor hands tasks over without counting them.
    arrays: bool = False
    # The engine holds a job until jobs it depends on have ended (Slurm's --dependency): a
    # dependent is handed over once its dependencies are in the engine, not once they ended.
    dependencies: bool = False

    def to_dict(self) -> dict:
        return {k: sorted(v) if isinstance(v, frozenset) else v for k, v in self.__dict__.items()}

    def require(self, backend: str, capability: str, what: str) -> None:
        """Raise NotSupported unless this driver has ``capability``."""
        if not getattr(self, capability):
            raise NotSupported(f"the {backend} backend cannot {what} (capability {capability!r})")


@dataclass(frozen=True)
class ContainerStatus:
    """What the engine says about a container, in engine-neutral terms."""

    id: str
    status: str  # created | running | paused | restarting | exited | dead | removing
    exit_code: int | None
    oom_killed: bool
    started_at: float | None
    finished_at: float | None
    error: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # The engine could not start the job's process (``error`` says why): an engine that starts
    # jobs asynchronously (swarm) reports it here, where docker's start call raises it.
    start_failed: bool = False
    node: str | None = None  # the machine it runs on, for an engine with several (swarm)
    timed_out: bool = False  # the engine ended it at a time limit of its own (Slurm's --time)
    # How it runs, for its provenance, where the engine tells: the image it was made from, by
    # content (an id, not the tag that may have moved since), and its OCI runtime (runc, runsc, ...)
    image_id: str | None = None
    runtime: str | None = None

    @property
    def alive(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    @property
    def queued(self) -> bool:
        """Started, but its engine still queues it (no process yet; ``error`` says why): how an
        engine with a queue of its own (Slurm, Swarm) reports a job waiting for a node."""
        return self.status == "running" and self.started_at is None

    @property
    def finished(self) -> bool:
        return self.status in ("exited", "dead") and self.finished_at is not None


@dataclass(frozen=True)
class EngineEvent:
    action: str  # start | die | oom | pause | unpause | destroy | queued (a new reason to wait) | ...
    container_id: str
    job_id: str | None
    time: float
    node: str | None = None  # a start's machine, for an engine with several (swarm)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class ExecProcess(Protocol):
    """A command started inside a running job (``Backend.open_exec``), as its caller drives it:
    its output as it comes (stdout and stderr apart, or one terminal stream), its stdin, its
    terminal's size and its exit code. The Executor's and the Client's exec sessions have this
    shape too, so :func:`collect` runs any of them to its end."""

    def read(self) -> tuple[str, bytes] | None:
        """The next ``(stream, chunk)`` of its output ("stdout" or "stderr"; a terminal's is
        all "stdout"); None once its output has ended."""

    def write(self, data: bytes) -> None:
        """Send bytes to its stdin (opened with ``stdin``); lost if it has ended."""

    def close_stdin(self) -> None:
        """End its stdin: it reads EOF."""

    def resize(self, height: int, width: int) -> None:
        """Set its terminal's size (opened with ``tty``)."""

    def wait(self) -> int:
        """Its exit code, once its output has ended (126: it could not be run; 127: no such
        program, as docker exec says)."""

    def close(self) -> None:
        """Let go of it (a command still running goes on, as with docker exec)."""


def collect(process: ExecProcess, stdin: bytes | None = None) -> ExecResult:
    """Run ``process`` to its end: ``stdin`` written (by a thread: a command may write a lot
    before it reads) and closed, its output gathered, its exit code."""
    import threading

    if stdin is not None:
        def feed() -> None:
            process.write(stdin)
            process.close_stdin()

        threading.Thread(target=feed, daemon=True, name="conveyor-exec-stdin").start()
    out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    try:
        while (item := process.read()) is not None:
            out[item[0]].append(item[1])
        code = process.wait()
    finally:
        process.close()
    return ExecResult(code, b"".join(out["stdout"]), b"".join(out["stderr"]))
class NoUsage:
    """For a driver whose jobs run where this process cannot look (on another node): no usage
    (capability usage) and no processes (capability top)."""

    name: str

    def usage(self, handle: str) -> dict | None:
        return None

    def top(self, handle: str) -> dict:
        raise NotSupported(f"the {self.name} backend cannot list a job's processes (capability 'top')")


class Backend(Protocol):
    """A driver. Every call raises EngineUnavailable when the engine cannot be reached (or
    the connection breaks mid-stream), and EngineError when it refuses, in the engine's words:
    ContainerNotFound when the handle's container does not exist, EngineConflict when the
    engine's state forbids the call (a container of that name exists; the container is not
    running, already paused, ...)."""

    name: str
    capabilities: Capabilities
    # Optional: how to get a capability this driver lacks as configured, by capability (swarm's
    # files: "set [engine] shared_dir"); the refusal of a job that needs it says so.
    capability_hints: dict[str, str]
    # With capability ``arrays`` only: ``close_array(array_id)``, called once every task of an
    # array has ended in Conveyor, ends what of the engine's array job was never started.
    # Optional with capability ``queues``: ``hold(handle)`` takes a job the engine still queues
    # back out of its queue, held until ``start`` (EngineConflict once it runs); without it such
    # a job cannot be held (cancel it).

    def version(self) -> dict:
        """The engine: {"name", "version", "api_version"}."""

    # ---- images
    def ensure_image(self, spec: JobSpec, refresh: bool = True) -> None:
        """Make the spec's image present as its pull policy says (ImageNotFound if it cannot)."""

    def load_image(self, chunks: Iterable[bytes]) -> list[str]:
        """Load an image tarball (docker save format); the image ids it held."""

    def image_tags(self, image_id: str) -> list[str]: ...

    # The engine's own documents, passed through as it wrote them (Docker: its Engine API's), for
    # callers that speak that engine's language (a docker stand-in); nothing here interprets them.
    def images(self) -> list[dict]:
        """The engine's image summaries (Docker: GET /images/json)."""

    def image_inspect(self, name: str) -> dict | None:
        """One image as the engine describes it (Docker: GET /images/{name}/json); None when
        it has no such image."""

    def pull(self, name: str) -> Iterator[dict]:
        """Pull ``name`` (no tag means ``:latest``; a digest reference works too), yielding the
        engine's progress messages as they come. A failure, before the first message or
        after, raises ImageNotFound (no such image there) or EngineError, in the engine's words."""

    def engine(self) -> dict:
        """The engine as it describes itself: ``{"version": ..., "info": ...}`` (Docker: GET
        /version and GET /info)."""

    def runtimes(self) -> dict[str, dict]:
        """The OCI runtimes a container engine offers, by name (e.g. runc, runsc)."""

    def nodes(self) -> list[dict] | None:
        """The nodes of an engine that places jobs on several machines (swarm): each one's
        ``name``, ``id``, ``role``, ``state``, ``availability``, ``address``, ``labels``,
        ``cpus``, ``memory`` and this executor's ``running`` jobs there; None for one machine."""

    def check(self, spec: JobSpec) -> None:
        """Refuse, before anything is made, a spec that asks for what this driver cannot do:
        InvalidSpec naming the field and the fix (its backend options are validated already)."""

    # ---- lifecycle
    def create(self, job_id: str, spec: JobSpec) -> str:
        """Create (not start) the job's container, named after the job; its handle.
        EngineConflict when one of that name exists; ImageNotFound when the image is gone."""

    def start(self, handle: str) -> None: ...

    def stop(self, handle: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns when it has stopped."""

    def signal(self, handle: str, signal: str) -> None: ...
    def pause(self, handle: str) -> None: ...
    def unpause(self, handle: str) -> None: ...

    def inspect(self, handle: str) -> ContainerStatus | None:
        """The container's status; None when it does not exist."""

    def find(self, job_id: str) -> ContainerStatus | None:
        """The container ``create`` made for the job, if it exists (e.g. made before a crash
        whose handle was never recorded)."""

    def remove(self, handle: str) -> None:
        """Remove the container (and its anonymous volumes); one already gone is fine."""

    def stats(self, handle: str) -> dict:
        """One sample of the container's resource usage, the engine's own document (Docker: GET
        /containers/{id}/stats?stream=false, whose precpu_stats holds the sample before, so CPU
        use can be computed from it alone); ContainerNotFound when it is gone."""

    def open_exec(self, handle: str, spec: ExecSpec) -> ExecProcess:
        """Start ``spec``'s command inside a running job and hand it over as it runs (with a
        terminal of its console_size when tty); EngineConflict when the job is not running.
        :func:`collect` runs it to its end."""

    def open_port(self, handle: str, port: int) -> "socket.socket":
        """A TCP connection, made from this machine, to ``port`` of a running job (its address
        on its network); EngineError when it has none or nothing answers there."""

    def usage(self, handle: str) -> dict | None:
        """One sample of a running job's usage (backends/usage.py: the engine-neutral form), read
        now; None when it is not running (or gone). Must be cheap: the sampler reads every
        running job with it."""

    def top(self, handle: str) -> dict:
        """The processes of a running job: ``{"titles": [...], "processes": [[...], ...]}``, as
        ``ps`` prints them (Docker: GET /containers/{id}/top); EngineConflict when it is not running."""

    # ---- input, output, logs
    def resize(self, handle: str, height: int, width: int) -> None:
        """Set the job's terminal size (a job made with a tty)."""

    def attach_output(self, handle: str) -> BinaryIO:
        """A tty job's output from now on, raw, as its terminal writes it (opened before start,
        nothing is missed); reads return b"" once the job's terminal closes."""

    def attach_stdin(self, handle: str, source: BinaryIO) -> None:
        """Copy ``source`` into the job's stdin in the background, closing it at EOF. Raises
        if the attach fails; a failure while copying ends the copy (the job sees EOF)."""

    def save_logs(self, handle: str, paths: dict[str, Path]) -> dict[str, int]:
        """Save each stream ("stdout", "stderr") to its path, atomically, with its times
        index (logtimes); the bytes saved per stream."""

    def follow_logs(self, handle: str, streams: tuple[str, ...], tail: int | None, follow: bool,
                    timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
        """``(stream, chunk)`` from the engine's log, stdout and stderr apart."""

    def read_archive(self, handle: str, path: str) -> BinaryIO | None:
        """A tar stream of ``path`` inside the container (running or not); None if absent.
        Reading it raises EngineUnavailable if the connection breaks; the caller closes it."""

    # ---- recover and watch
    def list(self) -> list[ContainerStatus]:
        """Every container this executor made, alive or not (found by label)."""

    def events(self, since: float | None) -> Iterator[EngineEvent]:
        """Container events of this executor; subscribed when this returns. Iterating raises
        EngineUnavailable when the stream breaks or close_events() ends it."""

    def close_events(self) -> None: ...

    # ---- cleanup
    def cleanup(self) -> dict[str, int]:
        """Remove the volumes and networks this executor made: counts by kind."""
