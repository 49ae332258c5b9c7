"""LeaseSpec: what a lease asks for (README: Leases), validated like a job spec, so a bad value
is an InvalidSpec naming its field on every path."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from .base import SpecModel
from .parts import GpuVendor
from .units import Bytes, Seconds


class LeaseSpec(SpecModel):
    kind: ClassVar[str] = "lease request"

    cpus: float = Field(default=0.0, ge=0, le=4096, description="CPUs reserved, e.g. 4 or 1.5")
    memory: Bytes = Field(default=0, ge=0, description="memory reserved, e.g. 8g")
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs reserved")
    gpu_vendor: GpuVendor = GpuVendor.NVIDIA
    keepalive: Seconds = Field(default=30.0, description="the lease expires this long after its last renewal")
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("keepalive")
    @classmethod
    def _keepalive(cls, v: float) -> float:
        if not 0.5 <= v <= 86400:
            raise ValueError("the keepalive is between 0.5s and 24h, e.g. 30s")
        return v
