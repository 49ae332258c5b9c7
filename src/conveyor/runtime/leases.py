"""Ending leases: expiry, release and drain, one way for every caller.

A lease's deadline is a column compared with the clock at each scheduler pass (and once at
reconcile, when a restarted supervisor first looks), never a timer per lease: a thousand live
leases cost one indexed query a pass, and a deadline that fell while no process supervised is
applied when one does. Ending a lease is a compare-and-set on its state, so it happens once;
then its jobs go: waiting ones fail at once, started ones are stopped with their grace period
and recorded Failed/cancelled by the finisher (their logs and outputs kept, like any cancel).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ..errors import JobNotFound
from ..state import WAITING_STATES, JobState, Substate
from ..store import JobRecord, Store
from .finisher import LEASE_ENDS

log = logging.getLogger("conveyor.supervisor")

Stop = Callable[[JobRecord, str, float], None]  # record, stop reason, grace: SIGTERM, grace, SIGKILL
Notify = Callable[[str], None]


def end_lease_jobs(store: Store, executor_id: str, stop: Stop, notify: Notify) -> int:
    """Cancel every live job of every lease that ended and was not stopped for it yet: the
    lease's state is the truth, so a crash between ending a lease and ending its jobs, or a job
    whose launch was in flight, is caught on the next pass. How many it touched."""
    touched = 0
    for job_id, lease_state in store.jobs_of_ended_leases(executor_id):
        reason = Substate.LEASE_EXPIRED if lease_state == "expired" else Substate.LEASE_RELEASED
        try:
            rec = store.get(job_id)
        except JobNotFound:
            continue
        if rec.state in WAITING_STATES and rec.substate != Substate.ENGINE_QUEUED:
            if store.transition(job_id, JobState.FAILED, Substate.CANCELLED, expect=WAITING_STATES, reason=reason,
                                message=f"cancelled before it started: {LEASE_ENDS[reason]}", finished_at=time.time()):
                notify(job_id)
        elif rec.container_id is not None and not rec.state.is_final:
            stop(rec, reason, rec.spec.stop_grace)  # records the stop reason first: not stopped twice
        else:
            continue  # its launch is in flight: stopped on a later pass, once it has a container
        touched += 1
    return touched


def release_lease(store: Store, lease_id: str, drain: bool, stop: Stop, notify: Notify) -> bool:
    """Release a live lease: at once (its jobs cancelled), or with ``drain`` once its jobs end
    (it holds its share until then; :func:`keep_leases` ends it). False if it had ended."""
    if drain:
        return store.end_lease(lease_id, "draining", "released with --drain: ends when its jobs have", expect=("active",))
    if not store.end_lease(lease_id, "released", "released by its holder"):
        return False
    end_lease_jobs(store, store.get_lease(lease_id).executor_id, stop, notify)
    return True


def keep_leases(store: Store, executor_id: str, stop: Stop, notify: Notify, now: float | None = None) -> list[str]:
    """One look at every live lease: expire the overdue ones (ending their jobs), and end the
    draining ones whose jobs have all ended. Returns the ids of the leases it expired."""
    now = time.time() if now is None else now
    expired = []
    for lease in store.overdue_leases(executor_id, now):
        if store.end_lease(lease.id, "expired", f"no keepalive for {lease.keepalive:g}s (deadline "
                           f"{time.strftime('%H:%M:%S', time.localtime(lease.deadline))})", expect=("active",), now=now):
            log.info("lease %s expired: its holder missed its keepalive", lease.id)
            expired.append(lease.id)
    end_lease_jobs(store, executor_id, stop, notify)
    for lease_id in store.drained_leases(executor_id):
        store.end_lease(lease_id, "released", "released with --drain; its jobs have ended", expect=("draining",), now=now)
    return expired
