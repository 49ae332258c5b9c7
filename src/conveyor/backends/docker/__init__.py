"""The Docker driver: the only code in Conveyor that knows the Engine API or the docker SDK.

- ``mapping``: JobSpec -> Engine API, and inspect answers back; pure, no I/O.
- ``driver``: DockerBackend, the Backend interface (base.py) on the SDK's low-level client.
- ``translate``: the one place where SDK exceptions become Conveyor's engine errors.
- ``logs``: the engine's log stream, saved fast and atomically.
"""

from .driver import DockerBackend
from .mapping import container_config, conveyor_labels, gpu_host_config, host_config

__all__ = ["DockerBackend", "container_config", "conveyor_labels", "gpu_host_config", "host_config"]
