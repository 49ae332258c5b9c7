"""Parts of the Client (client.py) by concern, as the Executor's mixins are: the node and its
engine's own documents, data, and leases. Each needs the Client's ``api`` (an AgentAPI)."""

from __future__ import annotations

import contextlib
import os
from typing import BinaryIO, Iterator

from ..arguments import IMAGE, LEASE_ID, job_ref, job_refs
from ..leasing import Lease, hold_lease


class NodeCalls:
    """The node, its queue, and the engine's own documents."""

    def queue(self, limit: int | None = None) -> dict:
        return self.api.queue(limit)

    def machine(self) -> dict:
        return self.api.machine()

    def usage(self, jobs: list[str] | None = None, series: bool = False) -> list[dict]:
        return self.api.usage(None if jobs is None else job_refs("usage", jobs), series)

    def top(self, ref: str) -> dict:
        return self.api.top(job_ref("top", ref))

    def metrics(self) -> str:
        return self.api.metrics()

    def backends(self) -> list[dict]:
        return self.api.backends()

    def cleanup(self) -> dict[str, int]:
        return self.api.cleanup()

    # ------------------------------------------------------------------ the engine's own documents

    def images(self) -> list[dict]:
        return self.api.images()

    def image_inspect(self, name: str) -> dict:
        return self.api.image_inspect(job_ref("image_inspect", name, IMAGE))

    def pull(self, name: str) -> Iterator[dict]:
        return self.api.pull(job_ref("pull", name, IMAGE))

    def engine(self) -> dict:
        return self.api.engine()

    def stats(self, ref: str) -> dict:
        return self.api.stats(job_ref("stats", ref))



class DataCalls:
    """Data (README: Data): filesets, outputs, verify, gc, image tarballs."""

    def filesets(self, ref: str, role: str = "output") -> dict[str, str]:
        job_ref("filesets", ref)
        if role != "output":
            return {i.target: i.source for i in self.info(ref).spec.inputs}
        return self.api.outputs(ref)["filesets"]

    def outputs(self, ref: str) -> list[dict]:
        return self.api.outputs(job_ref("outputs", ref))["files"]

    def read_output(self, ref: str, path: str, out: BinaryIO | None = None) -> bytes | int:
        return self.api.read_output(job_ref("read_output", ref), path, out)

    def restore_outputs(self, ref: str, target: str | os.PathLike) -> list[str]:
        """Write every output file under ``target`` (output /out lands in target/out), each
        verified by the agent as it is read. Nothing is written outside ``target``."""
        return self.api.restore_outputs(job_ref("restore_outputs", ref), target)

    def verify(self, ref: str | None = None) -> dict:
        return self.api.verify(None if ref is None else job_ref("verify", ref))

    def gc(self, dry_run: bool = False, grace: float = 600.0) -> dict:
        return self.api.gc(dry_run, grace)

    def prune(self, dry_run: bool = False, until: float | None = None) -> dict:
        return self.api.prune(dry_run, until)

    def fsck(self, repair: bool = False) -> dict:
        return self.api.fsck(repair)

    def load_image(self, path: str | os.PathLike) -> dict:
        """Send an image tarball (docker save) to the agent, which loads it into its engine."""
        return self.api.load_image(path)


class LeaseCalls:
    """Leases (README: Leases)."""

    def lease_create(self, cpus: float = 0.0, memory: int | str = 0, gpus: int = 0, keepalive: float | str = 30.0,
                     labels: dict[str, str] | None = None, gpu_vendor: str = "nvidia") -> dict:
        return self.api.lease_create(cpus=cpus, memory=memory, gpus=gpus, keepalive=keepalive, labels=labels or {},
                                     gpu_vendor=gpu_vendor)

    def lease(self, cpus: float = 0.0, memory: int | str = 0, gpus: int = 0, keepalive: float | str = 30.0,
              labels: dict[str, str] | None = None, drain: bool = False) -> "contextlib.AbstractContextManager[Lease]":
        """``with client.lease(cpus=2, memory="4g", keepalive=30) as lease:``: renewed in the
        background while the block runs, released at its end (Executor.lease)."""
        return hold_lease(self, drain, cpus=cpus, memory=memory, gpus=gpus, keepalive=keepalive, labels=labels)

    def lease_list(self, all: bool = False) -> list[dict]:
        return self.api.lease_list(all)

    def lease_info(self, ref: str) -> dict:
        return self.api.lease_info(job_ref("lease_info", ref, LEASE_ID))

    def lease_renew(self, ref: str) -> dict:
        return self.api.lease_renew(job_ref("lease_renew", ref, LEASE_ID))

    def lease_resize(self, ref: str, cpus: float | None = None, memory: int | str | None = None) -> dict:
        return self.api.lease_resize(job_ref("lease_resize", ref, LEASE_ID), cpus, memory)

    def lease_release(self, ref: str, drain: bool = False) -> dict:
        return self.api.lease_release(job_ref("lease_release", ref, LEASE_ID), drain)
