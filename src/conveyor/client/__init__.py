"""The remote Client (see client.py); ``from conveyor import Client``."""

from .base import RemoteJob
from .client import Client

__all__ = ["Client", "RemoteJob"]
