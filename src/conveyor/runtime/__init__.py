"""The runtime: what the one supervising process of a state directory runs.

    Watcher  ── engine events, reconcile ──►  Finisher (logs, outputs, final state, removal)
       │                                         ▲
       └── relaunch a claimed job ──► Launcher ◄─┴── Scheduler (Planner: what may start now)
                                         │
    Stopper (cancel, timeouts: SIGTERM, grace, SIGKILL on one DeadlineTimer)
    Sampler (every running job's usage, each interval, into the store)

:class:`Runtime` builds these parts and wires them; none of them imports another's owner, so
there is no cycle. Every committed transition is reported through :meth:`Runtime.notify`,
which wakes the waiters (through the Executor's callback) and the scheduler when a job gave
back what it held.
"""

from __future__ import annotations

from typing import Callable

from ..backends.base import Backend
from ..capacity import Capacity, SchedulingConfig
from ..daemon import WakeReceiver
from ..home import Home
from ..state import JobState, Substate
from ..store import JobRecord, Store
from .finisher import Finisher
from .launcher import Launcher
from .sampler import Sampler
from .locks import JobLocks
from .scheduler import Scheduler
from .stopper import Stopper
from .terminals import Terminals
from .watcher import Watcher

__all__ = ["Runtime"]


class Runtime:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        home: Home,
        executor_id: str,
        scheduling: SchedulingConfig,
        capacity: Capacity,
        on_change: Callable[[str], JobState | None],
    ):
        self._on_change = on_change  # wakes the job's waiters; returns its state (None: gone)
        locks = JobLocks()
        self.finisher = Finisher(store, backend, home, locks, self.notify, scheduling.retention.log_max_bytes)
        self.stopper = Stopper(store, backend, self.finisher)
        self.terminals = Terminals()
        self.launcher = Launcher(store, backend, home, locks, self.notify, self._started, self.terminals)
        self.scheduler = Scheduler(
            store, executor_id, self.launcher, WakeReceiver(home), self.notify, self.stopper.terminate, scheduling, capacity
        )
        self.watcher = Watcher(store, backend, executor_id, self.finisher, self.launcher, self.stopper)
        self.sampler = Sampler(store, backend, executor_id, scheduling.usage)

    def start(self) -> None:
        """Subscribe to the engine and reconcile (leases too), then start launching."""
        try:
            self.watcher.start()
            self.scheduler.keep_leases()  # once at reconcile: an expiry that fell while none supervised
            self.scheduler.start()
            self.sampler.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.sampler.close()
        self.scheduler.close()
        self.watcher.close()
        self.stopper.close()
        self.finisher.close()

    def notify(self, job_id: str) -> None:
        """A transition of ``job_id`` was committed."""
        state = self._on_change(job_id)
        if state is not None and state not in (JobState.RUNNING, JobState.SUSPENDED):
            self.scheduler.wake()  # it ended or was requeued: resources, dependencies, retries

    def _started(self, rec: JobRecord) -> None:
        """The engine took the job: the stopper takes it from here (its timeout, a stop asked
        for meanwhile); a job its engine queues is looked at once now (running already, or
        the engine's reason to wait)."""
        self.stopper.started(rec)
        if rec.substate == Substate.ENGINE_QUEUED:
            self.finisher.finalize_later(rec.id)

    def wake(self) -> None:
        """New work was queued or released."""
        self.scheduler.wake()

    def terminate(self, rec: JobRecord, reason: str, grace: float) -> None:
        self.stopper.terminate(rec, reason, grace)

    def finalize(self, job_id: str) -> None:
        self.finisher.finalize(job_id)

    @property
    def reconciled_at(self) -> float | None:
        return self.watcher.reconciled_at
