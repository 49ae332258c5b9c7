"""The engine's own documents, passed through as it wrote them (Docker: its Engine API's): its
images (list, inspect, pull), itself (version and info), a job's resource usage. For clients
that speak the engine's language, such as a docker stand-in; the agent reads none of it.

An image name goes in the query (``?name=REF``): references hold slashes and colons. A pull
meets the caller's policy exactly as a job's image does, before the engine hears of it.
"""

from __future__ import annotations

import json
from typing import Iterator

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...errors import ConveyorError, ImageNotFound
from ...executor import Executor
from ..dependencies import executor, policy
from ..errors import ApiError, error_for
from ..models import INVALID, NOT_FOUND, REFUSED, error_doc
from ..policy import PolicyFile
from . import operation

router = APIRouter()

NO_SUCH_IMAGE = {404: error_doc("no such image (on this node; for a pull, in its registry)")}
NDJSON = {200: {
    "content": {"application/x-ndjson": {}},
    "description": "one JSON object a line: the engine's progress messages as it wrote them; the last line is "
                   '{"end": true} (or {"error": {...}} when the pull failed after it began)',
}}


IMAGE_NAME = Query(min_length=1, max_length=512, description="an image reference, as docker takes it: "
                   "NAME[:TAG] (no tag: latest) or NAME@DIGEST; inspect takes an image id too")


def _no_such_image(exc: ImageNotFound) -> ApiError:
    """404, not the 422 of a job's missing image: here the image is the resource asked for."""
    return ApiError(404, exc.code, str(exc), "name", exc.details())


def _line(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\n"


@operation(router, "images")
def images(ex: Executor = Depends(executor)) -> list[dict]:
    return ex.images()


@operation(router, "image_inspect", responses={**NO_SUCH_IMAGE, **INVALID})
def image_inspect(name: str = IMAGE_NAME, ex: Executor = Depends(executor)) -> dict:
    try:
        return ex.image_inspect(name)
    except ImageNotFound as exc:
        raise _no_such_image(exc) from None


@operation(router, "pull", responses={**REFUSED, **NO_SUCH_IMAGE, **INVALID, **NDJSON})
async def pull(name: str = IMAGE_NAME, ex: Executor = Depends(executor), rules: PolicyFile = Depends(policy)):
    rules.check_image(name)  # as for a job's image: a refused pull never reaches the engine
    messages = await run_in_threadpool(ex.pull, name)
    try:
        # The first message waited for here: a pull that fails at once (no such image, no
        # registry) is answered with its status and error, not with a stream that holds it.
        first = await run_in_threadpool(next, messages, None)
    except ImageNotFound as exc:
        raise _no_such_image(exc) from None

    def lines() -> Iterator[bytes]:
        try:
            if first is not None:
                yield _line(first)
                for message in messages:
                    yield _line(message)
        except ConveyorError as exc:
            err = error_for(exc)
            yield _line({"error": {"code": err.code, "message": err.message, "field": err.field, "details": err.details}})
            return
        yield b'{"end": true}\n'

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})


@operation(router, "engine")
def engine(ex: Executor = Depends(executor)) -> dict:
    return ex.engine()


@operation(router, "stats", responses=NOT_FOUND)
def stats(ref: str, ex: Executor = Depends(executor)) -> dict:
    return ex.stats(ref)
