"""The usage part of :class:`~conveyor.store.Store`: each job's usage totals (a JSON column of
its row) and the ring of its last samples (``usage_samples``), written by the sampler in one
transaction a round, however many jobs it read."""

from __future__ import annotations

import json
from typing import Iterable

from ..state import FINAL_STATES, sql_in


class UsageMixin:
    def record_usage(self, rounds: Iterable[tuple[str, int, dict, dict]], keep: int) -> None:
        """For each ``(job_id, seq, sample, totals)``: add the sample as the job's ``seq``-th,
        forget its samples older than the last ``keep``, and set its totals."""
        rows = [(job_id, seq, json.dumps(sample), json.dumps(totals)) for job_id, seq, sample, totals in rounds]
        if not rows:
            return
        with self._tx():
            self._db.executemany("INSERT OR REPLACE INTO usage_samples (job_id, seq, sample) VALUES (?,?,?)",
                                 [(j, s, sample) for j, s, sample, _ in rows])
            self._db.executemany("DELETE FROM usage_samples WHERE job_id=? AND seq<=?",
                                 [(j, s - keep) for j, s, _, _ in rows])
            self._db.executemany("UPDATE jobs SET usage=? WHERE id=?", [(totals, j) for j, _, _, totals in rows])

    def usage_series(self, job_id: str) -> list[dict]:
        """The job's kept samples, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sample FROM usage_samples WHERE job_id=? ORDER BY seq", (job_id,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def forget_ended_series(self) -> int:
        """Drop the samples of jobs that have ended (their totals stay in their rows): the ring
        holds running jobs only, after a crash too."""
        with self._tx():
            return self._db.execute(
                "DELETE FROM usage_samples WHERE job_id IN (SELECT id FROM jobs WHERE id IN "
                f"(SELECT DISTINCT job_id FROM usage_samples) AND {sql_in(FINAL_STATES, 'state')}) "
                "OR job_id NOT IN (SELECT id FROM jobs)"
            ).rowcount
