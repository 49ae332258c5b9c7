"""The records callers get back: Job (a read-only snapshot of one job) and Transition (one entry
of a job's state history). Each has exactly one wire form, ``to_dict``/``from_dict``, used by the
agent's answers, the client's decoding and the CLI's ``--json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import JobSpec, spec_from_json
from .state import JobState


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
    node: str | None = None  # the machine it runs or ran on, when the engine has several (swarm)
    # Its resource usage totals, kept while it runs and final once it ended (see runtime/sampler.py)
    usage: dict | None = None

    @property
    def image(self) -> str | None:  # None: a process job
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
            "node": self.node,
            "usage": self.usage,
            "labels": self.spec.labels,
            "resources": res.model_dump(mode="json", exclude_none=True),
            "spec": self.spec.model_dump(mode="json", exclude_defaults=True),
            "logs_dir": str(self.logs_dir),
        }

    @classmethod
    def fields_from_dict(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The constructor's arguments from ``to_dict``'s form (image, labels, ... are derived)."""
        import json

        values: dict[str, Any] = {}
        for f in dataclasses.fields(Job):
            value = data.get(f.name)
            if f.name == "spec":
                # validated once per distinct spec: a 10,000-job list of array tasks shares one
                value = spec_from_json(json.dumps(value, sort_keys=True))
            elif f.name == "state":
                value = JobState(value)
            elif f.name == "logs_dir":
                value = Path(value)
            values[f.name] = value
        return values

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Job":
        return cls(**cls.fields_from_dict(data))


@dataclass(frozen=True)
class Transition:
    """One committed state change; ``seq`` orders them all (the events stream's cursor)."""

    seq: int
    job_id: str
    at: float
    from_state: JobState | None
    to_state: JobState
    substate: str | None
    reason: str | None

    def to_dict(self) -> dict:
        return {
            "seq": self.seq, "job_id": self.job_id, "at": self.at,
            "from_state": self.from_state.value if self.from_state else None,
            "to_state": self.to_state.value, "substate": self.substate, "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Transition":
        return cls(
            data["seq"], data["job_id"], data["at"], JobState(data["from_state"]) if data["from_state"] else None,
            JobState(data["to_state"]), data["substate"], data["reason"],
        )

    @classmethod
    def from_row(cls, row: tuple) -> "Transition":
        seq, job_id, at, src, dst, substate, reason = row
        return cls(seq, job_id, at, JobState(src) if src else None, JobState(dst), substate, reason)

    COLUMNS = "seq, job_id, at, from_state, to_state, substate, reason"
