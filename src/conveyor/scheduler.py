"""The scheduler: takes queued jobs from the store and launches them on the backend.

Submitting only writes a Queued row and pokes the supervisor; this is the one place that
turns a queued job into a running container. It runs inside whichever process holds the
state directory's supervisor lock, so a job is launched exactly once however many
processes submit.

Queue order and admission (the :class:`Planner`): higher priority first, FIFO within a
priority (array tasks in index order). A job starts when its dependencies are met, its
array, label and executor caps allow, and its request fits in what the :class:`Ledger`
says is free. Backfill: a job that does not fit does not stop smaller ones behind it —
until it has waited ``limits.backfill_window`` as the first job in line that does not fit;
from then on nothing behind it may take what it is short of, so running jobs drain and it
gets its room. The planner reads light columns, never specs, a page at a time, and stops
as soon as nothing more can start.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import docker.errors

from . import faults
from .capacity import Capacity, Ledger, Request, SchedulingConfig, node_capacity
from .daemon import WakeReceiver
from .errors import ConveyorError, EngineUnavailable, ImageNotFound, JobNotFound
from .spec import JobSpec
from .state import JobState, Substate
from .store import JobRecord, Store

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger("conveyor.scheduler")

RUNNABLE = (JobState.QUEUED, JobState.REQUEUED)

# Literal states in SQL so SQLite uses the partial index jobs_runnable (already in queue order).
_RUNNABLE_SQL = "state IN ('Queued', 'Requeued')"
_ACTIVE_SQL = "state IN ('Running', 'Suspended', 'Undetermined')"
_WAITING_SQL = "state IN ('Queued', 'QueuedHeld', 'Requeued', 'RequeuedHeld')"
_DEADLINE_SQL = f"start_deadline IS NOT NULL AND attempt = 0 AND {_WAITING_SQL}"  # = partial index jobs_deadline
_QUEUE_COLUMNS = "id, state, priority, created_at, req_cpus, req_memory, req_gpus, array_id, not_before, has_deps"


@dataclass
class Inflight:
    """A job handed to a launcher and not yet seen Running in the store: it holds its share."""

    request: Request
    gpu_ids: tuple[str, ...]
    array_id: str | None
    labels: frozenset[tuple[str, str]] = frozenset()


@dataclass
class Plan:
    starts: list[tuple[str, Inflight]] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # job id, substate, message
    reasons: dict[str, str] = field(default_factory=dict)  # explain=True: why each queued job waits
    blocker: str | None = None  # the first job in line that does not fit
    next_wake: float | None = None  # a backoff, start deadline or backfill window ends then
    scanned: int = 0
    ledger: Ledger | None = None


class Planner:
    """Decides which queued jobs start now. Pure with respect to the engine: it reads the
    store (light columns only) and returns a :class:`Plan`; the Scheduler carries it out and
    the queue view (``Executor.queue``) uses it with ``explain=True``."""

    PAGE = 256
    SCAN_LIMIT = 2000  # queued jobs looked at per pass beyond which backfill does not search

    def __init__(self, store: Store, executor_id: str, config: SchedulingConfig, capacity: Capacity):
        self.store, self.executor_id, self.config, self.capacity = store, executor_id, config, capacity

    def plan(
        self,
        now: float | None = None,
        inflight: dict[str, Inflight] | None = None,
        blocked_since: dict[str, float] | None = None,
        explain: bool = False,
    ) -> Plan:
        now = time.time() if now is None else now
        inflight = inflight or {}
        blocked_since = {} if blocked_since is None else blocked_since
        plan = Plan(failures=self._doomed(now))
        doomed = {f[0] for f in plan.failures}
        q = self.store.query
        limits, caps = self.config.limits, self.config.caps
        max_running = self.capacity.max_running

        # What is held now: every active job (from the store) and every launch in flight.
        ledger = plan.ledger = Ledger(self.capacity)
        per_array: Counter = Counter()
        active = q(f"SELECT id, req_cpus, req_memory, req_gpus, gpu_ids, array_id FROM jobs WHERE {_ACTIVE_SQL} AND executor_id=?",
                   (self.executor_id,))
        for job_id, cpus, memory, gpus, gpu_ids, array_id in active:
            ledger.take(job_id, Request.from_columns(cpus, memory, gpus), _ids(gpu_ids))
            per_array[array_id] += 1
        active_ids = {r[0] for r in active}
        per_label: Counter = Counter()
        if caps:
            keys = sorted({k for k, _, _ in caps})
            for key, value, n in q(
                f"SELECT l.key, l.value, COUNT(*) FROM job_labels l JOIN jobs j ON j.id = l.job_id "
                f"WHERE j.{_ACTIVE_SQL} AND l.key IN ({','.join('?' * len(keys))}) GROUP BY l.key, l.value", keys
            ):
                per_label[(key, value)] += n
        for job_id, inf in inflight.items():
            if job_id in active_ids:
                continue
            ledger.take(job_id, inf.request, inf.gpu_ids)
            per_array[inf.array_id] += 1
            for kv in inf.labels:
                per_label[kv] += 1
        running = len(ledger.jobs)
        max_parallel = dict(q("SELECT id, max_parallel FROM arrays WHERE max_parallel IS NOT NULL"))
        cap_of = {(k, v): n for k, v, n in caps}

        blocker: str | None = None
        short_kinds: set[str] = set()  # what the blocker lacks, once its backfill window is over
        offset = 0
        while True:
            rows = q(
                f"SELECT {_QUEUE_COLUMNS} FROM jobs INDEXED BY jobs_runnable WHERE {_RUNNABLE_SQL} AND executor_id=? "
                f"ORDER BY priority DESC, created_at, rowid LIMIT ? OFFSET ?",
                (self.executor_id, self.PAGE, offset),
            )
            offset += len(rows)
            waiting_on = self._unmet_deps([r[0] for r in rows if r[9]])
            labels = self._labels([r[0] for r in rows], {k for k, _, _ in caps}) if caps else {}
            for job_id, state, priority, created_at, cpus, memory, gpus, array_id, not_before, _ in rows:
                plan.scanned += 1
                if job_id in doomed or job_id in inflight:
                    continue
                req = Request.from_columns(cpus, memory, gpus)
                reason = None
                job_labels = labels.get(job_id, frozenset())
                if not_before and not_before > now:
                    reason = f"backoff: retry at {time.strftime('%H:%M:%S', time.localtime(not_before))}"
                    plan.next_wake = min(plan.next_wake or not_before, not_before)
                elif job_id in waiting_on:
                    reason = "dependency: waits for " + ", ".join(sorted(waiting_on[job_id]))
                elif array_id in max_parallel and per_array[array_id] >= max_parallel[array_id]:
                    reason = f"cap: array {array_id} runs {per_array[array_id]} of max-parallel {max_parallel[array_id]}"
                elif max_running is not None and running >= max_running:
                    reason = f"cap: executor runs {running} of max_running {max_running}"
                elif any(per_label[kv] >= cap_of[kv] for kv in job_labels):
                    kv = next(kv for kv in job_labels if per_label[kv] >= cap_of[kv])
                    reason = f"cap: {kv[0]}={kv[1]} runs {per_label[kv]} of {cap_of[kv]}"
                else:
                    short = ledger.shortfall(req)
                    if short is not None:
                        reason = f"resources: {short}"
                        if blocker is None:
                            blocker = job_id
                            since = blocked_since.setdefault(job_id, now)
                            ends = since + limits.backfill_window
                            if now >= ends:
                                short_kinds = _kinds(short)
                            else:
                                plan.next_wake = min(plan.next_wake or ends, ends)
                    elif short_kinds and _uses(req, short_kinds):
                        reason = f"backfill: {blocker} waited past the backfill window and comes first"
                    else:
                        gpu_ids = ledger.take(job_id, req)
                        running += 1
                        per_array[array_id] += 1
                        for kv in job_labels:
                            per_label[kv] += 1
                        plan.starts.append((job_id, Inflight(req, gpu_ids, array_id, job_labels)))
                if explain:
                    plan.reasons[job_id] = reason or "starting"
            if len(rows) < self.PAGE:
                break
            if not explain and (
                plan.scanned >= self.SCAN_LIMIT
                or (max_running is not None and running >= max_running)
                or (ledger.free_cpus_m <= 0 and self._min_cpus() > 0)
            ):
                break
        plan.blocker = blocker
        for job_id in list(blocked_since):  # the clock runs only while a job is first in line
            if job_id != blocker:
                del blocked_since[job_id]
        for (deadline,) in q(f"SELECT MIN(start_deadline) FROM jobs INDEXED BY jobs_deadline WHERE {_DEADLINE_SQL}"):
            if deadline is not None:
                plan.next_wake = min(plan.next_wake or deadline, deadline)
        return plan

    def _min_cpus(self) -> float:
        """The smallest CPU request in the queue: with no CPU free, nothing past it can fit."""
        (value,) = self.store.query(f"SELECT MIN(req_cpus) FROM jobs INDEXED BY jobs_runnable_cpus WHERE {_RUNNABLE_SQL}")[0]
        return value or 0.0

    def ledger(self) -> Ledger:
        """What the active jobs hold now, from the store alone."""
        ledger = Ledger(self.capacity)
        for job_id, cpus, memory, gpus, gpu_ids in self.store.query(
            f"SELECT id, req_cpus, req_memory, req_gpus, gpu_ids FROM jobs WHERE {_ACTIVE_SQL} AND executor_id=?",
            (self.executor_id,),
        ):
            ledger.take(job_id, Request.from_columns(cpus, memory, gpus), _ids(gpu_ids))
        return ledger

    def _doomed(self, now: float) -> list[tuple[str, str, str]]:
        """Queued jobs that can never start: start deadline passed, or a dependency failed."""
        q = self.store.query
        out = [
            (job_id, Substate.START_DEADLINE, f"not started by its start deadline {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(deadline))}")
            for job_id, deadline in q(
                f"SELECT id, start_deadline FROM jobs INDEXED BY jobs_deadline WHERE {_DEADLINE_SQL} "
                "AND start_deadline <= ?", (now,)
            )
        ]
        seen = {o[0] for o in out}
        for job_id, dep_id, dep_state, dep_sub in q(
            f"SELECT d.job_id, d.dep_id, j.state, j.substate FROM jobs q INDEXED BY jobs_dependent "
            f"JOIN job_deps d ON d.job_id = q.id LEFT JOIN jobs j ON j.id = d.dep_id WHERE q.has_deps = 1 AND q.{_RUNNABLE_SQL} "
            "AND (j.id IS NULL OR (j.state = 'Failed' AND d.condition = 'ok'))"
        ):
            if job_id not in seen:
                seen.add(job_id)
                why = f"ended {dep_state}/{dep_sub}" if dep_state else "was removed"
                out.append((job_id, Substate.DEPENDENCY_FAILED, f"dependency {dep_id} {why}"))
        return out

    def _unmet_deps(self, ids: list[str]) -> dict[str, set[str]]:
        if not ids:
            return {}
        out: dict[str, set[str]] = {}
        for job_id, dep_id in self.store.query(
            f"SELECT d.job_id, d.dep_id FROM job_deps d JOIN jobs j ON j.id = d.dep_id "
            f"WHERE d.job_id IN ({','.join('?' * len(ids))}) "
            "AND NOT (j.state = 'Done' OR (d.condition = 'any' AND j.state = 'Failed'))",
            ids,
        ):
            out.setdefault(job_id, set()).add(dep_id)
        return out

    def _labels(self, ids: list[str], keys: set[str]) -> dict[str, frozenset[tuple[str, str]]]:
        if not ids or not keys:
            return {}
        out: dict[str, set] = {}
        keys_l = sorted(keys)
        for job_id, key, value in self.store.query(
            f"SELECT job_id, key, value FROM job_labels WHERE job_id IN ({','.join('?' * len(ids))}) "
            f"AND key IN ({','.join('?' * len(keys_l))})",
            [*ids, *keys_l],
        ):
            if (key, value) in {(k, v) for k, v, _ in self.config.caps}:
                out.setdefault(job_id, set()).add((key, value))
        return {k: frozenset(v) for k, v in out.items()}


def _ids(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def _kinds(shortfall: str) -> set[str]:
    return {part.split(" ", 1)[0] for part in shortfall.split("; ")}


def _uses(req: Request, kinds: set[str]) -> bool:
    return ("cpus" in kinds and req.cpus_m > 0) or ("memory" in kinds and req.memory > 0) or (
        "gpus" in kinds and req.gpu_vendor is not None
    )


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
        update["labels"] = {**rec.spec.labels, "conveyor.array": array.id, "conveyor.task": str(rec.array_index)}
    if rec.spec.retries:
        env.update(CONVEYOR_JOB_ID=rec.id, CONVEYOR_ATTEMPT=str(rec.attempt + 1))
    if env:
        update["env"] = {**rec.spec.env, **env}
    gpus = rec.spec.resources.gpus
    if gpus is not None and gpu_ids:
        pinned = gpus.model_copy(update={"device_ids": list(gpu_ids), "count": None})
        update["resources"] = rec.spec.resources.model_copy(update={"gpus": pinned})
    return rec.spec.model_copy(update=update) if update else rec.spec


class Scheduler:
    def __init__(self, supervisor: "Supervisor", waker: WakeReceiver, launchers: int = 4):
        self.sup = supervisor
        self.store = supervisor.store
        self.backend = supervisor.backend
        self._waker = waker
        # Pulls can be slow: a few launchers so one big image does not hold up the queue.
        self._pool = ThreadPoolExecutor(max_workers=launchers, thread_name_prefix="conveyor-launch")
        self._launching: set[str] = set()
        self._launching_lock = threading.Lock()
        self._inflight: dict[str, Inflight] = {}  # guarded by _launching_lock
        self._blocked_since: dict[str, float] = {}
        self._next_wake: float | None = None
        self.configure(SchedulingConfig.load(supervisor.home.root))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="conveyor-scheduler", daemon=True)

    def configure(self, config: SchedulingConfig, capacity: Capacity | None = None) -> None:
        self.config = config
        self.capacity = capacity or node_capacity(config)
        self.planner = Planner(self.store, self.sup.executor_id, config, self.capacity)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._waker.poke()

    def close(self) -> None:
        self._stop.set()
        self._waker.poke()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True)
        self._waker.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatch()
            except Exception:  # noqa: BLE001 - the queue must keep moving
                log.exception("dispatch failed")
            # Woken at once by a submitter or a job's end; otherwise at the next backoff,
            # start deadline or backfill window, and at least every second as a safety net.
            timeout = 1.0 if self._next_wake is None else min(1.0, max(0.01, self._next_wake - time.time()))
            self._waker.wait(timeout=timeout)

    def dispatch(self) -> None:
        with self._launching_lock:
            inflight = dict(self._inflight)
        plan = self.planner.plan(inflight=inflight, blocked_since=self._blocked_since)
        self._next_wake = plan.next_wake
        for job_id, substate, message in plan.failures:
            self._fail_waiting(job_id, substate, message)
        for job_id, inf in plan.starts:
            with self._launching_lock:
                if job_id in self._launching:
                    continue
                self._launching.add(job_id)
                self._inflight[job_id] = inf
            self._pool.submit(self._launch_logged, job_id)

    def _fail_waiting(self, job_id: str, substate: str, message: str) -> None:
        waiting = (*RUNNABLE, JobState.QUEUED_HELD, JobState.REQUEUED_HELD)
        if self.store.transition(
            job_id, JobState.FAILED, substate, expect=waiting, reason=substate, message=message, finished_at=time.time()
        ):
            self.sup.notify(job_id)

    def _launch_logged(self, job_id: str) -> None:
        try:
            self.launch(job_id)
        except EngineUnavailable as exc:
            log.warning("job %s stays queued: %s", job_id, exc)
        except Exception:  # noqa: BLE001
            log.exception("launching job %s failed", job_id)
        finally:
            with self._launching_lock:
                self._launching.discard(job_id)
                self._inflight.pop(job_id, None)
            self.wake()  # what it held (if it did not start) is free again

    # ------------------------------------------------------------------ launching one job

    def launch(self, job_id: str) -> None:
        """Queued -> image -> container -> claim (Running) -> start. Safe to repeat after a
        crash at any step: the container is found by its name instead of made twice."""
        with self.sup.lock_for(job_id):
            try:
                rec = self.store.get(job_id)
            except JobNotFound:
                return
            if rec.state not in RUNNABLE:
                return
            if rec.state is JobState.REQUEUED and rec.container_id is not None:
                self._retire_attempt(rec)
            with self._launching_lock:
                inf = self._inflight.get(rec.id)
            gpu_ids = inf.gpu_ids if inf else _ids(rec.gpu_ids)
            try:
                self.backend.ensure_image(rec.spec, refresh=False)
            except ImageNotFound as exc:
                self._fail(rec, Substate.IMAGE_MISSING, str(exc))
                return
            if rec.container_id is None:
                try:
                    array = self.store.get_array(rec.array_id) if rec.array_id else None
                    spec = runtime_spec(rec, gpu_ids, array)
                    if spec.inputs:
                        spec = self._with_inputs(rec, spec)
                        if spec is None:
                            return
                    rec.container_id = self.backend.create(rec.id, spec)
                except docker.errors.APIError as exc:
                    existing = self.backend.inspect(f"conveyor-{rec.id}") if exc.status_code == 409 else None
                    if existing is None:
                        missing = exc.status_code == 404 and "image" in str(exc).lower()
                        self._fail(rec, Substate.IMAGE_MISSING if missing else Substate.START_FAILED, _message(exc))
                        return
                    rec.container_id = existing.id  # made before a crash: adopt our own
                except ConveyorError as exc:
                    self._fail(rec, Substate.START_FAILED, str(exc))
                    return
                faults.reached("after-create", rec.id)
                self.store.update(rec.id, container_id=rec.container_id)
            # Claim the job before starting it: a hold or cancel that won the race wins, and
            # the container we made for it goes away. An array task whose array is already at
            # max-parallel (the store checks that in the claim) keeps its container for later.
            if not self.store.transition(
                rec.id, JobState.RUNNING, expect=RUNNABLE, reason="started", started_at=time.time(),
                gpu_ids=",".join(gpu_ids) or None,
            ):
                if self.store.get(rec.id).state in RUNNABLE:
                    log.warning("job %s not started: its array runs max-parallel tasks already", rec.id)
                    return
                self.backend.remove(rec.container_id)
                return
            faults.reached("after-claim", rec.id)
            self.start_container(rec)

    def _with_inputs(self, rec: JobRecord, spec: JobSpec) -> JobSpec | None:
        """The spec with the job's input filesets staged and bind-mounted read-only; None
        (and the job Failed) when the content store cannot give them intact."""
        from .cas import BlobStore, CasError, stage_inputs

        try:
            mounts = stage_inputs(spec, BlobStore(self.sup.home.cas), self.sup.home.staging(rec.id))
        except (CasError, OSError) as exc:
            self._fail(rec, Substate.START_FAILED, f"cannot stage inputs: {exc}")
            return None
        return spec.model_copy(update={"mounts": [*spec.mounts, *mounts]})

    def _retire_attempt(self, rec: JobRecord) -> None:
        """Before a retry: the last attempt's logs go to logs/<job>/attempt-N/ and its
        container goes away (the new attempt's container takes the same name)."""
        logs = self.sup.home.job_logs(rec.id)
        keep = logs / f"attempt-{rec.attempt}"
        keep.mkdir(parents=True, exist_ok=True)
        for stream in ("stdout", "stderr"):
            if (logs / stream).exists():
                shutil.move(str(logs / stream), str(keep / stream))
        self.backend.remove(rec.container_id)
        self.store.update(rec.id, container_id=None)
        rec.container_id = None

    def start_container(self, rec: JobRecord) -> None:
        """Start a claimed (Running) job's created container; record a failure to start."""
        try:
            self.backend.start(rec.container_id)
        except docker.errors.APIError as exc:
            status = self.backend.inspect(rec.container_id)
            self._fail(
                rec, Substate.START_FAILED, _message(exc), exit_code=status.exit_code if status else None, remove=True
            )
            return
        rec.started_at = time.time()
        self.sup.watch_timeout(rec)
        self.sup.notify(rec.id)

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
            shutil.rmtree(self.sup.home.staging(rec.id), ignore_errors=True)
        if moved:
            self.sup.notify(rec.id)


def _message(exc: docker.errors.APIError) -> str:
    text = exc.explanation or str(exc)
    return text.decode() if isinstance(text, bytes) else str(text)
