"""ExecSpec: a command to run inside a running job (`conveyor exec`, ``Executor.open_exec``), as
``docker exec`` takes it. Validated once, here, for the embedded Executor, the agent (the first
message of its exec WebSocket is one) and the Client alike."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from .base import SpecModel
from .jobspec import _pairs, _split_command, check_env, check_user, check_workdir


class ExecSpec(SpecModel):
    kind: ClassVar[str] = "exec request"

    command: Annotated[list[str], BeforeValidator(_split_command)] = Field(
        min_length=1, description="the program and its arguments (no shell unless you name one)"
    )
    stdin: bool = Field(default=False, description="keep the command's stdin open for the caller (docker exec -i)")
    tty: bool = Field(default=False, description="give the command a terminal (docker exec -t)")
    env: Annotated[dict[str, str], BeforeValidator(_pairs), AfterValidator(check_env)] = Field(default_factory=dict)
    user: Annotated[str | None, AfterValidator(check_user)] = None
    workdir: Annotated[str | None, AfterValidator(check_workdir)] = None
    console_size: tuple[int, int] | None = Field(
        default=None, description="[rows, columns] of the caller's terminal, with tty"
    )

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if not v[0] or any("\0" in arg for arg in v):
            raise ValueError("give the program to run first (a non-empty name); arguments have no NUL")
        return v

    @field_validator("console_size")
    @classmethod
    def _size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not all(1 <= n <= 10000 for n in v):
            raise ValueError("rows and columns are each from 1 to 10000")
        return v
