"""The agent's routes by operation name, and the parts of AgentAPI (api.py) that are plain
calls of them: sessions into a running job, jobs' usage, leases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..operations import OPERATIONS
from .transport import quoted

if TYPE_CHECKING:
    from .streams import ExecSocket, PortSocket


def route(name: str, ref: str | None = None) -> str:
    """The route of an operation in the table, with its job or array reference filled in."""
    path = OPERATIONS[name].path
    return path if ref is None else path.replace("{ref}", quoted(ref))


class Sessions:
    """The agent's WebSocket sessions into a running job, each on a connection of its own
    (client/streams.py: the websockets package is loaded only then). Part of AgentAPI: needs
    its ``http``."""

    def open_exec(self, ref: str, request: dict) -> "ExecSocket":
        """Start a command in a running job (``request``: an ExecSpec's fields); raises why
        not (InvalidState, PolicyRefused, ...) before it returns."""
        from .streams import AgentSocket, ExecSocket

        return ExecSocket(AgentSocket(self.http, route("exec", ref), request))

    def open_port(self, ref: str, port: int) -> "PortSocket":
        """A connection to TCP ``port`` of a running job; raises why not (InvalidState,
        PolicyRefused, nothing answers there, ...) before it returns."""
        from .streams import AgentSocket, PortSocket

        return PortSocket(AgentSocket(self.http, route("port_forward", ref), {"port": port}))


class JobUsage:
    """Jobs' resource usage and processes (routers/usage.py). Part of AgentAPI: needs its ``call``."""

    def usage(self, jobs: list[str] | None = None, series: bool = False) -> list[dict]:
        """Each job's usage (every running job's without ``jobs``): a sample read now, its
        totals and, with ``series``, the samples kept."""
        if jobs is None:
            return self.call("GET", route("usage"), {"series": series})
        # a request per 100 jobs: a query of thousands of ids would outgrow a request line
        return [entry for i in range(0, len(jobs), 100)
                for entry in self.call("GET", route("usage"), {"job": jobs[i:i + 100], "series": series})]

    def top(self, ref: str) -> dict:
        """{"job", "titles", "processes"}: the processes in a running job."""
        return self.call("GET", route("top", ref))


class LeaseRequests:
    """Leases (routers/leases.py): part of AgentAPI, needs its ``call``."""

    def lease_create(self, **request: Any) -> dict:
        return self.call("POST", route("lease_create"), body=request)

    def lease_list(self, all: bool = False) -> list[dict]:
        return self.call("GET", route("lease_list"), {"all": all})

    def lease_info(self, ref: str) -> dict:
        return self.call("GET", route("lease_info", ref))

    def lease_renew(self, ref: str) -> dict:
        return self.call("POST", route("lease_renew", ref))

    def lease_resize(self, ref: str, cpus: float | None = None, memory: int | str | None = None) -> dict:
        return self.call("POST", route("lease_resize", ref), body={"cpus": cpus, "memory": memory})

    def lease_release(self, ref: str, drain: bool = False) -> dict:
        return self.call("POST", route("lease_release", ref), {"drain": drain})
