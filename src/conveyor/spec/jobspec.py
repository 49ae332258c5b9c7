"""JobSpec, the model of one whole job: its fields, the checks on each and on their
combination, its digest and JSON/YAML forms; and :func:`spec_from_json`, the cached parser for
stored and received specs."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .backend import BackendChoice
from .base import SpecModel, _bad, _from_text
from .parts import (
    Dependency,
    Input,
    Mount,
    PortMapping,
    PullPolicy,
    Resources,
    RestartPolicy,
    Ulimit,
    _mount_from_text,
    _output_path,
)
from .units import Bytes, Seconds

_IMAGE_RE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?"  # optional registry host[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.-]+)?$")
_HOSTNAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_NAMESPACE_MODES = {
    "ipc_mode": {"", "none", "private", "shareable", "host"},
    "uts_mode": {"", "host"},
    "pid_mode": {"", "host"},
}
RESERVED_LABEL_PREFIX = "conveyor."
# The one conveyor.* label a client sets: the tool that submitted the job (the docker stand-in
# names the program that ran `docker`), so `conveyor ps --filter label=conveyor.client=cwltool`
# finds a tool's jobs. The others are Conveyor's own bookkeeping on the engine's objects.
LABEL_CLIENT = "conveyor.client"


def _split_command(value: Any) -> Any:
    # A YAML author may write `command: echo hi`; split it the way a shell would read it,
    # but never hand a string to a shell.
    return shlex.split(value) if isinstance(value, str) else value


def _pairs(value: Any) -> Any:
    """Accept ``["K=V", ...]`` as well as a mapping (docker's -e / --label style)."""
    if isinstance(value, (list, tuple)):
        out: dict[str, str] = {}
        for item in value:
            key, eq, val = str(item).partition("=")
            if not eq:
                raise ValueError(f"{item!r}: use KEY=VALUE")
            out[key] = val
        return out
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return value



# The checks of what a job and a command run inside one (ExecSpec) share.
# The kernel's limits on what execve takes (MAX_ARG_STRLEN, and a share of ARG_MAX that leaves
# room for the command): a container with more could be made but never started.
MAX_ENV_VAR = 128 << 10
MAX_ENV_TOTAL = 1 << 20


def check_env(v: dict[str, str]) -> dict[str, str]:
    for key, val in v.items():
        if not key or "=" in key or "\0" in key or "\0" in val:
            raise ValueError(f"bad variable {key[:64]!r}: names are non-empty without '=', values have no NUL")
        if len(key) + len(val) + 1 > MAX_ENV_VAR:
            raise ValueError(f"variable {key[:64]!r} is {len(val)} characters; the kernel takes at most {MAX_ENV_VAR} "
                             "per variable: pass big data as an input file instead")
    if sum(len(k) + len(x) + 2 for k, x in v.items()) > MAX_ENV_TOTAL:
        raise ValueError(f"the environment is over {MAX_ENV_TOTAL} bytes in all; pass big data as an input file instead")
    return v


MAX_LABELS, MAX_LABEL = 1000, 4096


def check_workdir(v: str | None) -> str | None:
    if v is not None and not v.startswith("/"):
        raise ValueError("the working directory must be an absolute container path, e.g. /work")
    return v


def check_user(v: str | None) -> str | None:
    if v is not None and not _USER_RE.match(v):
        raise ValueError("use UID[:GID] or NAME[:GROUP], e.g. 1000:1000 or nobody")
    return v

def _ulimits(value: Any) -> Any:
    if isinstance(value, dict):  # {"nofile": "1024:2048"} or {"nofile": {"soft": .., "hard": ..}}
        # each item is then parsed by the list item's own validator, so errors say ulimits[i]
        return [
            f"{k}={v}" if isinstance(v, (str, int)) and not isinstance(v, bool)
            else {"name": k, **v} if isinstance(v, dict) else v
            for k, v in value.items()
        ]
    return value


class JobSpec(SpecModel):
    """Everything Conveyor needs to run one job."""

    # required, except by the process backend, which runs the command on the host
    image: str | None = None
    command: Annotated[list[str] | None, BeforeValidator(_split_command)] = None
    args: Annotated[list[str], BeforeValidator(_split_command)] = Field(default_factory=list)
    entrypoint: Annotated[list[str] | None, BeforeValidator(_split_command)] = None
    env: Annotated[dict[str, str], BeforeValidator(_pairs)] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    name: str | None = None
    labels: Annotated[dict[str, str], BeforeValidator(_pairs)] = Field(default_factory=dict)
    mounts: list[Annotated[Mount, BeforeValidator(_mount_from_text)]] = Field(default_factory=list)
    network: str | None = None
    ports: list[Annotated[PortMapping, _from_text(PortMapping.parse)]] = Field(default_factory=list)
    ipc_mode: str | None = None
    uts_mode: str | None = None
    pid_mode: str | None = None
    privileged: bool = False
    read_only: bool = Field(default=False, description="mount the container's root filesystem read-only")
    init: bool = Field(default=False, description="run an init process as PID 1 that reaps zombies and forwards signals")
    shm_size: Bytes | None = None
    ulimits: Annotated[list[Annotated[Ulimit, _from_text(Ulimit.parse)]], BeforeValidator(_ulimits)] = Field(
        default_factory=list
    )
    restart: Annotated[RestartPolicy, _from_text(RestartPolicy.parse)] = Field(default_factory=RestartPolicy)
    auto_remove: bool = False
    timeout: Seconds | None = Field(default=None, description="terminate the job after this long")
    stop_grace: Seconds = Field(default=10.0, description="seconds between SIGTERM and SIGKILL")
    pull: PullPolicy = PullPolicy.IF_MISSING
    tty: bool = False
    stdin_open: bool = False
    resources: Resources = Field(default_factory=Resources)
    # scheduling (DRMAA2 JobTemplate: priority, deadlines); see the README's "Scheduling"
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher starts first")
    after: list[Annotated[Dependency, _from_text(Dependency.parse)]] = Field(default_factory=list)
    start_deadline: Seconds | None = Field(default=None, description="fail the job if not started this long after submission")
    retries: int = Field(default=0, ge=0, le=100, description="run a failed job again up to this many times")
    retry_backoff: Seconds = Field(default=0.0, description="wait before a retry; doubles each time")
    lease: str | None = Field(default=None, description="a lease id: the job draws from that lease's share of the node "
                              "(README: Leases)")
    # data (README: Data): staged in read-only at start, captured into the content store at the end
    inputs: list[Annotated[Input, _from_text(Input.parse)]] = Field(default_factory=list)
    outputs: list[Annotated[str, BeforeValidator(_output_path)]] = Field(default_factory=list)
    # which backend runs it (README: Backends); None: the node's container engine
    backend: BackendChoice | None = None

    # ---- field checks

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and not _IMAGE_RE.match(v) and not re.match(r"^(sha256:)?[a-f0-9]{12,64}$", v):
            raise ValueError("use an image reference like busybox, repo/name:tag or host:5000/name@sha256:...")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return check_env(v)

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str | None) -> str | None:
        return check_workdir(v)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        return check_user(v)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 253 or not _HOSTNAME_RE.match(v)):
            raise ValueError("use letters, digits and '-' in dot-separated labels of at most 63 characters")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME_RE.match(v):
            raise ValueError("names start with a letter or digit and use [A-Za-z0-9_.-], at most 128 characters")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_LABELS:
            raise ValueError(f"{len(v)} labels; at most {MAX_LABELS} (every list and filter reads them)")
        for key, value in v.items():
            if len(key) > MAX_LABEL or len(value) > MAX_LABEL or any(c < " " for c in key + value):
                raise ValueError(f"label {key[:64]!r}: keys and values have no control characters (NUL, newline, ...) "
                                 f"and at most {MAX_LABEL} characters each")
            if not key or (key.startswith(RESERVED_LABEL_PREFIX) and key != LABEL_CLIENT):
                raise ValueError(f"label {key!r}: keys must be non-empty and not start with '{RESERVED_LABEL_PREFIX}' "
                                 f"(but {LABEL_CLIENT}, the submitting tool's name)")
        return v

    @field_validator("network")
    @classmethod
    def _network(cls, v: str | None) -> str | None:
        if v is None or v in ("bridge", "none", "host") or v.startswith("container:") and len(v) > 10:
            return v
        if not _NAME_RE.match(v):
            raise ValueError("use bridge, none, host, container:<id> or the name of a docker network")
        return v

    @field_validator("ipc_mode", "uts_mode", "pid_mode")
    @classmethod
    def _namespace(cls, v: str | None, info) -> str | None:
        allowed = _NAMESPACE_MODES[info.field_name]
        if v is None or v in allowed or (info.field_name != "uts_mode" and v.startswith("container:") and len(v) > 10):
            return v
        extra = "" if info.field_name == "uts_mode" else ", container:<id>"
        raise ValueError(f"use one of {', '.join(sorted(m for m in allowed if m))}{extra}")

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("shm_size must be positive, e.g. 64m")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("timeout must be positive, e.g. 30s or 2h")
        return v

    @field_validator("start_deadline")
    @classmethod
    def _start_deadline(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("start_deadline must be positive, e.g. 10m (measured from submission)")
        return v

    @field_validator("retry_backoff")
    @classmethod
    def _backoff(cls, v: float) -> float:
        if v < 0:
            raise ValueError("retry_backoff must be zero or more seconds, e.g. 30s")
        return v

    @field_validator("after", mode="before")
    @classmethod
    def _after_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, int, dict)) and not isinstance(v, bool) else v

    @field_validator("stop_grace")
    @classmethod
    def _grace(cls, v: float) -> float:
        if v < 0:
            raise ValueError("stop_grace must be zero or more seconds")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> "JobSpec":
        targets = [m.target.rstrip("/") for m in self.mounts]
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise _bad("mounts", dupes, "more than one mount at the same target; mount each target once")
        if self.ports and self.network in ("none", "host") or self.ports and (self.network or "").startswith("container:"):
            raise _bad("ports", [p.container_port for p in self.ports], f"ports cannot be published with network {self.network!r}; use bridge or a named network")
        if self.hostname and (self.network == "host" or (self.network or "").startswith("container:")):
            raise _bad("hostname", self.hostname, f"a hostname cannot be set with network {self.network!r}")
        data_targets = [i.target for i in self.inputs]
        for field, paths in (("inputs", data_targets), ("outputs", self.outputs)):
            dupes = sorted({t for t in paths if paths.count(t) > 1 or t in targets})
            if dupes:
                raise _bad(field, dupes, "the same container path is used twice (by a mount, input or output); use each path once")
        overlap = sorted(set(data_targets) & set(self.outputs))
        if overlap:
            raise _bad("outputs", overlap, "an output cannot be an input path (inputs are read-only); write results elsewhere, e.g. /out")
        if self.auto_remove and self.restart.name != "no":
            raise _bad("auto_remove", True, f"auto_remove conflicts with restart policy {self.restart.name!r}; drop one of them")
        if self.image is None and self.backend_name not in ("process", "slurm"):
            raise _bad("image", None, "this field is required: containers run an image, e.g. busybox "
                       "(to run the command on the host instead, choose backend process; on a Slurm node, "
                       "backend slurm runs it as a process there)")
        if self.image is not None and self.backend_name == "process":
            raise _bad("image", self.image, "the process backend runs the command on the host, not in an image: "
                       "leave the image out, or choose a container backend")
        if self.image is None and not self.command and not self.entrypoint:
            raise _bad("command", None, "a host process has no image to take a command from: give one")
        if self.image and self.image.startswith("sha256:") and self.pull is PullPolicy.ALWAYS:
            raise _bad("pull", "always", "an image id cannot be pulled; use pull=if-missing or never")
        return self

    # ---- helpers

    @property
    def backend_name(self) -> str | None:
        """The backend the job asked for; None: the node's container engine."""
        return self.backend.name if self.backend is not None else None

    @property
    def full_command(self) -> list[str] | None:
        """The container's CMD: command followed by args (None keeps the image's CMD)."""
        if self.command is None and not self.args:
            return None
        return [*(self.command or []), *self.args]

    def digest(self) -> str:
        """A stable content digest of the spec, usable as an idempotency key. Fields left at
        their defaults are left out, so a field added in a later version keeps the digests
        of the specs that do not use it."""
        canonical = json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        return cls.model_validate(json.loads(text))

    @classmethod
    def from_file(cls, path: str | Path) -> "JobSpec":
        """Load a spec from YAML or JSON (JSON is YAML, so one loader serves both)."""
        from ..jobfile import read_job_file

        return cls.model_validate(read_job_file(path))


_SPECS: dict[str, JobSpec] = {}


def spec_from_json(text: str) -> JobSpec:
    """A stored or received spec, validated once per distinct text: array tasks and repeated
    submissions share one text, and listing 10,000 of them should not validate 10,000 times.
    Each caller gets its own (shallow) copy."""
    spec = _SPECS.get(text)
    if spec is None:
        spec = JobSpec.from_json(text)
        if len(_SPECS) >= 1024:
            _SPECS.pop(next(iter(_SPECS)))
        _SPECS[text] = spec
    return spec.model_copy()
