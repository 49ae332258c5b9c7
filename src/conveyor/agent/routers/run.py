"""Foreground jobs: `conveyor run` as one exchange with the agent.

``POST /run`` submits the job and answers with a stream of NDJSON frames on the same
connection: ``{"job": ...}`` once it is queued, ``{"stream": "stdout"|"stderr", "data":
base64}`` as it writes, ``{"end": job}`` once its result and logs are stored. The job belongs
to that connection: if the client goes away first (Ctrl-C'd, killed, its pipe closed), the job
is cancelled and, with ``auto_remove``, leaves nothing behind. ``GET /jobs/{ref}/attach`` picks
a job up again after the agent restarted, from the byte offsets the client already has; an
agent that stops does not cancel the jobs it was streaming. ``POST /jobs/{ref}/stdin`` streams
a request body into the job's stdin, once the job has started.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import queue
import threading
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ...errors import ConveyorError
from ...executor import Executor
from ...spec import JobSpec
from ..dependencies import AgentState, agent_state, authorized, executor, job_id, policy
from ..errors import error_for
from ..models import CONFLICT, INVALID, NOT_FOUND, REFUSED
from ..policy import PolicyFile
from ..tokens import Caller
from . import operation

log = logging.getLogger("conveyor.agent")
router = APIRouter()

NDJSON = {200: {
    "content": {"application/x-ndjson": {}},
    "description": 'one JSON object a line: {"job": {...}} first, then {"stream": "stdout"|"stderr", "data": base64}, '
                   'the last line {"end": {...the finished job...}} (or {"error": {...}})',
}}


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: JobSpec
    console_size: list[int] | None = Field(
        default=None, min_length=2, max_length=2, description="[rows, columns] of the caller's terminal, for a tty job"
    )


def _frame(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\n"


@operation(router, "run", responses={**REFUSED, **INVALID, **NDJSON})
async def run(
    body: RunRequest,
    ex: Executor = Depends(executor),
    rules: PolicyFile = Depends(policy),
    agent: AgentState = Depends(agent_state),
    who: Caller = Depends(authorized),
):
    rules.check(body.spec)  # before anything exists: a refused job leaves no trace
    job = await run_in_threadpool(_submit_as, ex, body.spec, who.name)
    return _Follow(ex, agent, job, {}, tuple(body.console_size) if body.console_size else None).response()


def _submit_as(ex: Executor, spec: JobSpec, token: str) -> str:
    with ex.submitting_as(token):  # in the worker thread: the mark lives in its context
        return ex.submit(spec)


@operation(router, "attach", responses={**NOT_FOUND, **NDJSON})
async def attach(
    job: str = Depends(job_id),
    stdout_from: int = Query(default=0, ge=0, le=2**62, description="stdout bytes the caller already has"),
    stderr_from: int = Query(default=0, ge=0, le=2**62, description="stderr bytes the caller already has"),
    ex: Executor = Depends(executor),
    agent: AgentState = Depends(agent_state),
):
    return _Follow(ex, agent, job, {"stdout": stdout_from, "stderr": stderr_from}, None).response()


@operation(router, "stdin", status_code=204, responses={**NOT_FOUND, **CONFLICT}, openapi_extra={
    "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
})
async def stdin(request: Request, job: str = Depends(job_id), ex: Executor = Depends(executor)):
    feed = _Feed()
    await run_in_threadpool(ex.wait_started, job)  # a foreground client sends as soon as the job is queued
    await run_in_threadpool(ex.attach_stdin, job, feed)
    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(feed.put, chunk)  # bounded: a slow job slows the sender
    finally:
        feed.put(b"")  # EOF: the job's stdin closes
    return Response(status_code=204)


class _Follow:
    """A foreground job's frames, its output read by a pump thread (engine reads block).

    The job belongs to the connection: the response's background task, which runs however the
    response ended (also when the client went away before the first byte), cancels the job
    unless its end was sent, or the agent is stopping (then the job waits for the next one)."""

    def __init__(self, ex: Executor, agent: AgentState, job: str, skip: dict[str, int],
                 console_size: tuple[int, int] | None):
        self.ex, self.agent, self.job, self.skip, self.console_size = ex, agent, job, skip, console_size
        self.ended = False
        self.stop = threading.Event()

    def response(self) -> StreamingResponse:
        return StreamingResponse(self.frames(), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-store"}, background=BackgroundTask(self.finish))

    async def frames(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue_: asyncio.Queue = asyncio.Queue(maxsize=64)

        def put(item) -> None:
            asyncio.run_coroutine_threadsafe(queue_.put(item), loop).result()

        yield _frame({"job": (await run_in_threadpool(self.ex.info, self.job)).to_dict()})
        threading.Thread(target=self._pump, args=(put,), name=f"conveyor-run-{self.job}", daemon=True).start()
        while True:
            kind, *rest = await queue_.get()
            if kind == "data":
                yield _frame({"stream": rest[0], "data": base64.b64encode(rest[1]).decode()})
            elif kind == "end":
                self.ended = True
                yield _frame({"end": rest[0].to_dict()})
                return
            else:
                self.ended = True
                err = error_for(rest[0])
                yield _frame({"error": {"code": err.code, "message": err.message}})
                return

    def _pump(self, put) -> None:
        try:
            if self.console_size is not None:
                _resize_when_started(self.ex, self.job, self.console_size)
            seen = {"stdout": 0, "stderr": 0}
            for name, chunk in self.ex.logs(self.job, follow=True):
                if self.stop.is_set():
                    return
                drop = max(0, self.skip.get(name, 0) - seen[name])  # what the caller had before a reconnect
                seen[name] += len(chunk)
                if drop < len(chunk):
                    put(("data", name, chunk[drop:]))
            put(("end", self.ex.wait(self.job)))
        except ConveyorError as exc:
            put(("error", exc))
        except Exception as exc:  # noqa: BLE001 - the client gets an error frame, not a cut stream
            log.exception("following job %s failed", self.job)
            put(("error", ConveyorError(f"{type(exc).__name__}: {exc}")))

    async def finish(self) -> None:
        self.stop.set()
        if not self.ended and not self.agent.stopping:
            threading.Thread(target=_cancel_foreground, args=(self.ex, self.job), daemon=True).start()


def _resize_when_started(ex: Executor, job: str, size: tuple[int, int]) -> None:
    started = ex.wait_started(job)
    if started.spec.tty and not started.state.is_final:
        try:
            ex.resize(job, *size)
        except ConveyorError:
            pass  # it ended meanwhile


def _cancel_foreground(ex: Executor, job: str) -> None:
    """The client of a foreground job went away: end the job, and leave nothing behind."""
    try:
        rec = ex.info(job)
        if not rec.state.is_final:
            log.info("the client of foreground job %s went away: cancelling it", job)
            rec = ex.cancel(job)
        if rec.container_id:
            ex.discard_container(job)  # interrupted: nothing stays behind, --rm or not
    except ConveyorError as exc:
        log.info("cancelling foreground job %s: %s", job, exc)


class _Feed(io.RawIOBase):
    """A request body as a file the engine's stdin pump reads from (blocks until data)."""

    def __init__(self) -> None:
        self._chunks: queue.Queue[bytes] = queue.Queue(maxsize=16)
        self._rest = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def put(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def readinto(self, buffer) -> int:
        if not self._rest and not self._eof:
            self._rest = self._chunks.get()
            self._eof = not self._rest
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n
