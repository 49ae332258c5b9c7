"""The usage sampler: one thread that reads every running job's usage each interval and writes
it to the store in one transaction, however many jobs run (a thread per job would cost 200
threads at 200 jobs; docker stats streams one request per container).

Each round, for each job in Running or Suspended with a handle: one ``backend.usage`` read (a
few cgroup files for a container: no engine call once its pid is known), its totals updated
(conveyor/usage.py) and its sample added to its ring in the store. The totals are rewritten
every round, so after a crash they hold what the job used until the round before; the next
supervisor goes on from them. Ended jobs' rings are dropped (their totals stay in their rows).
"""

from __future__ import annotations

import json
import logging
import threading

from ..backends.base import Backend
from ..capacity import UsageConfig
from ..errors import ConveyorError
from ..state import JobState, sql_in
from ..store import Store
from ..usage import accumulate

log = logging.getLogger("conveyor.supervisor")

LIVE = sql_in(frozenset({JobState.RUNNING, JobState.SUSPENDED}))


class Sampler:
    def __init__(self, store: Store, backend: Backend, executor_id: str, config: UsageConfig):
        self.store, self.backend, self.executor_id, self.config = store, backend, executor_id, config
        self._totals: dict[str, dict] = {}  # job -> its totals as last written
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-usage", daemon=True)

    def start(self) -> None:
        if self.config.interval > 0:
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        self.store.forget_ended_series()  # of jobs that ended while no supervisor ran
        while not self._stop.wait(self.config.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a failed round must not end sampling
                log.exception("usage sampling round failed")

    def sample(self) -> int:
        """One round: every running job read and recorded; how many were."""
        rows = self.store.query(
            f"SELECT id, container_id, usage, json_extract(spec, '$.resources.memory') FROM jobs "
            f"WHERE executor_id=? AND {LIVE} AND container_id IS NOT NULL", (self.executor_id,),
        )
        taken = []
        for job_id, handle, stored, limit in rows:
            try:
                now = self.backend.usage(handle)
            except ConveyorError as exc:  # the engine went away: the next round tries again
                log.debug("usage of job %s: %s", job_id, exc)
                continue
            if now is None:
                continue
            before = self._totals.get(job_id) or (json.loads(stored) if stored else None)
            totals = self._totals[job_id] = accumulate(before, now, handle, limit)
            taken.append((job_id, totals["samples"], now, totals))
        self.store.record_usage(taken, self.config.samples)
        live = {r[0] for r in rows}
        if set(self._totals) - live:
            self._totals = {job_id: t for job_id, t in self._totals.items() if job_id in live}
            self.store.forget_ended_series()
        return len(taken)
