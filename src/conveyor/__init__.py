"""Conveyor: run batch jobs in containers and keep them under control."""

from typing import TYPE_CHECKING

from .errors import (
    AgentError,
    ConveyorError,
    EngineUnavailable,
    ImageNotFound,
    InvalidSpec,
    InvalidState,
    JobNotFound,
    PolicyRefused,
    WaitTimeout,
)
from .state import JobState, Substate

# The spec models import pydantic (~0.2 s): loaded on first use, like Executor below.
_SPEC_NAMES = ("GpuRequest", "JobSpec", "Mount", "PortMapping", "PullPolicy", "Resources", "RestartPolicy", "Ulimit")

if TYPE_CHECKING:
    from .spec import GpuRequest, JobSpec, Mount, PortMapping, PullPolicy, Resources, RestartPolicy, Ulimit
    from .client import Client
    from .executor import Executor
    from .job import Job

__version__ = "0.1.0"


def __getattr__(name: str):
    # Executor pulls in the docker SDK (~0.2 s); load it on first use so that
    # `conveyor --help` and spec-only users do not pay for it.
    if name == "Executor":
        from .executor import Executor

        return Executor
    if name == "Client":  # the same interface, served by a running agent (`conveyor serve`)
        from .client import Client

        return Client
    if name == "Job":
        from .job import Job

        return Job
    if name in _SPEC_NAMES:
        from . import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
