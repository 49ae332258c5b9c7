"""The launcher: the one place that turns a queued job into a running container.

Queued -> image -> container -> claim (Running, in the store) -> start. Each step is safe to
repeat after a crash at any point: the container is found by its name instead of made twice,
and a claimed job's container is started by the reconcile that follows a restart
(:meth:`Launcher.start_claimed`), never twice.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from typing import Callable

from .. import faults
from ..faults import Point
from ..backends.base import (
    LABEL_AFTER,
    LABEL_ARRAY,
    LABEL_ARRAY_MAX,
    LABEL_TASK,
    EngineConflict,
    EngineError,
    EngineUnavailable,
    ImageNotFound,
)
from ..backends.router import BackendRouter
from ..errors import ConveyorError, JobNotFound
from ..home import Home
from ..logtimes import times_path
from ..provenance import Recorder
from ..spec import JobSpec
from ..state import RUNNABLE_STATES, JobState, Substate, in_engine
from ..store import JobRecord, Store
from .locks import JobLocks
from .planner import gpu_id_list
from .terminals import Terminals

log = logging.getLogger("conveyor.scheduler")

STREAMS = ("stdout", "stderr")


def runtime_spec(rec: JobRecord, gpu_ids: tuple[str, ...] = (), array=None) -> JobSpec:
    """The spec the container is made from: the task's environment for an array task, the
    attempt number for a job with retries, and the GPUs the ledger assigned, by id."""
    update: dict = {}
    env: dict[str, str] = {}
    if array is not None:
        env.update(
            CONVEYOR_ARRAY_ID=array.id,
            CONVEYOR_TASK_ID=str(rec.array_index),
            TASK_ID=str(rec.array_index),  # DRMAA's name
            CONVEYOR_TASK_FIRST=str(array.first),
            CONVEYOR_TASK_LAST=str(array.last),
            CONVEYOR_TASK_STEP=str(array.step),
        )
        update["labels"] = {**rec.spec.labels, LABEL_ARRAY: array.id, LABEL_TASK: str(rec.array_index)}
        if array.engine_array:  # the engine makes one array job of the tasks, limited there
            update["labels"][LABEL_ARRAY_MAX] = str(array.max_parallel or 0)
    if rec.spec.retries:
        env.update(CONVEYOR_JOB_ID=rec.id, CONVEYOR_ATTEMPT=str(rec.attempt + 1))
    if env:
        update["env"] = {**rec.spec.env, **env}
    gpus = rec.spec.resources.gpus
    if gpus is not None and gpu_ids:
        pinned = gpus.model_copy(update={"device_ids": list(gpu_ids), "count": None})
        update["resources"] = rec.spec.resources.model_copy(update={"gpus": pinned})
    return rec.spec.model_copy(update=update) if update else rec.spec


class Launcher:
    def __init__(
        self,
        store: Store,
        backend: BackendRouter,
        home: Home,
        locks: JobLocks,
        notify: Callable[[str], None],
        on_started: Callable[[JobRecord], None],
        terminals: Terminals,
    ):
        self.store, self.backend, self.home, self.locks = store, backend, home, locks
        self._notify = notify
        self._on_started = on_started  # the job's timeout starts counting
        self.terminals = terminals
        self.provenance = Recorder()

    def launch(self, job_id: str, gpu_ids: tuple[str, ...] | None = None) -> None:
        """Launch one queued job with the GPUs the planner gave it (None: those recorded)."""
        with self.locks(job_id):
            try:
                rec = self.store.get(job_id)
            except JobNotFound:
                return
            if rec.state not in RUNNABLE_STATES or rec.substate == Substate.ENGINE_QUEUED:
                return  # started, held, cancelled, or in its engine's queue already
            if rec.state is JobState.REQUEUED and rec.container_id is not None:
                self._retire_attempt(rec)
            gpu_ids = gpu_id_list(rec.gpu_ids) if gpu_ids is None else gpu_ids
            try:
                self.backend.ensure_image(rec.spec, refresh=False)
            except ImageNotFound as exc:
                self._fail(rec, Substate.IMAGE_MISSING, str(exc))
                return
            faults.reached(Point.IMAGE_READY, rec.id)
            if rec.container_id is None and not self._create(rec, gpu_ids):
                return
            # Claim the job before starting it: a hold or cancel that won the race wins, and
            # the container we made for it goes away. An array task whose array is already at
            # max-parallel (the store checks that in the claim) keeps its container for later.
            # A job for an engine with a queue of its own stays Queued, in that queue, until
            # the engine runs it (the finisher moves it on: sync_alive).
            driver = self.backend.for_job(rec.spec)
            if driver.capabilities.queues:
                to, substate, reason, started_at = JobState.QUEUED, Substate.ENGINE_QUEUED, f"handed to {driver.name}", None
            else:
                to, substate, reason, started_at = JobState.RUNNING, None, "started", time.time()
            if not self.store.transition(
                rec.id, to, substate, expect=RUNNABLE_STATES, reason=reason, started_at=started_at,
                gpu_ids=",".join(gpu_ids) or None, message=f"{reason}, waiting for it to run" if substate else None,
            ):
                if self.store.get(rec.id).state in RUNNABLE_STATES:
                    log.warning("job %s not started: its array runs max-parallel tasks already", rec.id)
                    return
                self.backend.remove(rec.container_id)
                return
            rec.state, rec.substate = to, substate
            faults.reached(Point.AFTER_CLAIM, rec.id)
            self._start(rec)

    def close_ended_arrays(self, executor_id: str) -> None:
        """Arrays an engine runs as one array job (Slurm) whose tasks have all ended here: the
        engine cancels what of it was never released (tasks cancelled while queued)."""
        if not self.backend.capabilities.arrays:
            return  # (no engine array can exist: no query on every dispatch)
        for array_id, task_id in self.store.ended_engine_arrays(executor_id):
            try:
                self.backend.for_job(self.store.get(task_id).spec).close_array(array_id)
            except (EngineError, EngineUnavailable, JobNotFound) as exc:
                log.warning("array %s: its engine's array job not closed yet: %s", array_id, exc)
                continue
            self.store.close_engine_array(array_id)

    def _create(self, rec: JobRecord, gpu_ids: tuple[str, ...]) -> bool:
        """Make the job's container and record its id; False (the job Failed) if it cannot be."""
        try:
            array = self.store.get_array(rec.array_id) if rec.array_id else None
            spec = runtime_spec(rec, gpu_ids, array)
            if rec.engine_deps:
                spec = self._with_engine_dependencies(rec, spec)
            # Provenance names the inputs by content digest, not the path staged for this job.
            as_run = spec
            if spec.inputs:
                spec = self._with_inputs(rec, spec)
                if spec is None:
                    return False
            rec.container_id = self.backend.create(rec.id, spec)
        except EngineUnavailable:
            raise  # the job stays queued; the next pass tries again
        except EngineConflict as exc:
            existing = self.backend.find(rec.id)
            if existing is None:
                self._fail(rec, Substate.START_FAILED, str(exc))
                return False
            rec.container_id = existing.id  # made before a crash: adopt our own
        except ImageNotFound as exc:
            self._fail(rec, Substate.IMAGE_MISSING, str(exc))
            return False
        except ConveyorError as exc:
            self._fail(rec, Substate.START_FAILED, str(exc))
            return False
        faults.reached(Point.AFTER_CREATE, rec.id)
        self._record_provenance(rec, as_run)  # before the id is kept: a crash between makes it again
        self.store.update(rec.id, container_id=rec.container_id)
        return True

    def _record_provenance(self, rec: JobRecord, spec: JobSpec) -> None:
        """Keep where and how the attempt the claim will begin runs (the spec as made, with the
        task's environment and GPUs). Without it the job still runs: provenance describes a run,
        it is no reason to refuse one."""
        try:
            doc = self.provenance.document(self.backend, rec.container_id, spec, rec.spec, rec.attempt + 1, rec.submitted_by)
        except EngineUnavailable:
            raise  # the job stays queued; the next pass adopts its container and records it
        except ConveyorError as exc:
            log.warning("job %s: its provenance was not recorded: %s", rec.id, exc)
            return
        self.store.put_provenance(rec.id, rec.attempt + 1, json.dumps(doc))
        faults.reached(Point.PROVENANCE_RECORDED, rec.id)

    def start_claimed(self, job_id: str) -> None:
        """Start the container of a job that was claimed (Running) before a crash. Re-checked
        under the job's lock: a launch in this process may have started it meanwhile, and
        starting an exited container again would run the job twice."""
        with self.locks(job_id):
            rec = self.store.get(job_id)
            status = self.backend.inspect(rec.container_id) if rec.container_id else None
            if in_engine(rec.state, rec.substate) and status is not None and status.status == "created":
                self._start(rec)

    def _start(self, rec: JobRecord) -> None:
        """Start a claimed (Running) job's created container; record a failure to start."""
        if rec.spec.tty and self.backend.for_job(rec.spec).capabilities.tty:
            try:  # before the start, so its first prompt is not missed (see terminals.py)
                self.terminals.open(rec.id, self.backend.attach_output(rec.container_id))
            except EngineError as exc:
                log.info("job %s: its terminal is followed through the engine's log (%s)", rec.id, exc)
        try:
            self.backend.start(rec.container_id)
        except EngineUnavailable:
            raise
        except EngineError as exc:
            status = self.backend.inspect(rec.container_id)
            if status is None or status.started_at is None:
                self._fail(rec, Substate.START_FAILED, str(exc), exit_code=status.exit_code if status else None, remove=True)
                return
            # An engine going down can answer the start with an error after its process began:
            # the engine's record of a start is the truth, and its end is recorded as any other.
            log.warning("job %s: the engine refused its start (%s) but says it started; followed on", rec.id, exc)
        faults.reached(Point.AFTER_START, rec.id)
        if rec.substate != Substate.ENGINE_QUEUED:
            rec.started_at = time.time()
        self._on_started(rec)
        self._notify(rec.id)

    def _with_engine_dependencies(self, rec: JobRecord, spec: JobSpec) -> JobSpec:
        """For an engine that holds jobs for their dependencies: the ones not ended yet (the
        planner let the job go because each is in that engine), by condition and handle."""
        after = " ".join(f"{condition}:{handle}" for condition, handle in self.store.unended_dependencies(rec.id) if handle)
        return spec.model_copy(update={"labels": {**spec.labels, LABEL_AFTER: after}}) if after else spec

    def _with_inputs(self, rec: JobRecord, spec: JobSpec) -> JobSpec | None:
        """The spec with the job's input filesets staged and bind-mounted read-only; None
        (and the job Failed) when the content store cannot give them intact."""
        from ..cas import BlobStore, CasError, stage_inputs

        try:
            mounts = stage_inputs(spec, BlobStore(self.home.cas), self.backend.staging_dir(rec.id))
        except (CasError, OSError) as exc:
            self._fail(rec, Substate.START_FAILED, f"cannot stage inputs: {exc}")
            return None
        faults.reached(Point.INPUTS_STAGED, rec.id)
        return spec.model_copy(update={"mounts": [*spec.mounts, *mounts]})

    def _retire_attempt(self, rec: JobRecord) -> None:
        """Before a retry: the last attempt's logs (with their time index, which dates them)
        go to logs/<job>/attempt-N/ and its container goes away (the new attempt's container
        takes the same name)."""
        logs = self.home.job_logs(rec.id)
        keep = logs / f"attempt-{rec.attempt}"
        keep.mkdir(parents=True, exist_ok=True)
        for name in (name for stream in STREAMS for name in (stream, times_path(logs / stream).name)):
            if (logs / name).exists():
                shutil.move(str(logs / name), str(keep / name))
        self.backend.remove(rec.container_id)
        faults.reached(Point.RETIRED, rec.id)
        self.store.update(rec.id, container_id=None)
        rec.container_id = None

    def _fail(
        self, rec: JobRecord, substate: str, message: str, exit_code: int | None = None, remove: bool = False
    ) -> None:
        """Record the failure, then remove the useless container, then tell the waiters."""
        moved = self.store.transition(
            rec.id,
            JobState.FAILED,
            substate,
            reason="launch failed",
            message=message,
            exit_code=exit_code,
            finished_at=time.time(),
        )
        if remove and rec.container_id:
            self.backend.remove(rec.container_id)
        if rec.spec.inputs:
            shutil.rmtree(self.backend.staging_dir(rec.id), ignore_errors=True)
        if moved:
            self._notify(rec.id)
