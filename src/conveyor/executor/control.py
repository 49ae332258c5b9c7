"""Job control: the implementation of each verb in :mod:`conveyor.operations`.

The table says where a verb applies (``_record_for`` refuses it elsewhere with InvalidState);
each method here says what it does. Array forms (``hold_array``, ...) come from the table and
run through :meth:`ControlMixin._apply_to_array`.
"""

from __future__ import annotations

import shutil
import time
from typing import Any, BinaryIO

from .. import faults
from ..faults import Point
from ..arguments import ARRAY_ID, job_ref, signal_name
from ..errors import ConveyorError, EngineError, InvalidState
from ..job import Job
from ..operations import CANCEL, DISCARD_CONTAINER, HOLD, RELEASE, REMOVE, RESIZE, RESUME, SIGNAL, SUSPEND, Verb
from ..state import WAITING_STATES, JobState, Substate
from .base import ExecutorBase

# Held and unheld states in pairs: a Requeued job keeps its retry bookkeeping while held.
_HELD = {JobState.QUEUED: JobState.QUEUED_HELD, JobState.REQUEUED: JobState.REQUEUED_HELD}
_RELEASED = {held: waiting for waiting, held in _HELD.items()}


class ControlMixin(ExecutorBase):
    def hold(self, ref: str) -> Job:
        job_ref("hold", ref)
        rec = self._record_for(HOLD, ref)
        if rec.substate == Substate.ENGINE_QUEUED:
            self._hold_in_engine(rec)
        self._move(HOLD, rec.id, rec.state, _HELD[rec.state], Substate.HELD, reason="held")
        return self.info(rec.id)

    def release(self, ref: str) -> Job:
        job_ref("release", ref)
        rec = self._record_for(RELEASE, ref)
        self._move(RELEASE, rec.id, rec.state, _RELEASED[rec.state], None, reason="released")
        self._mode.wake()
        return self.info(rec.id)

    def suspend(self, ref: str) -> Job:
        job_ref("suspend", ref)
        return self._pause(SUSPEND, ref, JobState.SUSPENDED)

    def resume(self, ref: str) -> Job:
        job_ref("resume", ref)
        return self._pause(RESUME, ref, JobState.RUNNING)

    def cancel(self, ref: str, grace: float | None = None, *, wait: bool = True) -> Job:
        """A waiting job fails at once; a started one (or one its engine queues) gets SIGTERM,
        then SIGKILL after ``grace`` seconds (default: the spec's stop_grace)."""
        job_ref("cancel", ref)
        rec = self._record_for(CANCEL, ref)
        if (rec.state in WAITING_STATES and rec.substate != Substate.ENGINE_QUEUED) or rec.container_id is None:
            self.store.transition(rec.id, JobState.FAILED, Substate.CANCELLED, reason="cancelled", finished_at=time.time())
            self._changed(rec.id)
            return self.info(rec.id)
        self._mode.stop(rec, Substate.CANCELLED, rec.spec.stop_grace if grace is None else grace)
        return self.wait(rec.id) if wait else self.info(rec.id)

    def remove(self, ref: str, force: bool = False) -> None:
        job_ref("remove", ref)
        rec = self._record(ref)
        if not REMOVE.allows(rec.state):
            if not force:
                raise InvalidState(rec.id, rec.state.value, REMOVE.action)
            rec = self.store.get(self.cancel(rec.id, grace=0).id)
        if rec.container_id:
            self.backend.remove(rec.container_id)
            faults.reached(Point.CONTAINER_REMOVED, rec.id)
        shutil.rmtree(self.home.job_logs(rec.id), ignore_errors=True)
        shutil.rmtree(self.backend.staging_dir(rec.id), ignore_errors=True)
        self.store.delete(rec.id)

    def discard_container(self, ref: str) -> None:
        job_ref("discard_container", ref)
        rec = self._record_for(DISCARD_CONTAINER, ref)
        if rec.container_id:
            self.backend.remove(rec.container_id)

    def resize(self, ref: str, height: int, width: int) -> None:
        job_ref("resize", ref)
        rec = self._record_for(RESIZE, ref)
        self.backend.require(rec.spec, "tty", "resize a job's terminal")
        if not rec.spec.tty:
            raise ConveyorError(f"job {rec.id} has no terminal to resize (submit it with -t/tty)")
        self.backend.resize(rec.container_id, height, width)

    def signal(self, ref: str, signal: str = "KILL") -> Job:
        """Send ``signal`` to the job's processes and return at once, as ``docker kill`` does. A
        signal that ends the job ends it as the watcher sees it die (SIGKILL: Failed, exited,
        exit code 137; with retries left it is run again, as for any exit code but 0). The
        engine thaws a suspended job to deliver the signal (Docker does, unless the image sets
        a stop signal other than this one); one that lives on is recorded Running again."""
        job_ref("signal", ref)
        sig = signal_name(signal)
        rec = self._record_for(SIGNAL, ref)
        self.backend.require(rec.spec, "signals", f"send a job {sig}")
        try:
            self.backend.signal(rec.container_id, sig)
        except EngineError as exc:  # it ended meanwhile
            raise InvalidState(rec.id, self.store.get(rec.id).state.value, f"{SIGNAL.action} ({exc})") from None
        faults.reached(Point.SIGNALLED, rec.id)
        return self.info(rec.id)

    def attach_stdin(self, ref: str, source: BinaryIO) -> None:
        job_ref("attach_stdin", ref)
        rec = self._record(ref)
        self.backend.require(rec.spec, "stdin", "feed stdin to a job")
        if not rec.spec.stdin_open:
            raise ConveyorError(f"job {rec.id} takes no input: submit it with -i/stdin_open to stream stdin to it")
        if rec.state not in (JobState.RUNNING, JobState.SUSPENDED):
            raise InvalidState(rec.id, rec.state.value, "send stdin to")
        self.backend.attach_stdin(rec.container_id, source)

    # ------------------------------------------------------------------ helpers

    def _move(self, verb: Verb, job_id: str, src: JobState, dst: JobState, substate: str | None, reason: str) -> None:
        """Compare-and-set: someone else moving the job first makes this an InvalidState."""
        if not self.store.transition(job_id, dst, substate, expect={src}, reason=reason):
            raise InvalidState(job_id, self.store.get(job_id).state.value, verb.action)

    def _hold_in_engine(self, rec) -> None:
        """A job its engine queues is held there too (Slurm's ``scontrol uhold``): a hold only
        here would not stop that engine from running it. Release hands it over again."""
        driver = self.backend.for_job(rec.spec)
        hold = getattr(driver, "hold", None)
        if hold is None:
            raise InvalidState(rec.id, f"Queued in the {driver.name} engine's own queue (engine_queued), which cannot "
                                       "hold it: cancel it instead", HOLD.action)
        try:
            hold(rec.container_id)
        except EngineError as exc:
            raise InvalidState(rec.id, f"Queued in the {driver.name} engine's own queue (engine_queued), which did not "
                                       f"hold it ({exc})", HOLD.action) from None

    def _pause(self, verb: Verb, ref: str, dst: JobState) -> Job:
        """Freeze or thaw with the engine's pause (the cgroup freezer); the state follows."""
        rec = self._record_for(verb, ref)
        self.backend.require(rec.spec, "pause", f"{verb.name} a job")
        try:
            (self.backend.pause if dst is JobState.SUSPENDED else self.backend.unpause)(rec.container_id)
        except EngineError as exc:
            raise InvalidState(rec.id, self.store.get(rec.id).state.value, f"{verb.action} ({exc})") from None
        faults.reached(Point.PAUSED if dst is JobState.SUSPENDED else Point.UNPAUSED, rec.id)
        self.store.transition(rec.id, dst, expect={rec.state}, reason="suspended" if dst is JobState.SUSPENDED else "resumed")
        return self.info(rec.id)

    def _apply_to_array(self, verb: Verb, ref: str, params: dict[str, Any]) -> dict:
        """The verb on every task of the array in a state it applies to: waiting tasks first,
        so none of them starts while the running ones are handled. Tasks that moved on
        meanwhile are skipped. A verb that ends jobs returns once they have ended."""
        job_ref(f"{verb.name}_array", ref, ARRAY_ID)
        array_id = self._array_record(ref).id
        act = getattr(self, verb.name)
        if verb.ends_job:
            params = {**params, "wait": False}
        affected = 0
        for states in (verb.applies_to & WAITING_STATES, verb.applies_to - WAITING_STATES):
            for job_id, _, state in self.store.array_tasks(array_id):
                if state in states:
                    try:
                        act(job_id, **params)
                        affected += 1
                    except InvalidState:
                        pass
        if verb.ends_job:
            # Bounded by the grace period, with room for saving logs and outputs.
            timeout = max(60.0, (params.get("grace") or 10) + 30)
            for job_id, _, state in self.store.array_tasks(array_id):
                if not state.is_final:
                    self.wait(job_id, timeout=timeout)
        return {**self.array(ref), "affected": affected}
