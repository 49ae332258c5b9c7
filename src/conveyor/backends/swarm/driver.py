"""The swarm driver: the Backend interface on a Docker Swarm manager (docker SDK, APIClient).

See the package docstring for the design (create/start, states, events, stop, logs, leftovers).
Every engine call runs inside docker's `engine_errors`, so callers see only Conveyor's errors.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Iterable, Iterator

import docker
import docker.errors

from ...spec import JobSpec
from ..base import (
    LABEL_EXECUTOR,
    LABEL_JOB,
    Capabilities,
    ContainerNotFound,
    ContainerStatus,
    EngineConflict,
    EngineError,
    EngineEvent,
    EngineUnavailable,
    ExecResult,
    NotSupported,
)
from ..docker.images import ImagesMixin
from ..docker.logs import AtomicLog, STREAM_FD, _body_blocks, save_frames
from ..docker.translate import engine_errors
from . import mapping
from .mapping import (
    LABEL_FINAL,
    LABEL_PHASE,
    PHASE_CREATED,
    PHASE_STARTED,
    PHASE_STOPPED,
    PHASE_STOPPING,
    final_label,
    job_mode,
    service_args,
    service_name,
    service_status,
)

POLL_S = 0.25  # how often events() looks at the tasks
SWARM_SERVICE_LABEL = "com.docker.swarm.service.id"  # on every task container, set by Swarm


class SwarmBackend(ImagesMixin):
    """The Backend for a Docker Swarm, through its manager (``base_url``). ``node_urls``: the
    engines of the other nodes, when this agent can reach them, for removing the task
    containers Swarm leaves behind there and for loading images on every node."""

    name = "swarm"
    capabilities = Capabilities(recover=True, image_load=True, images=True)

    def __init__(self, executor_id: str, base_url: str, node_urls: Iterable[str] = (), timeout: int = 120,
                 cache_dir: str | os.PathLike | None = None):
        self.executor_id = executor_id
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

    def check(self, spec: JobSpec) -> None:
        mapping.check(spec)

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
        args = service_args(spec, self.executor_id, job_id)
        try:
            with engine_errors(image=spec.image):
                return self.api.create_service(**args)["ID"]
        except EngineError as exc:
            if "name conflicts" in str(exc) or "already exists" in str(exc):
                raise EngineConflict(str(exc)) from None
            raise

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

    def stop(self, handle: str, grace: float) -> None:
        """Stop the job (see `signal`) and return once its end is recorded on the service."""
        self._begin_stop(handle, grace)
        with self._stops_lock:
            thread = self._stops.get(handle)
        if thread is not None:
            thread.join()

    def signal(self, handle: str, signal: str) -> None:
        """SIGTERM (then SIGKILL after the job's stop_grace) is the only signal Swarm sends:
        SIGTERM begins the stop; SIGKILL begins it with no grace, or, once it is stopping, is
        what Swarm sends itself at the end of the grace period. Others: NotSupported."""
        sig = signal.upper().removeprefix("SIG")
        if sig not in ("TERM", "KILL", "15", "9"):
            raise NotSupported(f"the swarm backend cannot send {signal} (Swarm stops a task with SIGTERM, then SIGKILL)")
        self._begin_stop(handle, 0.0 if sig in ("KILL", "9") else None)

    def _begin_stop(self, handle: str, grace: float | None) -> None:
        status = self.inspect(handle)
        if status is None:
            raise ContainerNotFound(f"no such service: {handle}")
        handle = status.id
        with self._stops_lock:
            if handle in self._stops:
                return
            phase = status.labels.get(LABEL_PHASE)
            if phase == PHASE_STOPPED or (status.finished and phase != PHASE_STOPPING):
                return
            if not status.alive and phase == PHASE_CREATED:
                # Never started: nothing runs; it ends here with no exit code.
                self._update(handle, None, {LABEL_PHASE: PHASE_STOPPED, LABEL_FINAL: final_label(
                    ContainerStatus(handle, "exited", None, False, None, time.time(), "stopped before it started"))})
                return
            thread = threading.Thread(target=self._stop_and_keep, args=(handle, grace), daemon=True,
                                      name=f"swarm-stop-{handle[:12]}")
            self._stops[handle] = thread
        thread.start()

    def _stop_and_keep(self, handle: str, grace: float | None) -> None:
        """Stopping a Swarm job removes its task, and with it the service's log and the exit
        code. So: follow the log into this driver's cache first, scale the job to zero (SIGTERM,
        then SIGKILL after the task's StopGracePeriod), watch the task until it ends, and write
        the end it saw on the service (phase stopped) before the task is gone."""
        frames = self._frames_path(handle)
        res = None
        reader = None
        try:
            with engine_errors():
                res = self.api._get(self.api._url("/services/{0}/logs", handle),
                                    params={"stdout": 1, "stderr": 1, "timestamps": 1, "follow": 1}, stream=True)
                self.api._raise_for_status(res)
            tmp = frames.with_name(frames.name + ".partial")
            out = open(tmp, "wb")

            def copy() -> None:
                try:
                    for block in _body_blocks(res):
                        out.write(block)
                        out.flush()
                except Exception:  # noqa: BLE001 - closed under the reader once the task ended
                    pass

            reader = threading.Thread(target=copy, daemon=True, name=f"swarm-stop-logs-{handle[:12]}")
            reader.start()
            self._update(handle, 0, {LABEL_PHASE: PHASE_STOPPING}, grace=grace)
            last: ContainerStatus | None = None
            while True:
                with engine_errors():
                    tasks = self.api.tasks(filters={"service": handle})
                    nodes = {n["ID"]: n for n in self.api.nodes()} if tasks else {}
                self._note_started(tasks)
                if not tasks:
                    break
                with engine_errors():
                    svc = self.api.inspect_service(handle)
                last = service_status(svc, tasks, nodes, self._started)
                if last.finished:
                    break
                time.sleep(0.05)
            time.sleep(0.3)  # the last lines reach the log stream after the task's end
            _hang_up(res)
            reader.join(timeout=5)
            out.close()
            os.replace(tmp, frames)
            if last is None or not last.finished:
                last = ContainerStatus(handle, "exited", None, False, last.started_at if last else None, time.time(),
                                       "stopped; its exit code was not seen before Swarm removed its task")
            self._update(handle, None, {LABEL_PHASE: PHASE_STOPPED, LABEL_FINAL: final_label(last)})
        except ContainerNotFound:
            pass  # removed meanwhile
        finally:
            if res is not None:
                _hang_up(res)
            with self._stops_lock:
                self._stops.pop(handle, None)

    def _frames_path(self, handle: str) -> Path:
        return self.cache / f"{handle}.frames"

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
        sid = handle
        try:
            with engine_errors():
                sid = self.api.inspect_service(handle)["ID"]
                self.api.remove_service(sid)
        except ContainerNotFound:
            pass
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

    def exec(self, handle: str, command: list[str], *, user: str | None = None, workdir: str | None = None,
             env: dict[str, str] | None = None) -> ExecResult:
        raise NotSupported("the swarm backend cannot run commands inside a job (capability exec)")

    # ------------------------------------------------------------------ input, output, logs

    def resize(self, handle: str, height: int, width: int) -> None:
        raise NotSupported("the swarm backend gives no terminal (capability tty)")

    def attach_output(self, handle: str):
        raise NotSupported("the swarm backend gives no terminal (capability tty)")

    def attach_stdin(self, handle: str, source) -> None:
        raise NotSupported("the swarm backend cannot feed stdin (capability stdin)")

    def read_archive(self, handle: str, path: str):
        raise NotSupported("the swarm backend cannot read files out of a job (capability files)")

    def save_logs(self, handle: str, paths: dict[str, Path]) -> dict[str, int]:
        """Each stream from the service's log (fetched apart, timestamps on) or, for a stopped
        job, from what its stop kept; written atomically with its times index (logtimes)."""
        files = {name: AtomicLog(path) for name, path in paths.items()}
        try:
            sid = self._service_id(handle)
            kept = self._frames_path(sid)
            if kept.exists():
                with open(kept, "rb") as raw:
                    save_frames(types.SimpleNamespace(raw=raw), {STREAM_FD[n]: log for n, log in files.items()})
            else:
                for name, log in files.items():
                    with engine_errors():
                        res = self._log_response(sid, name, follow=False)
                    with engine_errors():
                        save_frames(res, {1: log, 2: log})  # one stream asked for: every frame is its
            for log in files.values():
                log.commit()
        finally:
            for log in files.values():
                log.discard()
        return {name: log.written for name, log in files.items()}

    def _service_id(self, handle: str) -> str:
        with engine_errors():
            return self.api.inspect_service(handle)["ID"]

    def _log_response(self, sid: str, stream: str, follow: bool, tail: int | None = None, timestamps: bool = True):
        params = {"stdout": int(stream == "stdout"), "stderr": int(stream == "stderr"),
                  "timestamps": int(timestamps), "follow": int(follow), "tail": "all" if tail is None else tail}
        res = self.api._get(self.api._url("/services/{0}/logs", sid), params=params, stream=True)
        self.api._raise_for_status(res)
        return res

    def follow_logs(self, handle: str, streams: tuple[str, ...], tail: int | None = None, follow: bool = True,
                    timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
        """``(stream, message)`` from the service's log, one reader per stream; a followed log
        ends when the job has finished (Swarm keeps following a finished service)."""
        import queue

        sid = self._service_id(handle)
        chunks: queue.Queue = queue.Queue(maxsize=256)
        done = object()
        responses = []

        def pump(name: str) -> None:
            try:
                with engine_errors():
                    res = self._log_response(sid, name, follow, tail, timestamps)
                    responses.append(res)
                    buf = b""
                    for block in _body_blocks(res):
                        buf += block
                        pos = 0
                        while pos + 8 <= len(buf):
                            end = pos + 8 + int.from_bytes(buf[pos + 4:pos + 8], "big")
                            if end > len(buf):
                                break
                            chunks.put((name, buf[pos + 8:end]))
                            pos = end
                        buf = buf[pos:]
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                chunks.put((name, exc))
            finally:
                chunks.put((name, done))

        readers = [threading.Thread(target=pump, args=(s,), daemon=True) for s in streams]
        for r in readers:
            r.start()
        open_streams, error = len(readers), None
        try:
            while open_streams:
                try:
                    name, item = chunks.get(timeout=1.0)
                except queue.Empty:
                    if follow:
                        status = self.inspect(sid)
                        if status is None or status.finished:
                            time.sleep(0.5)
                            while not chunks.empty():
                                name, item = chunks.get()
                                if isinstance(item, bytes):
                                    yield name, item
                            return
                    continue
                if item is done:
                    open_streams -= 1
                elif isinstance(item, Exception):
                    error = error or item
                else:
                    yield name, item
        finally:
            for res in responses:
                _hang_up(res)
        if error is not None and not isinstance(error, ContainerNotFound):
            raise error if isinstance(error, EngineError | EngineUnavailable) else EngineError(str(error))

    # ------------------------------------------------------------------ recover and watch

    def list(self) -> list[ContainerStatus]:
        """Every service this executor made, with its status from its tasks."""
        with engine_errors():
            services = self.api.services(filters={"label": f"{LABEL_EXECUTOR}={self.executor_id}"})
            tasks = self.api.tasks(filters={"service": [s["ID"] for s in services]}) if services else []
            nodes = {n["ID"]: n for n in self.api.nodes()} if tasks else {}
        self._note_started(tasks)
        by_service: dict[str, list[dict]] = {}
        for t in tasks:
            by_service.setdefault(t.get("ServiceID", ""), []).append(t)
        return [service_status(s, by_service.get(s["ID"], []), nodes, self._started) for s in services]

    def events(self, since: float | None = None) -> Iterator[EngineEvent]:
        """Swarm sends no task events through /events (20.10 has service create/update/remove
        only), so this polls this executor's services and tasks every POLL_S seconds, from a
        snapshot taken here (subscribed when this returns): ``start`` when a task runs,
        ``die`` when a job reaches its end, ``destroy`` when its service is gone. ``since`` is
        not replayed: the watcher's reconcile after subscribing covers what came before."""
        stop = threading.Event()
        with self._events_lock:
            if self._events_stop is not None:
                self._events_stop.set()
            self._events_stop = stop
        snapshot = {s.id: s for s in self.list()}
        return self._poll(stop, snapshot)

    def _poll(self, stop: threading.Event, seen: dict[str, ContainerStatus]) -> Iterator[EngineEvent]:
        while True:
            if stop.wait(POLL_S):
                raise EngineUnavailable("the swarm event poll was closed")
            now = time.time()
            current = {s.id: s for s in self.list()}
            for sid, s in current.items():
                before = seen.get(sid)
                job = s.labels.get(LABEL_JOB)
                running = s.status == "running" and s.started_at is not None and not s.error
                was_running = before is not None and before.status == "running" and before.started_at is not None
                if running and not was_running:
                    yield EngineEvent("start", sid, job, s.started_at or now)
                if s.finished and not (before is not None and before.finished):
                    yield EngineEvent("die", sid, job, s.finished_at or now)
            for sid, before in seen.items():
                if sid not in current:
                    yield EngineEvent("destroy", sid, before.labels.get(LABEL_JOB), now)
            seen = current

    def close_events(self) -> None:
        with self._events_lock:
            stop, self._events_stop = self._events_stop, None
        if stop is not None:
            stop.set()

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> dict[str, int]:
        """Remove the task containers of this executor's jobs whose services are gone, on every
        node this driver reaches. (It makes no volumes or networks.)"""
        with engine_errors():
            live = {s["ID"] for s in self.api.services(filters={"label": f"{LABEL_EXECUTOR}={self.executor_id}"})}
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
        return {"containers": removed}


def _hang_up(res) -> None:
    """End a streamed response that another thread is reading: shutting its socket down makes
    that read return, where ``close()`` would wait for the reader's lock (Swarm never ends a
    followed service log)."""
    try:
        sock = res.raw._fp.fp.raw._sock
        sock.shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass
    try:
        res.close()
    except Exception:  # noqa: BLE001 - already closed
        pass
