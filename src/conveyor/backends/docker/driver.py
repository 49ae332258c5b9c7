"""The Docker driver: the Backend interface on the docker SDK's low-level client.

Every engine call runs inside `engine_errors` (translate.py), so callers see only Conveyor's
engine-neutral errors, never ``docker``, ``requests`` or ``urllib3`` exceptions.
"""

from __future__ import annotations

import os
import threading
from typing import Iterator

import docker
import docker.errors

from ...spec import JobSpec
from ..base import (
    LABEL_EXECUTOR,
    LABEL_JOB,
    Capabilities,
    ContainerNotFound,
    ContainerStatus,
    EngineError,
    EngineEvent,
    EngineUnavailable,
    ImageNotFound,
    InvalidSpec,
)
from .execs import ExecMixin
from .files import FilesMixin
from .images import ImagesMixin
from .logs import LogsMixin
from .ports import PortsMixin
from .translate import engine_errors
from .usage import UsageMixin
from .mapping import container_config, container_status, conveyor_labels, host_config, numeric_user

# ----------------------------------------------------------------------------- the driver


class DockerBackend(ImagesMixin, LogsMixin, FilesMixin, ExecMixin, PortsMixin, UsageMixin):
    """The Backend for a Docker engine (local socket, DOCKER_HOST, or ``base_url``)."""

    name = "docker"
    capabilities = Capabilities(
        pause=True,
        exec=True,
        gpus=frozenset({"nvidia", "amd", "intel"}),
        ports=True,
        stdin=True,
        recover=True,
        files=True,
        image_load=True,
        images=True,
        stats=True,
        usage=True,
        top=True,
        tty=True,
        signals=True,
        oom=True,
    )

    def __init__(self, executor_id: str, base_url: str | None = None, timeout: int = 120):
        self.executor_id = executor_id
        with engine_errors():
            if base_url:
                self.api = docker.APIClient(base_url=base_url, version="auto", timeout=timeout)
            else:
                self.api = docker.from_env(version="auto", timeout=timeout).api
            self.api.ping()
        self._events_stream = None
        self._events_lock = threading.Lock()
        self._images_seen: dict[str, float] = {}
        self._runtimes: dict[str, dict] = {}
        self._groups: dict[str, tuple[int, dict] | None] = {}  # see UsageMixin

    def version(self) -> dict:
        with engine_errors():
            v = self.api.version()
        return {"name": self.name, "version": v.get("Version"), "api_version": v.get("ApiVersion")}

    def runtimes(self) -> dict[str, dict]:
        with engine_errors():
            return self.api.info().get("Runtimes") or {}

    def nodes(self) -> None:
        return None  # one machine: this one

    def check(self, spec: JobSpec) -> None:
        """Every field of the job spec is Docker's; what is left to check is that the engine
        has the runtime the job names (asked again on a miss: an operator may have added it)."""
        runtime = spec.backend.options.get("runtime") if spec.backend is not None else None
        if runtime is None:
            return
        if runtime not in self._runtimes:
            self._runtimes = self.runtimes()
        if runtime not in self._runtimes:
            raise InvalidSpec.single(
                "backend.options.runtime", runtime,
                f"the {self.name} engine has no such runtime; it offers {', '.join(sorted(self._runtimes)) or 'none'} "
                "('conveyor machine' lists them; an operator registers more in the engine's configuration)",
            )

    # ------------------------------------------------------------------ lifecycle

    def create(self, job_id: str, spec: JobSpec) -> str:
        """Create the job's container, named ``conveyor-<job id>``: EngineConflict when that
        name is taken (the caller adopts its own container made before a crash)."""
        try:
            return self._create(job_id, spec)
        except ImageNotFound:
            if self._images_seen.pop(spec.image, None) is None:
                raise
        # The image went away since ensure_image last saw it: do what the pull policy says
        # now, as it would have without the shortcut, and try once more.
        self.ensure_image(spec, refresh=False)
        return self._create(job_id, spec)

    def _create(self, job_id: str, spec: JobSpec) -> str:
        labels = conveyor_labels(self.executor_id, job_id, spec.name)
        hc = self._host_config(spec)
        with engine_errors(image=spec.image):
            self._prepare_mounts(spec)
            self._prepare_network(spec)
            created = self.api.create_container(
                **container_config(spec, labels),
                host_config=self.api.create_host_config(**hc),
                name=_container_name(job_id),
            )
        return created["Id"]

    def _host_config(self, spec: JobSpec) -> dict:
        """``create_host_config``'s keyword arguments for the job: the override point of
        engines that speak this API with differences (podman.py)."""
        return host_config(spec)

    def _prepare_mounts(self, spec: JobSpec) -> None:
        uid, gid = numeric_user(spec.user)
        for m in spec.mounts:
            if m.type == "bind" and not os.path.exists(m.source):
                # Create the source ourselves: the engine would make it root-owned, which a
                # job running as --user could then not write to.
                os.makedirs(m.source, exist_ok=True)
                if uid is not None:
                    os.chown(m.source, uid, gid if gid is not None else -1)
            elif m.type == "volume" and m.source:
                try:
                    self.api.inspect_volume(m.source)
                except docker.errors.NotFound:
                    self.api.create_volume(m.source, labels=conveyor_labels(self.executor_id))

    def _prepare_network(self, spec: JobSpec) -> None:
        net = spec.network
        if not net or net in ("bridge", "none", "host") or net.startswith("container:"):
            return
        if not self.api.networks(names=[net]):
            self.api.create_network(net, labels=conveyor_labels(self.executor_id))

    def start(self, handle: str) -> None:
        with engine_errors():
            self.api.start(handle)

    def stop(self, handle: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; blocks until the container stopped."""
        with engine_errors():
            self.api.stop(handle, timeout=max(0, int(round(grace))))

    def signal(self, handle: str, signal: str) -> None:
        with engine_errors():
            self.api.kill(handle, signal=signal)

    def pause(self, handle: str) -> None:
        with engine_errors():
            self.api.pause(handle)

    def unpause(self, handle: str) -> None:
        with engine_errors():
            self.api.unpause(handle)

    def inspect(self, handle: str) -> ContainerStatus | None:
        """The container's status, or None when the engine says it does not exist."""
        try:
            with engine_errors():
                return container_status(self.api.inspect_container(handle))
        except ContainerNotFound:
            return None

    def find(self, job_id: str) -> ContainerStatus | None:
        return self.inspect(_container_name(job_id))

    def remove(self, handle: str) -> None:
        """Remove the container and its anonymous volumes; one already gone (or going) is fine."""
        try:
            with engine_errors():
                self.api.remove_container(handle, force=True, v=True)
        except ContainerNotFound:
            pass
        except EngineError as exc:
            if "already in progress" not in str(exc):
                raise

    def stats(self, handle: str) -> dict:
        """One sample; stream=False without one-shot makes the engine wait for a second one,
        so precpu_stats is filled (about a second)."""
        with engine_errors():
            return self.api.stats(handle, stream=False)

    # ------------------------------------------------------------------ recover and watch

    def list(self) -> list[ContainerStatus]:
        """Every container this executor made, alive or not."""
        with engine_errors():
            found = self.api.containers(all=True, filters={"label": f"{LABEL_EXECUTOR}={self.executor_id}"})
        statuses = (self.inspect(summary["Id"]) for summary in found)
        return [s for s in statuses if s is not None]  # None: removed since the listing

    def events(self, since: float | None = None) -> Iterator[EngineEvent]:
        """Container events for this executor's containers. The subscription is live when
        this returns; iterate the result to consume it."""
        with engine_errors():
            stream = self.api.events(
                since=since,
                filters={"type": "container", "label": f"{LABEL_EXECUTOR}={self.executor_id}"},
                decode=True,
            )
        with self._events_lock:
            self._events_stream = stream
        return self._decode_events(stream)

    @staticmethod
    def _decode_events(stream) -> Iterator[EngineEvent]:
        try:
            with engine_errors():
                for ev in stream:
                    actor = ev.get("Actor") or {}
                    attrs = actor.get("Attributes") or {}
                    action = (ev.get("Action") or ev.get("status") or "").split(":")[0]
                    yield EngineEvent(
                        action=action,
                        container_id=actor.get("ID") or ev.get("id", ""),
                        job_id=attrs.get(LABEL_JOB),
                        time=ev.get("timeNano", 0) / 1e9 or float(ev.get("time", 0)),
                    )
        except (AttributeError, ValueError) as exc:  # close_events closed it under the reader
            raise EngineUnavailable(f"event stream broke: {exc}") from None

    def close_events(self) -> None:
        with self._events_lock:
            stream, self._events_stream = self._events_stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - already closed
                pass

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> dict[str, int]:
        """Remove the volumes and networks this executor made: counts by kind."""
        label = {"label": f"{LABEL_EXECUTOR}={self.executor_id}"}
        with engine_errors():
            volumes = (self.api.volumes(filters=label) or {}).get("Volumes") or []
            for v in volumes:
                self.api.remove_volume(v["Name"], force=True)
            networks = self.api.networks(filters=label)
            for n in networks:
                self.api.remove_network(n["Id"])
        return {"volumes": len(volumes), "networks": len(networks)}


def _container_name(job_id: str) -> str:
    """A job's container is named after it: a second create for the job conflicts instead of
    making a twin (the launcher then adopts the first)."""
    return f"conveyor-{job_id}"
