"""The jobs part of :class:`~conveyor.store.Store`: insert, look up (by id, prefix, name or
idempotency key), list, count, update plain columns and delete jobs. Like every store mixin it
uses the connection, lock and transactions that :class:`~conveyor.store.Store` owns."""

from __future__ import annotations

from typing import Iterable

from ..errors import JobNotFound
from ..state import JobState
from .records import _JOB_COLUMNS, JobRecord


class JobsMixin:
    def insert(self, job: JobRecord) -> JobRecord:
        """Insert a new job and its first transition. With an idempotency key already in use,
        return the existing job instead."""
        placeholders = ",".join("?" * len(_JOB_COLUMNS))
        with self._tx():
            existing = job.idempotency_key and self.by_idempotency_key(job.idempotency_key)
            if existing:
                return existing
            self._db.execute(f"INSERT INTO jobs ({','.join(_JOB_COLUMNS)}) VALUES ({placeholders})", job._to_row())
            self._insert_extras([job])
            self._record(job.id, None, job.state, job.substate, "submitted")
        return job

    def _insert_extras(self, jobs: list[JobRecord]) -> None:
        self._db.executemany(
            "INSERT INTO job_labels (job_id, key, value) VALUES (?,?,?)",
            [(job.id, k, v) for job in jobs for k, v in job.spec.labels.items()],
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO job_deps (job_id, dep_id, condition) VALUES (?,?,?)",
            [(job.id, d.job, d.condition) for job in jobs for d in job.spec.after],
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO job_filesets (job_id, role, target, digest) VALUES (?,?,?,?)",
            [(job.id, "input", i.target, i.source) for job in jobs for i in job.spec.inputs if i.frozen],
        )

    def query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        """Read-only SQL for the scheduler's light-weight views (no spec parsing)."""
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def by_idempotency_key(self, key: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {','.join(_JOB_COLUMNS)} FROM jobs WHERE idempotency_key=?", (key,)
            ).fetchone()
        return JobRecord._from_row(row) if row else None

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            row = self._db.execute(
                f"SELECT {','.join(_JOB_COLUMNS)} FROM jobs WHERE id=?", (job_id,)
            ).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return JobRecord._from_row(row)

    def resolve(self, ref: str) -> str:
        """A full id, a unique id prefix or a unique job name -> the job id."""
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM jobs WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (_like_prefix(ref),)
            )]
            if len(ids) == 1:
                return ids[0]
            if len(ids) > 1:
                raise JobNotFound(ref, "the prefix is ambiguous; give more characters")
            named = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE name=? LIMIT 2", (ref,))]
        if len(named) == 1:
            return named[0]
        raise JobNotFound(ref, "several jobs have that name; use the id" if named else "")

    def list(
        self,
        states: Iterable[JobState] | None = None,
        labels: dict[str, str] | None = None,
        executor_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[JobRecord]:
        """Jobs oldest first; ``limit``/``offset`` page in SQL, so a page of a 10,000-job
        store costs a page, not the whole store."""
        where, params = self._where(states, labels, executor_id)
        sql = f"SELECT {','.join(_JOB_COLUMNS)} FROM jobs WHERE {where} ORDER BY created_at, id"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if limit is None else limit, offset]
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [JobRecord._from_row(r) for r in rows]

    def count(
        self,
        states: Iterable[JobState] | None = None,
        labels: dict[str, str] | None = None,
        executor_id: str | None = None,
    ) -> int:
        where, params = self._where(states, labels, executor_id)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", params).fetchone()[0]

    @staticmethod
    def _where(states, labels, executor_id) -> tuple[str, list]:
        sql, params = "1=1", []
        if states is not None:
            states = list(states)
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += [s.value for s in states]
        if executor_id is not None:
            sql += " AND executor_id=?"
            params.append(executor_id)
        for key, value in (labels or {}).items():
            sql += " AND id IN (SELECT job_id FROM job_labels WHERE key=? AND value=?)"
            params += [key, value]
        return sql, params

    def update(self, job_id: str, **fields) -> None:
        """Set plain columns (container id, stop reason, ...). Never the state: see transition()."""
        if not fields or "state" in fields or set(fields) - set(_JOB_COLUMNS):
            raise ValueError(f"bad update fields: {sorted(fields)}")
        assignments = ",".join(f"{k}=?" for k in fields)
        with self._tx():
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id=?", (*fields.values(), job_id))

    def delete(self, job_id: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM job_labels WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM job_deps WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM attempts WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM job_filesets WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
