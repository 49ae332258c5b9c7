"""Events: the transition log as Server-Sent Events, in commit order, resumable with
``Last-Event-ID`` (the transition's seq)."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...executor import Executor
from ..dependencies import executor
from ..models import NOT_FOUND
from . import operation

router = APIRouter()

KEEPALIVE = 15.0  # seconds of silence before a comment line keeps proxies from closing
EVENT_TICK = 0.2
PAGE = 500

SSE = {200: {
    "content": {"text/event-stream": {}},
    "description": "Server-Sent Events: `id: <seq>`, `event: transition`, `data: <Transition JSON>`",
}}


@operation(router, "events", responses={**NOT_FOUND, **SSE})
async def events(
    request: Request,
    job: str | None = Query(default=None, description="only this job's transitions"),
    since: int | None = Query(default=None, ge=0, le=2**62, description="start after this seq (0: from the beginning); default now"),
    follow: bool = Query(default=True, description="false: send what is there and end"),
    since_time: float | None = Query(default=None, ge=0, description="without since: start at the first transition "
                                     "at or after this time (Unix seconds)"),
    ex: Executor = Depends(executor),
):
    job_id = await run_in_threadpool(ex.store.resolve, job) if job is not None else None
    last_id = request.headers.get("last-event-id")
    if since is None and last_id and last_id.isdigit():
        since = int(last_id)
    # fixed before the response starts: whatever is committed after the headers is sent
    start = await run_in_threadpool(ex.event_start, since, since_time)

    async def stream():
        last, idle = start, 0.0
        yield f": conveyor events after seq {start}\n\n".encode()
        while True:
            page = await run_in_threadpool(ex.transitions, last, job_id, PAGE)
            for t in page:
                last = t.seq
                yield f"id: {last}\nevent: transition\ndata: {json.dumps(t.to_dict())}\n\n".encode()
            if len(page) == PAGE:
                continue
            if not follow:
                return
            idle = 0.0 if page else idle + EVENT_TICK
            if idle >= KEEPALIVE:
                idle = 0.0
                yield b": keepalive\n\n"
            await asyncio.sleep(EVENT_TICK)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
