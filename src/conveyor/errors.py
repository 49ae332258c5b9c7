"""Conveyor's exception hierarchy: every error a caller can act on is a ConveyorError.

Each class carries its stable wire ``code`` and HTTP ``status``, and says how its structured
fields travel (``details`` out, ``from_wire`` back in). That is the one table of error codes:
the agent answers with it and the client raises the same exception from it.
"""

from __future__ import annotations

import os
from typing import Any


# docker run's exit code when the failure is the tool's, not the job's (bad input, engine down,
# image missing): every Conveyor command exits with it for a ConveyorError.
EXIT_CONVEYOR_ERROR = 125


class ConveyorError(Exception):
    """Base class for all errors raised by Conveyor."""

    code = "conveyor_error"
    status = 409
    field: str | None = None  # the request or spec field the error is about

    def details(self) -> dict[str, Any]:
        """The structured fields a remote caller needs to rebuild this error."""
        return {}

    @classmethod
    def from_wire(cls, message: str, field: str | None, details: dict[str, Any]) -> "ConveyorError":
        """The error a remote caller raises for an answer with this class's code."""
        return cls(message)


class InvalidSpec(ConveyorError, ValueError):
    """A job specification (or one of its fields) is not acceptable.

    ``problems`` holds one ``(field, value, hint)`` triple per bad field, so callers
    (CLI, REST agent) can point at exactly what to fix.
    """

    code, status = "invalid_spec", 422

    def __init__(self, problems: list[tuple[str, object, str]], what: str = "job spec"):
        self.problems, self.what = problems, what  # what: the request they are fields of
        self.field = problems[0][0] if problems else None
        lines = [f"{field}: {value!r} is not valid; {hint}" for field, value, hint in problems]
        super().__init__(f"invalid {what}: " + "; ".join(lines))

    @classmethod
    def single(cls, field: str, value: object, hint: str) -> "InvalidSpec":
        return cls([(field, value, hint)])

    def details(self) -> dict[str, Any]:
        return {"problems": [{"field": f, "value": jsonable(v), "hint": str(h)} for f, v, h in self.problems],
                "what": self.what}

    @classmethod
    def from_wire(cls, message: str, field: str | None, details: dict[str, Any]) -> "InvalidSpec":
        # The agent names fields of its request body ("spec.resources.memory"); a caller of the
        # library knows them as fields of the spec. The message is rebuilt from the problems.
        return cls([(p["field"].removeprefix("spec."), p.get("value"), p["hint"]) for p in details.get("problems", [])],
                   details.get("what", "job spec"))


class JobNotFound(ConveyorError, LookupError):
    code, status, field = "job_not_found", 404, "job"

    def __init__(self, ref: str, detail: str = ""):
        self.ref = ref
        super().__init__(f"no such job: {ref}" + (f" ({detail})" if detail else ""))

    def details(self) -> dict[str, Any]:
        return {"ref": self.ref}

    @classmethod
    def from_wire(cls, message: str, field: str | None, details: dict[str, Any]) -> "JobNotFound":
        return _with_message(cls(details.get("ref", "")), message)


class LeaseNotFound(ConveyorError, LookupError):
    code, status, field = "lease_not_found", 404, "lease"

    def __init__(self, ref: str, detail: str = ""):
        self.ref = ref
        super().__init__(f"no such lease: {ref}" + (f" ({detail})" if detail else ""))

    def details(self) -> dict[str, Any]:
        return {"ref": self.ref}

    @classmethod
    def from_wire(cls, message: str, field: str | None, details: dict[str, Any]) -> "LeaseNotFound":
        return _with_message(cls(details.get("ref", "")), message)


class InvalidState(ConveyorError):
    """A control call was made on a job in a state that does not allow it."""

    code, status, field = "invalid_state", 409, "state"

    def __init__(self, job_id: str, state: str, action: str):
        self.job_id, self.state, self.action = job_id, state, action
        super().__init__(f"cannot {action} job {job_id}: it is {state}")

    def details(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "state": self.state, "action": self.action}

    @classmethod
    def from_wire(cls, message: str, field: str | None, details: dict[str, Any]) -> "InvalidState":
        exc = cls(details.get("job_id", ""), details.get("state", ""), details.get("action", ""))
        return _with_message(exc, message)


class WaitTimeout(ConveyorError, TimeoutError):
    code, status, field = "wait_timeout", 408, "timeout"

    def __init__(self, job_id: str, what: str, timeout: float):
        self.job_id = job_id
        super().__init__(f"job {job_id} not {what} within {timeout:g}s")

    def details(self) -> dict[str, Any]:
        return {"job_id": self.job_id}

    @classmethod
    def from_wire(cls, message: str, field: str | None, details: dict[str, Any]) -> "WaitTimeout":
        return _with_message(cls(details.get("job_id", ""), "finished", 0), message)


