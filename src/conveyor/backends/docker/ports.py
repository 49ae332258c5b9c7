"""TCP connections to a running container's ports, made from this machine to the container's
address on its network (`conveyor port-forward`): the engine's bridge is routed here."""

from __future__ import annotations

import socket

from ..base import EngineError
from .translate import engine_errors

CONNECT_TIMEOUT = 10.0


class PortsMixin:
    """Part of DockerBackend: needs ``self.api``."""

    def open_port(self, handle: str, port: int) -> socket.socket:
        with engine_errors():
            info = self.api.inspect_container(handle)
        address = _address(info)
        if address is None:
            raise EngineError(f"the container has no address on a network ({info['HostConfig'].get('NetworkMode')})")
        try:
            sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise EngineError(f"nothing answers on port {port} of the job ({address}:{port}: "
                              f"{exc.strerror or type(exc).__name__})") from None
        sock.settimeout(None)
        return sock


def _address(info: dict) -> str | None:
    """Where this machine reaches the container: loopback for the host's network, else its
    address on the first network that gave it one."""
    if (info.get("HostConfig") or {}).get("NetworkMode") == "host":
        return "127.0.0.1"
    networks = ((info.get("NetworkSettings") or {}).get("Networks") or {}).values()
    return next((n["IPAddress"] for n in networks if n.get("IPAddress")), None)
