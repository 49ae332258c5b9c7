"""Part of the slurm driver: stopping and suspending a job. The job's step is asked for SIGTERM
and SIGKILL through files in the job's directory (``term``, ``kill``), which reach it on any node
(a SIGKILL sent to the step would kill it and leave its container running; ``scancel --signal``
to a step Slurm has just resumed was seen to be lost); Slurm's own kill is the last resort for a
step that does not answer."""

from __future__ import annotations

import threading
import time

from ..base import ContainerNotFound, ContainerStatus, EngineConflict, EngineError, NotSupported
from ..hostfiles import write_json


class StopMixin:
    """Part of SlurmBackend: needs ``slurm``, ``inspect``, ``_dir`` and ``_parse``."""

    def _ask_step(self, slurm_id: str, job_id: str, status: ContainerStatus, what: str) -> None:
        """Ask the job's step to send the job SIGTERM (``what`` "term") or SIGKILL ("kill"). A
        suspended job is resumed in Slurm first (its step is stopped); the step thaws the job."""
        if status.status == "paused":
            self._resume_in_slurm(slurm_id)
        (self._dir(job_id) / what).touch()

    def _resume_in_slurm(self, slurm_id: str) -> None:
        try:
            self.slurm.run("scontrol", "resume", slurm_id)
        except EngineError as exc:  # not suspended in Slurm (a user who is not an operator)
            if "not suspended" not in str(exc) and "ccess" not in str(exc) and "ermission" not in str(exc):
                raise

    def _unfinished(self, handle: str) -> ContainerStatus | None:
        """The job's status; None when it has ended. ContainerNotFound when it is gone."""
        status = self.inspect(handle)
        if status is None:
            raise ContainerNotFound(f"no such Slurm job: {handle}")
        return None if status.finished else status

    def stop(self, handle: str, grace: float) -> None:
        """Ask the job's step to stop it with ``grace`` (SIGTERM, then SIGKILL); ``scancel``
        outright if it has not ended ``grace`` + 15 s later. A job not yet running is cancelled
        in Slurm. Returns once it has ended."""
        status = self._unfinished(handle)
        if status is None:
            return
        slurm_id, job_id = self._parse(handle)
        if status.status == "created":  # held, never released: it ends here, with no exit code
            self.slurm.cancel(slurm_id)
            write_json(self._dir(job_id) / "result.json", {"exit_code": None, "finished_at": time.time(),
                                                           "error": "stopped before it started"})
            return
        if status.started_at is None:  # still waiting in Slurm, or its step is starting
            self.slurm.cancel(slurm_id)
            self._wait_end(handle, 60)
            return
        (self._dir(job_id) / "grace").write_text(str(grace))
        self._ask_step(slurm_id, job_id, status, "term")
        if not self._wait_end(handle, grace + 15):
            self.slurm.cancel(slurm_id)  # the step does not answer (its node is gone?): Slurm's own kill
            self._wait_end(handle, 60)

    def _wait_end(self, handle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.inspect(handle)
            if status is None or status.finished:
                return True
            time.sleep(0.1)
        return False

    def signal(self, handle: str, signal: str) -> None:
        """SIGTERM and SIGKILL, what a stop sends, are the only signals, both asked of the job's
        step (see the module docstring), with Slurm's own kill if the step has not ended the job
        15 s after a SIGKILL. A job not yet running is cancelled in Slurm. Others: NotSupported."""
        sig = signal.upper().removeprefix("SIG")
        if sig not in ("TERM", "KILL", "15", "9"):
            raise NotSupported(f"the slurm backend cannot send {signal}: a job is stopped with SIGTERM, then "
                               "SIGKILL (capability signals)")
        status = self._unfinished(handle)
        if status is None:
            return
        slurm_id, job_id = self._parse(handle)
        if status.started_at is None:  # nothing of the job runs yet: Slurm ends it
            self.stop(handle, 0)
        elif sig in ("TERM", "15"):
            self._ask_step(slurm_id, job_id, status, "term")
        else:
            self._ask_step(slurm_id, job_id, status, "kill")
            threading.Thread(target=self._kill_if_ignored, args=(handle,), daemon=True,
                             name=f"slurm-kill-{slurm_id}").start()

    def _kill_if_ignored(self, handle: str) -> None:
        if not self._wait_end(handle, 15):
            self.slurm.cancel(self._parse(handle)[0])


    # ------------------------------------------------------------------ hold

    def hold(self, handle: str) -> None:
        """Take a job Slurm still queues back out of its queue (``scontrol uhold``): held, as
        after create (a user hold, which its owner may release), until start releases it again.
        EngineConflict once it runs."""
        status = self.inspect(handle)
        if status is None:
            raise ContainerNotFound(f"no such Slurm job: {handle}")
        if not status.queued:
            raise EngineConflict(f"the job is not waiting in Slurm's queue ({status.status}): nothing to hold")
        slurm_id, job_id = self._parse(handle)
        try:
            self.slurm.run("scontrol", "uhold", slurm_id)
        except EngineError as exc:  # it started meanwhile ("Job is no longer pending execution")
            raise EngineConflict(f"Slurm did not hold it: {exc}") from None
        (self._dir(job_id) / "released").unlink(missing_ok=True)

    # ------------------------------------------------------------------ suspend and resume

    def pause(self, handle: str) -> None:
        """Freeze the running job: its step freezes the container (asked through the file
        ``pause``, answered with ``paused``), then ``scontrol suspend`` marks the Slurm job
        SUSPENDED (refused to a user who is not a Slurm operator: the job stays frozen, and
        Slurm shows it running)."""
        status = self.inspect(handle)
        if status is None:
            raise ContainerNotFound(f"no such Slurm job: {handle}")
        if status.status != "running" or (status.error or "").startswith("pending"):
            # (one whose step is starting it is frozen by the step as soon as it runs)
            raise EngineConflict(f"the job is not running ({status.error or status.status}): nothing to suspend")
        slurm_id, job_id = self._parse(handle)
        job_dir = self._dir(job_id)
        (job_dir / "pause").touch()
        if not _appears(job_dir / "paused", True):
            (job_dir / "pause").unlink(missing_ok=True)
            raise EngineError(f"the job's step on {status.node or 'its node'} did not freeze it within {ACK_S:g}s")
        try:
            self.slurm.run("scontrol", "suspend", slurm_id)
        except EngineError as exc:
            if "ccess" not in str(exc) and "ermission" not in str(exc):
                raise

    def unpause(self, handle: str) -> None:
        """``scontrol resume`` (the step runs again), then the step thaws the job."""
        slurm_id, job_id = self._parse(handle)
        job_dir = self._dir(job_id)
        if not (job_dir / "pause").exists():
            raise EngineConflict("the job is not suspended")
        self._resume_in_slurm(slurm_id)
        (job_dir / "pause").unlink(missing_ok=True)
        if not _appears(job_dir / "paused", False):
            raise EngineError(f"the job's step did not resume it within {ACK_S:g}s")


ACK_S = 15.0  # how long the step may take to answer a pause or resume (it looks every 0.05 s)


def _appears(path, present: bool) -> bool:
    """Wait until ``path`` exists (or, ``present`` False, is gone); False after ACK_S."""
    deadline = time.monotonic() + ACK_S
    while path.exists() != present:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
