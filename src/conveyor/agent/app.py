"""The agent's HTTP API: a FastAPI app around one (supervising) Executor.

Every route but ``/v1/ping`` needs ``Authorization: Bearer <token>``. Errors are JSON
``{"code", "message", "field", "details"}`` with a stable ``code``:

    401 unauthorized      403 policy_refused    404 job_not_found / not_found
    408 wait_timeout      409 invalid_state     422 invalid_spec / invalid_request / image_not_found
    503 engine_unavailable
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import sqlite3
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import (
    ConveyorError,
    EngineUnavailable,
    ImageNotFound,
    InvalidSpec,
    InvalidState,
    JobNotFound,
    PolicyRefused,
    WaitTimeout,
)
from ..spec import JobSpec
from ..state import WAITING_STATES, JobState
from . import API_PREFIX

if TYPE_CHECKING:
    from ..executor import Executor
    from ..job import Job
    from .auth import TokenCheck
    from .policy import PolicyFile

MAX_WAIT = 60.0  # one long-poll; clients loop for longer waits
KEEPALIVE = 15.0
EVENT_TICK = 0.2


# ----------------------------------------------------------------------------- models (docs)


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
    image: str
    command: list[str] | None = None
    container_id: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any]
    logs_dir: str


class JobPage(BaseModel):
    jobs: list[JobOut]
    total: int
    offset: int
    limit: int
    next_offset: int | None


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: JobSpec
    hold: bool = False
    idempotency_key: str | None = Field(default=None, max_length=256, description='"digest" = the spec\'s content digest')


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


class Transition(BaseModel):
    seq: int
    job_id: str
    at: float
    from_state: JobState | None
    to_state: JobState
    substate: str | None
    reason: str | None


ERRORS = {
    401: {"model": ErrorBody, "description": "missing or wrong token"},
    404: {"model": ErrorBody, "description": "no such job"},
    422: {"model": ErrorBody, "description": "invalid request"},
}


# ----------------------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, details: dict | None = None):
        self.status, self.code, self.message, self.field, self.details = status, code, message, field, details


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)


def error_for(exc: ConveyorError) -> ApiError:
    """The one mapping of Conveyor's errors to HTTP (the Client maps them back)."""
    if isinstance(exc, InvalidSpec):
        problems = [{"field": f, "value": _jsonable(v), "hint": str(h)} for f, v, h in exc.problems]
        return ApiError(422, "invalid_spec", str(exc), problems[0]["field"] if problems else None, {"problems": problems})
    if isinstance(exc, PolicyRefused):
        return ApiError(403, "policy_refused", str(exc), exc.field, {"rule": exc.rule})
    if isinstance(exc, JobNotFound):
        return ApiError(404, "job_not_found", str(exc), "job", {"ref": exc.ref})
    if isinstance(exc, InvalidState):
        return ApiError(409, "invalid_state", str(exc), "state", {"job_id": exc.job_id, "state": exc.state, "action": exc.action})
    if isinstance(exc, WaitTimeout):
        return ApiError(408, "wait_timeout", str(exc), "timeout", {"job_id": exc.job_id})
    if isinstance(exc, ImageNotFound):
        return ApiError(422, "image_not_found", str(exc), "spec.image", {"image": exc.image, "job_id": exc.job_id})
    if isinstance(exc, EngineUnavailable):
        return ApiError(503, "engine_unavailable", str(exc))
    return ApiError(409, "conveyor_error", str(exc))


def _error_response(err: ApiError) -> JSONResponse:
    body = {"code": err.code, "message": err.message, "field": err.field, "details": err.details}
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(body, status_code=err.status, headers=headers)


