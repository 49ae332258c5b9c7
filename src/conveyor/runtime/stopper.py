"""Stopping jobs: cancel and timeout, as SIGTERM, the grace period, then SIGKILL.

Nothing here blocks for a grace period: the SIGKILL and every job's timeout are entries in
one :class:`~.deadlines.DeadlineTimer`. Why a job was stopped is recorded first
(``stop_reason``), so whoever records its end says cancelled or timeout, not a plain exit.
"""

from __future__ import annotations

import logging
import time

from .. import faults
from ..faults import Point
from ..backends.base import Backend
from ..errors import EngineError, JobNotFound
from ..state import Substate
from ..store import JobRecord, Store
from .deadlines import DeadlineTimer
from .finisher import Finisher

log = logging.getLogger("conveyor.supervisor")

VERIFY_AFTER = 5.0  # seconds after a SIGKILL before the engine is asked whether the job ended
QUEUED_RECHECK = 1.0  # how often a timeout looks again at a job its engine still queues


class Stopper:
    def __init__(self, store: Store, backend: Backend, finisher: Finisher):
        self.store, self.backend, self.finisher = store, backend, finisher
        self._timer = DeadlineTimer(self._on_deadline)

    def close(self) -> None:
        self._timer.close()

    def started(self, rec: JobRecord) -> None:
        """The engine took the job. A stop asked for between its claim and its start found a
        container not yet running, with nothing to signal, and only recorded why (the claim
        clears the reason, so one found here is this attempt's): read it again now, or the
        job would run to its end. One column: ``rec``'s copy was read before the start."""
        rows = self.store.query("SELECT stop_reason FROM jobs WHERE id=?", (rec.id,))
        self.follow(rec, rows[0][0] if rows else None)

    def follow(self, rec: JobRecord, stop_reason: str | None) -> None:
        """A job its engine runs is this stopper's from now on (after its start, or found
        running at reconcile): a stop recorded for it and not carried out (asked for before the
        start, or the process sending it died) is carried out, on the finisher's threads; else
        its run timeout counts. The grace asked for with that stop was not kept: the spec's."""
        if stop_reason:
            self.finisher.run_later(self.terminate, rec, stop_reason, rec.spec.stop_grace)
        else:
            self.watch_timeout(rec)

    def watch_timeout(self, rec: JobRecord) -> None:
        """Start counting the job's run timeout (from when it started)."""
        if rec.spec.timeout:
            self._timer.add((rec.started_at or time.time()) + rec.spec.timeout, "timeout", rec.id)

    def terminate(self, rec: JobRecord, reason: str, grace: float) -> None:
        """Record why, send SIGTERM, and SIGKILL after ``grace`` seconds if still alive."""
        self.store.update(rec.id, stop_reason=reason)
        faults.reached(Point.STOP_REQUESTED, rec.id)
        if rec.container_id is None:
            return
        try:
            status = self.backend.inspect(rec.container_id)
            if status is None or not status.alive:
                self.finisher.finalize_later(rec.id)
                return
            self.backend.signal(rec.container_id, "SIGKILL" if grace <= 0 else "SIGTERM")
            if status.status == "paused":
                self.backend.unpause(rec.container_id)  # a frozen process cannot handle the signal
        except EngineError as exc:  # it stopped between the inspect and the signal
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
            # The run time counts from the job's start: a job still in its engine's queue
            # (or that started there later than the timer was set) is looked at again then.
            if rec.started_at is None:
                self._timer.add(time.time() + QUEUED_RECHECK, "timeout", job_id)
            elif rec.started_at + rec.spec.timeout > time.time() + 0.01:
                self._timer.add(rec.started_at + rec.spec.timeout, "timeout", job_id)
            else:  # on the finisher's threads: the timer thread never waits for the engine
                self.finisher.run_later(self.terminate, rec, Substate.TIMEOUT, rec.spec.stop_grace)
        elif kind == "kill":
            try:
                self.backend.signal(rec.container_id, "SIGKILL")
            except EngineError as exc:  # it exited in the meantime
                log.debug("SIGKILL to job %s: %s", job_id, exc)
            self._timer.add(time.time() + VERIFY_AFTER, "verify", job_id)
        elif kind == "verify":
            # Killed a while ago and still not recorded: its die event may be lost (an engine's
            # event log can drop one under load). Look for ourselves, and again later while it
            # stays unrecorded, so a stopped job never hangs on an event that never comes.
            self.finisher.finalize_later(job_id)
            self._timer.add(time.time() + VERIFY_AFTER, "verify", job_id)
