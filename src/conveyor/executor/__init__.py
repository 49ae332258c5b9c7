"""The embedded Executor (see executor.py); ``from conveyor import Executor``."""

from .executor import Executor

__all__ = ["Executor"]
