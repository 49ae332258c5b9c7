"""The two ways an Executor relates to its state directory, as two objects behind one interface.

Exactly one process per state directory supervises (it holds ``supervisor.lock`` and runs the
:class:`~conveyor.runtime.Runtime`); every other Executor observes: it writes the store, pokes
the supervisor's wake socket, and learns about transitions by reading the store. The Executor
holds one of these and never asks which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from ..backends.base import ContainerNotFound, ContainerStatus, EngineError
from ..daemon import SupervisorLock, wake
from ..state import JobState, Substate

if TYPE_CHECKING:
    from ..backends.router import BackendRouter as Backend
    from ..home import Home
    from ..runtime import Runtime
    from ..store import JobRecord, Store
    from .waiters import Waiters


class Supervising:
    """This process supervises: launching, stopping and recording are the runtime's."""

    supervising = True
    # Only transitions another process commits (a cancel through an observing Executor) are
    # learnt by polling the store; this process's own are reported as they happen.
    poll_interval = 1.0

    def __init__(self, runtime: "Runtime", lock: SupervisorLock):
        self.runtime, self.lock = runtime, lock

    def changed(self, job_id: str) -> None:
        self.runtime.notify(job_id)

    def wake(self) -> None:
        self.runtime.wake()

    def stop(self, rec: "JobRecord", reason: str, grace: float) -> None:
        self.runtime.terminate(rec, reason, grace)

    def reserve(self, admit: "Callable[[dict], None]") -> None:
        """Run a lease's admission with no scheduler pass planning meanwhile."""
        self.runtime.scheduler.reserve(admit)

    def terminal(self, job_id: str) -> "Iterator[bytes] | None":
        """A tty job's output as its terminal wrote it, from the first byte (terminals.py)."""
        return self.runtime.terminals.follow(job_id)

    def settle(self, job_id: str) -> None:
        """What a restart does for one job: start its claimed container, or record its end."""
        self.runtime.launcher.start_claimed(job_id)
        self.runtime.finalize(job_id)

    def end_for_cleanup(self, rec: "JobRecord", status: ContainerStatus) -> None:
        if status.alive:
            self.runtime.terminate(rec, Substate.CANCELLED, grace=0)
        else:
            self.runtime.finalize(rec.id)

    def close(self) -> None:
        self.runtime.close()
        self.lock.release()


class Observing:
    """Another process supervises, or none does yet: the store is the channel. Stopping a
    container cannot wait for a supervisor that may not exist, so it goes to the engine."""

    supervising = False
    poll_interval = 0.2

    def __init__(self, home: "Home", store: "Store", waiters: "Waiters", backend: "Backend"):
        self.home, self.store, self.waiters = home, store, waiters
        self.backend = backend  # connects on first use: read-only views never need the engine

    def changed(self, job_id: str) -> None:
        self.waiters.changed(job_id)

    def wake(self) -> None:
        wake(self.home)

    def terminal(self, job_id: str) -> None:
        return None  # only the supervising process reads terminals

    def reserve(self, admit: "Callable[[dict], None]") -> None:
        """No scheduler runs here: the store's write transaction is all the admission has."""
        admit({})

    def stop(self, rec: "JobRecord", reason: str, grace: float) -> None:
        """The engine itself does SIGTERM, the grace, then SIGKILL; the supervisor (now or
        when one starts) sees the container die and records the job with ``reason``."""
        self.store.update(rec.id, stop_reason=reason)
        backend = self.backend
        if backend.inspect(rec.container_id) and self.store.get(rec.id).state is JobState.SUSPENDED:
            backend.signal(rec.container_id, "SIGTERM")
            backend.unpause(rec.container_id)  # a frozen process cannot handle the signal
        try:
            backend.stop(rec.container_id, grace)
        except ContainerNotFound:
            pass

    def settle(self, job_id: str) -> None:
        """Left to the supervising process: it starts or finishes the job when it next looks
        (at once if one runs now and the job's container dies; else at its start)."""
        self.wake()

    def end_for_cleanup(self, rec: "JobRecord", status: ContainerStatus) -> None:
        """Kill the container here; the supervising process sees it die, saves the logs and
        records the job as cancelled."""
        if not status.alive:
            return
        self.store.update(rec.id, stop_reason=Substate.CANCELLED)
        backend = self.backend
        try:
            backend.signal(status.id, "SIGKILL")
            if status.status == "paused":
                backend.unpause(status.id)  # a frozen process cannot die
        except EngineError:
            pass  # it exited meanwhile

    def close(self) -> None:
        pass
