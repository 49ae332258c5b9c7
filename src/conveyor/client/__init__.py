"""Clients of the agent: :class:`AgentAPI` (api.py: the REST API as plain data, standard
library only; the CLI's) and :class:`Client` (client.py: the library's interface over it).

``Client`` loads the job model (pydantic) when first named, so importing this package, as
the CLI does for ``AgentAPI``, stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import AgentAPI

if TYPE_CHECKING:
    from .client import Client, RemoteJob

__all__ = ["AgentAPI", "Client", "RemoteJob"]


def __getattr__(name: str):
    if name in ("Client", "RemoteJob"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'conveyor.client' has no attribute {name!r}")
