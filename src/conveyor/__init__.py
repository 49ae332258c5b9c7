"""Conveyor: run batch jobs in containers and keep them under control."""

from .errors import (
    ConveyorError,
    EngineUnavailable,
    ImageNotFound,
    InvalidSpec,
    InvalidState,
    JobNotFound,
    WaitTimeout,
)
from .executor import Executor
from .job import Job
from .spec import GpuRequest, JobSpec, Mount, PortMapping, PullPolicy, Resources, RestartPolicy, Ulimit
from .state import JobState, Substate

__version__ = "0.1.0"
