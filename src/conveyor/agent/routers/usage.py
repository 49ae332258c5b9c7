"""Resource usage of jobs and the processes in one: what the sampler keeps and what the
engine's side says now (executor/usage.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ...executor import Executor
from ..dependencies import executor
from ..models import CONFLICT, NOT_FOUND, error_doc
from . import operation

router = APIRouter()

NOT_SUPPORTED = {501: error_doc("the job's backend cannot report this (its capabilities say)")}


@operation(router, "usage", responses={**NOT_FOUND, **NOT_SUPPORTED})
def usage(
    job: list[str] | None = Query(default=None, description="these jobs (id, prefix or name); none: every running job"),
    series: bool = Query(default=False, description="with the samples kept of each job (oldest first)"),
    ex: Executor = Depends(executor),
) -> list[dict]:
    return ex.usage(job, series=series)


@operation(router, "top", responses={**NOT_FOUND, **CONFLICT, **NOT_SUPPORTED})
def top(ref: str, ex: Executor = Depends(executor)) -> dict:
    return ex.top(ref)
