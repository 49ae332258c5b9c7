"""The leases part of :class:`~conveyor.store.Store`: a share of the node reserved for a holder
that keeps it alive (README: Leases). A lease is ``active`` (its deadline counts), ``draining``
(released with --drain: it holds its share until its jobs end), or ended: ``released`` or
``expired``. Every change is a compare-and-set on the state, so an expiry is applied once."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field

from ..errors import LeaseNotFound
from ..state import FINAL_STATES, sql_in

LEASE_STATES = ("active", "draining", "released", "expired")
LIVE_LEASE_STATES = LEASE_STATES[:2]
LIVE_LEASES_SQL = "state IN ('active', 'draining')"  # literal, so SQLite uses the partial index leases_live
_COLUMNS = (
    "id executor_id state cpus memory req_gpus gpu_ids keepalive deadline labels created_at renewed_at ended_at reason"
).split()


@dataclass
class LeaseRecord:
    id: str
    executor_id: str
    state: str
    cpus: float
    memory: int
    req_gpus: str | None
    gpu_ids: str | None
    keepalive: float
    deadline: float
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    renewed_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    reason: str | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE_LEASE_STATES

    def to_dict(self) -> dict:
        out = {c: getattr(self, c) for c in _COLUMNS if c not in ("req_gpus", "gpu_ids", "executor_id")}
        out["gpus"] = json.loads(self.req_gpus)["count"] if self.req_gpus else 0
        out["gpu_ids"] = self.gpu_ids.split(",") if self.gpu_ids else []
        return out

    def _to_row(self) -> tuple:
        return tuple(json.dumps(self.labels) if c == "labels" else getattr(self, c) for c in _COLUMNS)

    @classmethod
    def _from_row(cls, row: tuple) -> "LeaseRecord":
        data = dict(zip(_COLUMNS, row))
        data["labels"] = json.loads(data["labels"] or "{}")
        return cls(**data)


def new_lease_id() -> str:
    return "l" + secrets.token_hex(6)


class LeasesMixin:
    def insert_lease(self, lease: LeaseRecord, admit) -> LeaseRecord:
        """Insert ``lease`` if ``admit()`` (called inside the write transaction, so nothing else
        is recorded between its look at what is free and the insert) raises nothing."""
        with self._tx():
            admit()
            self._db.execute(f"INSERT INTO leases ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                             lease._to_row())
        return lease

    def resize_lease(self, lease_id: str, cpus: float, memory: int, admit) -> bool:
        """Give an active lease a new share if ``admit()`` (called inside the write transaction,
        as for :meth:`insert_lease`) raises nothing; False if it is not active."""
        with self._tx():
            admit()
            cur = self._db.execute("UPDATE leases SET cpus=?, memory=? WHERE id=? AND state='active'", (cpus, memory, lease_id))
        return cur.rowcount == 1

    def get_lease(self, ref: str) -> LeaseRecord:
        """A lease by id or unique id prefix."""
        with self._lock:
            rows = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM leases WHERE id LIKE ? LIMIT 2",
                                    (ref.replace("%", "").replace("_", "") + "%",)).fetchall()
        if len(rows) != 1 or not ref:
            raise LeaseNotFound(ref, "ambiguous prefix" if len(rows) > 1 else "")
        return LeaseRecord._from_row(rows[0])

    def leases(self, executor_id: str, live_only: bool = False) -> list[LeaseRecord]:
        where = f" AND {LIVE_LEASES_SQL}" if live_only else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {','.join(_COLUMNS)} FROM leases WHERE executor_id=?{where} ORDER BY created_at", (executor_id,)
            ).fetchall()
        return [LeaseRecord._from_row(r) for r in rows]

    def renew_lease(self, lease_id: str, now: float) -> bool:
        """Push an active lease's deadline to ``now`` + its keepalive; False if it is not active."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE leases SET deadline = ? + keepalive, renewed_at = ? WHERE id=? AND state='active'",
                (now, now, lease_id),
            )
        return cur.rowcount == 1

    def end_lease(self, lease_id: str, state: str, reason: str, expect: tuple[str, ...] = LIVE_LEASE_STATES,
                  now: float | None = None) -> bool:
        """Move a lease to ``state`` if it is in one of ``expect`` (compare-and-set)."""
        with self._tx():
            cur = self._db.execute(
                f"UPDATE leases SET state=?, reason=?, ended_at=? WHERE id=? AND state IN ({','.join('?' * len(expect))})",
                (state, reason, None if state == "draining" else (now or time.time()), lease_id, *expect),
            )
        return cur.rowcount == 1

    def overdue_leases(self, executor_id: str, now: float) -> list[LeaseRecord]:
        """Active leases whose deadline has passed."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {','.join(_COLUMNS)} FROM leases WHERE {LIVE_LEASES_SQL} AND state='active' AND executor_id=? "
                "AND deadline <= ?", (executor_id, now),
            ).fetchall()
        return [LeaseRecord._from_row(r) for r in rows]

    def drained_leases(self, executor_id: str) -> list[str]:
        """Draining leases none of whose jobs is live any more."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT id FROM leases l WHERE {LIVE_LEASES_SQL} AND state='draining' AND executor_id=? AND NOT EXISTS "
                f"(SELECT 1 FROM jobs j WHERE j.lease_id = l.id AND NOT {sql_in(FINAL_STATES, 'j.state')})", (executor_id,),
            )]

    def jobs_of_ended_leases(self, executor_id: str) -> list[tuple[str, str]]:
        """(job id, lease state) of each live job in an ended lease not yet stopped for it."""
        with self._lock:
            return self._db.execute(
                f"SELECT j.id, l.state FROM jobs j INDEXED BY jobs_lease JOIN leases l ON l.id = j.lease_id "
                f"WHERE j.lease_id IS NOT NULL AND j.executor_id=? AND l.state IN ('expired', 'released') "
                f"AND NOT {sql_in(FINAL_STATES, 'j.state')} AND j.stop_reason IS NOT 'lease_expired' "
                "AND j.stop_reason IS NOT 'lease_released'", (executor_id,),
            ).fetchall()

    def lease_job_ids(self, lease_id: str, live: bool = True) -> list[str]:
        cond = f" AND NOT {sql_in(FINAL_STATES)}" if live else ""
        with self._lock:
            return [r[0] for r in self._db.execute(f"SELECT id FROM jobs WHERE lease_id=?{cond}", (lease_id,))]
