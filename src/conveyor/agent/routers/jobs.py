"""Jobs: submit (after the policy's check), list, inspect, attempts; images for jobs."""

from __future__ import annotations

import os
import shutil
import tempfile

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ...executor import Executor
from ...state import JobState
from . import operation
from ..dependencies import authorized, executor, policy
from ..errors import ApiError
from ..models import CONFLICT, INVALID, NOT_FOUND, REFUSED, BatchSubmitRequest, ImageRequest, JobOut, JobPage, SubmitRequest
from ..policy import PolicyFile
from ..tokens import Caller

router = APIRouter()


def route(name: str, **kwargs):
    return operation(router, name, **kwargs)


@route("submit", status_code=201, response_model=JobOut, responses={**REFUSED, **INVALID})
def submit(body: SubmitRequest, ex: Executor = Depends(executor), rules: PolicyFile = Depends(policy),
           who: Caller = Depends(authorized)):
    rules.check(body.spec)  # before anything exists: a refused job leaves no trace
    with ex.submitting_as(who.name):
        job_id = ex.submit(body.spec, hold=body.hold, idempotency_key=body.idempotency_key, image_ready=body.image_ready)
    return JSONResponse(ex.info(job_id).to_dict(), status_code=201)


@route("submit_many", status_code=201, responses={**REFUSED, **INVALID})
def submit_many(body: BatchSubmitRequest, ex: Executor = Depends(executor), rules: PolicyFile = Depends(policy),
                who: Caller = Depends(authorized)) -> dict:
    for spec in body.specs:
        rules.check(spec)  # every one before any is recorded
    with ex.submitting_as(who.name):
        return {"ids": ex.submit_many(body.specs, hold=body.hold, image_ready=body.image_ready)}


@route("ensure_image", responses={**REFUSED, **INVALID})
def ensure_image(body: ImageRequest, ex: Executor = Depends(executor), rules: PolicyFile = Depends(policy)) -> dict:
    if body.spec.image is not None:
        rules.check_image(body.spec.image)
    ex.ensure_image(body.spec)
    return {"image": body.spec.image, "present": True}


@route("load_image", responses=INVALID, openapi_extra={
    "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
})
async def load_image(
    request: Request,
    name: str = Query(default="image.tar", min_length=1, max_length=255, description="the tarball's file name, recorded with its digest"),
    ex: Executor = Depends(executor),
) -> dict:
    """The body is the tarball (``docker save``); it is spooled to the state directory, then loaded."""
    from starlette.concurrency import run_in_threadpool

    spool = ex.home.root / "tmp"
    spool.mkdir(exist_ok=True)
    upload = tempfile.mkdtemp(dir=spool, prefix="upload-")
    base = os.path.basename(name)
    path = os.path.join(upload, base if base not in ("", ".", "..") else "image.tar")  # recorded with the image
    try:
        with open(path, "wb") as f:
            async for chunk in request.stream():
                f.write(chunk)
        result = await run_in_threadpool(ex.load_image, path)
    finally:
        shutil.rmtree(upload, ignore_errors=True)
    return {**result, "file": name}


@route("list", response_model=JobPage, responses={**INVALID, **NOT_FOUND})
def list_jobs(
    state: list[JobState] | None = Query(default=None, description="only jobs in these states"),
    label: list[str] | None = Query(default=None, description="KEY=VALUE, or KEY for any value; all must match"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=2**62),
    newest_first: bool = Query(default=False, description="the most recent job first, as docker ps lists"),
    id: list[str] | None = Query(default=None, description="only jobs whose id starts with one of these"),
    name: list[str] | None = Query(default=None, description="only jobs whose name (or /name) one of these regular expressions matches"),
    image: list[str] | None = Query(default=None, description="only jobs of one of these images (busybox and busybox:latest are one)"),
    exit_code: list[int] | None = Query(default=None, description="only jobs that ended with one of these exit codes"),
    before: str | None = Query(default=None, description="only jobs created before this one (id, prefix or name)"),
    since: str | None = Query(default=None, description="only jobs created after this one (id, prefix or name)"),
    cursor: str | None = Query(default=None, max_length=64, description="the next_cursor of the page before (keyset "
                               "paging: each page costs the same however deep; total is counted on the first page only)"),
    ex: Executor = Depends(executor),
):
    labels: dict[str, str | None] = {}
    for item in label or []:
        key, eq, value = item.partition("=")
        if not key:
            raise ApiError(422, "invalid_request", f"label {item!r}: use KEY=VALUE or KEY", "label")
        labels[key] = value if eq else None
    filters = dict(states=state, labels=labels or None, ids=id, names=name, images=image, exit_codes=exit_code,
                   before=before, since=since)
    if cursor is not None or offset == 0:
        return _keyset_page(ex, filters, limit, cursor, newest_first)
    try:
        page = ex.list(**filters, limit=limit, offset=offset, newest_first=newest_first)
    except ValueError as exc:  # a name that is no regular expression
        raise ApiError(422, "invalid_request", str(exc), "name") from None
    total = ex.count(**filters)
    nxt = offset + limit if offset + limit < total else None
    return JSONResponse(
        {"jobs": [j.to_dict() for j in page], "total": total, "offset": offset, "limit": limit, "next_offset": nxt,
         "next_cursor": None}
    )


def _keyset_page(ex: Executor, filters: dict, limit: int, cursor: str | None, newest_first: bool) -> JSONResponse:
    try:
        page, nxt = ex.page(limit, cursor, newest_first=newest_first, **filters)
    except ValueError as exc:  # a name that is no regular expression, or a cursor no page gave
        raise ApiError(422, "invalid_request", str(exc), "cursor" if "cursor" in str(exc) else "name") from None
    # Counting is a pass over every match: done once, for the first page, not for each one.
    total = ex.count(**filters) if cursor is None else None
    return JSONResponse({"jobs": [j.to_dict() for j in page], "total": total, "offset": 0, "limit": limit,
                         "next_offset": None if nxt is None or cursor is not None else limit, "next_cursor": nxt})


@route("info", response_model=JobOut, responses=NOT_FOUND)
def inspect(ref: str, ex: Executor = Depends(executor)):
    return JSONResponse(ex.info(ref).to_dict())


@route("attempts", responses=NOT_FOUND)
def attempts(ref: str, ex: Executor = Depends(executor)) -> list[dict]:
    return ex.attempts(ref)


@route("provenance", responses={**NOT_FOUND, **INVALID, **CONFLICT})
def provenance(
    ref: str,
    attempt: int | None = Query(default=None, ge=1, le=2**31, description="the attempt (default: the last)"),
    ex: Executor = Depends(executor),
) -> dict:
    return ex.provenance(ref, attempt)


@route("provenance_diff", responses={**NOT_FOUND, **CONFLICT})
def provenance_diff(
    a: str = Query(min_length=1, max_length=512, description="a job (id, unique id prefix or name)"),
    b: str = Query(min_length=1, max_length=512, description="another job"),
    ex: Executor = Depends(executor),
) -> dict:
    return ex.provenance_diff(a, b)
