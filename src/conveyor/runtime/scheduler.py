"""The scheduler: takes queued jobs from the store and hands them to the launcher.

Submitting only writes a Queued row and pokes the supervisor (the wake socket); this loop runs
inside whichever process holds the state directory's supervisor lock, so a job is launched
exactly once however many processes submit. The :class:`~.planner.Planner` decides what may
start; a few launcher threads do the starting, so one slow pull does not hold up the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .. import faults
from ..faults import Point
from ..capacity import Capacity, SchedulingConfig
from ..daemon import WakeReceiver
from ..errors import EngineUnavailable, JobNotFound
from ..state import WAITING_STATES, JobState, Substate
from ..store import JobRecord, Store
from .launcher import Launcher
from .leases import keep_leases
from .planner import Inflight, Planner

log = logging.getLogger("conveyor.scheduler")


class Scheduler:
    def __init__(
        self,
        store: Store,
        executor_id: str,
        launcher: Launcher,
        waker: WakeReceiver,
        notify: Callable[[str], None],
        stop: Callable[[JobRecord, str, float], None],
        config: SchedulingConfig,
        capacity: Capacity,
        launchers: int = 4,
    ):
        self.store, self.launcher, self.executor_id = store, launcher, executor_id
        self._waker = waker
        self._notify = notify
        self._terminate = stop  # the stopper's: SIGTERM, grace, SIGKILL through the engine
        self.planner = Planner(store, executor_id, config, capacity)
        self._pool = ThreadPoolExecutor(max_workers=launchers, thread_name_prefix="conveyor-launch")
        self._inflight: dict[str, Inflight] = {}  # handed to a launcher, not yet seen Running
        self._inflight_lock = threading.Lock()
        # Held while a pass plans and hands out its starts, and while a lease is reserved: a
        # lease never takes what a pass is starting, and a pass sees every lease reserved.
        self._admission = threading.Lock()
        self._blocked_since: dict[str, float] = {}
        self._stopping: set[str] = set()  # engine-queued jobs being stopped for a failed dependency
        self._next_wake: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="conveyor-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._waker.poke()

    def close(self) -> None:
        self._stop.set()
        self._waker.poke()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True)
        self._waker.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatch()
            except Exception:  # noqa: BLE001 - the queue must keep moving
                log.exception("dispatch failed")
            # Woken at once by a submitter or a job's end; otherwise at the next backoff,
            # start deadline or backfill window, and at least every second as a safety net.
            timeout = 1.0 if self._next_wake is None else min(1.0, max(0.01, self._next_wake - time.time()))
            self._waker.wait(timeout=timeout)

    def keep_leases(self) -> None:
        """Expire overdue leases and end drained ones (runtime/leases.py), by the store's clock."""
        keep_leases(self.store, self.executor_id, self._terminate, self._notify)

    def reserve(self, admit: Callable[[dict[str, Inflight]], None]) -> None:
        """Run ``admit(inflight)`` with no pass planning meanwhile (a lease's reservation)."""
        with self._admission:
            with self._inflight_lock:
                inflight = dict(self._inflight)
            admit(inflight)

    def dispatch(self) -> None:
        self.keep_leases()
        with self._admission:
            self._dispatch()

    def _dispatch(self) -> None:
        with self._inflight_lock:
            inflight = dict(self._inflight)
        plan = self.planner.plan(inflight=inflight, blocked_since=self._blocked_since)
        self._next_wake = plan.next_wake
        self._stopping &= {f[0] for f in plan.failures}
        for job_id, substate, message in plan.failures:
            self._fail_waiting(job_id, substate, message)
        for job_id, inf in plan.starts:
            with self._inflight_lock:
                if job_id in self._inflight:
                    continue
                self._inflight[job_id] = inf
            self._pool.submit(self._launch_logged, job_id, inf.gpu_ids)
        self.launcher.close_ended_arrays(self.executor_id)

    def _fail_waiting(self, job_id: str, substate: str, message: str) -> None:
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            return
        if rec.substate == Substate.ENGINE_QUEUED:
            # Its engine holds it for a dependency that failed: ended there, once.
            if job_id not in self._stopping:
                self._stopping.add(job_id)
                self._terminate(rec, substate, 0)
            return
        if self.store.transition(
            job_id, JobState.FAILED, substate, expect=WAITING_STATES, reason=substate, message=message,
            finished_at=time.time(),
        ):
            faults.reached(Point.DEPENDENCY_FAILED, job_id)
            self._notify(job_id)

    def _launch_logged(self, job_id: str, gpu_ids: tuple[str, ...]) -> None:
        try:
            self.launcher.launch(job_id, gpu_ids)
        except EngineUnavailable as exc:
            log.warning("job %s stays queued: %s", job_id, exc)
        except Exception:  # noqa: BLE001
            log.exception("launching job %s failed", job_id)
        finally:
            with self._inflight_lock:
                self._inflight.pop(job_id, None)
            self.wake()  # what it held (if it did not start) is free again
