"""The node and the agent: who serves, the queue, the machine, cleanup."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, Query

from ... import __version__
from ...executor import Executor
from ..dependencies import AgentState, agent_state, executor
from . import operation

router = APIRouter()


@operation(router, "agent_info")
def info(agent: AgentState = Depends(agent_state)) -> dict:
    ex = agent.executor
    return {
        "version": __version__,
        "pid": os.getpid(),
        "home": str(ex.home.root),
        "executor_id": ex.executor_id,
        "supervising": ex.supervising,
        "started_at": agent.started_at,
        "policy": agent.policy.describe(),
        "backend": {"name": ex.backend.name, "capabilities": ex.capabilities().to_dict()},
        "engine": ex.backend.engine_name,
    }


@operation(router, "queue")
def queue(limit: int | None = Query(default=None, ge=0, le=100000), ex: Executor = Depends(executor)) -> dict:
    return ex.queue(limit=limit)


@operation(router, "machine")
def machine(ex: Executor = Depends(executor)) -> dict:
    return ex.machine()


@operation(router, "backends")
def backends(ex: Executor = Depends(executor)) -> list[dict]:
    return ex.backends()


@operation(router, "cleanup")
def cleanup(ex: Executor = Depends(executor)) -> dict[str, int]:
    return ex.cleanup()
