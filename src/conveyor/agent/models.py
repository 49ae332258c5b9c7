"""The API's request and response bodies, as documented in docs/openapi.json.

A job's answer is :meth:`conveyor.job.Job.to_dict`; :class:`JobOut` describes that shape for the
document (tests/test_interface.py checks the two agree).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..spec import JobSpec
from ..state import JobState

MAX_WAIT = 60.0  # one long-poll; clients loop for longer waits


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable error code")
    message: str
    field: str | None = Field(default=None, description="the request or spec field the error is about")
    details: dict[str, Any] | None = None


class JobOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str | None = None
    state: JobState
    substate: str | None = None
    exit_code: int | None = None
    message: str | None = None
    image: str | None = None  # None: a process job
    command: list[str] | None = None
    container_id: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    node: str | None = None  # the machine it runs or ran on, when the engine has several (swarm)
    usage: dict[str, Any] | None = Field(default=None, description="resource usage totals, kept while it runs and "
                                         "final once it ended: cpu_seconds, memory_peak, oom_margin, block_read, "
                                         "block_write, net_rx, net_tx, pids_max, samples, ...")
    labels: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any]
    logs_dir: str


class JobPage(BaseModel):
    jobs: list[JobOut]
    total: int | None  # None on a page asked for by cursor: counted on the first page only
    offset: int
    limit: int
    next_offset: int | None
    next_cursor: str | None = None  # keyset paging: give it as ``cursor`` for the next page


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: JobSpec
    hold: bool = False
    idempotency_key: str | None = Field(default=None, max_length=256, description='"digest" = the spec\'s content digest')


class BatchSubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    specs: list[JobSpec] = Field(min_length=1, max_length=100_000)
    hold: bool = False


class ArrayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: JobSpec
    begin: int = Field(ge=0, le=2**31)
    end: int = Field(ge=0, le=2**31)
    step: int = Field(default=1, ge=1, le=2**31)
    max_parallel: int | None = Field(default=None, ge=1, le=2**31)
    hold: bool = False


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: JobSpec


class WaitAnyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(min_length=1, max_length=1000)
    timeout: float = Field(default=30.0, ge=0, le=MAX_WAIT)


def error_doc(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


# The error answers routes document (every route also documents 401 and 422).
NOT_FOUND = {404: error_doc("no such job")}
INVALID = {422: error_doc("invalid request")}
REFUSED = {403: error_doc("refused by the node's policy")}
CONFLICT = {409: error_doc("not allowed in the job's state")}
