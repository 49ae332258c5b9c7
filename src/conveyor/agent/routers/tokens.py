"""Named tokens: create (bound to a policy), list, revoke. The owner's only (403 for others)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..dependencies import callers, owner
from ..models import INVALID, error_doc
from ..policy import MAX_POLICY_BYTES
from ..tokens import Callers
from . import operation

router = APIRouter(dependencies=[Depends(owner)])

OWNER_ONLY = {403: error_doc("only the owner of the state directory manages tokens")}


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    policy_path: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="a policy file on the agent's machine (absolute path); the token follows its changes",
    )
    policy: str | None = Field(
        default=None, max_length=MAX_POLICY_BYTES,
        description="the policy itself (YAML or JSON), kept as policies/<name>.yaml in the state directory",
    )


class TokenOut(BaseModel):
    name: str
    policy: str | None = Field(description="the policy file the token is bound to; null: the node's policy")
    created_at: float
    last_used_at: float | None = Field(default=None, description="since this agent started")


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself: shown only in this answer, only a hash of it is kept")


class TokenList(BaseModel):
    tokens: list[TokenOut]


@operation(router, "token_create", status_code=201, response_model=TokenCreated, responses={
    **OWNER_ONLY, 409: error_doc("a token of that name exists"), **INVALID,
})
def create(body: TokenRequest, registry: Callers = Depends(callers)):
    record, token = registry.create(body.name, body.policy_path, body.policy)
    return JSONResponse({**record.public(None), "token": token}, status_code=201)


@operation(router, "token_list", response_model=TokenList, responses=OWNER_ONLY)
def listing(registry: Callers = Depends(callers)):
    return JSONResponse({"tokens": registry.listing()})


@operation(router, "token_revoke", status_code=204, responses={**OWNER_ONLY, 404: error_doc("no token of that name")})
def revoke(name: str = Path(max_length=64), registry: Callers = Depends(callers)) -> Response:
    registry.revoke(name)
    return Response(status_code=204)
