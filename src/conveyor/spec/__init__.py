"""JobSpec: the one validated description of a job.

Everything that reaches a backend went through these models. They accept the
docker CLI's spellings (``512m``, ``/src:/dst:ro``, ``nofile=1024:2048``, ``8080:80``)
wherever a user would type them — in Python, from CLI flags or from a YAML/JSON file —
and any bad value raises :class:`~conveyor.errors.InvalidSpec` naming the field,
the value and what is accepted.

The models live in submodules by concern (``units``, ``base``, ``parts``, ``jobspec``);
every name is re-exported here, so ``from conveyor.spec import X`` is the one way to import.
"""

from .base import SpecModel, _field_path
from .execspec import ExecSpec
from .jobspec import RESERVED_LABEL_PREFIX, JobSpec, spec_from_json
from .parts import (
    ULIMIT_NAMES,
    Dependency,
    GpuRequest,
    GpuVendor,
    Input,
    Mount,
    PortMapping,
    PullPolicy,
    Resources,
    RestartPolicy,
    Ulimit,
)
from .units import BYTES_HINT, DURATION_HINT, Bytes, Seconds, parse_bytes, parse_duration

__all__ = [
    "BYTES_HINT",
    "DURATION_HINT",
    "RESERVED_LABEL_PREFIX",
    "ULIMIT_NAMES",
    "Bytes",
    "Dependency",
    "ExecSpec",
    "GpuRequest",
    "GpuVendor",
    "Input",
    "JobSpec",
    "Mount",
    "PortMapping",
    "PullPolicy",
    "Resources",
    "RestartPolicy",
    "Seconds",
    "SpecModel",
    "Ulimit",
    "parse_bytes",
    "parse_duration",
    "spec_from_json",
]
