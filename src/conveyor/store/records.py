"""The rows the store hands out: :class:`JobRecord` (one job, its spec parsed) and
:class:`ArrayRecord` (one job array), the job table's column order, and :func:`new_job_id`."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field

from ..spec import JobSpec, spec_from_json
from ..state import JobState

_JOB_COLUMNS = (
    "id executor_id name spec state substate exit_code message container_id stop_reason "
    "idempotency_key array_id array_index created_at started_at finished_at "
    "priority req_cpus req_memory req_gpus gpu_ids start_deadline retries retry_backoff attempt not_before has_deps node engine_deps submitted_by usage lease_id"
).split()


def new_job_id() -> str:
    return secrets.token_hex(6)


@dataclass
class JobRecord:
    id: str
    executor_id: str
    spec: JobSpec
    state: JobState = JobState.QUEUED
    name: str | None = None
    substate: str | None = None
    exit_code: int | None = None
    message: str | None = None
    container_id: str | None = None
    stop_reason: str | None = None
    idempotency_key: str | None = None
    array_id: str | None = None
    array_index: int | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    # scheduling: the admission request (CPUs, bytes, GPU request as JSON), the GPUs given
    # at launch, the absolute start deadline, retries and the attempt now running or last run
    priority: int = 0
    req_cpus: float | None = None
    req_memory: int | None = None
    req_gpus: str | None = None
    gpu_ids: str | None = None
    start_deadline: float | None = None
    retries: int = 0
    retry_backoff: float = 0.0
    attempt: int = 0
    not_before: float | None = None
    has_deps: int = 0
    node: str | None = None  # the machine it runs or ran on, when the engine has several
    engine_deps: int = 0  # 1: its engine holds it for its dependencies (capability dependencies)
    submitted_by: str | None = None  # the agent token's name; None from an embedded Executor
    usage: dict | None = None  # its resource usage totals, kept by the sampler (runtime/sampler.py)
    lease_id: str | None = None  # the lease whose share it draws from

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> "JobRecord":
        data = dict(zip(_JOB_COLUMNS, row))
        data["spec"] = spec_from_json(data["spec"])
        data["state"] = JobState(data["state"])
        data["usage"] = json.loads(data["usage"]) if data["usage"] else None
        return cls(**data)

    def _to_row(self, spec_json: str | None = None) -> tuple:
        data = {**self.__dict__, "spec": spec_json or self.spec.to_json(), "state": self.state.value,
                "usage": json.dumps(self.usage) if self.usage is not None else None}
        return tuple(data[c] for c in _JOB_COLUMNS)


@dataclass(frozen=True)
class ArrayRecord:
    id: str
    executor_id: str
    first: int
    last: int
    step: int
    max_parallel: int | None
    created_at: float
    # Its engine runs it as one array job and enforces max_parallel (capability arrays).
    engine_array: bool = False

    @property
    def indices(self) -> range:
        return range(self.first, self.last + 1, self.step)
