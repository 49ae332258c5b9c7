"""Supervision: one engine event subscription, one deadline timer and a small worker pool.

However many jobs run, the supervisor uses the same few threads: events are matched to jobs
by label, and waiters are woken through futures. After the event stream breaks (dockerd
restarted) it reconnects and reconciles the store against the engine before trusting
anything again.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from . import faults
from .backends.base import LABEL_JOB, Backend, ContainerStatus, EngineEvent
from .errors import ConveyorError, EngineUnavailable, JobNotFound
from .daemon import WakeReceiver
from .home import Home
from .scheduler import Scheduler
from .state import WAITING_STATES, JobState, Substate
from .store import JobRecord, Store

log = logging.getLogger("conveyor.supervisor")

ACTIVE = (JobState.RUNNING, JobState.SUSPENDED, JobState.UNDETERMINED)


class DeadlineTimer:
    """One thread, one heap: fires ``callback(kind, job_id)`` when a deadline passes."""

    def __init__(self, callback: Callable[[str, str], None]):
        self._callback = callback
        self._heap: list[tuple[float, int, str, str]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="conveyor-deadlines", daemon=True)
        self._thread.start()

    def add(self, when: float, kind: str, job_id: str) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._counter), kind, job_id))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.time()):
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.time())
                if self._closed:
                    return
                _, _, kind, job_id = heapq.heappop(self._heap)
            try:
                self._callback(kind, job_id)
            except Exception:  # noqa: BLE001 - a failing callback must not stop the timer
                log.exception("deadline %s for job %s failed", kind, job_id)


def classify(status: ContainerStatus, stop_reason: str | None) -> tuple[JobState, str, str | None]:
    """Final state, substate and message from what the engine saw. OOM comes only from the
    engine's own flag: exit code 137 alone means SIGKILL, not out-of-memory."""
    code = status.exit_code
    if status.oom_killed and code != 0:
        return JobState.FAILED, Substate.OOM_KILLED, "killed by the out-of-memory killer (memory limit reached)"
    if stop_reason == Substate.TIMEOUT:
        return JobState.FAILED, Substate.TIMEOUT, f"terminated at its timeout (exit code {code})"
    if stop_reason == Substate.CANCELLED:
        return JobState.FAILED, Substate.CANCELLED, f"cancelled (exit code {code})"
    if code == 0:
        note = "a process inside hit the memory limit and was killed" if status.oom_killed else None
        return JobState.DONE, Substate.EXITED, note
    return JobState.FAILED, Substate.EXITED, f"exited with code {code}"


