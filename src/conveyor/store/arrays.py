"""The job arrays part of :class:`~conveyor.store.Store`: an array inserted with all its
tasks at once, looked up by id or prefix, and its tasks and their states."""

from __future__ import annotations

from ..errors import JobNotFound
from ..state import FINAL_STATES, JobState, sql_in
from .jobs import _like_prefix
from .records import ArrayRecord, JobRecord


class ArraysMixin:
    def insert_array(self, array: "ArrayRecord", tasks: list[JobRecord]) -> None:
        """An array and all its tasks in one transaction: all of them, or nothing."""
        with self._tx():
            self._db.execute(
                "INSERT INTO arrays (id, executor_id, first_index, last_index, step, max_parallel, created_at, "
                "engine_array) VALUES (?,?,?,?,?,?,?,?)",
                (array.id, array.executor_id, array.first, array.last, array.step, array.max_parallel, array.created_at,
                 int(array.engine_array)),
            )
            self._insert_jobs(tasks)

    def ended_engine_arrays(self, executor_id: str) -> list[tuple[str, str]]:
        """(array id, a task's id) of each array its engine runs (engine_array) that has no
        live task left and was not closed yet (see Launcher.close_ended_arrays)."""
        with self._lock:
            return self._db.execute(
                f"SELECT a.id, MIN(j.id) FROM arrays a JOIN jobs j ON j.array_id = a.id "
                f"WHERE a.engine_array = 1 AND a.executor_id = ? GROUP BY a.id "
                f"HAVING SUM(CASE WHEN {sql_in(FINAL_STATES, 'j.state')} THEN 0 ELSE 1 END) = 0",
                (executor_id,),
            ).fetchall()

    def close_engine_array(self, array_id: str) -> None:
        """Its engine's array job was closed: engine_array 2 (still not counted by Conveyor)."""
        with self._tx():
            self._db.execute("UPDATE arrays SET engine_array = 2 WHERE id = ?", (array_id,))

    def get_array(self, array_id: str) -> "ArrayRecord":
        with self._lock:
            row = self._db.execute(
                "SELECT id, executor_id, first_index, last_index, step, max_parallel, created_at, engine_array "
                "FROM arrays WHERE id=?", (array_id,),
            ).fetchone()
        if row is None:
            raise JobNotFound(array_id, "no such array")
        return ArrayRecord(*row[:-1], engine_array=bool(row[-1]))

    def resolve_array(self, ref: str) -> str | None:
        """A full array id or a unique prefix -> the array id; None when no array matches."""
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM arrays WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (_like_prefix(ref),)
            )]
        if len(ids) > 1:
            raise JobNotFound(ref, "the array id prefix is ambiguous; give more characters")
        return ids[0] if ids else None

    def array_tasks(self, array_id: str) -> list[tuple[str, int, JobState]]:
        """(job id, index, state) of every task, in index order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, array_index, state FROM jobs WHERE array_id=? ORDER BY array_index", (array_id,)
            ).fetchall()
        return [(i, n, JobState(s)) for i, n, s in rows]

    def array_counts(self, array_id: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM jobs WHERE array_id=? GROUP BY state", (array_id,)
            ).fetchall()
        return {s: n for s, n in rows}
