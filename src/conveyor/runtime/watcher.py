"""Watching the engine: one event subscription for every job, and the reconcile that makes the
store true again at start and after every reconnect.

However many jobs run, this is one thread: events are matched to jobs by label and handed to
the finisher. After the event stream breaks (dockerd restarted) it reconnects and reconciles
against ``inspect`` before trusting anything again: nothing is concluded from a broken
stream alone.
"""

from __future__ import annotations

import logging
import threading
import time

from ..backends.base import LABEL_JOB, Backend, ContainerStatus, EngineEvent
from ..errors import EngineUnavailable, JobNotFound
from ..state import LIVE_STATES, WAITING_STATES, JobState, Substate, in_engine
from ..store import Store
from .finisher import Finisher, removable
from .launcher import Launcher
from .stopper import Stopper

log = logging.getLogger("conveyor.supervisor")


class Watcher:
    def __init__(self, store: Store, backend: Backend, executor_id: str, finisher: Finisher, launcher: Launcher,
                 stopper: Stopper):
        self.store, self.backend, self.executor_id = store, backend, executor_id
        self.finisher, self.launcher, self.stopper = finisher, launcher, stopper
        self.orphans: dict[str, ContainerStatus] = {}
        self.reconciled_at: float | None = None  # last reconcile's end: all known jobs re-attached
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="conveyor-events", daemon=True)

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        if not self._subscribed.wait(timeout):
            raise EngineUnavailable("could not subscribe to the engine's event stream")

    def close(self) -> None:
        self._stop.set()
        self.backend.close_events()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        since: float | None = None
        backoff = 0.2
        while not self._stop.is_set():
            try:
                events = self.backend.events(since=since)
                since = since or time.time()
                # Subscribed first, then reconcile: whatever happens in between arrives as
                # an event, so nothing falls through the gap.
                self.reconcile()
                self._subscribed.set()
                backoff = 0.2
                for ev in events:
                    since = ev.time
                    self._handle(ev)
            except EngineUnavailable as exc:
                if not self._stop.is_set():
                    log.warning("engine event stream lost: %s; reconnecting", exc)
            except Exception:  # noqa: BLE001 - keep supervising whatever happened
                log.exception("event loop error; reconnecting")
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, 5.0)

    def _ended_with_container(self, containers: dict[str, ContainerStatus], live: set[str]) -> set[str]:
        """The ended jobs the engine still has a container of; an auto_remove one's is removed
        (a crash between recording its result and removing it: the result is in)."""
        found = set()
        for job_id, container in containers.items():
            if job_id in live:
                continue
            try:
                rec = self.store.get(job_id)
            except JobNotFound:
                continue  # not ours (any more): an orphan
            found.add(job_id)
            if removable(rec):
                self.backend.remove(container.id)
        return found

    def _handle(self, ev: EngineEvent) -> None:
        if not ev.job_id:
            return
        if ev.action in ("die", "destroy", "oom"):
            self.finisher.finalize_later(ev.job_id, ended=True)
        elif ev.action in ("start", "queued") and self.backend.capabilities.queues:
            self.finisher.note_start(ev.job_id, ev.node)  # Queued in the engine -> Running, or a new reason
        elif ev.action == "start" and ev.node:
            self.finisher.note_node(ev.job_id, ev.node)
        elif ev.action == "pause":
            self.finisher.move(ev.job_id, JobState.SUSPENDED, {JobState.RUNNING}, "engine: paused")
        elif ev.action == "unpause":
            self.finisher.move(ev.job_id, JobState.RUNNING, {JobState.SUSPENDED}, "engine: unpaused")

    def reconcile(self) -> None:
        """Compare the store with what the engine has, and make the store true again."""
        began = time.monotonic()
        containers: dict[str, ContainerStatus] = {}
        unlabelled: list[ContainerStatus] = []
        for c in self.backend.list():
            job_id = c.labels.get(LABEL_JOB)
            if job_id:
                containers[job_id] = c
            else:
                unlabelled.append(c)
        counts = dict.fromkeys(("live", "finishing", "relaunch", "lost"), 0)
        # The live jobs (an index read), not the whole history: a start with 100,000 ended
        # jobs costs what one with none does. Ended jobs matter only where a container is left.
        live = self.store.list(LIVE_STATES, executor_id=self.executor_id)
        known = {rec.id for rec in live} | self._ended_with_container(containers, {rec.id for rec in live})
        for rec in live:
            container = containers.get(rec.id)
            if rec.state in WAITING_STATES and rec.substate != Substate.ENGINE_QUEUED:
                # Not started yet: the scheduler launches it, with the container a crashed
                # launch made (adopted here if its id was not recorded) or a new one.
                if container is None and rec.container_id is not None:
                    self.store.update(rec.id, container_id=None)  # made, then removed by someone
                elif container is not None and rec.container_id is None:
                    self.store.update(rec.id, container_id=container.id)  # crashed right after create
                continue
            if container is None:
                if rec.container_id is not None:
                    # Not in the list: confirm with inspect under the job's lock (a launch may
                    # have made it a moment ago) before recording it lost.
                    counts["lost"] += 1
                    self.finisher.finalize_later(rec.id)
                continue
            if container.status == "created":
                if in_engine(rec.state, rec.substate):  # claimed, then the process died
                    counts["relaunch"] += 1
                    self.launcher.start_claimed(rec.id)
                continue
            if container.finished:
                counts["finishing"] += 1
                self.finisher.finalize_later(rec.id)
            else:
                counts["live"] += 1
                self.finisher.sync_alive(rec, container)
                self.stopper.follow(rec, rec.stop_reason)
        strays = [c for job_id, c in containers.items() if job_id not in known] + unlabelled
        for container in strays:
            if container.id not in self.orphans:
                # Never adopted, never removed: reported, here and by Executor.orphans.
                self.orphans[container.id] = container
                log.warning(
                    "orphan container %s (%s) carries this executor's label but job %s is not in the store; "
                    "left alone (inspect it, or remove it with 'conveyor cleanup')",
                    container.id[:12], container.status, container.labels.get(LABEL_JOB, "?"),
                )
        self.reconciled_at = time.time()
        log.info(
            "reconciled in %.2fs: %d live jobs re-attached, %d finished to record, %d to start, "
            "%d missing, %d orphan containers",
            time.monotonic() - began, counts["live"], counts["finishing"], counts["relaunch"], counts["lost"], len(strays),
        )
