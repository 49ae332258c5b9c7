"""Every backend of a node behind the one Backend interface.

A node has at most one container engine (``[engine] name``: docker or podman, or none) and the
process backend. A job runs on the backend its spec names (``backend:``) or, naming none, on the
node's engine. The runtime and the executor hold one :class:`BackendRouter` and speak the Backend
interface to it, as they would to a single driver: a ``create`` goes where the job's spec says,
and every later call goes where its handle says. An engine's handle is its container id as the
engine gave it (the id docker users see); the process backend's handles carry ``process:``.

Why one router and not one runtime per backend: the scheduler admits every job against one
capacity and the watcher reconciles one store, whichever backend runs the job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from ..errors import InvalidSpec, NotSupported
from ..spec import JobSpec
from .base import Backend, Capabilities, ContainerStatus, EngineEvent, EngineUnavailable

PROCESS = "process"
PROCESS_PREFIX = "process:"


class _UsageCalls:
    """Part of BackendRouter: a job's usage and processes, where its handle says."""

    _route: Callable[[str], tuple[Backend, str, str]]
    _call: Callable[..., Any]

    def usage(self, handle: str) -> dict | None:
        """None also for a job whose backend cannot say (capability usage): the sampler asks
        about every running job, whatever runs it."""
        backend, _, _ = self._route(handle)
        return self._call("usage", handle) if backend.capabilities.usage else None

    def top(self, handle: str) -> dict:
        return self._call("top", handle)


