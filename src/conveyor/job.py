"""Job: a read-only snapshot of one job, as returned by info(), list(), wait() and run()."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .spec import JobSpec
from .state import JobState
from .store import JobRecord


@dataclass(frozen=True)
class Job:
    id: str
    name: str | None
    state: JobState
    substate: str | None
    exit_code: int | None
    message: str | None
    spec: JobSpec
    container_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    logs_dir: Path

    @classmethod
    def from_record(cls, rec: JobRecord, logs_dir: Path) -> "Job":
        return cls(
            id=rec.id,
            name=rec.name,
            state=rec.state,
            substate=rec.substate,
            exit_code=rec.exit_code,
            message=rec.message,
            spec=rec.spec,
            container_id=rec.container_id,
            created_at=rec.created_at,
            started_at=rec.started_at,
            finished_at=rec.finished_at,
            logs_dir=logs_dir,
        )

    @property
    def image(self) -> str:
        return self.spec.image

    @property
    def command(self) -> list[str] | None:
        return self.spec.full_command

    @property
    def ok(self) -> bool:
        return self.state is JobState.DONE

    @property
    def stdout_bytes(self) -> bytes:
        return self._read("stdout")

    @property
    def stderr_bytes(self) -> bytes:
        return self._read("stderr")

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    def _read(self, stream: str) -> bytes:
        try:
            return (self.logs_dir / stream).read_bytes()
        except FileNotFoundError:
            return b""

    def to_dict(self) -> dict:
        res = self.spec.resources
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "substate": self.substate,
            "exit_code": self.exit_code,
            "message": self.message,
            "image": self.image,
            "command": self.command,
            "container_id": self.container_id,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "labels": self.spec.labels,
            "resources": res.model_dump(mode="json", exclude_none=True),
            "spec": self.spec.model_dump(mode="json", exclude_defaults=True),
        }
