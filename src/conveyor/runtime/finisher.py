"""The finisher: records what became of a job's container, in the order that loses nothing.

Logs first, then outputs, then the final state, then (if asked) removal: a crash between any
two steps is repaired by the next finalize, which does the remaining steps again (same logs,
same digests). Safe to call any number of times, from any path: an engine event, the
reconcile after a restart, a cancel, a cleanup.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .. import faults
from ..faults import Point
from ..backends.base import Backend, ContainerStatus
from ..errors import EngineUnavailable, JobNotFound, StateDirUnusable
from ..home import Home
from ..logfiles import STREAMS, cap
from ..state import JobState, Substate, in_engine
from ..store import JobRecord, Store
from .locks import JobLocks

log = logging.getLogger("conveyor.supervisor")

ENDED_RECHECKS = 7  # after a die event, look again after 0.1, 0.2, ... 6.4 s (12.7 s in all)
UNRECORDED_RETRY_S = (1.0, 10.0)  # an end the full store could not take: tried again after 1, 2, 4, 8, 10, 10 ... s

FULL = (errno.ENOSPC, errno.EDQUOT)  # the disk (or the user's quota) is full

# Why a job in a lease was stopped, as its message says it.
LEASE_ENDS = {Substate.LEASE_EXPIRED: "its lease expired (its holder missed a keepalive)",
              Substate.LEASE_RELEASED: "its lease was released"}


def classify(status: ContainerStatus, stop_reason: str | None) -> tuple[JobState, str, str | None]:
    """Final state, substate and message from what the engine saw. OOM comes only from the
    engine's own flag: exit code 137 alone means SIGKILL, not out-of-memory."""
    code = status.exit_code
    if status.start_failed:
        return JobState.FAILED, Substate.START_FAILED, status.error
    if status.oom_killed and code != 0:
        return JobState.FAILED, Substate.OOM_KILLED, "killed by the out-of-memory killer (memory limit reached)"
    if stop_reason == Substate.TIMEOUT or status.timed_out:
        return JobState.FAILED, Substate.TIMEOUT, f"terminated at its timeout (exit code {code})"
    if stop_reason == Substate.DEPENDENCY_FAILED:  # its engine held it for a dependency that failed
        return JobState.FAILED, Substate.DEPENDENCY_FAILED, "a job it runs --after ended badly (or was removed); it never ran"
    if stop_reason == Substate.CANCELLED:
        return JobState.FAILED, Substate.CANCELLED, f"cancelled (exit code {code})"
    if stop_reason in LEASE_ENDS:
        return JobState.FAILED, Substate.CANCELLED, f"cancelled: {LEASE_ENDS[stop_reason]} (exit code {code})"
    if status.status == "dead" and code is None:  # its node or supervisor died: no exit code to tell
        return JobState.FAILED, Substate.CONTAINER_LOST, status.error or "the engine lost the job before it ended"
    if code == 0:
        note = "a process inside hit the memory limit and was killed" if status.oom_killed else None
        return JobState.DONE, Substate.EXITED, note
    return JobState.FAILED, Substate.EXITED, f"exited with code {code}"


def removable(rec: JobRecord) -> bool:
    """An ended auto_remove job's container may go: not while it holds the only copy of
    logs the state directory had no room for."""
    return rec.spec.auto_remove and rec.substate != Substate.STORAGE_FULL


