"""Submitting: admission at the door (the same rules on every path), then one Queued row.

Submitting never launches anything: it records the job and pokes the supervisor, which
launches it (see :mod:`conveyor.runtime`).
"""

from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import BinaryIO, Iterator

from .. import faults
from ..faults import Point
from ..arguments import job_spec
from ..capacity import check_possible, request_for
from ..errors import ConveyorError, EngineError, InvalidSpec, InvalidState, JobNotFound
from ..job import Job
from ..spec import Dependency, JobSpec
from ..state import JobState, Substate
from ..store import ArrayRecord, JobRecord, new_job_id
from .base import ExecutorBase


# Who submits, kept in the job's provenance: the agent names its caller's token around a submit.
# Not a parameter: submit's signature is the Client's too, and a remote caller must not name itself.
_SUBMITTER: ContextVar[str | None] = ContextVar("conveyor_submitter", default=None)


class SubmitMixin(ExecutorBase):
    @contextlib.contextmanager
    def submitting_as(self, token: str) -> Iterator[None]:
        """Jobs submitted in this block (in this thread or task) were submitted by ``token``."""
        mark = _SUBMITTER.set(token)
        try:
            yield
        finally:
            _SUBMITTER.reset(mark)

    def ensure_image(self, spec: JobSpec) -> None:
        """Make the spec's image present on the node, as its pull policy says."""
        job_spec("ensure_image", spec)
        self.backend.ensure_image(spec)

    def submit(
        self,
        spec: JobSpec,
        *,
        hold: bool = False,
        idempotency_key: str | None = None,
        image_ready: bool = False,
    ) -> str:
        """Queue a job (QueuedHeld with ``hold``) and return its id at once.

        The image is checked here, so a missing one raises ImageNotFound before anything is
        recorded. ``idempotency_key`` ("digest" for the spec's content digest) makes a second
        submit with the same key return the first job instead of running another.
        """
        job_spec("submit", spec)
        if idempotency_key == "digest":
            idempotency_key = spec.digest()
        existing = idempotency_key and self.store.by_idempotency_key(idempotency_key)
        if existing:
            return existing.id
        spec, columns = self._admit(spec)
        if not image_ready:  # the caller may have pulled already (the CLI does, interruptibly)
            self.ensure_image(spec)
        rec = self.store.insert(
            JobRecord(
                id=new_job_id(),
                executor_id=self.executor_id,
                spec=spec,
                name=spec.name,
                idempotency_key=idempotency_key,
                state=JobState.QUEUED_HELD if hold else JobState.QUEUED,
                substate=Substate.HELD if hold else None,
                submitted_by=_SUBMITTER.get(),
                **columns,
            )
        )
        faults.reached(Point.SUBMITTED, rec.id)
        if not hold:
            self._mode.wake()
        return rec.id

    def submit_many(self, specs: list[JobSpec], *, hold: bool = False, image_ready: bool = False) -> list[str]:
        """Queue many jobs at once (QueuedHeld with ``hold``): all of them, or, when one spec is
        refused (an InvalidSpec naming ``specs[i].<field>``), none. Their ids, in order.
        Each image is checked once; the rows are written in one transaction."""
        specs = [job_spec("submit_many", spec) for spec in specs]
        admitted, seen = [], {}
        for i, spec in enumerate(specs):
            try:
                if id(spec) not in seen:  # one spec object given many times is admitted once
                    seen[id(spec)] = self._admit(spec)
                else:
                    self.meters.counters.accepted()
                admitted.append(seen[id(spec)])
            except InvalidSpec as exc:
                raise InvalidSpec([(f"specs[{i}].{f}", v, h) for f, v, h in exc.problems], exc.what) from None
        if not image_ready:
            for spec in {(s.image, s.pull, str(s.backend)): s for s, _ in admitted}.values():
                self.ensure_image(spec)
        state = JobState.QUEUED_HELD if hold else JobState.QUEUED
        records = [
            JobRecord(id=new_job_id(), executor_id=self.executor_id, spec=spec, name=spec.name, state=state,
                      substate=Substate.HELD if hold else None, submitted_by=_SUBMITTER.get(), **columns)
            for spec, columns in admitted
        ]
        self.store.insert_many(records)
        if records:
            faults.reached(Point.BATCH_SUBMITTED, records[0].id)
        if not hold and records:
            self._mode.wake()
        return [r.id for r in records]

    def submit_array(
        self,
        spec: JobSpec,
        begin: int,
        end: int,
        step: int = 1,
        max_parallel: int | None = None,
        *,
        hold: bool = False,
        image_ready: bool = False,
    ) -> str:
        """Queue one task per index in ``begin..end`` (inclusive) by ``step``; return the array
        id. Each task sees its index as CONVEYOR_TASK_ID (and TASK_ID); at most
        ``max_parallel`` tasks run at once. A bad range creates nothing."""
        job_spec("submit_array", spec)
        limit = self.scheduling.limits.max_array_size
        text = f"{begin}-{end}:{step}"
        if step <= 0:
            raise InvalidSpec.single("array", text, "the step must be 1 or more, e.g. 1-100:2")
        if end < begin:
            raise InvalidSpec.single("array", text, "the range ends before it begins; use BEGIN-END with END >= BEGIN")
        if begin < 0:
            raise InvalidSpec.single("array", text, "task indices are 0 or more")
        count = len(range(begin, end + 1, step))
        if count > limit:
            raise InvalidSpec.single("array", text, f"{count} tasks is over this node's maximum array size {limit} (limits.max_array_size)")
        if max_parallel is not None and max_parallel < 1:
            raise InvalidSpec.single("max_parallel", max_parallel, "at least 1 task must be allowed to run")
        spec, columns = self._admit(spec)
        if not image_ready:
            self.ensure_image(spec)
        array = ArrayRecord(new_job_id(), self.executor_id, begin, end, step, max_parallel, columns["created_at"],
                            engine_array=self.backend.for_job(spec).capabilities.arrays)
        state = JobState.QUEUED_HELD if hold else JobState.QUEUED
        tasks = [
            JobRecord(
                id=new_job_id(), executor_id=self.executor_id, spec=spec, name=spec.name,
                state=state, substate=Substate.HELD if hold else None,
                array_id=array.id, array_index=index, submitted_by=_SUBMITTER.get(), **columns,
            )
            for index in array.indices
        ]
        self.store.insert_array(array, tasks)
        faults.reached(Point.ARRAY_SUBMITTED, array.id)
        if not hold:
            self._mode.wake()
        return array.id

    def start(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        stdin: BinaryIO | None = None,
        image_ready: bool = False,
    ) -> str:
        """Submit a job and return its id once it runs (or failed to start).

        A job whose container cannot be created or started is recorded as
        Failed/start_failed with the engine's message, and no container is left behind.
        With ``stdin`` (and ``stdin_open`` in the spec) the data is fed to the job.
        """
        job_spec("start", spec)
        feeds_stdin = stdin is not None and spec.stdin_open
        if feeds_stdin:
            self.backend.require(spec, "stdin", "feed stdin to a job")
        job_id = self.submit(spec, idempotency_key=idempotency_key, image_ready=image_ready)
        if not self._mode.supervising and not feeds_stdin:
            return job_id  # launched by the supervising process, whenever one runs
        job = self.wait_started(job_id)
        if feeds_stdin and not job.state.is_final:
            try:
                self.attach_stdin(job_id, stdin)
            except (EngineError, InvalidState):
                pass  # it ended before we could attach
        return job_id

    def run(self, spec: JobSpec, timeout: float | None = None) -> Job:
        """Start a job and wait for its end. The result carries state, exit code and logs."""
        job_spec("run", spec)
        return self.wait(self.start(spec), timeout=timeout)

    # ------------------------------------------------------------------ admission

    def _admit(self, spec: JobSpec, now: float | None = None) -> tuple[JobSpec, dict]:
        """Check a job against the node before anything is recorded: a request that can never
        fit is an InvalidSpec naming the field; ``after`` references become job ids. Returns
        the spec to store and its scheduling columns."""
        try:
            spec, columns = self._admitted(spec, now)
        except ConveyorError as exc:
            self.meters.counters.refused(exc.code)
            raise
        self.meters.counters.accepted()
        return spec, columns

    def _admitted(self, spec: JobSpec, now: float | None) -> tuple[JobSpec, dict]:
        self.backend.check(spec)  # the job's backend can do what it asks (InvalidSpec if not)
        req = request_for(spec, self.scheduling)
        check_possible(req, self.capacity)
        if spec.lease is not None:
            spec = spec.model_copy(update={"lease": self._lease_for_job(spec.lease, req).id})
        if spec.after:
            deps: dict[str, Dependency] = {}
            for i, dep in enumerate(spec.after):
                for job_id in self._dependency_ids(dep.job, f"after[{i}]"):
                    deps[job_id] = Dependency(job=job_id, condition=dep.condition)
            spec = spec.model_copy(update={"after": list(deps.values())})
        if spec.inputs:
            # Frozen now: a host file changed after submit does not change the job, and the
            # stored spec names only digests (README: Data).
            from ..cas import freeze_inputs

            spec = freeze_inputs(spec, self.blobs)
        now = time.time() if now is None else now
        return spec, {
            "priority": spec.priority,
            "req_cpus": req.cpus,
            "req_memory": req.memory,
            "req_gpus": req.gpus_json(),
            "start_deadline": now + spec.start_deadline if spec.start_deadline else None,
            "retries": spec.retries,
            "retry_backoff": spec.retry_backoff,
            "has_deps": 1 if spec.after else 0,
            "engine_deps": int(self.backend.for_job(spec).capabilities.dependencies),
            "lease_id": spec.lease,
            "created_at": now,
        }

    def _dependency_ids(self, ref: str, field: str) -> list[str]:
        """A job id, prefix or name, or an array id (meaning every one of its tasks)."""
        try:
            return [self.store.resolve(ref)]
        except JobNotFound as exc:
            if "ambiguous" in str(exc):
                raise InvalidSpec.single(field, ref, "several jobs match; give the full id") from None
        array_id = self.store.resolve_array(ref)
        if array_id is None:
            raise InvalidSpec.single(field, ref, "no job or array has this id or name")
        return [t[0] for t in self.store.array_tasks(array_id)]
