"""Data (README: Data): captured outputs, verified as they are read; integrity checks and
garbage collection of the content store; pruning the history (README: Retention)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from ...executor import Executor
from ..dependencies import executor, owner
from ..models import INVALID, NOT_FOUND, error_doc
from . import operation

router = APIRouter()
CORRUPT = {409: error_doc("a manifest or blob is corrupt or missing")}
BYTES = {200: {"content": {"application/octet-stream": {}}, "description": "the file's bytes"}}


@operation(router, "outputs", responses={**NOT_FOUND, **CORRUPT})
def outputs(ref: str, ex: Executor = Depends(executor)) -> dict:
    return {"filesets": ex.filesets(ref), "files": ex.outputs(ref)}


@operation(router, "read_output", responses={**NOT_FOUND, **CORRUPT, **BYTES})
def output_content(ref: str, path: str = Query(min_length=1, max_length=4096), ex: Executor = Depends(executor)):
    return Response(ex.read_output(ref, path), media_type="application/octet-stream")


@operation(router, "verify", responses=NOT_FOUND)
def verify(job: str | None = Query(default=None, min_length=1, max_length=256), ex: Executor = Depends(executor)) -> dict:
    return ex.verify(job)


@operation(router, "gc")
def gc(dry_run: bool = False, grace: float = Query(default=600.0, ge=0, le=10**9), ex: Executor = Depends(executor)) -> dict:
    return ex.gc(dry_run=dry_run, grace=grace)


@operation(router, "prune", responses=INVALID)
def prune(
    dry_run: bool = False,
    until: float | None = Query(default=None, ge=0, description="also prune every ended job that ended before this "
                                "time (Unix seconds)"),
    ex: Executor = Depends(executor),
) -> dict:
    return ex.prune(dry_run=dry_run, until=until)


# Repairs remove containers and record jobs' ends: the owner's, like the state directory.
@operation(router, "fsck", dependencies=[Depends(owner)], responses={403: error_doc("only the owner may check and repair")})
def fsck(repair: bool = False, ex: Executor = Depends(executor)) -> dict:
    return ex.fsck(repair=repair)
