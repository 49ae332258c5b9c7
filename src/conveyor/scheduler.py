"""Moved to :mod:`conveyor.runtime` (planner, scheduler, launcher); these names stay
importable from here for code written against earlier versions."""

from .runtime.launcher import runtime_spec
from .runtime.planner import Inflight, Plan, Planner
from .runtime.scheduler import Scheduler

__all__ = ["Inflight", "Plan", "Planner", "Scheduler", "runtime_spec"]
