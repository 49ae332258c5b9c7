"""Conveyor's exception hierarchy: every error a caller can act on is a ConveyorError."""

from __future__ import annotations


class ConveyorError(Exception):
    """Base class for all errors raised by Conveyor."""


class InvalidSpec(ConveyorError, ValueError):
    """A job specification (or one of its fields) is not acceptable.

    ``problems`` holds one ``(field, value, hint)`` triple per bad field, so callers
    (CLI, REST agent) can point at exactly what to fix.
    """

    def __init__(self, problems: list[tuple[str, object, str]]):
        self.problems = problems
        lines = [f"{field}: {value!r} is not valid; {hint}" for field, value, hint in problems]
        super().__init__("invalid job spec: " + "; ".join(lines))

    @classmethod
    def single(cls, field: str, value: object, hint: str) -> "InvalidSpec":
        return cls([(field, value, hint)])


class JobNotFound(ConveyorError, LookupError):
    def __init__(self, ref: str, detail: str = ""):
        self.ref = ref
        super().__init__(f"no such job: {ref}" + (f" ({detail})" if detail else ""))


class InvalidState(ConveyorError):
    """A control call was made on a job in a state that does not allow it."""

    def __init__(self, job_id: str, state: str, action: str):
        self.job_id, self.state, self.action = job_id, state, action
        super().__init__(f"cannot {action} job {job_id}: it is {state}")


class EngineUnavailable(ConveyorError):
    """The container engine cannot be reached."""


class ImageNotFound(ConveyorError):
    """The job's image is not present and could not (or must not) be pulled."""

    def __init__(self, image: str, detail: str, job_id: str | None = None):
        self.image, self.job_id = image, job_id
        super().__init__(f"image {image!r} not available: {detail}")


class WaitTimeout(ConveyorError, TimeoutError):
    def __init__(self, job_id: str, what: str, timeout: float):
        self.job_id = job_id
        super().__init__(f"job {job_id} not {what} within {timeout:g}s")


class PolicyRefused(ConveyorError, PermissionError):
    """The node's operator policy does not allow this job (the agent answers 403).

    ``rule`` names the policy rule that refused it, ``field`` the spec field it is about."""

    def __init__(self, rule: str, field: str | None, message: str):
        self.rule, self.field = rule, field
        super().__init__(f"refused by policy rule {rule!r}: {message}")


class AgentError(ConveyorError):
    """The agent could not be reached, refused the token, or answered something unexpected."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        self.status, self.code = status, code
        super().__init__(message)