class BackendRouter(_UsageCalls):
    """The node's backends as one. ``engine``: "docker", "podman" or "none"; ``engine_backend``
    replaces the engine's driver (tests inject one)."""

    def __init__(
        self,
        executor_id: str,
        root: Path,
        engine: str = "docker",
        url: str | None = None,
        *,
        nodes: list[str] | tuple[str, ...] = (),
        shared_dir: Path | None = None,
        engine_backend: Backend | None = None,
    ):
        self.executor_id, self._root, self._url, self._nodes = executor_id, Path(root), url, nodes
        self.engine_name, self._shared_dir = engine, shared_dir
        self.meter: Callable[[str], ContextManager] = lambda call: contextlib.nullcontext()  # times calls (metrics.py)
        self._engine = engine_backend
        self._process: Backend | None = None
        self._open_lock, self._events_lock = threading.Lock(), threading.Lock()
        self._event_streams: list[Backend] = []

    # ------------------------------------------------------------------ the members

    @property
    def name(self) -> str:
        """The node's default backend: its container engine, or process when it has none."""
        return PROCESS if self.engine_name == "none" else self.engine_name

    @property
    def capabilities(self) -> Capabilities:
        return self._default().capabilities

    def members(self) -> list[str]:
        """The backends jobs on this node can name."""
        return [PROCESS] if self.engine_name == "none" else [self.engine_name, PROCESS]

    def container_engine(self) -> Backend:
        """The node's container engine, connected on first use."""
        if self.engine_name == "none":
            raise NotSupported("this node has no container engine ([engine] name = none): "
                               "only process jobs run here; set CONVEYOR_ENGINE=docker or podman to run containers")
        with self._open_lock:
            if self._engine is None:
                from . import open_backend

                self._engine = open_backend(self.engine_name, self.executor_id, url=self._url,
                                            root=self._root / self.engine_name, nodes=self._nodes,
                                            shared_dir=self._shared_dir)
            return self._engine

    def staging_dir(self, job_id: str) -> Path:
        """Where a job's inputs are staged for its container to mount read-only: on the engine's
        shared directory when it has one (every node of a cluster sees it), else in the state
        directory."""
        base = self._shared_dir / self.executor_id if self._shared_dir else self._root
        return base / "staging" / job_id

    def process(self) -> Backend:
        with self._open_lock:
            if self._process is None:
                from . import open_backend

                self._process = open_backend(PROCESS, self.executor_id, root=self._root / PROCESS)
            return self._process

    def _default(self) -> Backend:
        return self.process() if self.engine_name == "none" else self.container_engine()

    def connect(self) -> None:
        """Connect every member now: a supervisor without its engine says so at once, in one
        line (EngineUnavailable), rather than retrying its event subscription."""
        self._open_members()

    def _open_members(self) -> list[tuple[str, Backend]]:
        """Every backend that can hold this executor's jobs, each with its handle prefix."""
        found = [("", self.container_engine())] if self.engine_name != "none" else []
        return [*found, (PROCESS_PREFIX, self.process())]

    def for_job(self, spec: JobSpec | None) -> Backend:
        """The backend that runs a job of ``spec`` (None: the node's default), or InvalidSpec
        naming ``backend`` when this node has no such backend."""
        wanted = spec.backend_name if spec is not None else None
        if wanted == PROCESS:
            return self.process()
        if wanted is not None and wanted != self.engine_name:
            have = "no container engine" if self.engine_name == "none" else f"the container engine {self.engine_name}"
            raise InvalidSpec.single(
                "backend.name", wanted,
                f"this node has {have} (config.toml [engine] name, or CONVEYOR_ENGINE); "
                f"name one of its backends: {', '.join(self.members())}",
            )
        if spec is not None and self.engine_name == "none":
            raise InvalidSpec.single("backend", None, "this node has no container engine ([engine] name = none): "
                                     "run the command on the host with backend process, without an image")
        return self._default()

    def require(self, spec: JobSpec | None, capability: str, what: str) -> None:
        """NotSupported unless the backend of a job of ``spec`` (None: the node's default) can."""
        backend = self.for_job(spec)
        backend.capabilities.require(backend.name, capability, what)

    def _route(self, handle: str) -> tuple[Backend, str, str]:
        if handle.startswith(PROCESS_PREFIX):
            return self.process(), handle[len(PROCESS_PREFIX):], PROCESS_PREFIX
        return self.container_engine(), handle, ""

    @staticmethod
    def _named(status: ContainerStatus | None, prefix: str) -> ContainerStatus | None:
        return status if status is None or not prefix else dataclasses.replace(status, id=prefix + status.id)

    def _call(self, method: str, handle: str, *args: Any, **kwargs: Any) -> Any:
        backend, inner, _ = self._route(handle)
        with self.meter(method):
            return getattr(backend, method)(inner, *args, **kwargs)

    # ------------------------------------------------------------------ the node's engine

    def version(self) -> dict:
        return self._default().version()

    def load_image(self, chunks):
        return self.container_engine().load_image(chunks)

    def image_tags(self, image_id: str) -> list[str]:
        return self.container_engine().image_tags(image_id)

    def images(self) -> list[dict]:
        return self.container_engine().images()

    def image_inspect(self, name: str) -> dict | None:
        return self.container_engine().image_inspect(name)

    def pull(self, name: str):
        return self.container_engine().pull(name)

    def engine(self) -> dict:
        return self.container_engine().engine()

    def nodes(self) -> list[dict] | None:
        """The engine's nodes when it spans several machines (swarm); None for this one."""
        return None if self.engine_name == "none" else self.container_engine().nodes()

    def runtimes(self) -> dict[str, dict]:
        """The OCI runtimes the node's engine offers (empty without an engine)."""
        if self.engine_name == "none":
            return {}
        return self.container_engine().runtimes()

    # ------------------------------------------------------------------ by the job's spec

    def check(self, spec: JobSpec) -> None:
        """Refuse a spec its backend cannot run: what its capabilities lack (one rule for every
        backend, here, with the driver's hint where a setting would give it), then the driver's
        own checks."""
        backend = self.for_job(spec)
        if spec.backend is not None and spec.backend.options:
            spec.backend.options_for(backend.name)  # options given without a name: the node engine's?
        caps = backend.capabilities
        gpus = spec.resources.gpus
        lacking = [
            (field, value, capability, what)
            for field, value, capability, what in (
                ("ports", [p.container_port for p in spec.ports], "ports", "publish ports"),
                ("tty", spec.tty, "tty", "give a job a terminal"),
                ("stdin_open", spec.stdin_open, "stdin", "feed stdin to a job"),
                ("outputs", spec.outputs, "files", "capture outputs"),
                ("resources.gpus", gpus and gpus.vendor.value, "gpus", f"give a job {gpus and gpus.vendor.value} GPUs"),
            )
            if value and not (capability == "gpus" and gpus.vendor.value in caps.gpus or capability != "gpus" and getattr(caps, capability))
        ]
        if lacking:
            field, value, capability, what = lacking[0]
            fix = getattr(backend, "capability_hints", {}).get(capability) or \
                "leave it out, or choose a backend that can ('conveyor backends' shows each one's)"
            raise InvalidSpec.single(field, value, f"the {backend.name} backend cannot {what} (capability {capability!r}); {fix}")
        backend.check(spec)

    def ensure_image(self, spec: JobSpec, refresh: bool = True) -> None:
        self.for_job(spec).ensure_image(spec, refresh)  # (not timed: a pull's time is the registry's)

    def create(self, job_id: str, spec: JobSpec) -> str:
        backend = self.for_job(spec)
        with self.meter("create"):
            handle = backend.create(job_id, spec)
        return PROCESS_PREFIX + handle if backend is self._process else handle

    def find(self, job_id: str) -> ContainerStatus | None:
        found = self._named(self.process().find(job_id), PROCESS_PREFIX)
        if found is None and self.engine_name != "none":
            found = self.container_engine().find(job_id)
        return found

    # ------------------------------------------------------------------ by the handle

    def inspect(self, handle: str) -> ContainerStatus | None:
        backend, inner, prefix = self._route(handle)
        with self.meter("inspect"):
            return self._named(backend.inspect(inner), prefix)

    def start(self, handle: str) -> None:
        self._call("start", handle)

    def stop(self, handle: str, grace: float) -> None:
        self._call("stop", handle, grace)

    def signal(self, handle: str, signal: str) -> None:
        self._call("signal", handle, signal)

    def pause(self, handle: str) -> None:
        self._call("pause", handle)

    def unpause(self, handle: str) -> None:
        self._call("unpause", handle)

    def remove(self, handle: str) -> None:
        self._call("remove", handle)

    def stats(self, handle: str) -> dict:
        return self._call("stats", handle)

    def open_exec(self, handle: str, spec):
        return self._call("open_exec", handle, spec)

    def open_port(self, handle: str, port: int):
        return self._call("open_port", handle, port)

    def resize(self, handle: str, height: int, width: int) -> None:
        self._call("resize", handle, height, width)

    def attach_output(self, handle: str):
        return self._call("attach_output", handle)

    def attach_stdin(self, handle: str, source) -> None:
        self._call("attach_stdin", handle, source)

    def save_logs(self, handle: str, paths: dict[str, Path]) -> dict[str, int]:
        return self._call("save_logs", handle, paths)

    def follow_logs(self, handle: str, streams, tail, follow, timestamps: bool = False):
        return self._call("follow_logs", handle, streams, tail, follow, timestamps=timestamps)

    def read_archive(self, handle: str, path: str):
        return self._call("read_archive", handle, path)

    # ------------------------------------------------------------------ every member

    def list(self) -> list[ContainerStatus]:
        with self.meter("list"):
            return [self._named(s, prefix) for prefix, b in self._open_members() for s in b.list()]  # type: ignore[misc]

    def events(self, since: float | None = None) -> Iterator[EngineEvent]:
        """One stream of every member's events, subscribed to all when this returns. When one
        member's stream breaks the whole stream does (EngineUnavailable), so the watcher
        reconnects and reconciles them all: nothing is concluded from half a stream."""
        members = self._open_members()
        if len(members) == 1:
            prefix, backend = members[0]
            with self._events_lock:
                self._event_streams = [backend]
            return self._prefixed(backend.events(since), prefix)
        merged: queue.SimpleQueue = queue.SimpleQueue()
        streams = []
        for prefix, backend in members:
            streams.append((self._prefixed(backend.events(since), prefix), backend))
        with self._events_lock:
            self._event_streams = [b for _, b in streams]
        for stream, backend in streams:
            threading.Thread(target=_pump, args=(stream, merged.put), name=f"conveyor-events-{backend.name}",
                             daemon=True).start()
        return self._merged(merged)

    @staticmethod
    def _prefixed(stream: Iterator[EngineEvent], prefix: str) -> Iterator[EngineEvent]:
        for ev in stream:
            yield dataclasses.replace(ev, container_id=prefix + ev.container_id) if prefix else ev

    def _merged(self, merged: queue.SimpleQueue) -> Iterator[EngineEvent]:
        try:
            while True:
                item = merged.get()
                if isinstance(item, BaseException):
                    raise item if isinstance(item, EngineUnavailable) else EngineUnavailable(f"event stream broke: {item}")
                yield item
        finally:
            self.close_events()  # the other members' pumps end with their streams

    def close_events(self) -> None:
        with self._events_lock:
            streams, self._event_streams = self._event_streams, []
        for backend in streams:
            backend.close_events()

    def cleanup(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, backend in self._open_members():
            for kind, n in backend.cleanup().items():
                counts[kind] = counts.get(kind, 0) + n
        return counts


def _pump(stream: Iterator[EngineEvent], put: Callable[[Any], None]) -> None:
    try:
        for ev in stream:
            put(ev)
        put(EngineUnavailable("event stream ended"))
    except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
        put(exc)
