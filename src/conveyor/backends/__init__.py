"""Backends (drivers): one package per engine behind the interface in :mod:`.base`.

Each driver is imported only when a job needs it (the docker SDK alone costs ~0.2 s of
start-up), so ``open_backend`` is the one place that knows their modules.
"""

from __future__ import annotations

from ..errors import ConveyorError
from .base import Backend

BACKENDS = ("docker",)


def open_backend(name: str, executor_id: str, *, url: str | None = None) -> Backend:
    """Connect the driver ``name`` for the executor ``executor_id`` (``url``: the engine's
    address, default from the environment, e.g. DOCKER_HOST)."""
    if name == "docker":
        from .docker import DockerBackend

        return DockerBackend(executor_id, base_url=url)
    raise ConveyorError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
