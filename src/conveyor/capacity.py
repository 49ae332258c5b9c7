"""Node capacity and admission: what this node can hold, what each job asks for, and a
ledger of what running jobs hold.

- :class:`SchedulingConfig` is the operator's configuration: ``config.toml`` in the state
  directory, overlaid with ``Executor(scheduling={...})``.
- :func:`node_capacity` is what jobs may use: the machine (machine.py) minus the reserve, or
  explicit numbers.
- :func:`request_for` is what one job asks for (its spec, or the configured defaults).
- :class:`Ledger` adds up what running jobs hold and assigns GPUs by device id. It keeps
  nothing on disk: the scheduler rebuilds it from the store, so it survives a crash.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConveyorError, InvalidSpec
from .machine import Machine, discover
from .spec import Bytes, JobSpec, Seconds, _field_path

CONFIG_FILE = "config.toml"
MILLI = 1000  # CPUs are counted in thousandths so sums never drift
LEASE_PREFIX = "lease:"  # a live lease's share is booked in the node's ledger as one holder under this key


class ConfigError(ConveyorError):
    """The scheduling configuration (config.toml or Executor(scheduling=...)) is not valid."""


# --------------------------------------------------------------------------- configuration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CapacityConfig(_Section):
    """Explicit capacity; what is left out is discovered from the machine."""

    cpus: float | None = Field(default=None, gt=0)
    memory: Bytes | None = Field(default=None, ge=0)
    gpus: dict[str, list[str] | int] | None = None  # {"nvidia": ["0", "1"]} or {"amd": 2}

    @field_validator("gpus")
    @classmethod
    def _vendors(cls, v):
        for vendor, ids in (v or {}).items():
            if vendor not in ("nvidia", "amd", "intel"):
                raise ValueError(f"unknown GPU vendor {vendor!r}; use nvidia, amd or intel")
            if isinstance(ids, int) and ids < 0:
                raise ValueError("a GPU count cannot be negative")
        return v


class ReserveConfig(_Section):
    """Kept back for the system and the engine when capacity is discovered."""

    cpus: float = Field(default=0.0, ge=0)
    memory: Bytes = Field(default=0, ge=0)


class DefaultsConfig(_Section):
    """What a job that does not say is counted as using. Nothing, unless the operator says:
    a sleeping or I/O-bound job uses no CPU, and counting every job as one CPU would cap a
    2-core node at 2 jobs. Set ``[defaults] cpus = 1`` for batch-system behaviour."""

    cpus: float = Field(default=0.0, ge=0)
    memory: Bytes = Field(default=0, ge=0)


class LimitsConfig(_Section):
    # None: RUNNING_PER_CPU per CPU of capacity. Jobs that request nothing count as using
    # nothing, so without a cap 10,000 queued sleep jobs would all start at once.
    max_running: int | None = Field(default=None, ge=1, description="jobs running at once on this executor")
    max_array_size: int = Field(default=100_000, ge=1)
    gpu_sharing: int = Field(default=1, ge=1, description="jobs that may share one GPU")
    backfill_window: Seconds = Field(default=300.0, ge=0, description="how long a blocked job lets smaller ones pass")


class AgentConfig(_Section):
    """The agent (`conveyor serve`), started by the CLI on demand, stays like dockerd; an
    operator can let it go when nothing needs it."""

    idle_exit: Seconds | None = Field(default=None, gt=0, description="stop after this long with no live job and no request")
    open_metrics: bool = Field(default=False, description="serve /v1/metrics without a token (for a Prometheus scraper)")
    open_dashboard: bool = Field(default=False, description="let callers without a token read (the dashboard at /ui and "
                                 "the API's reads); they can change nothing")


class UsageConfig(_Section):
    """Sampling each running job's resource usage (runtime/sampler.py): one thread for all."""

    interval: Seconds = Field(default=2.0, ge=0, description="seconds between samples of every running job; 0: no sampling")
    samples: int = Field(default=60, ge=1, le=100_000, description="samples kept per running job (the series' length)")


