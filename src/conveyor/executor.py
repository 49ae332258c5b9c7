"""Executor: the public interface. Submit, run, wait, control, read logs, clean up.

    from conveyor import Executor, JobSpec
    with Executor() as ex:
        job = ex.run(JobSpec(image="busybox", command=["echo", "hi"]))
        print(job.state, job.exit_code, job.stdout)
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator

from .backends.base import LABEL_JOB, Backend
from .errors import ConveyorError, InvalidState, JobNotFound, WaitTimeout
from .daemon import SupervisorLock, wake
from .home import Home
from .job import Job
from .logtimes import timestamped
from .spec import JobSpec
from .state import WAITING_STATES, JobState, Substate
from .capacity import Capacity, SchedulingConfig, check_possible, node_capacity, request_for
from .errors import InvalidSpec
from .spec import Dependency, PullPolicy
from .store import ArrayRecord, JobRecord, Store, Transition, iter_chunks, new_job_id

if TYPE_CHECKING:
    from .cas import BlobStore
    from .supervisor import Supervisor


class _DockerErrors:
    """``docker.errors``, imported when first named. Only the except clauses here use it, and
    they run after a backend (which imports the SDK) raised: a read-only Executor (`conveyor
    ps`, `inspect`, `logs` of finished jobs) never pays the SDK's ~0.2 s import."""

    @property
    def errors(self):
        import docker.errors

        return docker.errors


docker = _DockerErrors()

STREAMS = ("stdout", "stderr")


