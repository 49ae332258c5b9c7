"""The planner: which queued jobs start now. Pure with respect to the engine: it reads the
store (light columns only, never specs, a page at a time) and returns a :class:`Plan`. The
Scheduler carries plans out; the queue view (``Executor.queue``) asks for one with
``explain=True`` to say what each waiting job waits for.

Queue order and admission: higher priority first, FIFO within a priority (array tasks in
index order). A job starts when its dependencies are met, its array, label and executor caps
allow, and its request fits in what the :class:`Ledger` says is free. Backfill: a job that
does not fit does not stop smaller ones behind it — until it has waited
``limits.backfill_window`` as the first job in line that does not fit; from then on nothing
behind it may take what it is short of, so running jobs drain and it gets its room. A pass
stops as soon as nothing more can start.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ..capacity import LEASE_PREFIX, Capacity, Ledger, Request, SchedulingConfig
from ..state import (
    NOT_ENGINE_QUEUED_SQL,
    RUNNABLE_STATES,
    WAITING_STATES,
    JobState,
    Substate,
    in_engine,
    in_engine_sql,
    sql_in,
)
from ..store import Store
from ..store.leases import LIVE_LEASES_SQL

# Literal states in SQL so SQLite uses the partial indexes (jobs_runnable is in queue order).
# A job its engine queues (Substate.ENGINE_QUEUED) is Queued but launched: it holds its share
# like a running one and is not launched again.
_RUNNABLE_SQL = sql_in(RUNNABLE_STATES)
_LAUNCHABLE_SQL = f"{_RUNNABLE_SQL} AND {NOT_ENGINE_QUEUED_SQL}"
_HOLDING_SQL = in_engine_sql()
_DEADLINE_SQL = f"start_deadline IS NOT NULL AND attempt = 0 AND {sql_in(WAITING_STATES)}"  # = partial index jobs_deadline
_QUEUE_COLUMNS = ("id, state, priority, created_at, req_cpus, req_memory, req_gpus, array_id, not_before, has_deps, engine_deps, "
                  "lease_id")
_LEASE_COLUMNS = "id, cpus, memory, req_gpus, gpu_ids"

@dataclass
class Inflight:
    """A job handed to a launcher and not yet seen Running in the store: it holds its share."""

    request: Request
    gpu_ids: tuple[str, ...]
    array_id: str | None
    labels: frozenset[tuple[str, str]] = frozenset()
    lease_id: str | None = None


@dataclass
class Plan:
    starts: list[tuple[str, Inflight]] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # job id, substate, message
    reasons: dict[str, str] = field(default_factory=dict)  # explain=True: why each queued job waits
    blocker: str | None = None  # the first job in line that does not fit
    next_wake: float | None = None  # a backoff, start deadline or backfill window ends then
    scanned: int = 0
    ledger: Ledger | None = None
    leases: dict[str, Ledger] = field(default_factory=dict)  # each live lease's own ledger: what its jobs hold


class Planner:
    """Decides which queued jobs start now (see the module's docstring)."""

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
        explain_limit: int | None = None,
    ) -> Plan:
        """``explain``: say why each queued job looked at waits. ``explain_limit``: the caller
        shows only the first that many, so the pass may end once it has looked at them and
        found the blocker (or read SCAN_LIMIT jobs), as a pass that launches does."""
        now = time.time() if now is None else now
        inflight = inflight or {}
        blocked_since = {} if blocked_since is None else blocked_since
        plan = Plan(failures=self._doomed(now))
        doomed = {f[0] for f in plan.failures}
        q = self.store.query
        limits, caps = self.config.limits, self.config.caps
        max_running = self.capacity.max_running

        # What is held now: every live lease's share, every active job (from the store; one in a
        # live lease holds part of that lease's share) and every launch in flight.
        ledger = plan.ledger = Ledger(self.capacity)
        leases = plan.leases = self._lease_ledgers(ledger)
        per_array: Counter = Counter()
        active = self._book_active(ledger, leases)
        for _, array_id in active:
            per_array[array_id] += 1
        active_ids = {r[0] for r in active}
        per_label: Counter = Counter()
        if caps:
            keys = sorted({k for k, _, _ in caps})
            for key, value, n in q(
                f"SELECT l.key, l.value, COUNT(*) FROM job_labels l JOIN jobs j ON j.id = l.job_id "
                f"WHERE {in_engine_sql('j.')} AND l.key IN ({','.join('?' * len(keys))}) GROUP BY l.key, l.value", keys
            ):
                per_label[(key, value)] += n
        for job_id, inf in inflight.items():
            if job_id in active_ids:
                continue
            leases.get(inf.lease_id, ledger).take(job_id, inf.request, inf.gpu_ids)
            per_array[inf.array_id] += 1
            for kv in inf.labels:
                per_label[kv] += 1
        running = len(active_ids | inflight.keys())
        # (An array its engine runs as one array job is limited there: not counted here.)
        max_parallel = dict(q("SELECT id, max_parallel FROM arrays WHERE max_parallel IS NOT NULL AND engine_array = 0"))
        cap_of = {(k, v): n for k, v, n in caps}

        blocker: str | None = None
        short_kinds: set[str] = set()  # what the blocker lacks, once its backfill window is over
        offset = 0
        while True:
            rows = q(
                f"SELECT {_QUEUE_COLUMNS} FROM jobs INDEXED BY jobs_runnable WHERE {_LAUNCHABLE_SQL} AND executor_id=? "
                f"ORDER BY priority DESC, created_at, rowid LIMIT ? OFFSET ?",
                (self.executor_id, self.PAGE, offset),
            )
            offset += len(rows)
            waiting_on = self._unmet_deps([r[0] for r in rows if r[9]], {r[0] for r in rows if r[10]})
            labels = self._labels([r[0] for r in rows], {k for k, _, _ in caps}) if caps else {}
            for job_id, state, priority, created_at, cpus, memory, gpus, array_id, not_before, _, _, lease_id in rows:
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
                elif lease_id is not None:
                    # Its lease's own admission: only the lease's share, never the rest of the node.
                    reason = self._admit_in_lease(job_id, req, lease_id, leases, plan, array_id, job_labels)
                    if reason is None:
                        running += 1
                        per_array[array_id] += 1
                        for kv in job_labels:
                            per_label[kv] += 1
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
            if explain and explain_limit is not None and plan.scanned >= explain_limit and (
                blocker is not None or plan.scanned >= self.SCAN_LIMIT
            ):
                break
            if not explain and (
                plan.scanned >= self.SCAN_LIMIT
                or (max_running is not None and running >= max_running)
                or (ledger.free_cpus_m <= 0 and all(lease.free_cpus_m <= 0 for lease in leases.values())
                    and self._min_cpus() > 0)
            ):
                break
        plan.blocker = blocker
        for job_id in list(blocked_since):  # the clock runs only while a job is first in line
            if job_id != blocker:
                del blocked_since[job_id]
        for (deadline,) in q(f"SELECT MIN(deadline) FROM leases INDEXED BY leases_live WHERE {LIVE_LEASES_SQL}"):
            if deadline is not None:  # a lease expires then
                plan.next_wake = min(plan.next_wake or deadline, deadline)
        for (deadline,) in q(f"SELECT MIN(start_deadline) FROM jobs INDEXED BY jobs_deadline WHERE {_DEADLINE_SQL}"):
            if deadline is not None:
                plan.next_wake = min(plan.next_wake or deadline, deadline)
        return plan

    def _min_cpus(self) -> float:
        """The smallest CPU request in the queue: with no CPU free, nothing past it can fit."""
        (value,) = self.store.query(f"SELECT MIN(req_cpus) FROM jobs INDEXED BY jobs_runnable_cpus WHERE {_LAUNCHABLE_SQL}")[0]
        return value or 0.0

    def ledger(self) -> Ledger:
        """What the live leases and the active jobs hold now, from the store alone."""
        ledger = Ledger(self.capacity)
        self._book_active(ledger, self._lease_ledgers(ledger))
        return ledger

    def lease_ledgers(self) -> tuple[Ledger, dict[str, Ledger]]:
        """The node's ledger and each live lease's, from the store alone."""
        ledger = Ledger(self.capacity)
        leases = self._lease_ledgers(ledger)
        self._book_active(ledger, leases)
        return ledger, leases

    def _lease_ledgers(self, ledger: Ledger) -> dict[str, Ledger]:
        """Book each live lease's share in the node's ledger, as one holder, and give the
        lease a ledger of its own whose capacity is that share."""
        out = {}
        for lease_id, cpus, memory, gpus, gpu_ids in self.store.query(
            f"SELECT {_LEASE_COLUMNS} FROM leases INDEXED BY leases_live WHERE {LIVE_LEASES_SQL} AND executor_id=?",
            (self.executor_id,),
        ):
            req = Request.from_columns(cpus, memory, gpus)
            ids = ledger.take(LEASE_PREFIX + lease_id, req, gpu_id_list(gpu_ids))
            share = Capacity(cpus_m=req.cpus_m, memory=req.memory, gpus={req.gpu_vendor: ids} if ids else {},
                             gpu_sharing=self.capacity.gpu_sharing)
            out[lease_id] = Ledger(share)
        return out

    def _book_active(self, ledger: Ledger, leases: dict[str, Ledger]) -> list[tuple[str, str | None]]:
        """Book every active job: in its lease's ledger while the lease lives, else in the
        node's (a job whose lease ended holds its own share until it is gone). Returns (id,
        array id) of each."""
        active = self.store.query(
            f"SELECT id, req_cpus, req_memory, req_gpus, gpu_ids, array_id, lease_id FROM jobs WHERE {_HOLDING_SQL} "
            "AND executor_id=?", (self.executor_id,),
        )
        for job_id, cpus, memory, gpus, gpu_ids, _, lease_id in active:
            leases.get(lease_id, ledger).take(job_id, Request.from_columns(cpus, memory, gpus), gpu_id_list(gpu_ids))
        return [(r[0], r[5]) for r in active]

    @staticmethod
    def _admit_in_lease(job_id: str, req: Request, lease_id: str, leases: dict[str, Ledger], plan: Plan,
                        array_id: str | None, labels: frozenset) -> str | None:
        """Start the job if it fits in what its lease has free; else why it waits."""
        lease = leases.get(lease_id)
        if lease is None:
            return f"lease: {lease_id} has ended (its jobs are being cancelled)"
        short = lease.shortfall(req)
        if short is not None:
            return f"lease: {short} in lease {lease_id}"
        gpu_ids = lease.take(job_id, req)
        plan.starts.append((job_id, Inflight(req, gpu_ids, array_id, labels, lease_id)))
        return None

    def _doomed(self, now: float) -> list[tuple[str, str, str]]:
        """Queued jobs that can never start: start deadline passed, or a dependency failed
        (also one handed to an engine that holds it for that dependency: it never runs there)."""
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

    def _unmet_deps(self, ids: list[str], engine_holds: set[str] = frozenset()) -> dict[str, set[str]]:
        """The dependencies each of ``ids`` still waits for. A job in ``engine_holds`` (its
        engine holds jobs for their dependencies: Slurm) does not wait for those already in
        that engine without retries to come (a retry would be a new engine job): the engine
        waits for them (LABEL_AFTER)."""
        if not ids:
            return {}
        out: dict[str, set[str]] = {}
        for job_id, dep_id, dep_engine_deps, dep_retries, dep_state, dep_substate in self.store.query(
            f"SELECT d.job_id, d.dep_id, j.engine_deps, j.retries, j.state, j.substate FROM job_deps d "
            f"JOIN jobs j ON j.id = d.dep_id WHERE d.job_id IN ({','.join('?' * len(ids))}) "
            "AND NOT (j.state = 'Done' OR (d.condition = 'any' AND j.state = 'Failed'))",
            ids,
        ):
            if job_id in engine_holds and dep_engine_deps and not dep_retries and in_engine(JobState(dep_state), dep_substate):
                continue
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


def in_use(ledger: Ledger, leases: dict[str, Ledger]) -> dict:
    """What the node's ledger says is in use, its job count including the jobs inside leases
    (whose share the node's ledger books as one holder per lease)."""
    out = ledger.in_use()
    out["jobs"] += sum(len(lease.jobs) for lease in leases.values())
    return out


def gpu_id_list(text: str | None) -> tuple[str, ...]:
    """The GPU ids a job holds, from the store's comma-separated column."""
    return tuple(text.split(",")) if text else ()


def _kinds(shortfall: str) -> set[str]:
    return {part.split(" ", 1)[0] for part in shortfall.split("; ")}


def _uses(req: Request, kinds: set[str]) -> bool:
    return ("cpus" in kinds and req.cpus_m > 0) or ("memory" in kinds and req.memory > 0) or (
        "gpus" in kinds and req.gpu_vendor is not None
    )