class RetentionConfig(_Section):
    """How much history the node keeps (README: Retention); unset: everything. Saved logs are
    capped as they are saved; `conveyor prune` removes the ended jobs the rules let go."""

    keep_days: float | None = Field(default=None, gt=0, description="prune jobs that ended more than this many days ago")
    keep_last: int | None = Field(default=None, ge=0, description="but keep the newest N ended jobs, whatever their age")
    log_max_bytes: Bytes | None = Field(default=None, ge=1024, description="a saved stdout or stderr over this keeps "
                                        "its first and last halves and a line saying where and how much was cut")
    logs_total_bytes: Bytes | None = Field(default=None, ge=1024, description="prune also drops the saved logs of the "
                                           "oldest ended jobs (saying so) until all logs take at most this")


class EngineConfig(_Section):
    """The node's container engine: Docker, or Podman through its Docker-compatible API, or
    none (a machine without one runs process jobs only). ``$CONVEYOR_ENGINE`` (``--engine`` on
    ``conveyor serve``) overrides ``name``."""

    name: str = Field(default="docker", description="docker, podman, swarm (a Docker Swarm manager), slurm (a "
                      "Slurm cluster) or none")
    url: str | None = Field(default=None, description="the engine's API address; default: DOCKER_HOST or the "
                            "local socket for docker, unix:///run/conveyor-podman/podman.sock for podman; "
                            "slurm: the cluster's slurm.conf (default: SLURM_CONF, or Slurm's own default)")
    nodes: list[str] = Field(default_factory=list, description="swarm: each node's Engine API address, so Conveyor "
                             "can load images on every node and remove task containers Swarm leaves behind")
    shared_dir: Path | None = Field(default=None, description="swarm, slurm: a directory every node mounts at the same "
                                    "path (NFS, CephFS, ...); jobs' inputs are staged and their outputs written there")

    @field_validator("shared_dir")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_absolute():
            raise ValueError("the shared directory is an absolute path, the same on every node, e.g. /shared/conveyor")
        return v

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ("docker", "podman", "swarm", "slurm", "none"):
            raise ValueError("the container engine is docker, podman, swarm, slurm or none")
        return v