def _field_of(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    body = getattr(exc, "body", None)
    # A bad job spec: validate it again the way the library does, for its field-level hints.
    if isinstance(body, dict) and isinstance(body.get("spec"), dict) and any(tuple(e["loc"][:2]) == ("body", "spec") for e in errors):
        try:
            JobSpec.model_validate(body["spec"])
        except InvalidSpec as spec_error:
            err = error_for(spec_error)
            err.details["problems"] = [{**p, "field": "spec." + p["field"]} for p in err.details["problems"]]
            err.field = err.details["problems"][0]["field"]
            return err
        except Exception:  # noqa: BLE001 - fall through to the generic message
            pass
    problems = [
        {"field": _field_of(tuple(e["loc"])), "value": _jsonable(e.get("input")), "hint": e["msg"]} for e in errors
    ]
    first = problems[0] if problems else {"field": "request", "hint": "invalid request"}
    message = "; ".join(f"{p['field']}: {p['hint']}" for p in problems) or "invalid request"
    return ApiError(422, "invalid_request", message, first["field"], {"problems": problems})


# ----------------------------------------------------------------------------- the app


class Agent:
    """What the routes need: the executor, the token check, the policy, an events reader."""

    def __init__(self, ex: "Executor", tokens: "TokenCheck", policy: "PolicyFile"):
        self.ex, self.tokens, self.policy = ex, tokens, policy
        self.started_at = time.time()
        self._events_db: sqlite3.Connection | None = None
        self._events_lock = threading.Lock()

    def job_dict(self, job: "Job") -> dict:
        data = job.to_dict()
        data["logs_dir"] = str(job.logs_dir)
        return data

    # a read-only connection of its own: event readers never queue behind the executor's writes
    def transitions(self, since: int, job_id: str | None, limit: int = 500) -> list[dict]:
        with self._events_lock:
            if self._events_db is None:
                self._events_db = sqlite3.connect(
                    f"file:{self.ex.store.path}?mode=ro", uri=True, check_same_thread=False, timeout=30
                )
            sql = "SELECT seq, job_id, at, from_state, to_state, substate, reason FROM transitions WHERE seq > ?"
            params: list = [since]
            if job_id is not None:
                sql += " AND job_id = ?"
                params.append(job_id)
            rows = self._events_db.execute(sql + " ORDER BY seq LIMIT ?", (*params, limit)).fetchall()
        keys = ("seq", "job_id", "at", "from_state", "to_state", "substate", "reason")
        return [dict(zip(keys, r)) for r in rows]

    def last_seq(self) -> int:
        with self._events_lock:
            if self._events_db is None:
                self._events_db = sqlite3.connect(
                    f"file:{self.ex.store.path}?mode=ro", uri=True, check_same_thread=False, timeout=30
                )
            return self._events_db.execute("SELECT coalesce(max(seq), 0) FROM transitions").fetchone()[0]


def create_app(agent: Agent | None = None) -> FastAPI:
    """The API. ``agent`` None builds it for its OpenAPI document only."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread

        # Blocking calls (engine, log follows) run in threads: allow many at once.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        yield

    app = FastAPI(
        title="Conveyor agent",
        version=__version__,
        description="The node agent of Conveyor: submit, control, wait for and read jobs that run in containers.",
        lifespan=lifespan,
    )
    app.state.agent = agent
    bearer = HTTPBearer(auto_error=False, description="the token in the state directory's agent.token")

    def A() -> Agent:
        return app.state.agent

    async def authorized(request: Request, _creds=Depends(bearer)) -> None:
        if not A().tokens.valid(request.headers.get("authorization")):
            raise ApiError(401, "unauthorized", "a valid token is required: Authorization: Bearer <token from agent.token>", "Authorization")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error_response(exc)

    @app.exception_handler(ConveyorError)
    async def _conveyor_error(request: Request, exc: ConveyorError):
        return _error_response(error_for(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(ApiError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError):
        return _error_response(ApiError(422, "invalid_request", str(exc)))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return _error_response(ApiError(500, "internal", f"{type(exc).__name__}: {exc}"))

    @app.get(API_PREFIX + "/ping", tags=["agent"], summary="Liveness; needs no token")
    def ping() -> dict:
        return {"ok": True, "version": __version__}

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authorized)], responses={401: ERRORS[401]})

    def resolve(ref: str) -> str:
        return A().ex.store.resolve(ref)

    def job_response(job: "Job", status: int = 200) -> JSONResponse:
        return JSONResponse(A().job_dict(job), status_code=status)

    # -------------------------------------------------------------- agent

    @api.get("/info", tags=["agent"], summary="The agent: version, pid, state directory, policy")
    def info() -> dict:
        a = A()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "home": str(a.ex.home.root),
            "executor_id": a.ex.executor_id,
            "supervising": a.ex.supervising,
            "started_at": a.started_at,
            "policy": a.policy.describe(),
        }

    # -------------------------------------------------------------- submit

    @api.post(
        "/jobs", status_code=201, tags=["jobs"], summary="Submit a job (queued, or held with hold=true)",
        response_model=JobOut, responses={403: {"model": ErrorBody, "description": "refused by the node's policy"}, 422: ERRORS[422]},
    )
    def submit(body: SubmitRequest):
        a = A()
        a.policy.check(body.spec)  # before anything exists: a refused job leaves no trace
        job_id = a.ex.submit(body.spec, hold=body.hold, idempotency_key=body.idempotency_key)
        return job_response(a.ex.info(job_id), 201)

    @api.post(
        "/images/ensure", tags=["jobs"], summary="Make a spec's image present on this node (pull per its pull policy)",
        responses={403: {"model": ErrorBody}, 422: ERRORS[422]},
    )
    def ensure_image(body: ImageRequest) -> dict:
        a = A()
        a.policy.check_image(body.spec.image)
        a.ex.backend.ensure_image(body.spec)
        return {"image": body.spec.image, "present": True}

    # -------------------------------------------------------------- read

    @api.get("/jobs", tags=["jobs"], summary="List jobs, filtered and paged (oldest first)", response_model=JobPage, responses={422: ERRORS[422]})
    def list_jobs(
        state: list[JobState] | None = Query(default=None, description="only jobs in these states"),
        label: list[str] | None = Query(default=None, description="KEY=VALUE; all must match"),
        limit: int = Query(default=100, ge=1, le=1000),
        offset: int = Query(default=0, ge=0, le=2**62),
    ):
        labels: dict[str, str] = {}
        for item in label or []:
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise ApiError(422, "invalid_request", f"label {item!r}: use KEY=VALUE", "label")
            labels[key] = value
        a = A()
        page = a.ex.list(states=state, labels=labels or None, limit=limit, offset=offset)
        total = a.ex.count(states=state, labels=labels or None)
        nxt = offset + limit if offset + limit < total else None
        return JSONResponse(
            {"jobs": [a.job_dict(j) for j in page], "total": total, "offset": offset, "limit": limit, "next_offset": nxt}
        )

    @api.get("/jobs/{ref}", tags=["jobs"], summary="One job (id, unique id prefix or name)", response_model=JobOut, responses={404: ERRORS[404]})
    def inspect(ref: str):
        return job_response(A().ex.info(ref))

    # -------------------------------------------------------------- control

    control_errors = {404: ERRORS[404], 409: {"model": ErrorBody, "description": "not allowed in the job's state"}}

    @api.post("/jobs/{ref}/hold", tags=["control"], summary="Queued -> QueuedHeld", response_model=JobOut, responses=control_errors)
    def hold(ref: str):
        return job_response(A().ex.hold(ref))

    @api.post("/jobs/{ref}/release", tags=["control"], summary="QueuedHeld -> Queued", response_model=JobOut, responses=control_errors)
    def release(ref: str):
        return job_response(A().ex.release(ref))

    @api.post("/jobs/{ref}/suspend", tags=["control"], summary="Freeze a running job", response_model=JobOut, responses=control_errors)
    def suspend(ref: str):
        return job_response(A().ex.suspend(ref))

    @api.post("/jobs/{ref}/resume", tags=["control"], summary="Thaw a suspended job", response_model=JobOut, responses=control_errors)
    def resume(ref: str):
        return job_response(A().ex.resume(ref))

    @api.post(
        "/jobs/{ref}/cancel", tags=["control"], response_model=JobOut, responses=control_errors,
        summary="SIGTERM, SIGKILL after grace seconds; returns at once (wait for the end with /wait)",
    )
    def cancel(ref: str, grace: float | None = Query(default=None, ge=0, le=86400)):
        return job_response(A().ex.cancel(ref, grace=grace, wait=False))

    @api.delete("/jobs/{ref}", status_code=204, tags=["control"], summary="Forget a finished job (force: cancel it first)", responses=control_errors)
    def remove(ref: str, force: bool = False):
        A().ex.remove(ref, force=force)
        return Response(status_code=204)

    @api.delete("/jobs/{ref}/container", status_code=204, tags=["control"], summary="Remove a finished job's container; record and logs stay", responses=control_errors)
    def discard_container(ref: str):
        A().ex.discard_container(ref)
        return Response(status_code=204)

    @api.post("/cleanup", tags=["control"], summary="Remove every container, volume and network this executor made")
    def cleanup() -> dict[str, int]:
        return A().ex.cleanup()

    # -------------------------------------------------------------- wait (long-poll)

    async def await_job(job_id: str, predicate, timeout: float, what: str) -> "Job":
        ex = A().ex
        fut = ex._when(job_id, predicate)
        afut = asyncio.wrap_future(fut)
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(job_id, what, timeout)
                done, _ = await asyncio.wait({afut}, timeout=min(1.0, remaining))
                if done:
                    return afut.result()
                # a transition another process wrote (a client Executor) does not notify us
                await run_in_threadpool(ex._changed, job_id)
        finally:
            ex._forget([fut])
            if not afut.done():
                afut.cancel()

    @api.get(
        "/jobs/{ref}/wait", tags=["wait"], response_model=JobOut,
        responses={404: ERRORS[404], 408: {"model": ErrorBody, "description": "not there within timeout; ask again"}},
        summary="Long-poll until the job has finished (or started, with until=started)",
    )
    async def wait(
        ref: str,
        timeout: float = Query(default=30.0, ge=0, le=MAX_WAIT),
        until: Literal["finished", "started"] = "finished",
    ):
        job_id = await run_in_threadpool(resolve, ref)
        if until == "finished":
            job = await await_job(job_id, lambda s: s.is_final, timeout, "finished")
        else:
            job = await await_job(job_id, lambda s: s not in WAITING_STATES, timeout, "started")
        return job_response(job)

    @api.post(
        "/wait-any", tags=["wait"], response_model=JobOut,
        responses={404: ERRORS[404], 408: {"model": ErrorBody}, 422: ERRORS[422]},
        summary="Long-poll until the first of several jobs has finished",
    )
    async def wait_any(body: WaitAnyRequest):
        ids = await run_in_threadpool(lambda: [resolve(r) for r in body.ids])
        ex = A().ex
        futures = [ex._when(i, lambda s: s.is_final) for i in ids]
        afuts = [asyncio.wrap_future(f) for f in futures]
        deadline = time.monotonic() + body.timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(",".join(ids), "finished", body.timeout)
                done, _ = await asyncio.wait(afuts, timeout=min(1.0, remaining), return_when=asyncio.FIRST_COMPLETED)
                if done:
                    jobs = [f.result() for f in done]
                    return job_response(min(jobs, key=lambda j: j.finished_at or 0))
                for i in ids:
                    await run_in_threadpool(ex._changed, i)
        finally:
            ex._forget(futures)
            for f in afuts:
                if not f.done():
                    f.cancel()

    # -------------------------------------------------------------- logs (streamed)

    @api.get(
        "/jobs/{ref}/logs", tags=["logs"], responses={404: ERRORS[404], 422: ERRORS[422], 200: {
            "content": {"application/x-ndjson": {}},
            "description": 'one JSON object a line: {"stream": "stdout"|"stderr", "data": base64}; '
                           'the last line is {"end": true} (or {"error": {...}})',
        }},
        summary="A job's output, stdout and stderr kept apart; follow streams until the job ends",
    )
    def logs(
        ref: str,
        stream: Literal["all", "stdout", "stderr"] = "all",
        tail: int | None = Query(default=None, ge=0, le=10**9),
        follow: bool = False,
        timestamps: bool = Query(default=False, description="each line starts with its RFC3339Nano time and a space"),
    ):
        ex = A().ex
        job_id = resolve(ref)
        extra = {"timestamps": True} if timestamps else {}

        def frames() -> Iterator[bytes]:
            try:
                for name, chunk in ex.logs(job_id, stream, tail=tail, follow=follow, **extra):
                    yield json.dumps({"stream": name, "data": base64.b64encode(chunk).decode()}).encode() + b"\n"
            except ConveyorError as exc:
                err = error_for(exc)
                yield json.dumps({"error": {"code": err.code, "message": err.message}}).encode() + b"\n"
                return
            yield b'{"end": true}\n'

        return StreamingResponse(frames(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})

    # -------------------------------------------------------------- arrays, attempts, queue, machine

    @api.post(
        "/arrays", status_code=201, tags=["arrays"], summary="Submit a job array: one task per index begin..end by step",
        responses={403: {"model": ErrorBody, "description": "refused by the node's policy"}, 422: ERRORS[422]},
    )
    def submit_array(body: ArrayRequest):
        a = A()
        a.policy.check(body.spec)
        array_id = a.ex.submit_array(body.spec, body.begin, body.end, body.step, body.max_parallel, hold=body.hold)
        return JSONResponse(a.ex.array(array_id), status_code=201)

    @api.get("/arrays/{ref}", tags=["arrays"], summary="An array's range, max-parallel and task counts per state", responses={404: ERRORS[404]})
    def array(ref: str) -> dict:
        return A().ex.array(ref)

    @api.get("/arrays/{ref}/tasks", tags=["arrays"], summary="Each task of an array: job id, index, state", responses={404: ERRORS[404]})
    def array_tasks(ref: str) -> list[dict]:
        return [{"id": i, "index": n, "state": JobState(st).value} for i, n, st in A().ex.array_tasks(ref)]

    def _array_action(action: str):
        def handler(ref: str) -> dict:
            return getattr(A().ex, f"{action}_array")(ref)
        handler.__name__ = f"{action}_array"
        return handler

    for _action in ("hold", "release", "suspend", "resume"):
        api.post(f"/arrays/{{ref}}/{_action}", tags=["arrays"], summary=f"{_action.capitalize()} every task of an array that allows it",
                 responses={404: ERRORS[404]})(_array_action(_action))

    @api.post("/arrays/{ref}/cancel", tags=["arrays"], summary="Cancel every unfinished task of an array", responses={404: ERRORS[404]})
    def cancel_array(ref: str, grace: float | None = Query(default=None, ge=0, le=86400)) -> dict:
        return A().ex.cancel_array(ref, grace=grace)

    @api.get("/jobs/{ref}/attempts", tags=["jobs"], summary="Every attempt of a job run with retries", responses={404: ERRORS[404]})
    def attempts(ref: str) -> list[dict]:
        return A().ex.attempts(ref)

    # -------------------------------------------------------------- data (README: Data)

    @api.get("/jobs/{ref}/outputs", tags=["data"], summary="A job's captured output filesets and files (path, size, digest)",
             responses={404: ERRORS[404], 409: {"model": ErrorBody, "description": "a manifest is corrupt or missing"}})
    def outputs(ref: str) -> dict:
        ex = A().ex
        return {"filesets": ex.filesets(ref), "files": ex.outputs(ref)}

    @api.get("/jobs/{ref}/outputs/content", tags=["data"], summary="One captured output file, verified against its digest",
             responses={404: ERRORS[404], 409: {"model": ErrorBody, "description": "the blob is corrupt or missing"},
                        200: {"content": {"application/octet-stream": {}}, "description": "the file's bytes"}})
    def output_content(ref: str, path: str = Query(min_length=1, max_length=4096)):
        return Response(A().ex.read_output(ref, path), media_type="application/octet-stream")

    @api.post("/data/verify", tags=["data"], summary="Re-hash stored blobs (one job's, or all); report corrupt and missing ones",
              responses={404: ERRORS[404]})
    def verify(job: str | None = Query(default=None, min_length=1, max_length=256)) -> dict:
        return A().ex.verify(job)

    @api.post("/data/gc", tags=["data"], summary="Remove blobs no job references (never one a queued or running job needs)")
    def gc(dry_run: bool = False, grace: float = Query(default=600.0, ge=0, le=10**9)) -> dict:
        return A().ex.gc(dry_run=dry_run, grace=grace)

    @api.get("/queue", tags=["agent"], summary="The queue as the scheduler sees it, and what each waiting job waits for")
    def queue(limit: int | None = Query(default=None, ge=0, le=100000)) -> dict:
        return A().ex.queue(limit=limit)

    @api.get("/machine", tags=["agent"], summary="This node: CPUs, memory, GPUs, load, engine, capacity in use")
    def machine() -> dict:
        return A().ex.machine()

    # -------------------------------------------------------------- events (SSE)

    @api.get(
        "/events", tags=["events"], responses={404: ERRORS[404], 200: {
            "content": {"text/event-stream": {}},
            "description": "Server-Sent Events: `id: <seq>`, `event: transition`, `data: <Transition JSON>`",
        }},
        summary="State transitions as Server-Sent Events, in commit order",
    )
    async def events(
        request: Request,
        job: str | None = Query(default=None, description="only this job's transitions"),
        since: int | None = Query(default=None, ge=0, le=2**62, description="start after this seq (0: from the beginning); default now"),
        follow: bool = Query(default=True, description="false: send what is there and end"),
    ):
        a = A()
        job_id = await run_in_threadpool(resolve, job) if job is not None else None
        last_id = request.headers.get("last-event-id")
        if since is None and last_id and last_id.isdigit():
            since = int(last_id)
        # fixed before the response starts: whatever is committed after the headers is sent
        start = since if since is not None else await run_in_threadpool(a.last_seq)

        async def stream():
            last, idle = start, 0.0
            yield f": conveyor events after seq {start}\n\n".encode()
            while True:
                rows = await run_in_threadpool(a.transitions, last, job_id)
                for row in rows:
                    last = row["seq"]
                    yield f"id: {last}\nevent: transition\ndata: {json.dumps(row)}\n\n".encode()
                if rows and len(rows) == 500:
                    continue
                if not follow:
                    return
                idle = 0.0 if rows else idle + EVENT_TICK
                if idle >= KEEPALIVE:
                    idle = 0.0
                    yield b": keepalive\n\n"
                await asyncio.sleep(EVENT_TICK)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    app.include_router(api)

    def openapi() -> dict:
        # Every error is an ErrorBody, FastAPI's own 422 shape included: say so in the document.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            ref = {"$ref": "#/components/schemas/ErrorBody"}
            for path in doc["paths"].values():
                for op in path.values():
                    resp = op.setdefault("responses", {})
                    if "422" in resp or op.get("parameters") or op.get("requestBody"):
                        resp["422"] = {"description": resp.get("422", {}).get("description", "invalid request"),
                                       "content": {"application/json": {"schema": ref}}}
            for name in ("HTTPValidationError", "ValidationError"):
                doc["components"]["schemas"].pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi
    return app


def openapi_document() -> dict:
    """The API's OpenAPI document (what the agent serves at /openapi.json)."""
    return create_app(None).openapi()


def openapi_text() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m conveyor.agent.app > docs/openapi.json
    import sys

    sys.stdout.write(openapi_text())
