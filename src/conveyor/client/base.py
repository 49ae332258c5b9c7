"""What the parts of the Client share: the transport, the job decoding, the routes."""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

from ..job import Job
from ..operations import OPERATIONS
from .transport import Transport


@dataclasses.dataclass(frozen=True)
class RemoteJob(Job):
    """A Job whose stdout/stderr are fetched from the agent when its files are not local."""

    client: "ClientBase | None" = dataclasses.field(default=None, repr=False, compare=False)

    def _read(self, stream: str) -> bytes:
        if self.client is None or self.client.local:
            return super()._read(stream)
        return b"".join(chunk for _, chunk in self.client.logs(self.id, stream))


def route(name: str, ref: str | None = None) -> str:
    """The route of an operation in the table, with its job or array reference filled in."""
    path = OPERATIONS[name].path
    return path if ref is None else path.replace("{ref}", quote(str(ref), safe=""))


class ClientBase:
    """The Client's parts share its transport and how it decodes jobs."""

    _http: Transport
    local: bool  # the agent's files (logs) are readable here: it runs on this machine

    def _job(self, data: dict) -> Job:
        return RemoteJob(**Job.fields_from_dict(data), client=self)
