"""Moved to :mod:`conveyor.runtime` (watcher, finisher, stopper, deadlines); these names stay
importable from here for code written against earlier versions."""

from .runtime.deadlines import DeadlineTimer
from .runtime.finisher import classify

__all__ = ["DeadlineTimer", "classify"]
