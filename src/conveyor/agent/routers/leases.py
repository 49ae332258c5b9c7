"""Leases (README: Leases): create, list, inspect, renew, release. The owner's only (403 for
others): a lease reserves a share of the node against every other caller's jobs, and no policy
rule yet says how much a named token may hold."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...executor import Executor
from ..dependencies import executor, owner
from ..models import INVALID, error_doc
from . import operation

router = APIRouter(dependencies=[Depends(owner)])

OWNER_ONLY = {403: error_doc("only the owner of the state directory holds leases")}
NO_LEASE = {404: error_doc("no such lease (or, to renew, it has ended)")}


class LeaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: float = Field(default=0.0, description="CPUs reserved, e.g. 4 or 1.5")
    memory: int | str = Field(default=0, description="memory reserved: bytes, or 8g, 512m")
    gpus: int = Field(default=0, description="GPUs reserved")
    gpu_vendor: str = Field(default="nvidia", description="nvidia, amd or intel")
    keepalive: float | str = Field(default=30.0, description="seconds (or 30s, 5m) it lives without a renewal")
    labels: dict[str, str] = Field(default_factory=dict)


@operation(router, "lease_create", status_code=201, responses={**OWNER_ONLY, **INVALID})
def create(body: LeaseRequest, ex: Executor = Depends(executor)):
    return JSONResponse(ex.lease_create(**body.model_dump()), status_code=201)


@operation(router, "lease_list", responses=OWNER_ONLY)
def listing(all: bool = Query(default=False, description="ended leases too"), ex: Executor = Depends(executor)) -> list[dict]:
    return ex.lease_list(all=all)


@operation(router, "lease_info", responses={**OWNER_ONLY, **NO_LEASE})
def info(ref: str, ex: Executor = Depends(executor)) -> dict:
    return ex.lease_info(ref)


@operation(router, "lease_renew", responses={**OWNER_ONLY, **NO_LEASE})
def renew(ref: str, ex: Executor = Depends(executor)) -> dict:
    return ex.lease_renew(ref)


class ResizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: float | None = Field(default=None, description="the new CPUs; null: unchanged")
    memory: int | str | None = Field(default=None, description="the new memory (bytes, or 8g); null: unchanged")


@operation(router, "lease_resize", responses={**OWNER_ONLY, **NO_LEASE, **INVALID})
def resize(ref: str, body: ResizeRequest, ex: Executor = Depends(executor)) -> dict:
    return ex.lease_resize(ref, body.cpus, body.memory)


@operation(router, "lease_release", responses={**OWNER_ONLY, **NO_LEASE})
def release(ref: str, drain: bool = Query(default=False, description="end once its jobs have, not at once"),
            ex: Executor = Depends(executor)) -> dict:
    return ex.lease_release(ref, drain=drain)
