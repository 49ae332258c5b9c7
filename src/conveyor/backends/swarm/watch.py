"""Part of the swarm driver: finding this executor's jobs (list); watching them (events) polls
it (backends/polling.py), since Swarm 20.10 sends no task events through /events."""

from __future__ import annotations

import docker.errors

from ..base import LABEL_EXECUTOR, ContainerStatus
from ..docker.translate import engine_errors
from ..polling import PolledEvents
from .mapping import service_status


class WatchMixin(PolledEvents):
    """Part of SwarmBackend: needs ``api``, ``executor_id``, ``_started``, ``_note_started``
    and ``_events_lock``."""

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
