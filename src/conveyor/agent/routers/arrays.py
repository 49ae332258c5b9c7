"""Arrays: submit one (after the policy's check), its summary and its tasks. The array forms of
the control verbs are in control.py, made from the operations table."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ...executor import Executor
from ..dependencies import authorized, executor, policy
from ..models import INVALID, NOT_FOUND, REFUSED, ArrayRequest
from ..policy import PolicyFile
from ..tokens import Caller
from . import operation

router = APIRouter()


@operation(router, "submit_array", status_code=201, responses={**REFUSED, **INVALID})
def submit_array(body: ArrayRequest, ex: Executor = Depends(executor), rules: PolicyFile = Depends(policy),
                 who: Caller = Depends(authorized)):
    rules.check(body.spec)
    with ex.submitting_as(who.name):
        array_id = ex.submit_array(body.spec, body.begin, body.end, body.step, body.max_parallel, hold=body.hold,
                                  image_ready=body.image_ready)
    return JSONResponse(ex.array(array_id), status_code=201)


@operation(router, "array", responses=NOT_FOUND)
def array(ref: str, ex: Executor = Depends(executor)) -> dict:
    return ex.array(ref)


@operation(router, "array_tasks", responses=NOT_FOUND)
def array_tasks(ref: str, ex: Executor = Depends(executor)) -> list[dict]:
    return [{"id": i, "index": n, "state": state.value} for i, n, state in ex.array_tasks(ref)]
