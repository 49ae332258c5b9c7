"""What every part of the Executor shares: its state directory, store, backend and mode, and
the few helpers that turn a reference into a record."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from ..arguments import job_ref
from ..errors import InvalidState
from ..job import Job
from ..store import JobRecord

_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Job) if f.name != "logs_dir")

if TYPE_CHECKING:
    from ..backends.router import BackendRouter
    from ..capacity import Capacity, SchedulingConfig
    from ..home import Home
    from ..metrics import Meters
    from ..operations import Verb
    from ..store import Store
    from .modes import Observing, Supervising
    from .waiters import Waiters


class ExecutorBase:
    home: "Home"
    store: "Store"
    executor_id: str
    scheduling: "SchedulingConfig"
    _mode: "Supervising | Observing"
    _waiters: "Waiters"
    _closed: threading.Event
    backend: "BackendRouter"  # the node's backends; each connects on first use
    capacity: "Capacity"
    meters: "Meters"  # its metrics (conveyor/metrics.py)

    def _job(self, rec: JobRecord) -> Job:
        """The caller's snapshot of a stored job (the record has everything but where its logs are)."""
        return Job(**{name: getattr(rec, name) for name in _RECORD_FIELDS}, logs_dir=self.home.job_logs(rec.id))

    def _record(self, ref: str) -> JobRecord:
        return self.store.get(self.store.resolve(ref))

    def _record_for(self, verb: "Verb", ref: str) -> JobRecord:
        """The job ``ref`` names, if ``verb`` applies in its state; InvalidState otherwise."""
        rec = self._record(ref)
        if not verb.allows(rec.state):
            raise InvalidState(rec.id, rec.state.value, verb.action)
        return rec

    def _changed(self, job_id: str) -> None:
        """A transition this process committed: tell the waiters (and the scheduler)."""
        self._mode.changed(job_id)

    def info(self, ref: str) -> Job:
        job_ref("info", ref)
        return self._job(self._record(ref))
