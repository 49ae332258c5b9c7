"""A job's choice of backend, ``backend: {name, options}``, and the options each backend
accepts (DRMAA2's implementation-specific extensions, DMS's engine spec): one model per backend.

The declarations live with the job spec, not in the drivers, so that every path (embedded, CLI,
agent) validates options with the same clear errors without importing an engine's SDK.
"""

from __future__ import annotations

import re
from typing import Literal

from typing import Any

from pydantic import Field, field_validator, model_validator

from ..errors import InvalidSpec
from .base import SpecModel

CONTAINER_ENGINES = ("docker", "podman", "swarm")  # driven through the Docker Engine API
BACKEND_NAMES = (*CONTAINER_ENGINES, "slurm", "process")

_RUNTIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ContainerOptions(SpecModel):
    """Options of the container backends (docker, podman)."""

    runtime: str | None = Field(
        default=None,
        description="the OCI runtime that runs the container, as registered with the engine "
        "(e.g. runsc for gVisor); default: the engine's default runtime",
    )
    cgroup_parent: str | None = Field(default=None, description="the cgroup the container's cgroup is made under")
    security_opt: list[str] = Field(default_factory=list, description="e.g. no-new-privileges, seccomp=unconfined")

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: str | None) -> str | None:
        if v is not None and not _RUNTIME_RE.match(v):
            raise ValueError("a runtime is a name the engine knows, e.g. runc or runsc ('conveyor machine' lists them)")
        return v


class SwarmOptions(SpecModel):
    """Options of the swarm backend (a job as a one-task service on a Docker Swarm)."""

    constraints: list[str] = Field(default_factory=list, description="placement constraints, e.g. node.labels.pool==gpu")
    preferences: list[str] = Field(default_factory=list, description="placement preferences, e.g. spread=node.labels.zone")

    @field_validator("constraints", "preferences", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v  # `--backend-opt constraints=...` gives one string

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: list[str]) -> list[str]:
        for c in v:
            if "==" not in c and "!=" not in c:
                raise ValueError(f"{c!r}: a constraint is ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, e.g. node.labels.pool==gpu")
        return v

    @field_validator("preferences")
    @classmethod
    def _preferences(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.startswith("spread=") or p == "spread=":
                raise ValueError(f"{p!r}: a preference is spread=ATTRIBUTE, e.g. spread=node.labels.zone")
        return v


class SlurmOptions(SpecModel):
    """Options of the slurm backend (a job as an sbatch submission): where Slurm may run it."""

    partition: str | None = Field(default=None, description="the partition (sbatch --partition); default: the cluster's")
    account: str | None = Field(default=None, description="the account charged (sbatch --account)")
    qos: str | None = Field(default=None, description="the quality of service (sbatch --qos)")
    constraint: str | None = Field(default=None, description="node features required (sbatch --constraint), e.g. avx512")
    reservation: str | None = Field(default=None, description="an advance reservation to run in (sbatch --reservation)")
    nice: int = Field(default=0, ge=0, le=2147483645, description="lower the job's priority in Slurm by this much "
                      "(sbatch --nice; a negative nice needs a Slurm operator)")

    @field_validator("partition", "account", "qos", "constraint", "reservation")
    @classmethod
    def _word(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.,:|&*\[\]()!-]+", v):
            raise ValueError(f"{v!r}: a Slurm name or expression, without spaces or shell characters")
        return v


class ProcessOptions(SpecModel):
    """Options of the process backend (a job as a host process group)."""

    cgroup: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="auto: CPU, memory and pids limits through cgroups when they are writable, else "
        "refuse a job that sets them; required: refuse to start without cgroups; off: no cgroup "
        "(a job that sets limits is refused)",
    )
    nice: int = Field(default=0, ge=0, le=19, description="the job's scheduling niceness (0-19)")
    umask: str = Field(default="022", pattern=r"^0?[0-7]{3}$", description="the job's umask, octal (e.g. 027)")


OPTIONS: dict[str, type[SpecModel]] = {
    "docker": ContainerOptions, "podman": ContainerOptions, "swarm": SwarmOptions, "slurm": SlurmOptions,
    "process": ProcessOptions,
}


class BackendChoice(SpecModel):
    """Which backend runs the job, and that backend's own options. Written as a name alone
    (``backend: process``) or as ``{name: docker, options: {runtime: runsc}}``; without a name,
    the options are for the node's container engine (``--runtime runsc`` alone, or
    ``--backend-opt constraints=...`` on a swarm): here they must suit some container engine,
    and at submit the node's (``options_for``)."""

    name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in OPTIONS:
            raise ValueError(f"unknown backend; use one of {', '.join(BACKEND_NAMES)} ('conveyor backends' lists them)")
        return v

    @model_validator(mode="after")
    def _options(self) -> "BackendChoice":
        if self.name:
            validated = self.options_for(self.name)
        else:  # the first container engine's options that fit (their names do not overlap)
            engines = (ContainerOptions, SwarmOptions, SlurmOptions)
            fitting = [m for m in engines if set(self.options) <= set(m.model_fields)]
            validated = _validate(fitting[0] if fitting else ContainerOptions, self.options,
                                  "a container engine's", [f for m in engines for f in m.model_fields])
        # Keep only what was set: the digest of a spec must not change when a default does.
        object.__setattr__(self, "options", validated.model_dump(mode="json", exclude_defaults=True))
        return self

    def options_for(self, backend: str) -> SpecModel:
        """The options, validated as the backend ``backend``'s (the job's own, or the node's
        container engine when the job names none): InvalidSpec naming each one it lacks."""
        return _validate(OPTIONS[backend], self.options, f"the {backend} backend's", list(OPTIONS[backend].model_fields))


def _validate(model: type[SpecModel], options: dict[str, Any], whose: str, accepted: list[str]) -> SpecModel:
    try:
        return model.model_validate(options)
    except InvalidSpec as exc:
        raise InvalidSpec([(f"options.{field}", value, f"{hint} ({whose} options: {', '.join(accepted)})")
                           for field, value, hint in exc.problems]) from None
