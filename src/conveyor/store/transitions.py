"""The state machine's part of :class:`~conveyor.store.Store`: :meth:`transition`, the one
compare-and-set every state change goes through, with the bookkeeping done in the same
transaction (attempts, retries, an array's max-parallel); and reading a job's attempts and the
transitions log."""

from __future__ import annotations

import time
from typing import Iterable

from ..errors import InvalidState, JobNotFound
from ..job import Transition
from ..state import RETRYABLE, RUNNABLE_STATES, JobState, Substate, can_move, in_engine, in_engine_sql

# A command run inside a job, in its event log (record_exec): the substate of its row.
EXEC_EVENT = "exec"
EXEC_TEXT = 400  # characters of the command kept in the log


class TransitionsMixin:
    def transition(
        self,
        job_id: str,
        to: JobState,
        substate: str | None = None,
        *,
        expect: Iterable[JobState] | None = None,
        reason: str | None = None,
        strict: bool = False,
        **fields,
    ) -> bool:
        """Move a job to ``to`` if its current state allows it (and is in ``expect`` if given).

        Returns False when the move does not apply (someone else already moved the job), or
        raises InvalidState with ``strict``. Extra ``fields`` (exit_code, finished_at, ...) are
        written in the same transaction.
        """
        with self._tx():
            row = self._db.execute("SELECT state, substate FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            current = JobState(row[0])
            engine_had_it = in_engine(current, row[1])
            if current in (JobState.REQUEUED, JobState.REQUEUED_HELD) and to is JobState.FAILED and substate in RETRYABLE:
                return False  # the engine's word on the attempt that was already requeued
            allowed = can_move(current, to) and (expect is None or current in set(expect))
            if not allowed:
                if strict:
                    raise InvalidState(job_id, current.value, f"move to {to.value}")
                return False
            claim = to is JobState.RUNNING or substate == Substate.ENGINE_QUEUED
            if claim and current in RUNNABLE_STATES and not engine_had_it:
                # A launcher's claim: a new attempt. (An engine-queued job that starts running
                # in its engine is the same attempt.)
                if self._array_full(job_id):
                    return False  # max-parallel is enforced here, atomically, whatever a planner thought
                # A new attempt: the last one's backoff and why it was stopped (a timeout,
                # say) are not this one's.
                fields = {**fields, "not_before": None, "stop_reason": None}
                self._db.execute("UPDATE jobs SET attempt = attempt + 1 WHERE id=?", (job_id,))
            elif engine_had_it and current is JobState.QUEUED and to is JobState.QUEUED_HELD:
                # Held back out of its engine's queue before it ran: that attempt never was.
                self._db.execute("UPDATE jobs SET attempt = attempt - 1 WHERE id=?", (job_id,))
            elif engine_had_it and (to.is_final or to is JobState.REQUEUED):
                to, substate, fields = self._end_attempt(job_id, to, substate, fields)
            cols = {"state": to.value, "substate": substate, **fields}
            assignments = ",".join(f"{k}=?" for k in cols)
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id=?", (*cols.values(), job_id))
            self._record(job_id, current, to, substate, reason)
        return True

    def _array_full(self, job_id: str) -> bool:
        """True when the job is an array task and its array already runs max-parallel tasks."""
        row = self._db.execute(
            "SELECT a.id, a.max_parallel FROM jobs j JOIN arrays a ON a.id = j.array_id WHERE j.id=? AND a.engine_array = 0",
            (job_id,)
        ).fetchone()
        if row is None or row[1] is None:
            return False
        (n,) = self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE array_id=? AND {in_engine_sql()}", (row[0],)).fetchone()
        return n >= row[1]

    def _end_attempt(self, job_id: str, to: JobState, substate: str | None, fields: dict):
        """Keep the attempt that just ended; turn a retryable failure with retries left into
        Requeued (DRMAA2's state for a job that will run again) with its backoff."""
        attempt, retries, backoff, started_at, container_id = self._db.execute(
            "SELECT attempt, retries, retry_backoff, started_at, container_id FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        if attempt >= 1:
            self._db.execute(
                "INSERT OR REPLACE INTO attempts (job_id, attempt, state, substate, exit_code, message, container_id, "
                "started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (job_id, attempt, to.value, substate, fields.get("exit_code"), fields.get("message"), container_id,
                 fields.get("started_at", started_at), fields.get("finished_at", time.time())),
            )
        if to is JobState.FAILED and substate in RETRYABLE and attempt <= retries:
            delay = backoff * (2 ** max(0, attempt - 1))
            what = fields.get("message") or substate
            fields = {
                **{k: v for k, v in fields.items() if k in ("exit_code", "started_at")},
                "message": f"attempt {attempt} failed ({what}); retry {attempt} of {retries}"
                + (f" in {delay:g}s" if delay else ""),
                "not_before": time.time() + delay,
                "finished_at": None,
            }
            return JobState.REQUEUED, Substate.RETRY, fields
        return to, substate, fields

    def _record(self, job_id, src, dst, substate, reason) -> None:
        self._db.execute(
            "INSERT INTO transitions (job_id, at, from_state, to_state, substate, reason) VALUES (?,?,?,?,?,?)",
            (job_id, time.time(), src.value if src else None, dst.value, substate, reason),
        )

    def record_exec(self, job_id: str, who: str, command: list[str], exit_code: int | None, seconds: float) -> None:
        """Write a command run inside the job (`conveyor exec`) into its event log: who ran what,
        for how long, and its exit code (None: its caller went away before it ended). The
        log's row stays in the job's state (from = to) with substate ``exec``, so every reader
        of a job's history (``events``, `conveyor events`) sees it in commit order."""
        import shlex

        what = shlex.join(command)
        what = what if len(what) <= EXEC_TEXT else what[:EXEC_TEXT - 3] + "..."
        end = f"exit {exit_code}" if exit_code is not None else "its caller went away before it ended"
        with self._tx():
            row = self._db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return  # removed meanwhile: no history to add to
            state = JobState(row[0])
            self._record(job_id, state, state, EXEC_EVENT, f"exec by {who} ({seconds:.1f}s, {end}): {what}")

    def attempts(self, job_id: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT attempt, state, substate, exit_code, message, container_id, started_at, finished_at "
                "FROM attempts WHERE job_id=? ORDER BY attempt",
                (job_id,),
            ).fetchall()
        keys = "attempt state substate exit_code message container_id started_at finished_at".split()
        return [dict(zip(keys, r)) for r in rows]

    def put_provenance(self, job_id: str, attempt: int, doc: str) -> None:
        """Keep the provenance of an attempt (recorded again if its container is made again)."""
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO provenance (job_id, attempt, doc) VALUES (?,?,?)", (job_id, attempt, doc))

    def provenance(self, job_id: str) -> list[str]:
        """The provenance documents of the attempts a job has begun, oldest first. One recorded
        for an attempt whose claim lost the race (a hold, a cancel) is not an attempt: left out."""
        with self._lock:
            rows = self._db.execute(
                "SELECT p.doc FROM provenance p JOIN jobs j ON j.id = p.job_id "
                "WHERE p.job_id=? AND p.attempt <= j.attempt ORDER BY p.attempt", (job_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def transitions(self, job_id: str | None = None, since_seq: int = 0, limit: int | None = None) -> list[Transition]:
        """Transitions after ``since_seq`` in commit order (a job's, or all); ``limit`` pages."""
        sql = f"SELECT {Transition.COLUMNS} FROM transitions WHERE seq > ?"
        params: list = [since_seq]
        if job_id is not None:
            sql += " AND job_id=?"
            params.append(job_id)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [Transition.from_row(r) for r in rows]

    def seq_before(self, at: float) -> int:
        """The seq after which the transitions at or after time ``at`` begin (an index lookup,
        whatever the history's length). The clock may step back, so this is where to start
        reading, and a reader still compares each transition's time."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM transitions INDEXED BY transitions_at WHERE at >= ? ORDER BY at LIMIT 1", (at,)
            ).fetchone()
        return row[0] - 1 if row else self.last_seq()

    def last_seq(self) -> int:
        """The newest transition's seq (0 when there is none)."""
        with self._lock:
            return self._db.execute("SELECT coalesce(max(seq), 0) FROM transitions").fetchone()[0]
