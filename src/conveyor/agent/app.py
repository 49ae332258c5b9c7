"""The agent's HTTP API: a FastAPI app around one (supervising) Executor.

The routes live in ``routers/`` (one module per resource) and receive what they need through
``dependencies.py``; errors are answered in one JSON shape (``errors.py``). Every route but
``/v1/ping`` needs ``Authorization: Bearer <token>``.

    python -m conveyor.agent.app > docs/openapi.json     # the committed OpenAPI document
"""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from .. import __version__
from ..metrics import CONTENT_TYPE
from ..operations import OPERATIONS
from . import API_PREFIX, errors
from . import ui as dashboard
from .dependencies import AgentState, authorized, jobs_reached, metrics_reader, writes_allowed
from .models import error_doc
from .routers import arrays, control, data, engine, events, execs, jobs, leases, logs, node, ports, run, tokens, usage, waiting

ROUTERS = (jobs, run, control, waiting, logs, arrays, data, node, engine, events, tokens, usage, leases, execs, ports)
# WebSocket routes check their token themselves (sockets.accept): a WebSocket has no Request.
SOCKET_ROUTERS = (execs, ports)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    import anyio.to_thread

    # Blocking calls (engine, log follows) run in threads: allow many at once.
    anyio.to_thread.current_default_thread_limiter().total_tokens = 256
    yield


def create_app(agent: AgentState | None = None) -> FastAPI:
    """The API around ``agent``; None builds it for its OpenAPI document only."""
    app = FastAPI(
        title="Conveyor agent",
        version=__version__,
        description="The node agent of Conveyor: submit, control, wait for and read jobs that run in containers.",
        lifespan=_lifespan,
    )
    app.state.agent = agent
    errors.install(app)

    ping = OPERATIONS["ping"]

    @app.get(API_PREFIX + ping.path, tags=list(ping.tags), summary=ping.summary)
    def ping() -> dict:
        return {"ok": True, "version": __version__}

    metrics_op = OPERATIONS["metrics"]

    @app.get(API_PREFIX + metrics_op.path, tags=list(metrics_op.tags), summary=metrics_op.summary,
             response_class=PlainTextResponse, dependencies=[Depends(metrics_reader)],
             responses={200: {"content": {"text/plain": {}}}, 401: error_doc("missing or wrong token")})
    def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.app.state.agent.executor.metrics(), media_type=CONTENT_TYPE)

    for module in ROUTERS:
        app.include_router(
            module.router, prefix=API_PREFIX, dependencies=[Depends(authorized), Depends(writes_allowed), Depends(jobs_reached)],
            responses={401: error_doc("missing or wrong token")},
        )
    for module in SOCKET_ROUTERS:
        app.include_router(module.websockets, prefix=API_PREFIX)
    dashboard.install(app)
    app.openapi = lambda: _openapi(app)
    if agent is not None:
        app.add_middleware(_Activity, state=agent)
    return app


class _Activity:
    """Counts the requests in flight, streams until their last byte, and when the last one
    ended: the agent's idle exit (config.toml [agent] idle_exit) waits for both to be quiet."""

    def __init__(self, app, state: AgentState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):  # a WebSocket session is activity too
            return await self.app(scope, receive, send)
        self.state.requests += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.requests -= 1
            self.state.last_activity = time.monotonic()


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, saying that every error is an ErrorBody (its own 422 shape too)."""
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


def openapi_document() -> dict:
    """The API's OpenAPI document (what the agent serves at /openapi.json)."""
    return create_app(None).openapi()


def openapi_text() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m conveyor.agent.app > docs/openapi.json
    import sys

    sys.stdout.write(openapi_text())
