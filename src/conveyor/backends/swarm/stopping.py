"""Part of the swarm driver: stopping a job. Swarm cannot signal a task, and any update of a
job service deletes its task with its log and exit code; so a stop first follows the service log
into the driver's cache, then lowers the job to zero completions (Swarm sends SIGTERM, then
SIGKILL after the service's stop grace period), watches the task to its end, and keeps that exit
code and those times on the service as a label (see the package docstring)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..base import ContainerNotFound, ContainerStatus, EngineError, EngineUnavailable, NotSupported
from ..docker.logs import _body_blocks
from ..docker.translate import engine_errors
from .logs import hang_up
from .mapping import (
    LABEL_FINAL,
    LABEL_PHASE,
    PHASE_CREATED,
    PHASE_STOPPED,
    PHASE_STOPPING,
    final_label,
    latest_task,
    service_status,
)


class StopMixin:
    """Part of SwarmBackend: needs ``api``, ``cache``, ``inspect``, ``_update`` and the log calls."""

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
            copied = [0, time.monotonic()]  # bytes so far, when the last block came

            def copy() -> None:
                try:
                    for block in _body_blocks(res):
                        out.write(block)
                        out.flush()
                        copied[:] = [copied[0] + len(block), time.monotonic()]
                except Exception:  # noqa: BLE001 - closed under the reader once the task ended
                    pass

            reader = threading.Thread(target=copy, daemon=True, name=f"swarm-stop-logs-{handle[:12]}")
            reader.start()
            # The update deletes the task and its log: the follow must hold all written so far
            # first (on a loaded node its first bytes came after the task was gone).
            _wait_for(lambda: copied[0] >= self._log_size(handle), timeout=10)
            # The task as it runs now names its container: on a loaded manager the update can
            # delete the task before the first listing below sees it, and that container's
            # engine is then the only one that knows the exit code.
            with engine_errors():
                seen: list[dict] = self.api.tasks(filters={"service": handle})
            began = time.time()
            self._update(handle, 0, {LABEL_PHASE: PHASE_STOPPING}, grace=grace)
            last: ContainerStatus | None = None
            while True:
                with engine_errors():
                    tasks = self.api.tasks(filters={"service": handle})
                    nodes = {n["ID"]: n for n in self.api.nodes()} if tasks else {}
                self._note_started(tasks)
                if not tasks:
                    break
                seen = tasks
                with engine_errors():
                    svc = self.api.inspect_service(handle)
                last = service_status(svc, tasks, nodes, self._started)
                if last.finished:
                    break
                time.sleep(0.05)
            # The last lines reach the log stream after the task's end: wait until it is quiet.
            _wait_for(lambda: time.monotonic() - copied[1] >= 0.5, timeout=3)
            hang_up(res)
            reader.join(timeout=5)
            out.close()
            os.replace(tmp, frames)
            if last is None or not last.finished or last.exit_code is None:
                # Swarm removed the task, or reported its shutdown without the code, before we
                # saw it: the task's container on its node still knows, if this driver reaches it.
                code = self._exit_code_on_node(seen, since=began)
                if code is not None:
                    last = ContainerStatus(handle, "exited", code, False, last.started_at if last else None,
                                           last.finished_at if last and last.finished else time.time())
            if last is None or not last.finished:
                last = ContainerStatus(handle, "exited", None, False, last.started_at if last else None, time.time(),
                                       "stopped; its exit code was not seen before Swarm removed its task")
            self._update(handle, None, {LABEL_PHASE: PHASE_STOPPED, LABEL_FINAL: final_label(last)})
        except ContainerNotFound:
            pass  # removed meanwhile
        finally:
            if res is not None:
                hang_up(res)
            with self._stops_lock:
                self._stops.pop(handle, None)

    def _exit_code_on_node(self, tasks: list[dict], since: float, wait: float = 5.0) -> int | None:
        """The exit code of the job's last task container, from the engine of its node (the
        manager, or one in ``node_urls``): the container's state, waiting up to ``wait`` s for
        it to exit, or, once Swarm has removed it, its ``die`` event since ``since``; None when
        no engine this driver reaches knows it."""
        task = latest_task(tasks)
        cid = (((task or {}).get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not cid:
            return None
        deadline = time.monotonic() + wait
        for api in [self.api, *self._nodes_apis()]:
            while True:
                try:
                    with engine_errors():
                        state = api.inspect_container(cid)["State"]
                except (EngineError, EngineUnavailable):  # removed, not on this node, or unreachable
                    code = _die_exit_code(api, cid, since)
                    if code is not None:
                        return code
                    if api is not self.api or time.monotonic() > deadline:
                        break
                    # The manager runs most tasks: its die event can trail the removal a little.
                    time.sleep(0.1)
                    continue
                if state.get("Status") in ("exited", "dead"):
                    return state.get("ExitCode")
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.1)
        return None

    def _log_size(self, handle: str) -> int:
        """Bytes of the service's log as a follow from the start delivers them (timestamped
        frames); 0 when it cannot be read."""
        try:
            with engine_errors():
                res = self.api._get(self.api._url("/services/{0}/logs", handle),
                                    params={"stdout": 1, "stderr": 1, "timestamps": 1}, stream=True)
                self.api._raise_for_status(res)
                return sum(len(block) for block in _body_blocks(res))
        except (EngineError, EngineUnavailable):
            return 0

    def _frames_path(self, handle: str) -> Path:
        return self.cache / f"{handle}.frames"


def _wait_for(condition, timeout: float, pause: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
    return True


def _die_exit_code(api, cid: str, since: float) -> int | None:
    """The exit code in the container's ``die`` event among the engine's recent events (it
    keeps them after the container is gone); None without one."""
    try:
        with engine_errors():
            events = api.events(since=since, until=time.time(), decode=True,
                                filters={"type": "container", "container": cid, "event": "die"})
            for ev in events:
                code = (ev.get("Actor") or {}).get("Attributes", {}).get("exitCode")
                if code is not None:
                    return int(code)
    except (EngineError, EngineUnavailable, ValueError):
        pass
    return None
