"""fsck (README: Checking a state directory): the store against the engine and the content store.

Each problem is a dict: its kind, the job, blob or container it is about, what is wrong, and
what ``repair`` does about it (None: nothing can be done here, the bytes are gone). Repairs
reuse the steps a restart takes (finalize, start a claimed container, adopt or forget a
container id), so fsck never invents a result: a job's end is recorded from what the engine
says, or as lost when the engine has nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backends.base import LABEL_JOB, ContainerStatus
from ..errors import ConveyorError, EngineError
from ..state import WAITING_STATES, Substate, in_engine
from ..store import JobRecord
from .base import ExecutorBase

STREAMS = ("stdout", "stderr")


@dataclass
class Problem:
    kind: str
    subject: str  # a job id, a container id, a blob digest or a directory
    detail: str
    repair: str | None  # what --repair does; None: nothing can be done here
    fix: Callable[[], None] | None = None
    repaired: bool = False

    def public(self) -> dict:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail, "repair": self.repair,
                "repaired": self.repaired}


class FsckMixin(ExecutorBase):
    def fsck(self, repair: bool = False) -> dict:
        """Check the store against the engine and the content store; with ``repair``, repair
        what can be: {"problems": [...], "checked": {...}, "repair": bool}. Repairs record
        jobs' ends, which is the supervisor's work: this executor supervises meanwhile when no
        process does (as cleanup does)."""
        if not repair:
            return self._fsck(False)
        with self._supervising_if_free():
            return self._fsck(True)

    def _fsck(self, repair: bool) -> dict:
        engine = self.backend.list()
        containers = {c.labels[LABEL_JOB]: c for c in engine if c.labels.get(LABEL_JOB)}
        strays = [c for c in engine if not c.labels.get(LABEL_JOB)]
        records = self.store.list(executor_id=self.executor_id)
        known = {r.id for r in records}
        problems: list[Problem] = []
        for rec in records:
            problems += self._job_problems(rec, containers.get(rec.id))
        strays += [c for job_id, c in containers.items() if job_id not in known]
        problems += [self._stray(c) for c in strays]
        problems += self._log_dirs_without_job(known)
        blobs = self.verify()
        problems += [Problem(f"blob-{b['problem'].replace(' ', '-')}", b["digest"],
                             f"blob {b['problem']}; used by jobs: {', '.join(b['jobs']) or 'none'}", None)
                     for b in blobs["bad"]]
        if repair:
            for p in problems:
                if p.fix is not None:
                    self._repair(p)
        return {"problems": [p.public() for p in problems], "repair": repair,
                "checked": {"jobs": len(records), "containers": len(engine), "blobs": blobs["checked"]}}

    @staticmethod
    def _repair(problem: Problem) -> None:
        """One repair; one that fails (the engine went away, the disk is still full) is
        reported with the problem, and the others are still made."""
        try:
            problem.fix()
        except (ConveyorError, OSError) as exc:
            problem.detail += f"; the repair failed: {exc}"
            return
        problem.repaired = True

    # ------------------------------------------------------------------ jobs

    def _job_problems(self, rec: JobRecord, container: ContainerStatus | None) -> list[Problem]:
        if rec.state.is_final:
            return self._final_job_problems(rec, container)
        if rec.state in WAITING_STATES and rec.substate != Substate.ENGINE_QUEUED:
            return self._waiting_job_problems(rec, container)
        if not in_engine(rec.state, rec.substate):
            return []
        if rec.container_id is None or container is None:
            return [Problem("container-missing", rec.id,
                            f"{rec.state.value} but the engine has no container for it",
                            "record it Failed (container_lost), as the supervisor would", self._settle(rec.id))]
        if container.status == "created":
            return [Problem("claimed-not-started", rec.id, "claimed (Running) but its container was never started",
                            "start its container (once)", self._settle(rec.id))]
        if container.finished:
            return [Problem("end-not-recorded", rec.id,
                            f"its container exited (code {container.exit_code}) but the store says {rec.state.value}",
                            "save its logs and outputs and record the engine's result", self._settle(rec.id))]
        if rec.stop_reason and container.alive:
            return [Problem("stop-not-sent", rec.id, f"a stop ({rec.stop_reason}) was recorded but it still runs",
                            "stop it again", lambda: self._mode.stop(rec, rec.stop_reason, rec.spec.stop_grace))]
        return []

    def _waiting_job_problems(self, rec: JobRecord, container: ContainerStatus | None) -> list[Problem]:
        if container is None and rec.container_id is not None:
            return [Problem("container-id-stale", rec.id, f"{rec.state.value} with a container id the engine lost",
                            "forget the id (a new container is made at launch)",
                            lambda: self.store.update(rec.id, container_id=None))]
        if container is not None and rec.container_id is None:
            return [Problem("container-not-recorded", rec.id, f"{rec.state.value}; its container {container.id[:12]} "
                            "was made but its id not recorded", "record the id (the launch adopts it)",
                            lambda: self.store.update(rec.id, container_id=container.id))]
        return []

    def _final_job_problems(self, rec: JobRecord, container: ContainerStatus | None) -> list[Problem]:
        problems = []
        if rec.started_at is not None and container is not None and container.finished:
            problems += self._short_logs(rec, container)  # first: a repair below may remove the container
        if container is not None and container.id != rec.container_id:
            problems.append(Problem("extra-container", container.id, f"job {rec.id} is {rec.state.value} and this "
                                    "container is not the one it recorded", "remove the container",
                                    lambda: self.backend.remove(container.id)))
        elif container is not None and rec.spec.auto_remove:
            problems.append(Problem("container-not-removed", rec.id, f"{rec.state.value} with auto_remove, but its "
                                    "container is still there", "remove the container",
                                    lambda: self.backend.remove(container.id)))
        return problems

    def _short_logs(self, rec: JobRecord, container: ContainerStatus) -> list[Problem]:
        """Saved logs missing or shorter than the engine still has them (a crash mid-save, a
        full disk): saved again from the engine. Compared through a copy outside the state
        directory, whose disk may be the full one."""
        logs = self.home.job_logs(rec.id)
        saved = {s: (logs / s).stat().st_size if (logs / s).exists() else None for s in STREAMS}
        try:
            with tempfile.TemporaryDirectory(prefix="conveyor-fsck-") as tmp:
                engine = self.backend.save_logs(container.id, {s: Path(tmp) / s for s in STREAMS})
        except (EngineError, OSError):
            engine = None  # nothing to compare with: only missing files are known to be wrong
        short = [s for s in STREAMS if saved[s] is None or (engine is not None and saved[s] < engine[s])]
        if not short:
            return []

        def save() -> None:
            logs.mkdir(parents=True, exist_ok=True)
            self.backend.save_logs(container.id, {s: logs / s for s in STREAMS})

        said = ", ".join(f"{s} {'missing' if saved[s] is None else f'{saved[s]} bytes'}"
                         + (f" of {engine[s]}" if engine else "") for s in short)
        return [Problem("logs-short", rec.id, f"saved logs shorter than the engine's: {said}",
                        "save them again from the engine", save)]

    def _settle(self, job_id: str) -> Callable[[], None]:
        """The repair a restart would make: start a claimed container, or record the job's end."""
        return lambda: self._mode.settle(job_id)

    # ------------------------------------------------------------------ the engine and the files

    def _stray(self, container: ContainerStatus) -> Problem:
        job = container.labels.get(LABEL_JOB) or "none"
        if container.alive:
            return Problem("orphan-container", container.id, f"carries this executor's label (job {job}) but no job "
                           "of the store; it is running (another copy of this state directory?)", None)
        return Problem("orphan-container", container.id, f"carries this executor's label (job {job}) but no job of "
                       f"the store; {container.status}", "remove the container", lambda: self.backend.remove(container.id))

    def _log_dirs_without_job(self, known: set[str]) -> list[Problem]:
        if not self.home.logs.is_dir():
            return []
        recent = time.time() - 60  # a submit in progress may write before its record is visible here
        return [Problem("orphan-logs", str(d), "saved logs of no job in the store", "remove the directory",
                        lambda d=d: shutil.rmtree(d, ignore_errors=True))
                for d in self.home.logs.iterdir()
                if d.is_dir() and d.name not in known and d.stat().st_mtime < recent]