class Supervisor:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        home: Home,
        executor_id: str,
        on_change: Callable[[str], None],
    ):
        self.store, self.backend, self.home, self.executor_id = store, backend, home, executor_id
        self._on_change = on_change
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="conveyor-finish")
        self._timer = DeadlineTimer(self._on_deadline)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self.orphans: dict[str, ContainerStatus] = {}
        self.reconciled_at: float | None = None  # last reconcile's end: all known jobs re-attached
        self._thread = threading.Thread(target=self._watch, name="conveyor-events", daemon=True)
        self.scheduler = Scheduler(self, WakeReceiver(home))

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        if not self._subscribed.wait(timeout):
            raise EngineUnavailable("could not subscribe to the engine's event stream")
        self.scheduler.start()

    def notify(self, job_id: str) -> None:
        """A transition was committed: let the executor wake its waiters."""
        self._on_change(job_id)

    def close(self) -> None:
        self._stop.set()
        self.scheduler.close()
        self.backend.close_events()
        self._timer.close()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True)

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

    # ------------------------------------------------------------------ events

    def _handle(self, ev: EngineEvent) -> None:
        if not ev.job_id:
            return
        if ev.action in ("die", "destroy", "oom"):
            self.finalize_later(ev.job_id)
        elif ev.action == "pause":
            self._move(ev.job_id, JobState.SUSPENDED, {JobState.RUNNING}, "engine: paused")
        elif ev.action == "unpause":
            self._move(ev.job_id, JobState.RUNNING, {JobState.SUSPENDED}, "engine: unpaused")

    def _move(self, job_id: str, to: JobState, expect: set[JobState], reason: str, **fields) -> None:
        try:
            if self.store.transition(job_id, to, expect=expect, reason=reason, **fields):
                self._on_change(job_id)
        except JobNotFound:
            pass

    # ------------------------------------------------------------------ deadlines and stopping

    def watch_timeout(self, rec: JobRecord) -> None:
        if rec.spec.timeout:
            self._timer.add((rec.started_at or time.time()) + rec.spec.timeout, "timeout", rec.id)

    def terminate(self, rec: JobRecord, reason: str, grace: float) -> None:
        """Record why, send SIGTERM, and SIGKILL after ``grace`` seconds if still alive.
        Never blocks for the grace period: the SIGKILL is a timer entry."""
        self.store.update(rec.id, stop_reason=reason)
        if rec.container_id is None:
            return
        try:
            status = self.backend.inspect(rec.container_id)
            if status is None or not status.alive:
                self.finalize_later(rec.id)
                return
            self.backend.signal(rec.container_id, "SIGKILL" if grace <= 0 else "SIGTERM")
            if status.status == "paused":
                self.backend.unpause(rec.container_id)  # a frozen process cannot handle the signal
        except ConveyorError:
            raise
        except Exception as exc:  # noqa: BLE001 - engine said the container is not running
            log.info("signal to job %s: %s", rec.id, exc)
        if grace > 0:
            self._timer.add(time.time() + grace, "kill", rec.id)

    def _on_deadline(self, kind: str, job_id: str) -> None:
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            return
        if rec.state.is_final or rec.container_id is None:
            return
        if kind == "timeout":
            self._pool.submit(self.terminate, rec, Substate.TIMEOUT, rec.spec.stop_grace)
        elif kind == "kill":
            try:
                self.backend.signal(rec.container_id, "SIGKILL")
            except Exception as exc:  # noqa: BLE001 - it exited in the meantime
                log.debug("SIGKILL to job %s: %s", job_id, exc)

    # ------------------------------------------------------------------ finishing

    def finalize_later(self, job_id: str) -> None:
        self._pool.submit(self._finalize_logged, job_id)

    def _finalize_logged(self, job_id: str) -> None:
        try:
            self.finalize(job_id)
        except EngineUnavailable:
            pass  # the reconcile after reconnecting will finish it
        except Exception:  # noqa: BLE001
            log.exception("finalizing job %s failed", job_id)

    def lock_for(self, job_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(job_id, threading.Lock())

    def finalize(self, job_id: str) -> None:
        """If the job's container has finished: save logs, then record the final state, then
        (if asked) remove the container. Safe to call any number of times, from any path."""
        with self.lock_for(job_id):
            try:
                rec = self.store.get(job_id)
            except JobNotFound:
                return
            if rec.container_id is None:
                return
            if rec.state.is_final:
                if rec.spec.auto_remove:
                    self.backend.remove(rec.container_id)
                return
            if rec.state not in ACTIVE:
                # Queued jobs' containers are never started before the claim, and a Requeued
                # job's container is its last attempt's: a (replayed) event about it must not
                # end the job.
                return
            status = self.backend.inspect(rec.container_id)
            if status is None:
                self._lost(rec)
                return
            if not status.finished:
                self._sync_alive(rec, status)
                return
            logs = self.home.job_logs(job_id)
            logs.mkdir(parents=True, exist_ok=True)
            self.backend.save_all_logs(rec.container_id, {s: logs / s for s in ("stdout", "stderr")})
            faults.reached("after-logs", job_id)
            state, substate, message = classify(status, rec.stop_reason)
            if rec.spec.outputs:
                # Captured before the state is recorded and before the container can go:
                # a crash in between captures again on the next finalize (same digests).
                problem = self._capture_outputs(rec)
                if problem:
                    message = f"{message}; {problem}" if message else problem
                faults.reached("after-outputs", job_id)
            started_at, finished_at = status.started_at, status.finished_at
            if started_at is not None and finished_at is not None and started_at > finished_at:
                # The engine stamps StartedAt after its start call returns, but FinishedAt
                # with the process's real exit time: a job that exits at once can show
                # StartedAt > FinishedAt. It cannot have started after it ended.
                started_at = finished_at
            if rec.state in (JobState.QUEUED, JobState.UNDETERMINED):
                self.store.transition(job_id, JobState.RUNNING, reason="engine: started", started_at=started_at)
            moved = self.store.transition(
                job_id,
                state,
                substate,
                reason="engine: container finished",
                exit_code=status.exit_code,
                message=message,
                started_at=started_at,
                finished_at=finished_at,
            )
            faults.reached("after-record", job_id)
            if rec.spec.inputs and self.store.get(job_id).state.is_final:
                shutil.rmtree(self.home.staging(job_id), ignore_errors=True)
            if rec.spec.auto_remove:
                self.backend.remove(rec.container_id)
        if moved:
            self._on_change(job_id)

    def _capture_outputs(self, rec: JobRecord) -> str | None:
        """Record the job's output filesets; a note for the job's message if that failed."""
        from .cas import BlobStore, CasError, capture_outputs

        try:
            captured = capture_outputs(self.backend, rec.container_id, rec.spec.outputs, BlobStore(self.home.cas))
        except (CasError, OSError) as exc:
            if type(exc).__module__.split(".")[0] in ("requests", "urllib3"):
                raise EngineUnavailable(f"reading outputs of job {rec.id}: {exc}") from None
            log.error("capturing outputs of job %s failed: %s", rec.id, exc)
            return f"outputs not captured: {exc}"
        self.store.set_filesets(rec.id, "output", captured)
        return None

    def _lost(self, rec: JobRecord) -> None:
        moved = self.store.transition(
            rec.id,
            JobState.FAILED,
            Substate.CONTAINER_LOST,
            reason="engine: container missing",
            message="the container was removed outside Conveyor before its exit was recorded",
            finished_at=time.time(),
        )
        if moved:
            self._on_change(rec.id)

    def _sync_alive(self, rec: JobRecord, status: ContainerStatus) -> None:
        if status.status == "paused":
            self._move(rec.id, JobState.SUSPENDED, {JobState.RUNNING, JobState.UNDETERMINED}, "engine: paused")
        elif status.status in ("running", "restarting"):
            self._move(
                rec.id,
                JobState.RUNNING,
                {JobState.QUEUED, JobState.SUSPENDED, JobState.UNDETERMINED},
                f"engine: {status.status}",
                started_at=status.started_at,
            )

    # ------------------------------------------------------------------ reconcile

    def reconcile(self) -> None:
        """Compare the store with what the engine has, and make the store true again.

        Runs before any event is handled, at start and after every reconnect. Every job the
        store thinks is live is checked against ``inspect``: nothing is concluded from a broken
        event stream alone."""
        began = time.monotonic()
        containers: dict[str, ContainerStatus] = {}
        unlabelled: list[ContainerStatus] = []
        for c in self.backend.list():
            job_id = c.labels.get(LABEL_JOB)
            if job_id:
                containers[job_id] = c
            else:
                unlabelled.append(c)
        known = set()
        counts = dict.fromkeys(("live", "finishing", "relaunch", "lost"), 0)
        for rec in self.store.list(executor_id=self.executor_id):
            known.add(rec.id)
            container = containers.get(rec.id)
            if rec.state.is_final:
                if rec.spec.auto_remove and container is not None:
                    # Crashed between recording the result and removing: the result is in.
                    self.backend.remove(container.id)
                continue
            if rec.state in WAITING_STATES:
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
                    self.finalize_later(rec.id)
                continue
            if container.status == "created":
                if rec.state is JobState.RUNNING:  # claimed, then the process died
                    counts["relaunch"] += 1
                    self._start_claimed(rec.id)
                continue
            if container.finished:
                counts["finishing"] += 1
                self.finalize_later(rec.id)
            else:
                counts["live"] += 1
                self._sync_alive(rec, container)
                if rec.state in ACTIVE:
                    self.watch_timeout(rec)
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

    def _start_claimed(self, job_id: str) -> None:
        """Start the container of a job that was claimed (Running) before a crash. Re-checked
        under the job's lock: a launch in this process may have started it meanwhile, and
        starting an exited container again would run the job twice."""
        with self.lock_for(job_id):
            rec = self.store.get(job_id)
            status = self.backend.inspect(rec.container_id) if rec.container_id else None
            if rec.state is JobState.RUNNING and status is not None and status.status == "created":
                self.scheduler.start_container(rec)
