"""Conveyor: run batch jobs in containers and keep them under control."""

from typing import TYPE_CHECKING

from .errors import (
    ConveyorError,
    EngineUnavailable,
    ImageNotFound,
    InvalidSpec,
    InvalidState,
    JobNotFound,
    WaitTimeout,
)
from .spec import GpuRequest, JobSpec, Mount, PortMapping, PullPolicy, Resources, RestartPolicy, Ulimit
from .state import JobState, Substate

if TYPE_CHECKING:
    from .executor import Executor
    from .job import Job

__version__ = "0.1.0"


def __getattr__(name: str):
    # Executor pulls in the docker SDK (~0.2 s); load it on first use so that
    # `conveyor --help` and spec-only users do not pay for it.
    if name == "Executor":
        from .executor import Executor

        return Executor
    if name == "Job":
        from .job import Job

        return Job
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
