"""The backend (driver) surface: a small fixed set of calls, in the spirit of Nomad's task drivers.

The executor speaks only this; everything engine-specific lives in one module per engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from ..spec import JobSpec

# Labels every Conveyor container (and volume, network) carries: the engine is a witness
# from which a restarted executor can rediscover its work.
LABEL_MANAGED = "conveyor.managed"
LABEL_EXECUTOR = "conveyor.executor"
LABEL_JOB = "conveyor.job"
LABEL_NAME = "conveyor.name"


@dataclass(frozen=True)
class ContainerStatus:
    """What the engine says about a container, in engine-neutral terms."""

    id: str
    status: str  # created | running | paused | restarting | exited | dead | removing
    exit_code: int | None
    oom_killed: bool
    started_at: float | None
    finished_at: float | None
    error: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    @property
    def finished(self) -> bool:
        return self.status in ("exited", "dead") and self.finished_at is not None


@dataclass(frozen=True)
class EngineEvent:
    action: str  # start | die | oom | pause | unpause | destroy | ...
    container_id: str
    job_id: str | None
    time: float


class Backend(Protocol):
    name: str

    def ensure_image(self, spec: JobSpec, refresh: bool = True) -> None: ...
    def create(self, job_id: str, spec: JobSpec) -> str: ...
    def attach_stdin(self, container_id: str): ...
    def start(self, container_id: str) -> None: ...
    def stop(self, container_id: str, grace: float) -> None: ...
    def signal(self, container_id: str, signal: str) -> None: ...
    def pause(self, container_id: str) -> None: ...
    def unpause(self, container_id: str) -> None: ...
    def inspect(self, container_id: str) -> ContainerStatus | None: ...
    def stats(self, container_id: str) -> dict: ...
    def save_logs(self, container_id: str, stream: str, path: Path) -> int: ...
    def save_all_logs(self, container_id: str, paths: dict[str, Path]) -> dict[str, int]: ...
    def follow_logs(
        self, container_id: str, streams: tuple[str, ...], tail: int | None, follow: bool, timestamps: bool = False
    ) -> Iterator[tuple[str, bytes]]: ...
    def remove(self, container_id: str) -> None: ...
    def list(self) -> list[ContainerStatus]: ...
    def events(self, since: float | None) -> Iterator[EngineEvent]: ...
    def close_events(self) -> None: ...
    def remove_volumes_and_networks(self) -> dict[str, int]: ...
