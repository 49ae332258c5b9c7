"""Waiting: long-polls. Each request waits at most MAX_WAIT seconds and answers 408
wait_timeout if the job is not there yet; clients ask again for longer waits."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...errors import WaitTimeout
from ...executor import Executor
from ..dependencies import executor, job_id
from ..models import INVALID, MAX_WAIT, NOT_FOUND, JobOut, WaitAnyRequest, error_doc
from . import operation

router = APIRouter()
NOT_YET = {408: error_doc("not there within timeout; ask again")}


async def _first(futures: list[Future], timeout: float, job_ids: str, what: str):
    """The first of ``futures`` to resolve (the earliest finish among several); WaitTimeout
    after ``timeout``. The futures are cancelled when the request ends, which forgets them."""
    waiting = [asyncio.wrap_future(f) for f in futures]
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise WaitTimeout(job_ids, what, timeout)
        return min((f.result() for f in done), key=lambda j: j.finished_at or 0)
    finally:
        for f in futures:
            f.cancel()


@operation(router, "wait", response_model=JobOut, responses={**NOT_FOUND, **NOT_YET})
async def wait(
    job: str = Depends(job_id),
    timeout: float = Query(default=30.0, ge=0, le=MAX_WAIT),
    until: Literal["finished", "started"] = "finished",
    ex: Executor = Depends(executor),
):
    future = await run_in_threadpool(lambda: ex.future(job, until=until))
    found = await _first([future], timeout, job, until)
    return JSONResponse(found.to_dict())


@operation(router, "wait_any", response_model=JobOut, responses={**NOT_FOUND, **NOT_YET, **INVALID})
async def wait_any(body: WaitAnyRequest, ex: Executor = Depends(executor)):
    ids = await run_in_threadpool(lambda: [ex.store.resolve(r) for r in body.ids])
    futures = await run_in_threadpool(lambda: [ex.future(i) for i in ids])
    found = await _first(futures, body.timeout, ",".join(ids), "finished")
    return JSONResponse(found.to_dict())
