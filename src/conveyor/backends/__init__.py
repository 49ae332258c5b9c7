"""Backends (drivers): one package per engine behind the interface in :mod:`.base`, and the
router (:mod:`.router`) that puts a node's backends behind that interface as one.

Each driver is imported only when a job needs it (the docker SDK alone costs ~0.2 s of
start-up), so ``open_backend`` is the one place that knows their modules.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConveyorError
from .base import Backend

BACKENDS = ("docker", "podman", "process")


def backend_class(name: str) -> type:
    """The driver class of ``name`` (its capabilities are class attributes), not connected."""
    if name == "docker":
        from .docker import DockerBackend

        return DockerBackend
    if name == "podman":
        from .docker.podman import PodmanBackend

        return PodmanBackend
    if name == "process":
        from .process import ProcessBackend

        return ProcessBackend
    raise ConveyorError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")


def open_backend(name: str, executor_id: str, *, url: str | None = None, root: Path | None = None) -> Backend:
    """Connect the driver ``name`` for the executor ``executor_id``. ``url``: a container
    engine's address (default: DOCKER_HOST or the local socket for docker, Conveyor's podman
    service socket for podman); ``root``: the directory the process backend keeps its runs in."""
    if name == "docker":
        from .docker import DockerBackend

        return DockerBackend(executor_id, base_url=url)
    if name == "podman":
        from .docker.podman import PodmanBackend

        return PodmanBackend(executor_id, base_url=url)
    if name == "process":
        from .process import ProcessBackend

        if root is None:
            raise ConveyorError("the process backend needs a directory for its runs")
        return ProcessBackend(executor_id, root)
    raise ConveyorError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
