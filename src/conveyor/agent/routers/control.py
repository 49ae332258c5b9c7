"""Job control: one route per verb of the operations table, and one per array form.

Nothing here is written per verb: each route's path, method, summary, parameters (with their
bounds) and answers come from the :class:`~conveyor.operations.Verb`. A verb that ends a job
answers at once; the caller waits for the end with ``/jobs/{ref}/wait`` (the Python client
does that for you).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from ...executor import Executor
from ...operations import VERBS, Verb
from ..dependencies import executor
from ..models import CONFLICT, NOT_FOUND, JobOut

router = APIRouter()


def _query_params(verb: Verb) -> list[inspect.Parameter]:
    P = inspect.Parameter
    out = []
    for p in verb.params:
        bounds = {k: v for k, v in (("ge", p.ge), ("le", p.le)) if v is not None}
        if p.required:
            default = Query(description=p.help, **bounds)
        else:
            default = Query(default=p.default, description=p.help, **bounds) if bounds else p.default
        out.append(P(p.name, P.KEYWORD_ONLY, default=default, annotation=p.annotation))
    return out


def _endpoint(name: str, params: list[inspect.Parameter], call: Callable[[Executor, str, dict], Any]) -> Callable:
    """A route function with the signature FastAPI reads: ``ref``, the verb's query
    parameters and the executor dependency."""
    P = inspect.Parameter

    def endpoint(ref: str, ex: Executor = Depends(executor), **values: Any):
        return call(ex, ref, values)

    endpoint.__name__ = name  # FastAPI's operationId is made from it
    endpoint.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        P("ref", P.POSITIONAL_OR_KEYWORD, annotation=str),
        *params,
        P("ex", P.KEYWORD_ONLY, default=Depends(executor), annotation=Executor),
    ])
    return endpoint


def _job_call(verb: Verb) -> Callable[[Executor, str, dict], Any]:
    def call(ex: Executor, ref: str, values: dict) -> Any:
        if verb.ends_job:
            values = {**values, "wait": False}
        job = getattr(ex, verb.name)(ref, **values)
        if not verb.returns_job:
            return Response(status_code=204)
        return JSONResponse(job.to_dict())

    return call


def _array_call(verb: Verb) -> Callable[[Executor, str, dict], Any]:
    def call(ex: Executor, ref: str, values: dict) -> Any:
        return getattr(ex, f"{verb.name}_array")(ref, **values)

    return call


for _verb in VERBS:
    router.add_api_route(
        _verb.route, _endpoint(_verb.name, _query_params(_verb), _job_call(_verb)), methods=[_verb.method],
        summary=_verb.summary, tags=["control"], responses={**NOT_FOUND, **CONFLICT},
        **({"response_model": JobOut} if _verb.returns_job else {"status_code": 204}),
    )
    if _verb.array_summary:
        router.add_api_route(
            _verb.array_route, _endpoint(f"{_verb.name}_array", _query_params(_verb), _array_call(_verb)),
            methods=["POST"], summary=_verb.array_summary, tags=["arrays"], responses=NOT_FOUND,
            response_model=dict,
        )
