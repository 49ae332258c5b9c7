"""Events by polling, for engines that send none a driver can subscribe to (Swarm 20.10 has no
task events; Slurm has none at all): the driver's ``list()`` is looked at every ``poll_s``
seconds and each change becomes the event the watcher expects from a container engine."""

from __future__ import annotations

import threading
import time
from typing import Iterator

from .base import LABEL_JOB, ContainerStatus, EngineEvent, EngineUnavailable


class PolledEvents:
    """A mixin for a driver with ``name``, ``list()`` and an ``_events_lock`` (a Lock of its
    own): ``events()`` and ``close_events()`` from it. ``poll_s``: how often to look."""

    poll_s = 0.25
    _events_stop: threading.Event | None = None

    def events(self, since: float | None = None) -> Iterator[EngineEvent]:
        """This executor's jobs' changes, polled from a snapshot taken here (subscribed when
        this returns): ``start`` when a job runs, ``queued`` when its engine gives a new reason
        it waits, ``die`` when it reaches its end, ``destroy`` when it is gone. ``since`` is not replayed: the watcher's reconcile after subscribing
        covers what came before. A second call ends the first stream."""
        stop = threading.Event()
        with self._events_lock:
            if self._events_stop is not None:
                self._events_stop.set()
            self._events_stop = stop
        snapshot = {s.id: s for s in self.list()}
        return self._poll(stop, snapshot)

    def _poll(self, stop: threading.Event, seen: dict[str, ContainerStatus]) -> Iterator[EngineEvent]:
        while True:
            if stop.wait(self.poll_s):
                raise EngineUnavailable(f"the {self.name} event poll was closed")
            now = time.time()
            current = {s.id: s for s in self.list()}
            for handle, s in current.items():
                before = seen.get(handle)
                job = s.labels.get(LABEL_JOB)
                if _running(s) and not (before is not None and _running(before)):
                    yield EngineEvent("start", handle, job, s.started_at or now, node=s.node)
                elif s.queued and (before is None or before.error != s.error):
                    yield EngineEvent("queued", handle, job, now)  # still in the engine's queue: a new reason
                if s.finished and not (before is not None and before.finished):
                    yield EngineEvent("die", handle, job, s.finished_at or now)
            for handle, before in seen.items():
                if handle not in current:
                    yield EngineEvent("destroy", handle, before.labels.get(LABEL_JOB), now)
            seen = current

    def close_events(self) -> None:
        with self._events_lock:
            stop, self._events_stop = self._events_stop, None
        if stop is not None:
            stop.set()


def _running(s: ContainerStatus) -> bool:
    """Running for real: a job still waiting for its engine to place it is "running" with the
    wait's reason in ``error`` and no start time (see the swarm and slurm drivers)."""
    return s.status == "running" and s.started_at is not None and not s.error