class Finisher:
    def __init__(self, store: Store, backend: Backend, home: Home, locks: JobLocks, notify: Callable[[str], None],
                 log_max_bytes: int | None = None):
        self.store, self.backend, self.home, self.locks = store, backend, home, locks
        self.log_max_bytes = log_max_bytes  # retention: each saved stream kept to this (head, marker, tail)
        self._notify = notify
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="conveyor-finish")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def finalize_later(self, job_id: str, ended: bool = False) -> None:
        """Finalize the job on the finisher's threads. ``ended``: the engine said the job's
        container ended (a die event); if it still looks alive, look again a few times over
        about 12 s, since an engine may announce the end before its inspect shows it."""
        self._pool.submit(self._finalize_logged, job_id, 0 if ended else None)

    def run_later(self, fn: Callable, *args) -> None:
        """Run ``fn`` on the finisher's threads (engine calls that must not block the caller)."""
        self._pool.submit(fn, *args)

    def _recheck(self, job_id: str, recheck: int) -> None:
        try:
            self._pool.submit(self._finalize_logged, job_id, recheck)
        except RuntimeError:  # the supervisor closed meanwhile: the next one reconciles the job
            pass

    def _retry_unrecorded(self, job_id: str, unrecorded: int) -> None:
        try:
            self._pool.submit(self._finalize_logged, job_id, None, unrecorded)
        except RuntimeError:  # the supervisor closed meanwhile: the next one reconciles the job
            pass

    def _finalize_logged(self, job_id: str, recheck: int | None = None, unrecorded: int = 0) -> None:
        try:
            alive = self.finalize(job_id)
        except EngineUnavailable:
            return  # the reconcile after reconnecting will finish it
        except StateDirUnusable as exc:
            # The job ended but the store cannot take its end (a full disk, say): no event
            # will come again, so look again until it can, rather than leave it Running.
            delay = min(UNRECORDED_RETRY_S[0] * 2**unrecorded, UNRECORDED_RETRY_S[1])
            log.warning("job %s: its end cannot be recorded yet (%s); trying again in %.0f s", job_id, exc, delay)
            timer = threading.Timer(delay, self._retry_unrecorded, (job_id, unrecorded + 1))
            timer.daemon = True
            timer.start()
            return
        except Exception:  # noqa: BLE001
            log.exception("finalizing job %s failed", job_id)
            return
        if alive and recheck is not None and recheck < ENDED_RECHECKS:
            log.info("job %s: the engine said it ended but still shows it running; looking again", job_id)
            timer = threading.Timer(0.1 * 2**recheck, self._recheck, (job_id, recheck + 1))
            timer.daemon = True
            timer.start()

    def finalize(self, job_id: str) -> bool:
        """If the job's container has finished: save logs, then record the final state, then
        tell the waiters, then (if asked) remove the container: a foreground `run --rm` has
        its answer once the result is durable, without waiting for the engine's removal.
        True when the job is active and its container still runs (nothing was finalized)."""
        moved = False
        with self.locks(job_id):
            try:
                rec = self.store.get(job_id)
            except JobNotFound:
                return False
            if rec.container_id is None:
                return False
            if rec.state.is_final:
                if removable(rec):
                    self.backend.remove(rec.container_id)
                return False
            if not in_engine(rec.state, rec.substate):
                # Queued jobs' containers are never started before the claim, and a Requeued
                # job's container is its last attempt's: a (replayed) event about it must not
                # end the job.
                return False
            status = self.backend.inspect(rec.container_id)
            if status is None:
                self._lost(rec)
                return False
            if not status.finished:
                self.sync_alive(rec, status)
                return True
            moved = self._record_end(rec, status)
        if moved:
            self._notify(job_id)
        after = self.store.get(job_id)
        if after.state.is_final and removable(after):
            # After the record (a crash in between: the next reconcile removes it).
            with self.locks(job_id):
                self.backend.remove(rec.container_id)
        return False

    def _record_end(self, rec: JobRecord, status: ContainerStatus) -> bool:
        job_id = rec.id
        state, substate, message = classify(status, rec.stop_reason)
        started_at, finished_at = status.started_at, status.finished_at
        if started_at is not None and finished_at is not None and started_at > finished_at:
            # The engine stamps StartedAt after its start call returns, but FinishedAt
            # with the process's real exit time: a job that exits at once can show
            # StartedAt > FinishedAt. It cannot have started after it ended.
            started_at = finished_at
        ran = started_at is not None or state is JobState.DONE
        if rec.state is JobState.UNDETERMINED or (rec.substate == Substate.ENGINE_QUEUED and ran):
            # It ran (an engine that queues jobs: perhaps between two looks): the history says so.
            self.store.transition(job_id, JobState.RUNNING, reason="engine: started", started_at=started_at, message=None)
        logs = self.home.job_logs(job_id)
        try:
            logs.mkdir(parents=True, exist_ok=True)
            self.backend.save_logs(rec.container_id, {s: logs / s for s in STREAMS})
            if self.log_max_bytes is not None:
                for stream in STREAMS:
                    cap(logs / stream, self.log_max_bytes)
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            # Recorded rather than retried for ever: the job ended, the disk is what failed.
            state, substate = JobState.FAILED, Substate.STORAGE_FULL
            message = (f"exit code {status.exit_code}, but its logs could not be saved: the state directory's disk is "
                       f"full ({exc.strerror}, {self.home.root}); free space, then 'conveyor fsck --repair' saves them "
                       "from its container")
        faults.reached(Point.AFTER_LOGS, job_id)
        if rec.spec.outputs and substate != Substate.STORAGE_FULL:
            # Captured before the state is recorded and before the container can go:
            # a crash in between captures again on the next finalize (same digests).
            problem, full = self._capture_outputs(rec)
            if full:  # as for logs: the job ended, the disk is what failed; its container keeps the files
                state, substate = JobState.FAILED, Substate.STORAGE_FULL
                message = (f"exit code {status.exit_code}, but its outputs could not be captured: the content store's "
                           f"disk is full ({full.strerror}, {self.home.cas}); free space ('conveyor gc' removes what "
                           "no job uses), then run it again")
            elif problem:
                message = f"{message}; {problem}" if message else problem
            faults.reached(Point.AFTER_OUTPUTS, job_id)
        moved = self.store.transition(
            job_id,
            state,
            substate,
            reason="engine: container finished",
            exit_code=status.exit_code,
            message=message,
            started_at=started_at,
            finished_at=finished_at,
            **({"node": status.node} if status.node else {}),
        )
        faults.reached(Point.AFTER_RECORD, job_id)
        if rec.spec.inputs and self.store.get(job_id).state.is_final:
            shutil.rmtree(self.backend.staging_dir(job_id), ignore_errors=True)
        return moved

    def _capture_outputs(self, rec: JobRecord) -> tuple[str | None, OSError | None]:
        """Record the job's output filesets; a note for the job's message if that failed, and
        the error when it failed for a full disk.
        An engine that went away while the files were read is not the job's fault: that
        EngineUnavailable goes up, and the finalize after reconnecting captures again."""
        from ..cas import BlobStore, CasError, capture_outputs

        try:
            captured = capture_outputs(self.backend, rec.container_id, rec.spec.outputs, BlobStore(self.home.cas))
        except (CasError, OSError) as exc:
            log.error("capturing outputs of job %s failed: %s", rec.id, exc)
            return f"outputs not captured: {exc}", _full(exc)
        self.store.set_filesets(rec.id, "output", captured)
        return None, None

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
            self._notify(rec.id)

    def sync_alive(self, rec: JobRecord, status: ContainerStatus) -> None:
        """A live container: make the store say Running or Suspended as the engine does, or,
        while its engine still queues it, keep the engine's reason as the job's message."""
        if status.queued:
            if rec.substate == Substate.ENGINE_QUEUED and status.error and rec.message != status.error:
                self.store.update(rec.id, message=status.error)
        elif status.status == "paused":
            self.move(rec.id, JobState.SUSPENDED, {JobState.RUNNING, JobState.UNDETERMINED}, "engine: paused")
        elif status.status in ("running", "restarting"):
            self.move(
                rec.id,
                JobState.RUNNING,
                {JobState.QUEUED, JobState.SUSPENDED, JobState.UNDETERMINED},
                f"engine: {status.status}",
                started_at=status.started_at,
                message=None,
            )
        self.note_node(rec.id, status.node)

    def note_start(self, job_id: str, node: str | None) -> None:
        """The engine started the job, or gave a new reason it waits in the engine's queue: its
        node is noted; a job its engine queues is looked at (it runs now: Queued -> Running;
        or the reason becomes its message)."""
        self.note_node(job_id, node)
        try:
            if self.store.get(job_id).substate == Substate.ENGINE_QUEUED:
                self.finalize_later(job_id)
        except JobNotFound:
            pass

    def note_node(self, job_id: str, node: str | None) -> None:
        """Record the machine the engine placed the job on (an engine with several)."""
        if node is not None:
            try:
                if self.store.get(job_id).node != node:
                    self.store.update(job_id, node=node)
            except JobNotFound:
                pass

    def move(self, job_id: str, to: JobState, expect: set[JobState], reason: str, **fields) -> None:
        try:
            if self.store.transition(job_id, to, expect=expect, reason=reason, **fields):
                self._notify(job_id)
        except JobNotFound:
            pass


def _full(exc: BaseException | None) -> OSError | None:
    """The ENOSPC (or EDQUOT) behind ``exc``, however wrapped; None when there is none."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