class StateDirUnusable(ConveyorError):
    """The state directory cannot be written: not writable for this user, on a full disk or a
    read-only file system, or gone. Nothing was recorded. ``problem`` is one of PROBLEMS (what
    happened, what to do); :func:`conveyor.home.unusable` finds out which."""

    code, status = "state_dir_unusable", 507  # Insufficient Storage: it cannot store anything
    _ELSEWHERE = "use another one with --home or CONVEYOR_HOME"
    PROBLEMS = {
        "not_writable": ("is not writable", "make it and its files writable for this user (chmod -R u+w {root}) or " + _ELSEWHERE),
        "cannot_create": ("cannot be created", "make {parent} writable for this user or " + _ELSEWHERE),
        "not_a_directory": ("is not a directory", "remove what is there or " + _ELSEWHERE),
        "full": ("is on a full disk", "free some space on its disk or " + _ELSEWHERE),
        "read_only": ("is on a read-only file system", _ELSEWHERE),
        "gone": ("was removed while in use", "run the command again to start afresh"),
    }

    def __init__(self, root: str, problem: str | None = None):
        self.root, self.problem = str(root), problem
        what, fix = self.PROBLEMS.get(problem, ("cannot be written", "check it, or " + self._ELSEWHERE))
        parent = os.path.dirname(str(root).rstrip("/")) or "/"
        super().__init__(f"the state directory {root} {what}: {fix.format(root=root, parent=parent)}")

    def details(self) -> dict[str, Any]:
        return {"root": self.root, "problem": self.problem}

    @classmethod
    def from_wire(cls, message: str, field: str | None, details: dict[str, Any]) -> "StateDirUnusable":
        return _with_message(cls(details.get("root", ""), details.get("problem")), message)


class PolicyRefused(ConveyorError, PermissionError):
    """The policy a caller's token is bound to does not allow this job (the agent answers 403).

    ``rule`` names the policy rule that refused it, ``field`` the spec field it is about,
    ``token`` the named token whose policy it is and ``policy`` that policy's file (None: the
    built-in defaults)."""

    code, status = "policy_refused", 403

    def __init__(self, rule: str, field: str | None, message: str, token: str | None = None, policy: str | None = None):
        self.rule, self.field, self.reason, self.token, self.policy = rule, field, message, token, policy
        whose = f" of token {token!r} ({'policy ' + policy if policy else 'the built-in default policy'})" if token else ""
        super().__init__(f"refused by policy rule {rule!r}{whose}: {message}")

    def by(self, token: str, policy: str | None) -> "PolicyRefused":
        """The same refusal, naming the token and the policy it came from."""
        return PolicyRefused(self.rule, self.field, self.reason, token, policy)

    def details(self) -> dict[str, Any]:
        return {"rule": self.rule, **({"token": self.token, "policy": self.policy} if self.token else {})}

    @classmethod
    def from_wire(cls, message: str, field: str | None, details: dict[str, Any]) -> "PolicyRefused":
        exc = cls(details.get("rule", ""), field, message, details.get("token"), details.get("policy"))
        return _with_message(exc, message)


# ----------------------------------------------------------------------------- the engine
# What a backend raises, whatever engine it drives (see conveyor.backends.base): callers
# outside a backend never see an engine SDK's own exceptions.


class EngineUnavailable(ConveyorError):
    """The container engine cannot be reached."""

    code, status = "engine_unavailable", 503


class ImageNotFound(ConveyorError):
    """The job's image is not present and could not (or must not) be pulled."""

    code, status, field = "image_not_found", 422, "spec.image"

    def __init__(self, image: str, detail: str, job_id: str | None = None):
        self.image, self.job_id = image, job_id
        self.detail = detail  # the engine's (or registry's) own words: the docker stand-in prints them
        super().__init__(f"image {image!r} not available: {detail}")

    def details(self) -> dict[str, Any]:
        return {"image": self.image, "job_id": self.job_id, "detail": self.detail}

    @classmethod
    def from_wire(cls, message: str, field: str | None, details: dict[str, Any]) -> "ImageNotFound":
        exc = cls(details.get("image", ""), details.get("detail") or message, details.get("job_id"))
        return _with_message(exc, message)


class EngineError(ConveyorError):
    """The engine refused or failed a request (its own words in the message)."""


class ContainerNotFound(EngineError):
    """The engine has no such container (any more)."""


class EngineConflict(EngineError):
    """The engine refused because of the container's state or what exists already (HTTP 409:
    a container of that name, one that is not running or already paused)."""


class NotSupported(ConveyorError):
    """The backend cannot do this (its capabilities say so)."""

    code, status = "not_supported", 501


# ----------------------------------------------------------------------------- the agent


class AgentError(ConveyorError):
    """The agent could not be reached, refused the token, or answered something unexpected."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        self.status, self.code = status, code  # type: ignore[assignment] - per instance here
        super().__init__(message)


class AgentUnreachable(AgentError):
    """Nothing answers at the agent's address, or the connection to it broke."""

    def __init__(self, url: str, reason: str, remote: bool = False):
        self.url = url
        fix = (
            "start one there with 'conveyor serve', or fix CONVEYOR_HOST (unset it to use this machine's agent)"
            if remote else "the CLI starts it again when needed; its log is supervisor.log in the state directory"
        )
        super().__init__(f"cannot reach the agent at {url}: {reason}; {fix}")


# Every code the agent answers with, and the exception a client raises for it. Codes not
# listed (unauthorized, not_found, invalid_request, internal, ...) are the agent's own and come
# back as AgentError with that code.
ERRORS_BY_CODE: dict[str, type[ConveyorError]] = {
    cls.code: cls
    for cls in (
        InvalidSpec, PolicyRefused, JobNotFound, LeaseNotFound, InvalidState, WaitTimeout, ImageNotFound, EngineUnavailable,
        NotSupported, StateDirUnusable, ConveyorError,
    )
}


def error_from_wire(status: int, code: str, message: str, field: str | None, details: dict[str, Any]) -> ConveyorError:
    """The exception for an error answer of the agent: the library's own for its codes."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        return AgentError(message, status, code)
    return cls.from_wire(message, field, details or {})


def _with_message(exc: ConveyorError, message: str) -> ConveyorError:
    exc.args = (message,)  # the agent's own words
    return exc


def jsonable(value: object) -> object:
    import json

    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)
