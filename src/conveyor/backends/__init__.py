"""Backends (drivers): one package per engine behind the interface in :mod:`.base`, and the
router (:mod:`.router`) that puts a node's backends behind that interface as one.

Each driver is imported only when a job needs it (the docker SDK alone costs ~0.2 s of
start-up), so ``open_backend`` is the one place that knows their modules.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConveyorError
from .base import Backend

BACKENDS = ("docker", "podman", "swarm", "slurm", "process")


def backend_class(name: str) -> type:
    """The driver class of ``name`` (its capabilities are class attributes), not connected."""
    if name == "docker":
        from .docker import DockerBackend

        return DockerBackend
    if name == "podman":
        from .docker.podman import PodmanBackend

        return PodmanBackend
    if name == "swarm":
        from .swarm import SwarmBackend

        return SwarmBackend
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend
    if name == "process":
        from .process import ProcessBackend

        return ProcessBackend
    raise ConveyorError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")


def open_backend(name: str, executor_id: str, *, url: str | None = None, root: Path | None = None,
                 nodes: list[str] | tuple[str, ...] = (), shared_dir: Path | None = None) -> Backend:
    """Connect the driver ``name`` for the executor ``executor_id``. ``url``: a container
    engine's address (default: DOCKER_HOST or the local socket for docker, Conveyor's podman
    service socket for podman, the manager's for swarm); ``root``: a directory the backend may
    keep its own state in (the process backend's runs, the swarm backend's logs of stopping jobs);
    ``nodes``: a swarm's nodes' addresses; ``shared_dir``: a directory every swarm node sees at
    the same path, for jobs' inputs and outputs (required by slurm, whose jobs' directories are
    there; its ``url`` is the cluster's slurm.conf)."""
    if name == "docker":
        from .docker import DockerBackend

        return DockerBackend(executor_id, base_url=url)
    if name == "podman":
        from .docker.podman import PodmanBackend

        return PodmanBackend(executor_id, base_url=url)
    if name == "swarm":
        from .swarm import SwarmBackend

        if not url:
            raise ConveyorError("the swarm backend needs its manager's address: set [engine] url in config.toml, "
                                "e.g. unix:///run/conveyor-swarm/n1.sock or tcp://manager:2376")
        return SwarmBackend(executor_id, base_url=url, node_urls=nodes, cache_dir=root, shared_dir=shared_dir)
    if name == "slurm":
        from .slurm import SlurmBackend

        if shared_dir is None:
            raise ConveyorError("the slurm backend needs a directory every node mounts at the same path: set "
                                "[engine] shared_dir in config.toml, e.g. /shared/conveyor (README: Running under Slurm)")
        return SlurmBackend(executor_id, shared_dir, conf=url, cache_dir=root)
    if name == "process":
        from .process import ProcessBackend

        if root is None:
            raise ConveyorError("the process backend needs a directory for its runs")
        return ProcessBackend(executor_id, root)
    raise ConveyorError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
