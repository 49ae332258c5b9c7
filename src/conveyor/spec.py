"""JobSpec: the one validated description of a job.

Everything that reaches a backend went through these models. They accept the
docker CLI's spellings (``512m``, ``/src:/dst:ro``, ``nofile=1024:2048``, ``8080:80``)
wherever a user would type them — in Python, from CLI flags or from a YAML/JSON file —
and any bad value raises :class:`~conveyor.errors.InvalidSpec` naming the field,
the value and what is accepted.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InvalidSpec

# --------------------------------------------------------------------------- units

_BYTE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
BYTES_HINT = "use a number of bytes with an optional unit b, k, m, g, t (binary, as docker: 512m, 2g, 1.5Gi)"


def parse_bytes(value: Any) -> Any:
    """``"512m"`` -> 536870912. Units are binary (k=1024), like docker's. ``-1`` passes through."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "-1":
            return -1
        m = _BYTES_RE.match(text)
        if m and not (m.group(2) == "" and m.group(3).lower() == "i"):
            return int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()])
    raise ValueError(BYTES_HINT)


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_HINT = "use seconds or a duration like 90, 30s, 5m, 1h30m, 500ms"


def parse_duration(value: Any) -> Any:
    """``"1h30m"`` -> 5400.0 seconds; plain numbers are seconds."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(DURATION_HINT)
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
            raise ValueError(DURATION_HINT)
        pos, total = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        else:
            if pos == len(text) and pos > 0:
                return total
    raise ValueError(DURATION_HINT)


Bytes = Annotated[int, BeforeValidator(parse_bytes)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]

# --------------------------------------------------------------------------- base model


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "constrained-")):
            out += ("." if out else "") + str(part)
    return out or "spec"


def _invalid_from(err: ValidationError, model: type[BaseModel]) -> InvalidSpec:
    problems: list[tuple[str, object, str]] = []
    for e in err.errors():
        nested = (e.get("ctx") or {}).get("error")
        if isinstance(nested, InvalidSpec):  # a sub-model or model validator named the field itself
            base = _field_path(e["loc"])
            for field, value, hint in nested.problems:
                path = field if base == "spec" else (base if field == "spec" else f"{base}.{field}")
                problems.append((path, value, hint))
            continue
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check its spelling against the documented job fields"
        elif e["type"] == "missing":
            msg = "this field is required"
        problems.append((_field_path(e["loc"]), e.get("input"), msg))
    return InvalidSpec(problems)


class SpecModel(BaseModel):
    """Base for every spec model: strict about unknown fields, one error type on failure."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise _invalid_from(err, type(self)) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any):  # type: ignore[override]
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as err:
            raise _invalid_from(err, cls) from None

    def __setattr__(self, name: str, value: Any) -> None:
        # pydantic runs model validators after storing the new value: put the old one back
        # on failure, so a rejected assignment leaves the spec as valid as it was.
        before = dict(self.__dict__)
        try:
            super().__setattr__(name, value)
        except ValidationError as err:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise _invalid_from(err, type(self)) from None


def _bad(field: str, value: object, hint: str) -> InvalidSpec:
    """For model validators: an error that names the field it is about."""
    return InvalidSpec.single(field, value, hint)


