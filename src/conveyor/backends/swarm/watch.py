"""Part of the swarm driver: finding this executor's jobs (list) and watching them (events),
by polling, since Swarm 20.10 sends no task events through /events."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import docker.errors

from ..base import LABEL_EXECUTOR, LABEL_JOB, ContainerStatus, EngineEvent, EngineUnavailable
from ..docker.translate import engine_errors
from .mapping import service_status

POLL_S = 0.25  # how often events() looks at the tasks


class WatchMixin:
    """Part of SwarmBackend: needs ``api``, ``executor_id``, ``_started``, ``_note_started``,
    ``_events_lock`` and ``_events_stop``."""

    def list(self) -> list[ContainerStatus]:
        """Every service this executor made, with its status from its tasks."""
        for attempt in range(5):
            with engine_errors():
                services = self.api.services(filters={"label": f"{LABEL_EXECUTOR}={self.executor_id}"})
                try:
                    tasks = self.api.tasks(filters={"service": [s["ID"] for s in services]}) if services else []
                except docker.errors.NotFound:  # a service went between the two calls: list again
                    if attempt == 4:
                        raise
                    continue
                nodes = {n["ID"]: n for n in self.api.nodes()} if tasks else {}
            break
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
                    yield EngineEvent("start", sid, job, s.started_at or now, node=s.node)
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
