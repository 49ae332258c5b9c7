"""Logs, streamed: NDJSON frames ``{"stream", "data": base64}``, then ``{"end": true}``.

The last frame tells a client that it has every byte: a stream that breaks off without it
is an error on the client's side, never a silently short log.
"""

from __future__ import annotations

import base64
import json
from typing import Iterator, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from ...errors import ConveyorError
from ...executor import Executor
from ..dependencies import executor, job_id
from ..errors import error_for
from ..models import INVALID, NOT_FOUND
from . import operation

router = APIRouter()

NDJSON = {200: {
    "content": {"application/x-ndjson": {}},
    "description": 'one JSON object a line: {"stream": "stdout"|"stderr", "data": base64}; '
                   'the last line is {"end": true} (or {"error": {...}})',
}}


@operation(router, "logs", responses={**NOT_FOUND, **INVALID, **NDJSON})
def logs(
    job: str = Depends(job_id),
    stream: Literal["all", "stdout", "stderr"] = "all",
    tail: int | None = Query(default=None, ge=0, le=10**9),
    follow: bool = False,
    timestamps: bool = Query(default=False, description="each line starts with its RFC3339Nano time and a space"),
    ex: Executor = Depends(executor),
):
    def frames() -> Iterator[bytes]:
        try:
            for name, chunk in ex.logs(job, stream, tail=tail, follow=follow, timestamps=timestamps):
                yield json.dumps({"stream": name, "data": base64.b64encode(chunk).decode()}).encode() + b"\n"
        except ConveyorError as exc:
            err = error_for(exc)
            yield json.dumps({"error": {"code": err.code, "message": err.message}}).encode() + b"\n"
            return
        yield b'{"end": true}\n'

    return StreamingResponse(frames(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})
