"""The parts a JobSpec is made of: mounts, data inputs and output paths, published ports,
ulimits, the restart policy, GPUs and resources, the pull policy and dependencies on other
jobs. Each part that a user writes in docker's CLI syntax has a ``parse`` for it."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..errors import InvalidSpec
from .base import SpecModel, _bad, _from_text
from .units import Bytes

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
        """docker ``--gpus`` syntax: ``all``, ``2``, ``device=0,1`` (quotes allowed), optionally
        after a vendor: ``amd:all``, ``intel:device=0`` (what `--gpus` + `--gpu-vendor` send)."""
        raw = str(text).strip().strip("'\"")
        head, colon, rest = raw.partition(":")
        if colon and head.lower() in {v.value for v in GpuVendor}:
            vendor, raw = vendor or head.lower(), rest.strip()
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
