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


# POSTs that change nothing: a read-only token may make them
READING_POSTS = frozenset({"wait_any", "verify"})


async def writes_allowed(request: Request, who: "Caller" = Depends(authorized)) -> None:
    """A request that changes something is refused, naming the rule, for a caller whose policy
    lets it only read (a read-only token, a caller of the operator's open read-only view)."""
    route = request.scope.get("route")
    name = getattr(route, "name", None) or request.url.path
    if who.owner or request.method in SAFE_METHODS or name in READING_POSTS:
        return
    await run_in_threadpool(who.rules.check_write, name)


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
