"""What routes share, as FastAPI dependencies: the agent's state (executor, callers, policy),
the caller a request's token names, the rules its jobs meet, and job references resolved to
ids."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Depends, Request
from starlette.requests import HTTPConnection
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from ..errors import ConveyorError
from ..operations import OPERATIONS
from . import API_PREFIX, OWNER
from .errors import ApiError
from .session import SAFE_METHODS, session_authorization

if TYPE_CHECKING:
    from ..executor import Executor
    from .policy import PolicyFile, Rules
    from .tokens import Caller, Callers


@dataclass
class AgentState:
    """One agent: the supervising executor it serves, who may call it, the node's policy (for
    named tokens without one of their own), and which listener serves the owner's token."""

    executor: "Executor"
    callers: "Callers"
    policy: "PolicyFile"
    unix_socket: str | None = None  # the path of its unix socket
    tcp_allows_owner: bool = False  # `serve --tcp-allow-owner`
    started_at: float = field(default_factory=time.time)
    stopping: bool = False  # set on SIGTERM: foreground streams end without cancelling their jobs
    requests: int = 0  # in flight now, streams included (for the idle exit)
    last_activity: float = field(default_factory=time.monotonic)

    def listener_admits_owner(self, scope: dict) -> bool:
        """The unix socket (0600: only the owner can connect) serves the owner's token; the TCP
        listener only when the operator said so. uvicorn's ``server`` entry is ``(path, None)``
        for a unix socket and ``(host, port)`` for TCP: anything else counts as TCP."""
        server = scope.get("server")
        on_unix_socket = bool(server) and server[1] is None and server[0] == self.unix_socket
        return on_unix_socket or self.tcp_allows_owner


# The dependencies that only read the agent's state are ``async def``: FastAPI runs a plain
# ``def`` dependency in a worker thread, two thread hops per request for an attribute read.
async def agent_state(request: Request) -> AgentState:
    return request.app.state.agent


async def executor(request: Request) -> "Executor":
    return request.app.state.agent.executor


bearer = HTTPBearer(auto_error=False, description="the token in the state directory's agent.token")

OWNER_OVER_TCP = (
    "the owner's token (agent.token) is not accepted on this agent's TCP listener: give remote "
    "callers a token of their own ('conveyor token create NAME --policy FILE'), or start the "
    "agent with 'conveyor serve --tcp ADDR --tcp-allow-owner'"
)


async def authorized(request: Request, _creds=Depends(bearer)) -> "Caller":
    """The caller the request's bearer token names: 401 for none, 403 for the owner's token on
    a listener that does not serve it."""
    return caller_of(request)


def caller_of(conn: HTTPConnection) -> "Caller":
    """``authorized`` for a request or a WebSocket (whose routes take no Request)."""
    agent: AgentState = conn.app.state.agent
    header = conn.headers.get("authorization") or session_authorization(conn)
    who = agent.callers.resolve(header)
    if who is None and header is None and agent.executor.scheduling.agent.open_dashboard:
        return agent.callers.anonymous
    if who is None:
        raise ApiError(
            401, "unauthorized",
            "a valid token is required: Authorization: Bearer <token from agent.token, or one made by 'conveyor token create'>",
            "Authorization",
        )
    if who.owner and not agent.listener_admits_owner(conn.scope):
        raise ApiError(403, "forbidden", OWNER_OVER_TCP, "Authorization")
    return who


async def metrics_reader(request: Request, creds=Depends(bearer)) -> "Caller | None":
    """Who may read the metrics: anyone when the operator opened them ([agent] open_metrics,
    for a Prometheus scraper), else a caller with a token."""
    if request.app.state.agent.executor.scheduling.agent.open_metrics:
        return None
    return await authorized(request, creds)


async def writes_allowed(request: Request, who: "Caller" = Depends(authorized)) -> None:
    """A request that changes something is refused, naming the rule, for a caller whose policy
    lets it only read (a read-only token, a caller of the operator's open read-only view)."""
    route = request.scope.get("route")
    name = getattr(route, "name", None) or request.url.path
    operation = OPERATIONS.get(name)
    if who.owner or request.method in SAFE_METHODS or (operation is not None and operation.reads_only):
        return
    await run_in_threadpool(who.rules.check_write, name)


# Job routes that show a job's state without its contents; every other GET of a job reads its
# logs, outputs or processes ("read"), and every other method changes it ("control").
SEEING = frozenset({"inspect", "attempts", "wait", "stats", "provenance", "array", "array_tasks"})
# Routes that act on every job of the node: a named token needs ``others_jobs: control``.
NODE_WIDE = frozenset({"cleanup", "prune", "gc"})


async def jobs_reached(request: Request, who: "Caller" = Depends(authorized)) -> None:
    """A named token reaches the jobs it did not submit only as far as its policy's
    ``others_jobs`` says (policy.REACH): refused naming that rule before the route runs."""
    if who.owner:
        return
    route = request.scope.get("route")
    name = getattr(route, "name", "")
    if name in NODE_WIDE:
        await run_in_threadpool(who.rules.check_others, "control", name, "over every token's jobs")
        return
    ref = request.path_params.get("ref")
    path = request.url.path
    if ref is None or not path.startswith((f"{API_PREFIX}/jobs/", f"{API_PREFIX}/arrays/")):
        return
    level = "see" if name in SEEING else "read" if request.method in SAFE_METHODS else "control"
    await run_in_threadpool(check_reach, request.app.state.agent.executor, who, ref, level, name,
                            path.startswith(f"{API_PREFIX}/arrays/"))


def check_reach(ex: "Executor", who: "Caller", ref: str, level: str, action: str, array: bool = False) -> None:
    """``jobs_reached`` for one job (or array) ``ref``; also for the WebSocket and dashboard
    routes, which have no route dependencies. A ref that names nothing is left to the route
    (its 404)."""
    if who.owner:
        return
    try:
        job_id = ex.array_tasks(ref)[0][0] if array else ex.store.resolve(ref)
        submitter = ex.store.get(job_id).submitted_by
    except (ConveyorError, IndexError, ValueError):
        return
    if submitter != who.name:
        whose = "the owner" if submitter in (None, OWNER) else f"token {submitter!r}"  # None: an embedded Executor
        who.rules.check_others(level, action, f"of {'array' if array else 'job'} {ref} (submitted by {whose})")


async def policy(who: "Caller" = Depends(authorized)) -> "Rules":
    """The rules the caller's jobs meet (``rules.check(spec)``, ``rules.check_image(image)``):
    none beyond the spec's own for the owner, its policy for a named token."""
    return who.rules


async def owner(who: "Caller" = Depends(authorized)) -> "Caller":
    """Only the owner of the state directory: 403 for a named token."""
    if not who.owner:
        raise ApiError(
            403, "forbidden",
            f"only the owner of the state directory (the token in agent.token) may do this; the request came with token {who.name!r}",
            "Authorization", {"token": who.name},
        )
    return who


async def callers(request: Request) -> "Callers":
    return request.app.state.agent.callers


async def job_id(ref: str, request: Request) -> str:
    """The ``{ref}`` of a route (id, unique id prefix or name) as a job id; 404 otherwise."""
    return await run_in_threadpool(request.app.state.agent.executor.store.resolve, ref)
