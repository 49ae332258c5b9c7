"""The API's request and response bodies, as documented in docs/openapi.json.

A job's answer is :meth:`conveyor.job.Job.to_dict`; :class:`JobOut` describes that shape for the
document (tests/test_interface.py checks the two agree).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from ..spec import JobSpec
from ..state import JobState

MAX_WAIT = 60.0  # one long-poll; clients loop for longer waits
IMAGE_READY = ("the caller made the image present already (ensure_image): no check with the engine at submit, "
               "as Executor.submit(image_ready=True); an image missing at launch is pulled as the pull policy says")


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
    image_ready: bool = Field(default=False, description=IMAGE_READY)


class BatchSubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    specs: list[JobSpec] = Field(min_length=1, max_length=100_000)
    hold: bool = False
    image_ready: bool = Field(default=False, description=IMAGE_READY)

    @field_validator("specs", mode="before")
    @classmethod
    def _each_text_once(cls, value: Any) -> Any:
        return validated_once(value)


_SPEC = TypeAdapter(JobSpec)


def validated_once(items: Any) -> Any:
    """A batch's decoded JSON specs with each distinct one validated once, its JobSpec shared
    by every spec written the same (a batch of one spec 10,000 times validates one; the
    executor then admits and serialises it once, as for a spec object given many times).

    Equivalent to validating each: a spec's validation reads nothing but its input, and two
    decoded JSON values with the same repr() are the same value, types included (1, 1.0 and
    true differ). The list's own checks (its length) still see every item; a JobSpec in it is
    taken as it is. Any spec that does not validate hands the batch back untouched, so the
    errors are the ones pydantic gives for the whole list, each naming its specs[i]."""
    if not isinstance(items, list):
        return items
    seen: dict[str, JobSpec] = {}
    out = []
    for item in items:
        if not isinstance(item, dict):
            return items
        key = repr(item)
        spec = seen.get(key)
        if spec is None:
            try:
                spec = seen[key] = _SPEC.validate_python(item)
            except Exception:  # noqa: BLE001 - pydantic reports it, by index, for the whole list
                return items
        out.append(spec)
    return out


class ArrayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: JobSpec
    begin: int = Field(ge=0, le=2**31)
    end: int = Field(ge=0, le=2**31)
    step: int = Field(default=1, ge=1, le=2**31)
    max_parallel: int | None = Field(default=None, ge=1, le=2**31)
    hold: bool = False
    image_ready: bool = Field(default=False, description=IMAGE_READY)


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
