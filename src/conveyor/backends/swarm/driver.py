"""The swarm driver: the Backend interface on a Docker Swarm manager (docker SDK, APIClient).

See the package docstring for the design (create/start, states, events, stop, logs, leftovers).
Every engine call runs inside docker's `engine_errors`, so callers see only Conveyor's errors.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable

import docker
import docker.errors

from ...spec import JobSpec, Mount
from ..base import (
    LABEL_EXECUTOR,
    LABEL_JOB,
    Capabilities,
    ContainerNotFound,
    ContainerStatus,
    EngineConflict,
    EngineError,
    EngineUnavailable,
    NoUsage,
    NotSupported,
)
from ..docker.images import ImagesMixin
from ..docker.translate import engine_errors
from ..hostfiles import fresh_dir, host_path, mount_holding, tar_of, under
from . import mapping
from .logs import LogsMixin
from .stopping import StopMixin
from .watch import WatchMixin
from .mapping import (
    LABEL_PHASE,
    PHASE_CREATED,
    PHASE_STARTED,
    job_mode,
    service_args,
    service_name,
    service_status,
)

SWARM_SERVICE_LABEL = "com.docker.swarm.service.id"  # on every task container, set by Swarm


class SwarmBackend(ImagesMixin, StopMixin, LogsMixin, WatchMixin, NoUsage):
    """The Backend for a Docker Swarm, through its manager (``base_url``). ``node_urls``: the
    engines of the other nodes, when this agent can reach them, for removing the task
    containers Swarm leaves behind there and for loading images on every node. ``shared_dir``:
    a directory every node mounts at the same path; with it, jobs have outputs (and inputs,
    which the runtime stages there)."""

    name = "swarm"
    # What it can do when configured for it (files: with a shared directory); an instance
    # says what it can do as configured.
    capabilities = Capabilities(recover=True, image_load=True, images=True, files=True,
                                gpus=frozenset(mapping.GPU_RESOURCES), queues=True)
    capability_hints = {"files": mapping.SHARED_DIR_HINT}

    def __init__(self, executor_id: str, base_url: str, node_urls: Iterable[str] = (), timeout: int = 120,
                 cache_dir: str | os.PathLike | None = None, shared_dir: str | os.PathLike | None = None):
        self.executor_id = executor_id
        self.shared = Path(shared_dir) / executor_id if shared_dir else None
        self.capabilities = dataclasses.replace(SwarmBackend.capabilities, files=self.shared is not None)
        with engine_errors():
            self.api = docker.APIClient(base_url=base_url, version="auto", timeout=timeout)
            self.api.ping()
            info = self.api.info().get("Swarm") or {}
        if not info.get("ControlAvailable"):
            raise EngineUnavailable(f"the engine at {base_url} is not a swarm manager (swarm state: "
                                    f"{info.get('LocalNodeState') or 'inactive'}); give the manager's address")
        self._node_urls = list(node_urls)
        self._node_apis: list[docker.APIClient] | None = None
        self._images_seen: dict[str, float] = {}
        self._started: dict[str, float] = {}  # task id -> when it was seen running
        self._stops: dict[str, threading.Thread] = {}
        self._stops_lock = threading.Lock()
        self._events_stop: threading.Event | None = None
        self._events_lock = threading.Lock()
        default = Path(tempfile.gettempdir()) / f"conveyor-swarm-{executor_id}"
        self.cache = Path(cache_dir) if cache_dir else default
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)

    # ------------------------------------------------------------------ the engine

    def version(self) -> dict:
        with engine_errors():
            v = self.api.version()
        return {"name": self.name, "version": v.get("Version"), "api_version": v.get("ApiVersion")}

    def runtimes(self) -> dict[str, dict]:
        return {}  # a task runs with its node's default runtime: Swarm's spec has no runtime field

    def nodes(self) -> list[dict]:
        """The swarm's nodes, and how many of this executor's jobs run on each."""
        with engine_errors():
            nodes = self.api.nodes()
            services = self.api.services(filters={"label": f"{LABEL_EXECUTOR}={self.executor_id}"})
            tasks = self.api.tasks(filters={"service": [s["ID"] for s in services], "desired-state": "running"}) \
                if services else []
        running: dict[str, int] = {}
        for t in tasks:
            if (t.get("Status") or {}).get("State") == "running":
                running[t.get("NodeID", "")] = running.get(t.get("NodeID", ""), 0) + 1
        out = []
        for n in nodes:
            desc, spec, status = n.get("Description") or {}, n.get("Spec") or {}, n.get("Status") or {}
            res = desc.get("Resources") or {}
            out.append({
                "name": desc.get("Hostname"), "id": n["ID"], "role": spec.get("Role"), "state": status.get("State"),
                "availability": spec.get("Availability"), "address": status.get("Addr"), "labels": spec.get("Labels") or {},
                "cpus": (res.get("NanoCPUs") or 0) / 1e9, "memory": res.get("MemoryBytes") or 0,
                "gpus": mapping.node_gpus(res.get("GenericResources") or []), "running": running.get(n["ID"], 0),
            })
        return sorted(out, key=lambda n: n["name"] or "")

    def check(self, spec: JobSpec) -> None:
        mapping.check(spec, shared=self.shared is not None)

    def _nodes_apis(self) -> list[docker.APIClient]:
        if self._node_apis is None:
            apis = []
            for url in self._node_urls:
                try:
                    with engine_errors():
                        apis.append(docker.APIClient(base_url=url, version="auto", timeout=30))
                except EngineUnavailable:
                    continue  # that node cannot be reached now: asked again next time
            if len(apis) < len(self._node_urls):
                return apis
            self._node_apis = apis
        return self._node_apis

    def load_image(self, chunks: Iterable[bytes]) -> list[str]:
        """Load the tarball on the manager and on every node in ``node_urls`` (a task placed on a
        node without its image is rejected: Swarm never copies images between nodes)."""
        data = b"".join(chunks)
        ids = ImagesMixin.load_image(self, [data])
        for api in self._nodes_apis():
            with engine_errors():
                for msg in api.load_image(data):
                    if "error" in msg:
                        raise EngineError(f"image load failed on {api.base_url}: {msg['error']}")
        return ids

    # ------------------------------------------------------------------ lifecycle

    def create(self, job_id: str, spec: JobSpec) -> str:
        """Create the job's service, ``conveyor-<job id>``, with zero completions: it exists
        (find() sees it after a crash, a second create conflicts) but runs nothing until start."""
        if spec.outputs:
            spec = spec.model_copy(update={"mounts": [*spec.mounts, *self._output_mounts(job_id, spec.outputs)]})
        args = service_args(spec, self.executor_id, job_id)
        try:
            with engine_errors(image=spec.image):
                return self.api.create_service(**args)["ID"]
        except EngineError as exc:
            if "name conflicts" in str(exc) or "already exists" in str(exc):
                raise EngineConflict(str(exc)) from None
            raise

    def _outputs_dir(self, job_id: str) -> Path:
        assert self.shared is not None  # check() refuses outputs without a shared directory
        return self.shared / "outputs" / job_id

    def _output_mounts(self, job_id: str, outputs: list[str]) -> list[Mount]:
        """A fresh directory on the shared directory for each output path, bind-mounted there:
        whichever node runs the job writes its outputs where this agent reads them. Writable by
        any user (the job's user is a name inside its image, unknown here)."""
        made = []
        for n, target in enumerate(outputs):
            source = fresh_dir(self._outputs_dir(job_id) / str(n), 0o777)
            made.append(Mount(type="bind", source=str(source), target=target, read_only=False))
        return made

    def _update(self, handle: str, mode_completions: int | None, labels: dict[str, str],
                grace: float | None = None) -> None:
        """One service update (which makes Swarm run the job anew, or stop it at zero
        completions), retried when another update won the race for the version."""
        for attempt in range(5):
            with engine_errors():
                svc = self.api.inspect_service(handle)
                spec = svc["Spec"]
                spec["Labels"] = {**(spec.get("Labels") or {}), **labels}
                if mode_completions is not None:
                    spec["Mode"] = job_mode(mode_completions)
                if grace is not None:
                    spec["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] = int(grace * 1e9)
                res = self.api._post_json(self.api._url("/services/{0}/update", svc["ID"]), data=spec,
                                          params={"version": svc["Version"]["Index"]})
                try:
                    self.api._raise_for_status(res)
                    return
                except docker.errors.APIError as exc:
                    if "update out of sequence" not in str(exc) or attempt == 4:
                        raise
            time.sleep(0.05)

    def start(self, handle: str) -> None:
        """Run the created job: its service updated to one completion."""
        with engine_errors():
            labels = self.api.inspect_service(handle)["Spec"].get("Labels") or {}
        if labels.get(LABEL_PHASE, PHASE_STARTED) != PHASE_CREATED:
            raise EngineConflict(f"service {handle[:12]} was started already")
        self._update(handle, 1, {LABEL_PHASE: PHASE_STARTED})

    def inspect(self, handle: str) -> ContainerStatus | None:
        try:
            with engine_errors():
                svc = self.api.inspect_service(handle)
                tasks = self.api.tasks(filters={"service": svc["ID"]})
                nodes = {n["ID"]: n for n in self.api.nodes()} if tasks else {}
        except ContainerNotFound:
            return None
        self._note_started(tasks)
        return service_status(svc, tasks, nodes, self._started)

    def _note_started(self, tasks: list[dict]) -> None:
        for t in tasks:
            st = t.get("Status") or {}
            if st.get("State") == "running" and t["ID"] not in self._started:
                self._started[t["ID"]] = mapping._engine_time(st.get("Timestamp")) or time.time()

    def find(self, job_id: str) -> ContainerStatus | None:
        return self.inspect(service_name(job_id))

    def pause(self, handle: str) -> None:
        raise NotSupported("the swarm backend cannot pause a job (Swarm has no pause; capability pause)")

    def unpause(self, handle: str) -> None:
        raise NotSupported("the swarm backend cannot pause a job (Swarm has no pause; capability pause)")

    def remove(self, handle: str) -> None:
        """Remove the service, then the task containers Swarm leaves on each node this driver
        reaches (the manager, and ``node_urls``); one already gone is fine."""
        with self._stops_lock:
            thread = self._stops.get(handle)
        if thread is not None:
            thread.join(timeout=60)
        sid, job_id = handle, None
        try:
            with engine_errors():
                svc = self.api.inspect_service(handle)
                sid, job_id = svc["ID"], (svc["Spec"].get("Labels") or {}).get(LABEL_JOB)
                self.api.remove_service(sid)
        except ContainerNotFound:
            pass
        if job_id and self.shared is not None:  # its outputs were captured before any removal
            shutil.rmtree(self._outputs_dir(job_id), ignore_errors=True)
        self._prune({"label": f"{SWARM_SERVICE_LABEL}={sid}"})
        for path in (self._frames_path(sid), self._frames_path(handle)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _prune(self, filters: dict) -> int:
        removed = 0
        for api in [self.api, *self._nodes_apis()]:
            try:
                with engine_errors():
                    for c in api.containers(all=True, filters=filters):
                        try:
                            api.remove_container(c["Id"], force=True, v=True)
                            removed += 1
                        except docker.errors.NotFound:
                            pass
                        except docker.errors.APIError as exc:
                            if "already in progress" not in str(exc):
                                raise
            except EngineUnavailable:
                continue  # a node that is down keeps its leftovers until the next cleanup
        return removed

    def stats(self, handle: str) -> dict:
        raise NotSupported("the swarm backend gives no resource usage (a task's container is on its node; capability stats)")

    def open_exec(self, handle: str, spec):
        raise NotSupported("the swarm backend cannot run commands inside a job (capability exec)")

    def open_port(self, handle: str, port: int):
        raise NotSupported("the swarm backend cannot reach a job's ports from the agent (port-forward)")

    # ------------------------------------------------------------------ input, output, logs

    def resize(self, handle: str, height: int, width: int) -> None:
        raise NotSupported("the swarm backend gives no terminal (capability tty)")

    def attach_output(self, handle: str):
        raise NotSupported("the swarm backend gives no terminal (capability tty)")

    def attach_stdin(self, handle: str, source) -> None:
        raise NotSupported("the swarm backend cannot feed stdin (capability stdin)")

    def read_archive(self, handle: str, path: str):
        """A tar of ``path`` from the shared directory, when one of the job's mounts puts it
        there (every output path does); a path elsewhere is on a node this agent cannot read."""
        with engine_errors():
            svc = self.api.inspect_service(handle)
        mounts = [{"source": m.get("Source") or "", "target": m["Target"]}
                  for m in svc["Spec"]["TaskTemplate"]["ContainerSpec"].get("Mounts") or [] if m.get("Type") == "bind"]
        path = path.rstrip("/") or "/"
        mount = mount_holding(mounts, path)
        if self.shared is None or mount is None or not under(mount["source"], str(self.shared)):
            raise NotSupported(f"the swarm backend reads only a job's outputs (and paths on the shared directory), "
                               f"not {path!r}: the job's other files are on the node that ran it")
        return tar_of(host_path([mount], path), path, self.cache)

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> dict[str, int]:
        """Remove the task containers of this executor's jobs whose services are gone, on every
        node this driver reaches. (It makes no volumes or networks.)"""
        with engine_errors():
            services = self.api.services(filters={"label": f"{LABEL_EXECUTOR}={self.executor_id}"})
        live = {s["ID"] for s in services}
        removed = 0
        for api in [self.api, *self._nodes_apis()]:
            try:
                with engine_errors():
                    for c in api.containers(all=True, filters={"label": f"{LABEL_EXECUTOR}={self.executor_id}"}):
                        if (c.get("Labels") or {}).get(SWARM_SERVICE_LABEL) not in live:
                            api.remove_container(c["Id"], force=True, v=True)
                            removed += 1
            except EngineUnavailable:
                continue
        if self.shared is not None:  # outputs of jobs whose services are gone (removed in a crash)
            jobs = {(s["Spec"].get("Labels") or {}).get(LABEL_JOB) for s in services}
            for job_dir in (self.shared / "outputs").glob("*"):
                if job_dir.name not in jobs:
                    shutil.rmtree(job_dir, ignore_errors=True)
        return {"task_containers": removed}  # "containers" is the services NodeMixin.cleanup removed
