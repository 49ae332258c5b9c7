"""Leases (README: Leases): a share of the node reserved against everything else admitted, for
a holder that keeps it alive. Jobs submitted with ``lease`` draw from that share only; jobs
without one cannot take it. Ending a lease (expiry, release) is runtime/leases.py's."""

from __future__ import annotations

import contextlib
import time

from ..capacity import LEASE_PREFIX, MILLI, Ledger, Request
from ..arguments import LEASE_ID, job_ref
from ..errors import InvalidSpec, LeaseNotFound
from ..leasing import Lease, hold_lease
from ..runtime.leases import release_lease
from ..spec.lease import LeaseSpec
from ..state import WAITING_STATES, sql_in
from ..store import LeaseRecord, new_lease_id
from .base import ExecutorBase


class LeaseMixin(ExecutorBase):
    def lease_create(
        self,
        cpus: float = 0.0,
        memory: int | str = 0,
        gpus: int = 0,
        keepalive: float | str = 30.0,
        labels: dict[str, str] | None = None,
        gpu_vendor: str = "nvidia",
    ) -> dict:
        """Reserve a share of this node: it fits in what is free now (else InvalidSpec naming
        what is missing) and stays reserved until released, or until ``keepalive`` seconds
        pass without a renewal."""
        spec = LeaseSpec(cpus=cpus, memory=memory, gpus=gpus, keepalive=keepalive, labels=labels or {},
                         gpu_vendor=gpu_vendor)
        req = Request(cpus_m=int(round(spec.cpus * MILLI)), memory=spec.memory,
                      gpu_vendor=spec.gpu_vendor.value if spec.gpus else None, gpu_count=spec.gpus)
        now = time.time()
        lease = LeaseRecord(
            id=new_lease_id(), executor_id=self.executor_id, state="active", cpus=req.cpus, memory=req.memory,
            req_gpus=req.gpus_json(), gpu_ids=None, keepalive=spec.keepalive, deadline=now + spec.keepalive,
            labels=spec.labels, created_at=now, renewed_at=now,
        )

        def admit(inflight: dict) -> None:
            ledger, _ = self._ledgers_with(inflight)
            self._refuse_shortfall(ledger, req, spec)
            lease.gpu_ids = ",".join(ledger.take("new lease", req)) or None

        self._mode.reserve(lambda inflight: self.store.insert_lease(lease, lambda: admit(inflight)))
        self._mode.wake()
        return self.lease_info(lease.id)

    def lease(self, cpus: float = 0.0, memory: int | str = 0, gpus: int = 0, keepalive: float | str = 30.0,
              labels: dict[str, str] | None = None, drain: bool = False) -> "contextlib.AbstractContextManager[Lease]":
        """``with ex.lease(cpus=2, memory="4g", keepalive=30) as lease:`` reserves a share,
        renews it in the background while the block runs and releases it at its end (with
        ``drain``, once its jobs have ended). Submit into it with ``JobSpec(..., lease=lease.id)``."""
        return hold_lease(self, drain, cpus=cpus, memory=memory, gpus=gpus, keepalive=keepalive, labels=labels)

    def lease_list(self, all: bool = False) -> list[dict]:
        """Live leases (``all``: ended ones too), oldest first, each with what its jobs hold."""
        _, ledgers = self._planner().lease_ledgers()
        if not all:
            return self._live_leases(ledgers)
        return [self._lease_view(lease, ledgers.get(lease.id)) for lease in self.store.leases(self.executor_id)]

    def lease_info(self, ref: str) -> dict:
        """One lease (id or unique prefix): its share, state, deadline, and its jobs."""
        job_ref("lease_info", ref, LEASE_ID)
        lease = self.store.get_lease(ref)
        _, ledgers = self._planner().lease_ledgers()
        view = self._lease_view(lease, ledgers.get(lease.id))
        view["jobs"] = [{"id": j.id, "state": j.state.value, "substate": j.substate}
                        for j in (self.store.get(i) for i in self.store.lease_job_ids(lease.id, live=False))]
        return view

    def lease_renew(self, ref: str) -> dict:
        """Keep a lease alive: its deadline becomes now + its keepalive. An ended lease cannot
        be renewed (LeaseNotFound saying how it ended)."""
        job_ref("lease_renew", ref, LEASE_ID)
        lease = self.store.get_lease(ref)
        if not self.store.renew_lease(lease.id, time.time()):
            lease = self.store.get_lease(lease.id)
            raise LeaseNotFound(lease.id, f"it is {lease.state}: {lease.reason}; create a new one")
        self._mode.wake()  # the scheduler's next wake-up is the earliest deadline
        return self.lease_info(lease.id)

    def lease_resize(self, ref: str, cpus: float | None = None, memory: int | str | None = None) -> dict:
        """Give an active lease a new share (what is not given stays): it grows only into what
        the node has free now, and shrinks no lower than what its jobs hold (InvalidSpec
        naming the field otherwise)."""
        job_ref("lease_resize", ref, LEASE_ID)
        lease = self._active_lease(ref)
        spec = LeaseSpec(cpus=lease.cpus if cpus is None else cpus, memory=lease.memory if memory is None else memory,
                         keepalive=lease.keepalive)
        req = Request(cpus_m=int(round(spec.cpus * MILLI)), memory=spec.memory)

        def admit(inflight: dict) -> None:
            ledger, leases = self._ledgers_with(inflight)
            ledger.release(LEASE_PREFIX + lease.id)  # its own share is what it resizes
            held = leases[lease.id]
            # A waiting job bigger than the new share would never start in it.
            (cpus_w, memory_w), = self.store.query(
                f"SELECT MAX(req_cpus), MAX(req_memory) FROM jobs WHERE lease_id=? AND {sql_in(WAITING_STATES)}", (lease.id,))
            need_cpus_m = max(held.cpus_m, int(round((cpus_w or 0) * MILLI)))
            need_memory = max(held.memory, memory_w or 0)
            problems = [(kind, value, f"its jobs hold or wait for {shown}; wait for them to end, or ask for more")
                        for kind, value, over, shown in (("cpus", spec.cpus, need_cpus_m > req.cpus_m, f"{need_cpus_m / MILLI:g} CPUs"),
                                                         ("memory", spec.memory, need_memory > req.memory, f"{need_memory} bytes"))
                        if over]
            if problems:
                raise InvalidSpec(problems, "lease request")
            self._refuse_shortfall(ledger, req, spec)

        self._mode.reserve(lambda inflight: self.store.resize_lease(lease.id, spec.cpus, spec.memory, lambda: admit(inflight)))
        self._mode.wake()
        return self.lease_info(lease.id)

    def lease_release(self, ref: str, drain: bool = False) -> dict:
        """Give a lease's share back: its jobs are cancelled (running ones with their grace
        period; logs and outputs kept), or with ``drain`` it ends once they have. Releasing an
        ended lease changes nothing."""
        job_ref("lease_release", ref, LEASE_ID)
        lease = self.store.get_lease(ref)
        release_lease(self.store, lease.id, drain, self._mode.stop, self._changed)
        self._mode.wake()
        return self.lease_info(lease.id)

    # ------------------------------------------------------------------ helpers

    def _ledgers_with(self, inflight: dict) -> tuple[Ledger, dict[str, Ledger]]:
        """The node's ledger and each lease's, from the store and the launches in flight."""
        ledger, leases = self._planner().lease_ledgers()
        for job_id, inf in inflight.items():
            leases.get(inf.lease_id, ledger).take(job_id, inf.request, inf.gpu_ids)
        return ledger, leases

    @staticmethod
    def _refuse_shortfall(ledger: Ledger, req: Request, spec: LeaseSpec) -> None:
        """InvalidSpec naming each of cpus, memory, gpus the node has not free for ``req``."""
        short = ledger.shortfall(req)
        if short is not None:
            raise InvalidSpec([(part.split(" ", 1)[0], getattr(spec, part.split(" ", 1)[0]),
                                f"this node cannot reserve it now: {part}; ask for less, or wait for running "
                                "jobs and leases to end") for part in short.split("; ")], "lease request")

    def _active_lease(self, ref: str) -> LeaseRecord:
        lease = self.store.get_lease(ref)
        if lease.state != "active":
            raise InvalidSpec.single("lease", ref, f"the lease is {lease.state} ({lease.reason}); create a new one")
        return lease

    def _live_leases(self, ledgers: dict[str, Ledger]) -> list[dict]:
        """The live leases with what their jobs hold (`machine` and `queue` show them)."""
        return [self._lease_view(lease, ledgers.get(lease.id)) for lease in self.store.leases(self.executor_id, live_only=True)]

    def _lease_view(self, lease: LeaseRecord, ledger: Ledger | None) -> dict:
        view = lease.to_dict()
        view["in_use"] = ledger.in_use() if ledger is not None else None
        view["expires_in"] = max(0.0, lease.deadline - time.time()) if lease.state == "active" else None
        return view

    def _lease_for_job(self, ref: str, req: Request) -> LeaseRecord:
        """The lease a job names, if it is active and the job fits in its share at all."""
        try:
            lease = self._active_lease(ref)
        except LeaseNotFound as exc:
            raise InvalidSpec.single("lease", ref, f"{exc}; `conveyor lease list` shows the live ones") from None
        share = Request.from_columns(lease.cpus, lease.memory, lease.req_gpus)
        problems = []
        if req.cpus_m > share.cpus_m:
            problems.append(("resources.cpus", req.cpus, f"lease {lease.id} reserves {share.cpus:g} CPUs; ask for fewer"))
        if req.memory > share.memory:
            problems.append(("resources.memory", req.memory, f"lease {lease.id} reserves {share.memory} bytes; ask for less"))
        if req.gpu_vendor is not None and (req.gpu_vendor != share.gpu_vendor or req.gpu_count > share.gpu_count
                                           or req.gpu_count == -1):
            problems.append(("resources.gpus", req.gpu_vendor, f"lease {lease.id} reserves {share.gpu_count} "
                             f"{share.gpu_vendor or 'no'} GPU(s)"))
        if problems:
            raise InvalidSpec(problems)
        return lease
