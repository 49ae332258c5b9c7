"""The remote Client (see client.py); ``from conveyor import Client``."""

from .client import Client, RemoteJob

__all__ = ["Client", "RemoteJob"]