def _from_text(parser):
    """Let a model be written as one string in docker's syntax (CLI flag or YAML)."""
    def convert(value: Any) -> Any:
        return parser(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else value

    return BeforeValidator(convert)


# --------------------------------------------------------------------------- mounts

_VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Mount(SpecModel):
    """A bind mount (host path), a named or anonymous volume, or a tmpfs."""

    type: Literal["bind", "volume", "tmpfs"]
    target: str
    source: str | None = None
    read_only: bool = False
    size: Bytes | None = Field(default=None, description="tmpfs size in bytes")

    @field_validator("target")
    @classmethod
    def _target_absolute(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") == "":
            raise ValueError("the container path must be absolute and not '/', e.g. /data")
        return v

    @model_validator(mode="after")
    def _check_kind(self) -> "Mount":
        if self.type == "bind":
            if not self.source or not self.source.startswith("/"):
                raise _bad("source", self.source, "a bind mount needs an absolute host path, e.g. /srv/data:/data")
        elif self.type == "volume":
            if self.source is not None and not _VOLUME_NAME_RE.match(self.source):
                raise _bad("source", self.source, "a volume name uses letters, digits, '_', '.', '-' (or give an absolute host path to bind)")
        elif self.source is not None:
            raise _bad("source", self.source, "a tmpfs mount takes no source")
        if self.size is not None and (self.type != "tmpfs" or self.size <= 0):
            raise _bad("size", self.size, "size applies to tmpfs mounts only and must be positive")
        return self

    @classmethod
    def parse(cls, text: str) -> "Mount":
        """docker ``-v`` syntax: ``/host:/ctr[:ro]``, ``name:/ctr[:ro]`` or ``/ctr`` (anonymous)."""
        parts = text.split(":")
        opts: list[str] = []
        if len(parts) == 1:
            return cls(type="volume", target=parts[0])
        if len(parts) == 3:
            opts = [o for o in parts[2].split(",") if o]
        elif len(parts) != 2:
            raise ValueError("use SOURCE:TARGET[:ro], e.g. /srv/data:/data:ro or myvol:/cache")
        unknown = set(opts) - {"ro", "rw", "z", "Z"}
        if unknown:
            raise ValueError(f"unknown mount option(s) {sorted(unknown)}; use ro or rw")
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        return cls(type=kind, source=source, target=target, read_only="ro" in opts)

    @classmethod
    def parse_long(cls, text: str) -> "Mount":
        """docker ``--mount`` syntax: ``type=bind,source=/x,target=/y,readonly``."""
        fields: dict[str, Any] = {}
        for item in filter(None, text.split(",")):
            key, eq, val = item.partition("=")
            key = key.strip().lower()
            if key in ("readonly", "ro"):
                fields["read_only"] = val.lower() in ("", "1", "true")
            elif key == "type":
                fields["type"] = val
            elif key in ("source", "src"):
                fields["source"] = val
            elif key in ("target", "destination", "dst"):
                fields["target"] = val
            elif key == "tmpfs-size":
                fields["size"] = val
            else:
                raise ValueError(f"unknown --mount key {key!r}; use type, source, target, readonly, tmpfs-size")
        return cls(**fields)


def _mount_from_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return (Mount.parse_long if value.startswith("type=") else Mount.parse)(value)


# --------------------------------------------------------------------------- data

_FILESET_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class Input(SpecModel):
    """Data staged into the job, read-only: a host file or directory (frozen into the content
    store when the job is submitted) or a fileset digest (``sha256:...``) already stored,
    e.g. another job's output. After submit the stored spec holds only digests."""

    source: str = Field(description="absolute host path, or a fileset digest sha256:<64 hex>")
    target: str = Field(description="absolute container path")
    file: bool = Field(default=False, description="the fileset holds one file, mounted at target itself")

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") == "" or "/../" in v + "/" or "\0" in v:
            raise ValueError("the container path must be absolute, not '/', without '..', e.g. /data")
        return v.rstrip("/")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v.startswith("sha256:"):
            if not _FILESET_RE.match(v):
                raise ValueError("a fileset digest is sha256: followed by 64 lowercase hex digits")
        elif not v.startswith("/"):
            raise ValueError("use an absolute host path (the CLI makes relative ones absolute) or sha256:<digest>")
        return v

    @property
    def frozen(self) -> bool:
        return self.source.startswith("sha256:")

    @classmethod
    def parse(cls, text: str) -> "Input":
        """``HOST_PATH:CONTAINER_PATH`` or ``sha256:<digest>:CONTAINER_PATH``."""
        text = str(text)
        if text.startswith("sha256:"):
            digest, sep, target = text[7:].partition(":")
            source = "sha256:" + digest
        else:
            source, sep, target = text.rpartition(":")
        if not sep or not source or not target:
            raise ValueError("use HOST_PATH:CONTAINER_PATH or sha256:DIGEST:CONTAINER_PATH, e.g. ./data:/data")
        return cls(source=source, target=target)


def _output_path(v: Any) -> Any:
    if isinstance(v, str):
        if not v.startswith("/") or v.rstrip("/") == "" or "/../" in v + "/" or "/./" in v + "/" or "\0" in v:
            raise ValueError("an output is an absolute container path, not '/', without '..', e.g. /out")
        return v.rstrip("/")
    return v


# --------------------------------------------------------------------------- ports

_PORT_RE = re.compile(
    r"^(?:(?:(?P<ip>\[[0-9a-fA-F:]+\]|[0-9.]+):)?(?P<host>\d*):)?(?P<ctr>\d+)(?:/(?P<proto>tcp|udp|sctp))?$"
)


class PortMapping(SpecModel):
    """Publish ``container_port``; ``host_port`` None lets the engine pick a free port."""

    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    host_port: int | None = Field(default=None, ge=1, le=65535)
    host_ip: str | None = None

    @classmethod
    def parse(cls, text: str | int) -> "PortMapping":
        """docker ``-p`` syntax: ``80``, ``8080:80``, ``127.0.0.1:8080:80/udp``, ``127.0.0.1::80``."""
        m = _PORT_RE.match(str(text).strip())
        if not m:
            raise ValueError("use [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp], e.g. 8080:80")
        return cls(
            container_port=int(m["ctr"]),
            protocol=m["proto"] or "tcp",
            host_port=int(m["host"]) if m["host"] else None,
            host_ip=m["ip"].strip("[]") if m["ip"] else None,
        )


# --------------------------------------------------------------------------- ulimits

ULIMIT_NAMES = frozenset(
    "core cpu data fsize locks memlock msgqueue nice nofile nproc rss rtprio rttime sigpending stack".split()
)


class Ulimit(SpecModel):
    name: str
    soft: int
    hard: int

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ULIMIT_NAMES:
            raise ValueError(f"unknown ulimit; use one of {', '.join(sorted(ULIMIT_NAMES))}")
        return v

    @model_validator(mode="after")
    def _order(self) -> "Ulimit":
        for field, v in (("soft", self.soft), ("hard", self.hard)):
            if v < -1:
                raise _bad(field, v, "limits are non-negative, or -1 for unlimited")
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise _bad("soft", self.soft, f"the soft limit exceeds the hard limit {self.hard}")
        return self

    @classmethod
    def parse(cls, text: str) -> "Ulimit":
        """docker ``--ulimit`` syntax: ``nofile=1024:2048`` or ``memlock=-1``."""
        name, eq, limits = str(text).partition("=")
        if not eq or not limits:
            raise ValueError("use NAME=SOFT[:HARD], e.g. nofile=1024:2048 or memlock=-1")
        soft, _, hard = limits.partition(":")
        try:
            return cls(name=name.strip(), soft=int(soft), hard=int(hard or soft))
        except ValueError as exc:
            if isinstance(exc, InvalidSpec):
                raise
            raise ValueError("limits are integers (-1 = unlimited), e.g. nofile=1024:2048") from None


# --------------------------------------------------------------------------- restart, gpus


class RestartPolicy(SpecModel):
    name: Literal["no", "on-failure", "always", "unless-stopped"] = "no"
    max_retries: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _retries_only_on_failure(self) -> "RestartPolicy":
        if self.max_retries and self.name != "on-failure":
            raise _bad("max_retries", self.max_retries, "max_retries applies to the on-failure policy only")
        return self

    @classmethod
    def parse(cls, text: str) -> "RestartPolicy":
        name, _, retries = str(text).partition(":")
        if retries and not retries.isdigit():
            raise ValueError("use no, always, unless-stopped or on-failure[:MAX_RETRIES]")
        return cls(name=name, max_retries=int(retries or 0))


class GpuVendor(str, Enum):
    NVIDIA = "nvidia"
    AMD = "amd"
    INTEL = "intel"


class GpuRequest(SpecModel):
    """GPUs for a job: all of them (``count`` and ``device_ids`` unset), a count, or device ids."""

    vendor: GpuVendor = GpuVendor.NVIDIA
    count: int | None = Field(default=None, ge=1)
    device_ids: list[str] = Field(default_factory=list)

    @property
    def all(self) -> bool:
        return self.count is None and not self.device_ids

    @model_validator(mode="after")
    def _one_way(self) -> "GpuRequest":
        if self.count is not None and self.device_ids:
            raise _bad("count", self.count, "give either a GPU count or device ids, not both")
        if any(not d.strip() or "," in d for d in self.device_ids):
            raise _bad("device_ids", self.device_ids, "device ids are non-empty strings such as '0' or 'GPU-3f2a...'")
        return self

    @classmethod
    def parse(cls, text: str | int, vendor: str | None = None) -> "GpuRequest":
        """docker ``--gpus`` syntax: ``all``, ``2``, ``device=0,1`` (quotes allowed)."""
        raw = str(text).strip().strip("'\"")
        extra = {"vendor": vendor} if vendor else {}
        if raw == "all":
            return cls(**extra)
        if raw.isdigit():
            return cls(count=int(raw), **extra)
        if raw.startswith("device="):
            return cls(device_ids=[d.strip() for d in raw[len("device="):].split(",")], **extra)
        raise ValueError("use all, a count (2) or device=ID[,ID...]")


class Resources(SpecModel):
    cpus: float | None = Field(default=None, gt=0, le=4096, description="fractional CPUs, e.g. 1.5")
    memory: Bytes | None = Field(default=None, description="memory limit, e.g. 512m")
    memory_swap: Bytes | None = Field(default=None, description="memory+swap limit; -1 = unlimited swap")
    pids_limit: int | None = None
    gpus: Annotated[GpuRequest | None, _from_text(GpuRequest.parse)] = None

    @model_validator(mode="after")
    def _check(self) -> "Resources":
        if self.memory is not None and self.memory < 6 * (1 << 20):
            raise _bad("memory", self.memory, "memory must be at least 6m (the engine's minimum)")
        if self.memory_swap is not None:
            if self.memory is None:
                raise _bad("memory_swap", self.memory_swap, "memory_swap needs memory to be set too")
            if self.memory_swap != -1 and self.memory_swap < self.memory:
                raise _bad("memory_swap", self.memory_swap, "memory_swap is memory plus swap, so it must be >= memory (or -1)")
        if self.pids_limit is not None and (self.pids_limit == 0 or self.pids_limit < -1):
            raise _bad("pids_limit", self.pids_limit, "pids_limit must be positive, or -1 for unlimited")
        return self


class PullPolicy(str, Enum):
    NEVER = "never"
    IF_MISSING = "if-missing"
    ALWAYS = "always"

    @classmethod
    def _missing_(cls, value: object) -> "PullPolicy | None":
        return cls.IF_MISSING if value == "missing" else None  # docker's spelling


# --------------------------------------------------------------------------- scheduling


class Dependency(SpecModel):
    """Start only after another job (or every task of an array) has finished: ``ok`` needs it
    to end Done, ``any`` only needs it to end."""

    job: str = Field(min_length=1)
    condition: Literal["ok", "any"] = "ok"

    @classmethod
    def parse(cls, text: str | int) -> "Dependency":
        """``--after`` syntax: ``ID``, ``ID:ok`` or ``ID:any`` (ID: a job id, prefix, name or array id)."""
        ref, _, cond = str(text).strip().partition(":")
        if not ref or cond not in ("", "ok", "any"):
            raise ValueError("use ID, ID:ok (finished successfully) or ID:any (finished at all)")
        return cls(job=ref, condition=cond or "ok")


# --------------------------------------------------------------------------- the job

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

    image: str
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
    # data (README: Data): staged in read-only at start, captured into the content store at the end
    inputs: list[Annotated[Input, _from_text(Input.parse)]] = Field(default_factory=list)
    outputs: list[Annotated[str, BeforeValidator(_output_path)]] = Field(default_factory=list)

    # ---- field checks

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not _IMAGE_RE.match(v) and not re.match(r"^(sha256:)?[a-f0-9]{12,64}$", v):
            raise ValueError("use an image reference like busybox, repo/name:tag or host:5000/name@sha256:...")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, val in v.items():
            if not key or "=" in key or "\0" in key or "\0" in val:
                raise ValueError(f"bad variable {key!r}: names are non-empty without '=', values have no NUL")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("the working directory must be an absolute container path, e.g. /work")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and not _USER_RE.match(v):
            raise ValueError("use UID[:GID] or NAME[:GROUP], e.g. 1000:1000 or nobody")
        return v

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
        for key in v:
            if not key or key.startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(f"label {key!r}: keys must be non-empty and not start with '{RESERVED_LABEL_PREFIX}'")
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
        if self.image.startswith("sha256:") and self.pull is PullPolicy.ALWAYS:
            raise _bad("pull", "always", "an image id cannot be pulled; use pull=if-missing or never")
        return self

    # ---- helpers

    @property
    def full_command(self) -> list[str] | None:
        """The container's CMD: command followed by args (None keeps the image's CMD)."""
        if self.command is None and not self.args:
            return None
        return [*(self.command or []), *self.args]

    def digest(self) -> str:
        """A stable content digest of the spec, usable as an idempotency key."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        return cls.model_validate(json.loads(text))

    @classmethod
    def from_file(cls, path: str | Path) -> "JobSpec":
        """Load a spec from YAML or JSON (JSON is YAML, so one loader serves both)."""
        import yaml  # only when a file is read: keeps CLI start-up short

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise InvalidSpec.single("file", str(path), f"cannot read it: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise InvalidSpec.single("file", str(path), f"not valid YAML/JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidSpec.single("file", str(path), "the file must hold a mapping of job fields (image: ...)")
        return cls.model_validate(data)


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
