"""Errors as the agent answers them: JSON ``{"code", "message", "field", "details"}``.

Conveyor's own errors carry their code and status (:mod:`conveyor.errors`, the one table the
client reads back); the agent adds its own codes for what only HTTP can get wrong:

    401 unauthorized      404 not_found         405 method_not_allowed
    422 invalid_request   500 internal
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ConveyorError, InvalidSpec, PolicyRefused, jsonable
from ..spec import JobSpec


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, details: dict | None = None):
        self.status, self.code, self.message, self.field, self.details = status, code, message, field, details


def error_for(exc: ConveyorError) -> ApiError:
    """A Conveyor error as the agent answers it (the client maps it back)."""
    return ApiError(exc.status or 409, exc.code or "conveyor_error", str(exc), exc.field, exc.details() or None)


def error_response(err: ApiError) -> JSONResponse:
    body = {"code": err.code, "message": err.message, "field": err.field, "details": err.details}
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(body, status_code=err.status, headers=headers)


def _field_of(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def validation_error(exc: RequestValidationError) -> ApiError:
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
        {"field": _field_of(tuple(e["loc"])), "value": jsonable(e.get("input")), "hint": e["msg"]} for e in errors
    ]
    first = problems[0] if problems else {"field": "request", "hint": "invalid request"}
    message = "; ".join(f"{p['field']}: {p['hint']}" for p in problems) or "invalid request"
    return ApiError(422, "invalid_request", message, first["field"], {"problems": problems})


def install(app: FastAPI) -> None:
    """Every error the app can meet, answered in the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(ConveyorError)
    async def _conveyor_error(request: Request, exc: ConveyorError):
        if isinstance(exc, PolicyRefused) and request.app.state.agent is not None:
            request.app.state.agent.executor.meters.counters.refused(exc.code)  # the executor counts the rest
        return error_response(error_for(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError):
        return error_response(ApiError(422, "invalid_request", str(exc)))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return error_response(ApiError(500, "internal", f"{type(exc).__name__}: {exc}"))
