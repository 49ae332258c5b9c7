"""What routes share, as FastAPI dependencies: the agent's state (executor, tokens, policy),
the token check, and job references resolved to ids."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from .errors import ApiError

if TYPE_CHECKING:
    from ..executor import Executor
    from .auth import TokenCheck
    from .policy import PolicyFile


@dataclass
class AgentState:
    """One agent: the supervising executor it serves, its token check and its policy."""

    executor: "Executor"
    tokens: "TokenCheck"
    policy: "PolicyFile"
    started_at: float = field(default_factory=time.time)
    stopping: bool = False  # set on SIGTERM: foreground streams end without cancelling their jobs


def agent_state(request: Request) -> AgentState:
    return request.app.state.agent


def executor(request: Request) -> "Executor":
    return request.app.state.agent.executor


def policy(request: Request) -> "PolicyFile":
    return request.app.state.agent.policy


bearer = HTTPBearer(auto_error=False, description="the token in the state directory's agent.token")


async def authorized(request: Request, _creds=Depends(bearer)) -> None:
    if not agent_state(request).tokens.valid(request.headers.get("authorization")):
        raise ApiError(401, "unauthorized", "a valid token is required: Authorization: Bearer <token from agent.token>", "Authorization")


async def job_id(ref: str, request: Request) -> str:
    """The ``{ref}`` of a route (id, unique id prefix or name) as a job id; 404 otherwise."""
    return await run_in_threadpool(executor(request).store.resolve, ref)