class SchedulingConfig(_Section):
    """The node's config.toml: capacity and scheduling, and the agent's own settings."""

    agent: AgentConfig = Field(default_factory=AgentConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    reserve: ReserveConfig = Field(default_factory=ReserveConfig)
    defaults: DefaultsConfig = Field(default_factory=DefaultsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    label_caps: dict[str, int] = Field(default_factory=dict, description='{"team=ml": 4}')

    @field_validator("label_caps")
    @classmethod
    def _caps(cls, v: dict[str, int]) -> dict[str, int]:
        for key, cap in v.items():
            name, eq, value = key.partition("=")
            if not eq or not name:
                raise ValueError(f"{key!r}: a cap is keyed by KEY=VALUE, e.g. \"team=ml\" = 4")
            if cap < 0:
                raise ValueError(f"{key!r}: a cap is zero or more jobs")
        return v

    @property
    def caps(self) -> list[tuple[str, str, int]]:
        return [(*k.split("=", 1), n) for k, n in self.label_caps.items()]  # type: ignore[misc]

    @classmethod
    def load(cls, root: str | os.PathLike | None = None, overrides: "dict | SchedulingConfig | None" = None) -> "SchedulingConfig":
        """``<root>/config.toml`` (if any) with ``overrides`` laid over it, section by section."""
        data: dict[str, Any] = {}
        path = Path(root) / CONFIG_FILE if root is not None else None
        if path is not None and path.exists():
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        if isinstance(overrides, SchedulingConfig):
            overrides = overrides.model_dump(exclude_unset=True)
        if os.environ.get("CONVEYOR_ENGINE"):  # the environment over the file, the caller over both
            data = _merge(data, {"engine": {"name": os.environ["CONVEYOR_ENGINE"]}})
        data = _merge(data, overrides or {})
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            where = str(path) if path is not None and path.exists() else "scheduling configuration"
            lines = [f"{_field_path(e['loc'])}: {e.get('input')!r}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()]
            raise ConfigError(f"{where}: " + "; ".join(lines)) from None


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# --------------------------------------------------------------------------- capacity

RUNNING_PER_CPU = 32  # the default max_running, per CPU of capacity


@dataclass(frozen=True)
class Capacity:
    """What jobs may use on this node, after the reserve."""

    cpus_m: int
    memory: int
    gpus: dict[str, tuple[str, ...]]
    gpu_sharing: int = 1
    machine: Machine | None = None
    reserve: tuple[float, int] = (0.0, 0)
    max_running: int | None = None

    @property
    def cpus(self) -> float:
        return self.cpus_m / MILLI

    def to_dict(self) -> dict:
        return {
            "cpus": self.cpus,
            "memory": self.memory,
            "gpus": {k: list(v) for k, v in self.gpus.items()},
            "max_running": self.max_running,
        }


def node_capacity(config: SchedulingConfig, machine: Machine | None = None) -> Capacity:
    """Explicit capacity where configured; elsewhere the machine minus the reserve."""
    cap = config.capacity
    need_machine = cap.cpus is None or cap.memory is None or cap.gpus is None
    machine = machine or (discover() if need_machine else None)
    cpus = cap.cpus if cap.cpus is not None else max(0.0, machine.cpus - config.reserve.cpus)
    memory = cap.memory if cap.memory is not None else max(0, machine.memory - config.reserve.memory)
    if cap.gpus is not None:
        gpus = {v: tuple(str(i) for i in (range(ids) if isinstance(ids, int) else ids)) for v, ids in cap.gpus.items()}
    else:
        gpus = {v: tuple(ids) for v, ids in machine.gpus.items()}
    return Capacity(
        cpus_m=int(round(cpus * MILLI)),
        memory=int(memory),
        gpus={v: ids for v, ids in gpus.items() if ids},
        gpu_sharing=config.limits.gpu_sharing,
        machine=machine,
        reserve=(config.reserve.cpus, config.reserve.memory),
        max_running=config.limits.max_running or max(RUNNING_PER_CPU, int(RUNNING_PER_CPU * math.ceil(cpus))),
    )


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    """What one job is counted as using. ``gpu_count`` -1 means every GPU of the vendor."""

    cpus_m: int = 0
    memory: int = 0
    gpu_vendor: str | None = None
    gpu_count: int = 0
    gpu_ids: tuple[str, ...] = ()

    @property
    def cpus(self) -> float:
        return self.cpus_m / MILLI

    def gpus_json(self) -> str | None:
        if self.gpu_vendor is None:
            return None
        return json.dumps({"vendor": self.gpu_vendor, "count": self.gpu_count, "ids": list(self.gpu_ids)})

    @classmethod
    def from_columns(cls, cpus: float | None, memory: int | None, gpus: str | None) -> "Request":
        g = json.loads(gpus) if gpus else {}
        return cls(
            cpus_m=int(round((cpus or 0) * MILLI)),
            memory=memory or 0,
            gpu_vendor=g.get("vendor"),
            gpu_count=g.get("count", 0),
            gpu_ids=tuple(g.get("ids") or ()),
        )

    def describe(self) -> str:
        parts = [f"{self.cpus:g} CPU"]
        if self.memory:
            parts.append(_human(self.memory))
        if self.gpu_vendor:
            what = "all" if self.gpu_count == -1 else ",".join(self.gpu_ids) if self.gpu_ids else str(self.gpu_count)
            parts.append(f"{self.gpu_vendor} GPU {what}")
        return " + ".join(parts)


def request_for(spec: JobSpec, config: SchedulingConfig) -> Request:
    res = spec.resources
    cpus = res.cpus if res.cpus is not None else config.defaults.cpus
    memory = res.memory if res.memory is not None else config.defaults.memory
    vendor, count, ids = None, 0, ()
    if res.gpus is not None:
        vendor = res.gpus.vendor.value
        if res.gpus.device_ids:
            ids = tuple(res.gpus.device_ids)
            count = len(ids)
        else:
            count = -1 if res.gpus.all else int(res.gpus.count or 0)
    return Request(cpus_m=int(round(cpus * MILLI)), memory=int(memory), gpu_vendor=vendor, gpu_count=count, gpu_ids=ids)


def check_possible(req: Request, cap: Capacity) -> None:
    """Raise InvalidSpec, naming the field, when the request can never fit on this node."""
    problems = []
    if req.cpus_m > cap.cpus_m:
        problems.append(("resources.cpus", req.cpus, f"this node can give a job at most {cap.cpus:g} CPUs{_reserve_note(cap)}; ask for fewer"))
    if req.memory > cap.memory:
        problems.append(("resources.memory", _human(req.memory), f"this node can give a job at most {_human(cap.memory)}{_reserve_note(cap)}; ask for less"))
    if req.gpu_vendor is not None:
        have = cap.gpus.get(req.gpu_vendor, ())
        if not have:
            problems.append(("resources.gpus", req.gpu_vendor, f"this node has no {req.gpu_vendor} GPUs"))
        elif req.gpu_ids and set(req.gpu_ids) - set(have):
            missing = sorted(set(req.gpu_ids) - set(have))
            problems.append(("resources.gpus.device_ids", missing, f"this node's {req.gpu_vendor} GPUs are {', '.join(have)}"))
        elif req.gpu_count > len(have):
            problems.append(("resources.gpus.count", req.gpu_count, f"this node has {len(have)} {req.gpu_vendor} GPU(s)"))
    if problems:
        raise InvalidSpec(problems)


def _reserve_note(cap: Capacity) -> str:
    cpus, memory = cap.reserve
    if not (cpus or memory):
        return ""
    return f" (after a reserve of {cpus:g} CPUs and {_human(memory)})"


def _human(n: int) -> str:
    for unit, size in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return f"{n}b"


# --------------------------------------------------------------------------- the ledger


@dataclass
class Ledger:
    """What running jobs hold. ``fit`` answers whether a request fits in what is free;
    ``take`` books it (assigning GPUs by id) and ``release`` gives it back."""

    cap: Capacity
    cpus_m: int = 0
    memory: int = 0
    gpu_use: dict[tuple[str, str], int] = field(default_factory=dict)
    jobs: dict[str, tuple[Request, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def free_cpus_m(self) -> int:
        return self.cap.cpus_m - self.cpus_m

    @property
    def free_memory(self) -> int:
        return self.cap.memory - self.memory

    def _free_gpus(self, vendor: str) -> list[str]:
        return [g for g in self.cap.gpus.get(vendor, ()) if self.gpu_use.get((vendor, g), 0) < self.cap.gpu_sharing]

    def _pick_gpus(self, req: Request) -> tuple[str, ...] | None:
        if req.gpu_vendor is None:
            return ()
        free = self._free_gpus(req.gpu_vendor)
        if req.gpu_ids:
            return req.gpu_ids if set(req.gpu_ids) <= set(free) else None
        want = len(self.cap.gpus.get(req.gpu_vendor, ())) if req.gpu_count == -1 else req.gpu_count
        return tuple(free[:want]) if len(free) >= want else None

    def shortfall(self, req: Request) -> str | None:
        """None if the request fits in what is free now, else what is missing."""
        missing = []
        if req.cpus_m > self.free_cpus_m:
            missing.append(f"cpus (needs {req.cpus:g}, {max(0, self.free_cpus_m) / MILLI:g} free)")
        if req.memory > self.free_memory:
            missing.append(f"memory (needs {_human(req.memory)}, {_human(max(0, self.free_memory))} free)")
        if req.gpu_vendor is not None and self._pick_gpus(req) is None:
            missing.append(f"gpus (needs {req.gpu_vendor} {req.gpu_count if req.gpu_count >= 0 else 'all'}, "
                           f"{len(self._free_gpus(req.gpu_vendor))} free)")
        return "; ".join(missing) or None

    def take(self, job_id: str, req: Request, gpu_ids: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """Book a request (the caller checked it fits; a job recovered from the store is booked
        with the GPUs it already has, even if that oversubscribes)."""
        if job_id in self.jobs:
            return self.jobs[job_id][1]
        if gpu_ids is None:
            gpu_ids = self._pick_gpus(req) or ()
        self.cpus_m += req.cpus_m
        self.memory += req.memory
        for g in gpu_ids:
            key = (req.gpu_vendor or "", g)
            self.gpu_use[key] = self.gpu_use.get(key, 0) + 1
        self.jobs[job_id] = (req, tuple(gpu_ids))
        return tuple(gpu_ids)

    def release(self, job_id: str) -> None:
        held = self.jobs.pop(job_id, None)
        if held is None:
            return
        req, gpu_ids = held
        self.cpus_m -= req.cpus_m
        self.memory -= req.memory
        for g in gpu_ids:
            key = (req.gpu_vendor or "", g)
            self.gpu_use[key] -= 1

    def in_use(self) -> dict:
        leases = sum(1 for holder in self.jobs if holder.startswith(LEASE_PREFIX))
        return {
            "cpus": self.cpus_m / MILLI,
            "memory": self.memory,
            "gpus": {f"{v}:{g}": n for (v, g), n in sorted(self.gpu_use.items()) if n},
            "jobs": len(self.jobs) - leases,
            "leases": leases,
        }
