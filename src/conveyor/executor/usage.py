"""Usage: what running jobs use now (read from the engine's side at the call), the series the
sampler kept, and the totals in a job's record; the processes of a running job."""

from __future__ import annotations

import os

from ..arguments import job_ref, job_refs
from ..backends.base import ContainerNotFound
from ..errors import InvalidState
from ..state import JobState
from ..store import JobRecord
from ..usage import cpu_percent, last_of
from .base import ExecutorBase

LIVE = (JobState.RUNNING, JobState.SUSPENDED)


class UsageMixin(ExecutorBase):
    def usage(self, jobs: list[str] | None = None, series: bool = False) -> list[dict]:
        """Each job's usage: ``{"job", "name", "state", "now", "totals", "node_memory"}`` and,
        with ``series``, the samples kept of it (oldest first). ``now`` is a sample read at the
        call (conveyor/usage.py) while it runs, else None; ``totals`` what its record holds
        (final once it ended). No ``jobs``: every running or suspended job, NotSupported
        for a named job whose backend cannot report usage."""
        if jobs is None:
            records = self.store.list(LIVE, executor_id=self.executor_id)
        else:
            records = [self._record(ref) for ref in job_refs("usage", jobs)]
            for rec in records:
                self.backend.require(rec.spec, "usage", "report a job's resource usage")
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # docker's limit when none is set
        return [self._usage_of(rec, series, memory) for rec in records]

    def _usage_of(self, rec: JobRecord, series: bool, memory: int) -> dict:
        now = None
        if rec.state in LIVE and rec.container_id:
            try:
                now = self.backend.usage(rec.container_id)
            except ContainerNotFound:
                pass  # it ended and was removed meanwhile
        totals = rec.usage
        if now is not None:
            same_run = totals is not None and totals.get("container") == rec.container_id
            now["cpu_percent"] = cpu_percent(last_of(totals) if same_run else None, now)
        entry = {"job": rec.id, "name": rec.name, "state": rec.state.value, "now": now, "totals": totals,
                 "node_memory": memory}
        if series:
            entry["series"] = self.store.usage_series(rec.id)
        return entry

    def top(self, ref: str) -> dict:
        """The processes of a running job: ``{"job", "titles", "processes"}``, as ``docker top``
        lists them; InvalidState unless it runs, NotSupported where its backend cannot."""
        job_ref("top", ref)
        rec = self._record(ref)
        self.backend.require(rec.spec, "top", "list a job's processes")
        if rec.state not in LIVE or not rec.container_id:
            raise InvalidState(rec.id, rec.state.value, "list the processes of")
        return {"job": rec.id, **self.backend.top(rec.container_id)}
