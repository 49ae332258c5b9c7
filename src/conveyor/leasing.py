"""``with x.lease(...) as lease:`` for the Executor and the Client alike: create a lease, renew
it from a background thread while the block runs, release it at the end. A holder that dies
stops renewing, so its lease expires by itself: that is the point."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

from .errors import ConveyorError, LeaseNotFound

log = logging.getLogger("conveyor.lease")

RENEWALS_PER_KEEPALIVE = 3  # a renewal lost (a busy agent, a dropped connection) still leaves two


class LeaseAPI(Protocol):
    def lease_create(self, **request: Any) -> dict: ...
    def lease_renew(self, ref: str) -> dict: ...
    def lease_release(self, ref: str, drain: bool = False) -> dict: ...


@dataclass
class Lease:
    """A held lease: its id (for ``JobSpec(lease=...)``) and what its last renewal said."""

    id: str
    info: dict
    lost: ConveyorError | None = None  # set when a renewal found the lease ended
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)


@contextlib.contextmanager
def hold_lease(api: LeaseAPI, drain: bool = False, **request: Any) -> Iterator[Lease]:
    info = api.lease_create(**request)
    lease = Lease(info["id"], info)
    interval = info["keepalive"] / RENEWALS_PER_KEEPALIVE
    thread = threading.Thread(target=_renew, args=(api, lease, interval), name=f"conveyor-lease-{lease.id}", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        lease._stop.set()
        thread.join()
        api.lease_release(lease.id, drain=drain)


def _renew(api: LeaseAPI, lease: Lease, interval: float) -> None:
    while not lease._stop.wait(interval):
        try:
            lease.info = api.lease_renew(lease.id)
        except LeaseNotFound as exc:  # it expired or was released: nothing left to keep alive
            lease.lost = exc
            return
        except ConveyorError as exc:  # the agent busy or restarting: the next renewal may get through
            log.warning("renewing lease %s: %s", lease.id, exc)