class Executor:
    """Runs jobs on this node. One instance supervises the jobs of one state directory.

    ``supervise=False`` gives a read-only view (list, info, logs of finished jobs) that
    does not need the engine until it is asked for something live.
    """

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        *,
        docker_url: str | None = None,
        backend: Backend | None = None,
        supervise: bool = True,
        scheduling: "dict | SchedulingConfig | None" = None,
    ):
        self.home = Home(home)
        # config.toml in the state directory, with ``scheduling`` laid over it (README: Scheduling)
        self.scheduling = SchedulingConfig.load(self.home.root, scheduling)
        self._capacity: Capacity | None = None
        self.store = Store(self.home.db)
        self.executor_id = self.home.executor_id()
        self._docker_url = docker_url
        self._backend = backend
        self._waiters: list[tuple[str, Callable[[JobState], bool], Future]] = []
        self._waiters_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()
        self._supervisor: Supervisor | None = None
        # One supervisor per state directory. Without the lock this executor is a client:
        # it queues work and reads the store; the lock holder launches and watches.
        self._lock = SupervisorLock(self.home)
        if supervise:
            self._start_supervising()

    def _start_supervising(self) -> bool:
        """Become the supervisor if no process is; True if this executor now is."""
        if not self._lock.acquire():
            return False
        try:
            from .supervisor import Supervisor  # with the scheduler: only for the supervising process

            self._supervisor = Supervisor(self.store, self.backend, self.home, self.executor_id, self._changed)
            self._supervisor.scheduler.configure(self.scheduling, self.capacity)
            self._supervisor.start()
        except BaseException:
            self._supervisor = None
            self._lock.release()
            raise
        return True

    def _stop_supervising(self) -> None:
        if self._supervisor is not None:
            self._supervisor.close()
            self._supervisor = None
        self._lock.release()

    # ------------------------------------------------------------------ plumbing

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from .backends.docker import DockerBackend  # the SDK import costs ~0.2 s: only when needed

            self._backend = DockerBackend(self.executor_id, base_url=self._docker_url)
        return self._backend

    @property
    def capacity(self) -> Capacity:
        """What jobs may use on this node (the machine minus the reserve, or configured)."""
        if self._capacity is None:
            self._capacity = node_capacity(self.scheduling)
        return self._capacity

    @property
    def supervising(self) -> bool:
        """True when this executor holds the state directory's supervisor lock."""
        return self._supervisor is not None

    @property
    def supervisor(self) -> Supervisor:
        if self._supervisor is None:
            holder = self._lock.holder()
            who = f"process {holder} supervises this state directory" if holder else "no process supervises it"
            raise ConveyorError(f"this Executor is not the supervisor ({who})")
        return self._supervisor

    def close(self) -> None:
        """Stop supervising. Running jobs keep running; a later Executor picks them up."""
        self._closed.set()
        self._stop_supervising()
        self.store.close()

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _job(self, rec: JobRecord) -> Job:
        return Job.from_record(rec, self.home.job_logs(rec.id))

    def _record(self, ref: str) -> JobRecord:
        return self.store.get(self.store.resolve(ref))

    def _changed(self, job_id: str) -> None:
        """Called after a transition is committed: wake whoever waits for this job."""
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            return
        if self._supervisor is not None and rec.state not in (JobState.RUNNING, JobState.SUSPENDED):
            self._supervisor.scheduler.wake()  # it ended or was requeued: resources, deps, retries
        with self._waiters_lock:
            ready = [w for w in self._waiters if w[0] == job_id and w[1](rec.state)]
            self._waiters = [w for w in self._waiters if w not in ready]
        if ready:
            job = self._job(rec)
            for _, _, fut in ready:
                if not fut.done():
                    fut.set_result(job)

    def _when(self, job_id: str, predicate: Callable[[JobState], bool]) -> "Future[Job]":
        fut: Future = Future()
        with self._waiters_lock:
            self._waiters.append((job_id, predicate, fut))
        self._changed(job_id)  # checked after registering, so no transition slips by
        if self._supervisor is None and not fut.done():
            self._ensure_poller()
        return fut

    def _forget(self, futures: Iterable[Future]) -> None:
        gone = set(map(id, futures))
        with self._waiters_lock:
            self._waiters = [w for w in self._waiters if id(w[2]) not in gone]

    def _ensure_poller(self) -> None:
        # A client learns about transitions from the store, which another process writes:
        # one thread polls for all waiters together.
        with self._waiters_lock:
            if self._poller is not None and self._poller.is_alive():
                return
            self._poller = threading.Thread(target=self._poll, name="conveyor-poller", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        while not self._closed.wait(0.2):
            with self._waiters_lock:
                pending = {w[0] for w in self._waiters}
            if not pending:
                return
            for job_id in pending:
                self._changed(job_id)

    def _wake_scheduler(self) -> None:
        if self._supervisor is not None:
            self._supervisor.scheduler.wake()
        else:
            wake(self.home)

    # ------------------------------------------------------------------ submit and run

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
        if not isinstance(spec, JobSpec):
            raise TypeError("submit() takes a JobSpec; build one with JobSpec(...) or JobSpec.from_file()")
        if idempotency_key == "digest":
            idempotency_key = spec.digest()
        existing = idempotency_key and self.store.by_idempotency_key(idempotency_key)
        if existing:
            return existing.id
        spec, columns = self._admit(spec)
        if not image_ready:  # the caller may have pulled already (the CLI does, interruptibly)
            self._ensure_image(spec)
        rec = self.store.insert(
            JobRecord(
                id=new_job_id(),
                executor_id=self.executor_id,
                spec=spec,
                name=spec.name,
                idempotency_key=idempotency_key,
                state=JobState.QUEUED_HELD if hold else JobState.QUEUED,
                substate=Substate.HELD if hold else None,
                **columns,
            )
        )
        if not hold:
            self._wake_scheduler()
        return rec.id

    IMAGE_SEEN_S = 30.0

    def _ensure_image(self, spec: JobSpec) -> None:
        """Check (or pull) the image, but ask the engine about an image it showed us in the
        last IMAGE_SEEN_S seconds only when the pull policy is 'always': a burst of submits of
        one image costs one engine call, not one each. (One removed meanwhile still fails the
        job at launch, as Failed/image_missing.)"""
        seen = getattr(self, "_images_seen", None)
        if seen is None:
            seen = self._images_seen = {}
        now = time.monotonic()
        if spec.pull is not PullPolicy.ALWAYS and now - seen.get(spec.image, -1e9) < self.IMAGE_SEEN_S:
            return
        self.backend.ensure_image(spec)
        seen[spec.image] = now

    def _admit(self, spec: JobSpec, now: float | None = None) -> tuple[JobSpec, dict]:
        """Check a job against the node before anything is recorded: a request that can never
        fit is an InvalidSpec naming the field; ``after`` references become job ids. Returns
        the spec to store and its scheduling columns."""
        req = request_for(spec, self.scheduling)
        check_possible(req, self.capacity)
        if spec.after:
            deps: dict[str, Dependency] = {}
            for i, dep in enumerate(spec.after):
                for job_id in self._dependency_ids(dep.job, f"after[{i}]"):
                    deps[job_id] = Dependency(job=job_id, condition=dep.condition)
            spec = spec.model_copy(update={"after": list(deps.values())})
        if spec.inputs:
            # Frozen now: a host file changed after submit does not change the job, and the
            # stored spec names only digests (README: Data).
            from .cas import freeze_inputs

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

    # ------------------------------------------------------------------ arrays

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
        if not isinstance(spec, JobSpec):
            raise TypeError("submit_array() takes a JobSpec")
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
            self._ensure_image(spec)
        array = ArrayRecord(new_job_id(), self.executor_id, begin, end, step, max_parallel, columns["created_at"])
        state = JobState.QUEUED_HELD if hold else JobState.QUEUED
        tasks = [
            JobRecord(
                id=new_job_id(), executor_id=self.executor_id, spec=spec, name=spec.name,
                state=state, substate=Substate.HELD if hold else None,
                array_id=array.id, array_index=index, **columns,
            )
            for index in array.indices
        ]
        self.store.insert_array(array, tasks)
        if not hold:
            self._wake_scheduler()
        return array.id

    def array(self, ref: str) -> dict:
        """An array's summary: its range, max-parallel and how many tasks are in each state."""
        array = self._array(ref)
        counts = self.store.array_counts(array.id)
        return {
            "id": array.id,
            "begin": array.first,
            "end": array.last,
            "step": array.step,
            "max_parallel": array.max_parallel,
            "tasks": sum(counts.values()),
            "states": {s.value: counts.get(s.value, 0) for s in JobState if counts.get(s.value)},
            "created_at": array.created_at,
        }

    def array_tasks(self, ref: str) -> list[tuple[str, int, JobState]]:
        """(job id, index, state) of each task of an array, in index order."""
        return self.store.array_tasks(self._array(ref).id)

    def _array(self, ref: str) -> ArrayRecord:
        array_id = self.store.resolve_array(ref)
        if array_id is None:
            raise JobNotFound(ref, "no such array")
        return self.store.get_array(array_id)

    def _each_task(self, ref: str, states, action) -> dict:
        done = 0
        for job_id, _, state in self.array_tasks(ref):
            if state in states:
                try:
                    action(job_id)
                    done += 1
                except InvalidState:
                    pass  # it moved on meanwhile (started, ended)
        return {**self.array(ref), "affected": done}

    def hold_array(self, ref: str) -> dict:
        """Hold every task that has not started."""
        return self._each_task(ref, {JobState.QUEUED, JobState.REQUEUED}, self.hold)

    def release_array(self, ref: str) -> dict:
        return self._each_task(ref, {JobState.QUEUED_HELD, JobState.REQUEUED_HELD}, self.release)

    def suspend_array(self, ref: str) -> dict:
        """Suspend every running task (tasks not started yet keep waiting)."""
        return self._each_task(ref, {JobState.RUNNING}, self.suspend)

    def resume_array(self, ref: str) -> dict:
        return self._each_task(ref, {JobState.SUSPENDED}, self.resume)

    def cancel_array(self, ref: str, grace: float | None = None) -> dict:
        """Cancel every task that has not ended: waiting ones at once, running ones with
        SIGTERM and SIGKILL after ``grace``."""
        live = {s for s in JobState if not s.is_final}
        # Waiting tasks first, so none of them starts while the running ones are stopped.
        self._each_task(ref, WAITING_STATES, lambda j: self.cancel(j, wait=False))
        summary = self._each_task(ref, live, lambda j: self.cancel(j, grace, wait=False))
        for job_id, _, state in self.array_tasks(ref):
            if not state.is_final:
                self.wait(job_id, timeout=max(60.0, (grace or 10) + 30))
        return {**self.array(ref), "affected": summary["affected"]}

    # ------------------------------------------------------------------ queue and machine views

    def _planner(self) -> "Planner":
        from .scheduler import Planner

        return Planner(self.store, self.executor_id, self.scheduling, self.capacity)

    def queue(self, limit: int | None = None) -> dict:
        """The queue as the scheduler sees it: counts per priority, and for each waiting job
        (in the order they will be considered, ``limit`` of them) what it waits for:
        resources, dependency, hold, cap, backoff or backfill."""
        plan = self._planner().plan(explain=True)
        reasons = dict(plan.reasons)
        for job_id, substate, message in plan.failures:
            reasons[job_id] = f"{substate}: {message} (failing)"
        by_priority: dict[int, dict[str, int]] = {}
        for priority, state, n in self.store.query(
            "SELECT priority, state, COUNT(*) FROM jobs WHERE executor_id=? AND state NOT IN ('Done', 'Failed') "
            "GROUP BY priority, state",
            (self.executor_id,),
        ):
            row = by_priority.setdefault(priority, {"running": 0, "queued": 0, "held": 0})
            key = "running" if state in ("Running", "Suspended", "Undetermined") else "held" if "Held" in state else "queued"
            row[key] += n
        sql = (
            "SELECT id, name, state, priority, created_at, array_id, array_index, req_cpus, req_memory, req_gpus "
            "FROM jobs WHERE executor_id=? AND state IN ('Queued', 'Requeued', 'QueuedHeld', 'RequeuedHeld') "
            "ORDER BY priority DESC, created_at, rowid"
        )
        jobs = []
        from .capacity import Request

        for job_id, name, state, priority, created, array_id, index, cpus, memory, gpus in self.store.query(
            sql + (" LIMIT ?" if limit is not None else ""), (self.executor_id, *([limit] if limit is not None else []))
        ):
            why = "hold" if "Held" in state else reasons.get(job_id, "starting")
            jobs.append({
                "id": job_id, "name": name, "state": state, "priority": priority, "created_at": created,
                "array_id": array_id, "array_index": index,
                "request": Request.from_columns(cpus, memory, gpus).describe(),
                "waits_for": why.split(":", 1)[0], "reason": why,
            })
        return {
            "capacity": self.capacity.to_dict(),
            "in_use": plan.ledger.in_use() if plan.ledger else {},
            "priorities": {str(k): v for k, v in sorted(by_priority.items(), reverse=True)},
            "waiting": sum(v["queued"] + v["held"] for v in by_priority.values()),
            "blocker": plan.blocker,
            "jobs": jobs,
        }

    def machine(self) -> dict:
        """This node: host, OS, CPUs, memory, GPUs, load, engine version, and the capacity
        jobs may use with what is in use now."""
        import platform

        from .capacity import discover

        m = discover()
        engine = None
        try:
            engine = self.backend.api.version().get("Version")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the view still answers without the engine
            engine = None
        cap = self.capacity
        in_use = self._planner().ledger().in_use()
        return {
            "hostname": socket.gethostname(),
            "os": f"{platform.system()} {platform.release()}",
            "arch": platform.machine(),
            "cpus": m.cpus,
            "memory": m.memory,
            "gpus": {v: list(ids) for v, ids in m.gpus.items()},
            "load": list(os.getloadavg()),
            "engine": {"name": getattr(self.backend, "name", "docker"), "version": engine},
            "capacity": {
                **cap.to_dict(),
                "reserve": {"cpus": cap.reserve[0], "memory": cap.reserve[1]},
                "gpu_sharing": cap.gpu_sharing,
            },
            "in_use": in_use,
            "free": {"cpus": (cap.cpus_m - in_use["cpus"] * 1000) / 1000, "memory": cap.memory - in_use["memory"]},
        }

    def attempts(self, ref: str) -> list[dict]:
        """Every attempt of a job run with retries: state, exit code, times and where its
        logs are (logs/<job>/attempt-N for earlier ones; the last one's are the job's own)."""
        rec = self._record(ref)
        out = self.store.attempts(rec.id)
        for a in out:
            kept = self.home.job_logs(rec.id) / f"attempt-{a['attempt']}"
            a["logs_dir"] = str(kept if kept.exists() else self.home.job_logs(rec.id))
        return out

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
        job_id = self.submit(spec, idempotency_key=idempotency_key, image_ready=image_ready)
        if self._supervisor is None and stdin is None:
            return job_id
        job = self.wait_started(job_id)
        if stdin is not None and spec.stdin_open and job.container_id and not job.state.is_final:
            try:
                attached = self.backend.attach_stdin(job.container_id)
            except docker.errors.APIError:
                return job_id  # it ended before we could attach
            threading.Thread(target=_pump_stdin, args=(stdin, attached), daemon=True, name="conveyor-stdin").start()
        return job_id

    def run(self, spec: JobSpec, timeout: float | None = None) -> Job:
        """Start a job and wait for its end. The result carries state, exit code and logs."""
        return self.wait(self.start(spec), timeout=timeout)

    # ------------------------------------------------------------------ waiting

    def future(self, ref: str) -> "Future[Job]":
        """A future resolved with the final Job, without blocking (for asyncio: wrap_future)."""
        return self._when(self.store.resolve(ref), lambda s: s.is_final)

    def wait(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job is Done or Failed; WaitTimeout after ``timeout`` seconds."""
        return self._wait_for(ref, lambda s: s.is_final, "finished", timeout)

    def wait_started(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job has left the queue (running, suspended, or already ended)."""
        return self._wait_for(ref, lambda s: s not in WAITING_STATES, "started", timeout)

    def _wait_for(self, ref: str, predicate, what: str, timeout: float | None) -> Job:
        job_id = self.store.resolve(ref)
        fut = self._when(job_id, predicate)
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            self._forget([fut])
            raise WaitTimeout(job_id, what, timeout or 0) from None

    def wait_any(self, refs: Iterable[str], timeout: float | None = None) -> Job:
        """The first of ``refs`` to finish (DRMAA2 waitAnyTerminated)."""
        ids = [self.store.resolve(r) for r in refs]
        if not ids:
            raise ValueError("wait_any needs at least one job")
        futures = [self._when(i, lambda s: s.is_final) for i in ids]
        done, _ = futures_wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        self._forget(futures)
        if not done:
            raise WaitTimeout(",".join(ids), "finished", timeout or 0)
        return min((f.result() for f in done), key=lambda j: j.finished_at or 0)

    # ------------------------------------------------------------------ control

    def cancel(self, ref: str, grace: float | None = None, *, wait: bool = True) -> Job:
        """Terminate a job: SIGTERM, then SIGKILL after ``grace`` seconds (default: the spec's
        stop_grace). A job that has not started yet is failed at once."""
        rec = self._record(ref)
        if rec.state.is_final:
            raise InvalidState(rec.id, rec.state.value, "cancel")
        if rec.state in WAITING_STATES or rec.container_id is None:
            self.store.transition(rec.id, JobState.FAILED, Substate.CANCELLED, reason="cancelled", finished_at=time.time())
            self._changed(rec.id)
            return self.info(rec.id)
        grace = rec.spec.stop_grace if grace is None else grace
        if self._supervisor is not None:
            self._supervisor.terminate(rec, Substate.CANCELLED, grace)
        else:  # a client: the engine itself does SIGTERM, the grace, then SIGKILL
            self.store.update(rec.id, stop_reason=Substate.CANCELLED)
            if self.backend.inspect(rec.container_id) and self.store.get(rec.id).state is JobState.SUSPENDED:
                self.backend.signal(rec.container_id, "SIGTERM")
                self.backend.unpause(rec.container_id)
            try:
                self.backend.stop(rec.container_id, grace)
            except docker.errors.NotFound:
                pass
        return self.wait(rec.id) if wait else self.info(rec.id)

    def hold(self, ref: str) -> Job:
        """Keep a queued job from starting (Queued -> QueuedHeld)."""
        return self._hold(ref, hold=True)

    def release(self, ref: str) -> Job:
        """Let a held job start again (QueuedHeld -> Queued)."""
        return self._hold(ref, hold=False)

    def _hold(self, ref: str, hold: bool) -> Job:
        rec = self._record(ref)
        pairs = {
            JobState.QUEUED: JobState.QUEUED_HELD,
            JobState.REQUEUED: JobState.REQUEUED_HELD,
        }
        if not hold:
            pairs = {v: k for k, v in pairs.items()}
        if rec.state not in pairs:
            raise InvalidState(rec.id, rec.state.value, "hold" if hold else "release")
        if not self.store.transition(
            rec.id, pairs[rec.state], Substate.HELD if hold else None, expect={rec.state}, reason="held" if hold else "released"
        ):
            raise InvalidState(rec.id, self.store.get(rec.id).state.value, "hold" if hold else "release")
        if not hold:
            self._wake_scheduler()
        return self.info(rec.id)

    def suspend(self, ref: str) -> Job:
        """Freeze the job's processes (cgroup freezer); the state says Suspended."""
        return self._pause(ref, pause=True)

    def resume(self, ref: str) -> Job:
        return self._pause(ref, pause=False)

    def _pause(self, ref: str, pause: bool) -> Job:
        rec = self._record(ref)
        src, dst = (JobState.RUNNING, JobState.SUSPENDED) if pause else (JobState.SUSPENDED, JobState.RUNNING)
        if rec.state is not src:
            raise InvalidState(rec.id, rec.state.value, "suspend" if pause else "resume")
        try:
            (self.backend.pause if pause else self.backend.unpause)(rec.container_id)
        except docker.errors.APIError as exc:
            current = self.store.get(rec.id).state
            raise InvalidState(rec.id, current.value, f"{'suspend' if pause else 'resume'} ({_engine_message(exc)})")
        self.store.transition(rec.id, dst, expect={src}, reason="suspended" if pause else "resumed")
        return self.info(rec.id)

    # ------------------------------------------------------------------ reading

    def info(self, ref: str) -> Job:
        return self._job(self._record(ref))

    def list(
        self,
        states: Iterable[JobState | str] | None = None,
        labels: dict[str, str] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs oldest first, optionally only ``states`` and ``labels``; ``limit``/``offset`` page."""
        wanted = None if states is None else [JobState(s) for s in states]
        return [self._job(r) for r in self.store.list(states=wanted, labels=labels, limit=limit, offset=offset)]

    def count(self, states: Iterable[JobState | str] | None = None, labels: dict[str, str] | None = None) -> int:
        wanted = None if states is None else [JobState(s) for s in states]
        return self.store.count(states=wanted, labels=labels)

    def logs(
        self,
        ref: str,
        stream: str = "all",
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` pairs of a job's output, stdout and stderr kept apart.

        Finished jobs are read from the store; running ones from the engine. With ``follow``
        the stream goes on until the job ends and includes every byte it wrote. With
        ``timestamps`` each line starts with the RFC3339Nano time it was written and a space,
        as ``docker logs --timestamps`` prints it (for finished jobs, the times saved with
        the logs)."""
        if stream not in (*STREAMS, "all"):
            raise ValueError("stream must be 'stdout', 'stderr' or 'all'")
        streams = STREAMS if stream == "all" else (stream,)
        job_id = self.store.resolve(ref)
        rec = self.store.get(job_id)
        while follow and rec.state in WAITING_STATES:
            time.sleep(0.2)
            rec = self.store.get(job_id)
        if rec.state.is_final or rec.container_id is None:
            yield from self._stored_logs(job_id, streams, tail, timestamps)
            return
        sent = dict.fromkeys(streams, 0)  # bytes of the job's output, without the time prefixes
        try:
            for name, chunk in self.backend.follow_logs(rec.container_id, streams, tail, follow, timestamps=timestamps):
                sent[name] += len(chunk) - (chunk.find(b" ", 0, 40) + 1 if timestamps else 0)
                yield name, chunk
        except ConveyorError:
            pass  # the container went away mid-stream; the stored copy has the rest
        if follow and tail is None:
            # Whatever the engine stream missed (it ends at exit, or broke) is in the store.
            self.wait(job_id)
            for name in streams:
                path = self.home.job_logs(job_id) / name
                if path.exists():
                    chunks = timestamped(path, sent[name]) if timestamps else iter_chunks(path, offset=sent[name])
                    for chunk in chunks:
                        yield name, chunk

    def events(
        self, job: str | None = None, *, since: int | None = None, follow: bool = True, poll: float = 0.25
    ) -> Iterator[Transition]:
        """State transitions in commit order: those after seq ``since`` (0: the whole history;
        None: from now on), then with ``follow`` each new one as it is committed, until the
        executor is closed. The append-only table is polled by seq: one small query a tick."""
        job_id = self.store.resolve(job) if job is not None else None
        last = since
        if last is None:
            last = self.store.query("SELECT coalesce(max(seq), 0) FROM transitions")[0][0]
        while True:
            for t in self.store.transitions(job_id, since_seq=last):
                last = t.seq
                yield t
            if not follow or self._closed.wait(poll):
                return

    def _stored_logs(
        self, job_id: str, streams: tuple[str, ...], tail: int | None, timestamps: bool = False
    ) -> Iterator[tuple[str, bytes]]:
        for name in streams:
            path = self.home.job_logs(job_id) / name
            if not path.exists():
                continue
            if timestamps:
                # The last N lines start this many bytes before the end; the index says when.
                start = 0 if tail is None else os.path.getsize(path) - len(_last_lines(path, tail))
                for chunk in timestamped(path, start):
                    yield name, chunk
            elif tail is None:
                for chunk in iter_chunks(path):
                    yield name, chunk
            else:
                data = _last_lines(path, tail)
                if data:
                    yield name, data

    # ------------------------------------------------------------------ removal

    def discard_container(self, ref: str) -> None:
        """Remove a finished job's container; its record, logs and exit code stay."""
        rec = self._record(ref)
        if not rec.state.is_final:
            raise InvalidState(rec.id, rec.state.value, "remove the container of")
        if rec.container_id:
            self.backend.remove(rec.container_id)

    def remove(self, ref: str, force: bool = False) -> None:
        """Forget a finished job: its container, logs and record. ``force`` cancels a live one first."""
        rec = self._record(ref)
        if not rec.state.is_final:
            if not force:
                raise InvalidState(rec.id, rec.state.value, "remove (cancel it first, or force)")
            rec = self.store.get(self.cancel(rec.id, grace=0).id)
        if rec.container_id:
            self.backend.remove(rec.container_id)
        shutil.rmtree(self.home.job_logs(rec.id), ignore_errors=True)
        shutil.rmtree(self.home.staging(rec.id), ignore_errors=True)
        self.store.delete(rec.id)

    def cleanup(self) -> dict[str, int]:
        """Remove every container, volume and network that carries this executor's label,
        and nothing else. Live jobs are cancelled first and their logs saved: by this
        executor when it supervises, or when no process does (it supervises meanwhile);
        otherwise by the supervising process, which this one waits for."""
        took_over = self._supervisor is None and self._start_supervising()
        try:
            removed = 0
            for status in self.backend.list():
                job_id = status.labels.get(LABEL_JOB)
                try:
                    rec = self.store.get(job_id) if job_id else None
                except JobNotFound:
                    rec = None
                if rec is not None and not rec.state.is_final:
                    self._end_for_cleanup(rec, status)
                self.backend.remove(status.id)
                removed += 1
            return {"containers": removed, **self.backend.remove_volumes_and_networks()}
        finally:
            if took_over:
                self._stop_supervising()

    def _end_for_cleanup(self, rec: JobRecord, status) -> None:
        """Give a live job a final state (its logs saved) before its container goes."""
        if not status.alive and not status.finished:
            # Created but never started: there is no output to keep.
            if self.store.transition(
                rec.id, JobState.FAILED, Substate.CANCELLED, reason="cleanup",
                message="removed by cleanup before it started", finished_at=time.time(),
            ):
                self._changed(rec.id)
            return
        if self._supervisor is not None:
            if status.alive:
                self._supervisor.terminate(rec, Substate.CANCELLED, grace=0)
            else:
                self._supervisor.finalize(rec.id)
        elif status.alive:
            # Another process supervises: kill the container here; that process sees it
            # die, saves the logs and records the job as cancelled.
            self.store.update(rec.id, stop_reason=Substate.CANCELLED)
            try:
                self.backend.signal(status.id, "SIGKILL")
                if status.status == "paused":
                    self.backend.unpause(status.id)  # a frozen process cannot die
            except docker.errors.APIError:
                pass  # it exited meanwhile
        self.wait(rec.id, timeout=60)

    # ------------------------------------------------------------------ data (README: Data)

    @property
    def blobs(self) -> "BlobStore":
        from .cas import BlobStore

        if getattr(self, "_blobs", None) is None:
            self._blobs = BlobStore(self.home.cas)
        return self._blobs

    def filesets(self, ref: str, role: str = "output") -> dict[str, str]:
        """A job's filesets of one role: container path -> fileset digest."""
        rec = self._record(ref)
        return {t: d for _, _, t, d in self.store.filesets(rec.id, role)}

    def outputs(self, ref: str) -> list[dict]:
        """Every captured output file: output path, path inside it, size, digest, mode."""
        out = []
        for target, digest in self.filesets(ref).items():
            fs = self.blobs.fileset(digest)
            for path, e in fs.entries.items():
                out.append({"output": target, "fileset": digest, "path": f"{target}/{path}",
                            "size": e.size, "digest": e.digest, "mode": e.mode})
        return out

    def _output_entry(self, ref: str, path: str):
        path = "/" + path.strip("/")
        for target, digest in self.filesets(ref).items():
            if path == target or path.startswith(target + "/"):
                rel = path[len(target) + 1:]
                fs = self.blobs.fileset(digest)
                if rel in fs.entries:
                    return fs.entries[rel]
                if not rel and len(fs.entries) == 1:  # an output that was one file
                    return next(iter(fs.entries.values()))
        raise JobNotFound(ref, f"no captured output file {path!r}; see 'conveyor outputs {ref}'")

    def read_output(self, ref: str, path: str, out: BinaryIO | None = None) -> bytes | int:
        """One output file's bytes (verified); written to ``out`` instead when given."""
        entry = self._output_entry(ref, path)
        if out is not None:
            return self.blobs.copy_to(entry.digest, out)
        return self.blobs.read(entry.digest)

    def restore_outputs(self, ref: str, target: str | os.PathLike) -> list[str]:
        """Write every output fileset under ``target``: output /out lands in target/out.
        Nothing is written outside ``target``."""
        written = []
        for out_path, digest in self.filesets(ref).items():
            dest = os.path.join(target, out_path.lstrip("/"))
            fs = self.blobs.restore(digest, dest)
            written += [os.path.join(dest, p) for p in fs.entries]
        return written

    def verify(self, ref: str | None = None) -> dict:
        """Re-hash blobs (a job's, or every blob with ``ref`` None) and report each corrupt
        or missing one with the jobs that reference it: {"checked": n, "bad": [...]}."""
        from .cas import CasError

        rows = self.store.filesets(self._record(ref).id if ref else None)
        users: dict[str, set[str]] = {}
        wanted: set[str] = set()
        bad: dict[str, dict] = {}

        def flag(digest: str, problem: str, job_ids) -> None:
            item = bad.setdefault(digest, {"digest": digest, "problem": problem, "jobs": set()})
            item["jobs"].update(job_ids)

        for job_id, role, target, digest in rows:
            users.setdefault(digest, set()).add(job_id)
        for fs_digest, job_ids in list(users.items()):
            wanted.add(fs_digest)
            actual = self.blobs.hash_of(fs_digest)
            if actual != fs_digest:
                flag(fs_digest, "missing" if actual is None else "corrupt", job_ids)
                continue
            try:
                fs = self.blobs.fileset(fs_digest)
            except CasError:
                flag(fs_digest, "not a fileset", job_ids)
                continue
            for e in fs.entries.values():
                wanted.add(e.digest)
                if e.digest in bad:
                    bad[e.digest]["jobs"].update(job_ids)
                    continue
                actual = self.blobs.hash_of(e.digest)
                if actual != e.digest:
                    flag(e.digest, "missing" if actual is None else "corrupt", job_ids)
        checked = len(wanted)
        if ref is None:  # and every other blob in the store
            for digest, _ in self.blobs.all():
                if digest not in wanted:
                    checked += 1
                    actual = self.blobs.hash_of(digest)
                    if actual != digest:
                        flag(digest, "corrupt", ())
        return {"checked": checked, "bad": [{**b, "jobs": sorted(b["jobs"])} for b in bad.values()]}

    def _referenced(self) -> set[str]:
        """Every blob some job needs: its filesets and their files, plus digest inputs of
        specs (a queued job's inputs are also in job_filesets; this is belt and braces)."""
        from .cas import CasError

        roots = {d for _, _, _, d in self.store.filesets()}
        for rec in self.store.list():
            roots.update(i.source for i in rec.spec.inputs if i.frozen)
        keep = set(roots)
        for digest in roots:
            try:
                keep.update(e.digest for e in self.blobs.fileset(digest).entries.values())
            except CasError:
                pass  # verify reports it; its files (if any survive) are not collected blindly
        return keep

    def gc(self, dry_run: bool = False, grace: float = 600.0) -> dict:
        """Remove blobs no job references. Blobs written in the last ``grace`` seconds are
        kept: a submit in progress has frozen its inputs but not yet recorded the job."""
        keep = self._referenced()
        now = time.time()
        removed, freed, kept = [], 0, 0
        for digest, mtime in list(self.blobs.all()):
            if digest in keep or now - mtime < grace:
                kept += 1
                continue
            size = self.blobs.path(digest).stat().st_size
            if not dry_run:
                if self._referenced_now(digest):
                    kept += 1
                    continue
                self.blobs.delete(digest)
            removed.append(digest)
            freed += size
        return {"removed": len(removed), "bytes": freed, "kept": kept, "dry_run": dry_run, "digests": removed}

    def _referenced_now(self, digest: str) -> bool:
        # a job submitted while gc ran: its fileset rows name the digest directly
        return bool(self.store.query("SELECT 1 FROM job_filesets WHERE digest=? LIMIT 1", (digest,)))

    def load_image(self, path: str | os.PathLike) -> dict:
        """Load an image tarball (docker save) into the engine and record its digests."""
        import hashlib

        h = hashlib.sha256()

        def chunks(f):
            while data := f.read(1 << 20):
                h.update(data)
                yield data

        with open(path, "rb") as f:
            ids = self.backend.load_image(chunks(f))
        file_digest = "sha256:" + h.hexdigest()
        images = []
        for image_id in ids:
            tags = self.backend.image_tags(image_id)
            self.store.record_image(image_id, tags, file_digest, os.path.basename(str(path)))
            images.append({"image_id": image_id, "tags": tags})
        return {"file": str(path), "file_digest": file_digest, "images": images}

    @property
    def orphans(self) -> list[str]:
        """Ids of containers with this executor's label whose job the store does not know.

        Asked of the engine each time, so a client sees them too. They are reported (here and
        in the supervisor's log), never adopted and never removed, except by ``cleanup``."""
        out = []
        for status in self.backend.list():
            job_id = status.labels.get(LABEL_JOB)
            try:
                if job_id:
                    self.store.get(job_id)
                    continue
            except JobNotFound:
                pass
            out.append(status.id)
        return sorted(out)


def _engine_message(exc: docker.errors.APIError) -> str:
    text = exc.explanation or str(exc)
    return text.decode() if isinstance(text, bytes) else str(text)


def _pump_stdin(source: BinaryIO, attached) -> None:
    """Copy the caller's stdin into the container, then close the container's stdin."""
    sock = getattr(attached, "_sock", attached)
    try:
        while chunk := (source.read1(65536) if hasattr(source, "read1") else source.read(65536)):
            sock.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _last_lines(path, n: int, block: int = 1 << 16) -> bytes:
    """The last ``n`` lines of a file, reading backwards (files may be gigabytes)."""
    if n <= 0:
        return b""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        data = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
            # one more newline than lines wanted, ignoring a trailing newline
            if data.count(b"\n", 0, len(data) - 1 if data.endswith(b"\n") else len(data)) >= n:
                break
    body = data[:-1] if data.endswith(b"\n") else data
    lines = body.split(b"\n")[-n:]
    return b"\n".join(lines) + (b"\n" if data.endswith(b"\n") else b"")
