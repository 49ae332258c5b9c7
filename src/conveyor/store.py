"""The store: jobs and their append-only state transitions in SQLite (WAL mode).

Every state change goes through :meth:`Store.transition`, a compare-and-set that writes the
new state and the transition row in one transaction. Callers report a change only after it
returned True, so what anyone was told is always on disk.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InvalidState, JobNotFound
from .job import Transition
from .spec import JobSpec, spec_from_json
from .state import ACTIVE_STATES, RETRYABLE, RUNNABLE_STATES, JobState, Substate, can_move, sql_in

# One entry per schema version; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE jobs (
        id              TEXT PRIMARY KEY,
        executor_id     TEXT NOT NULL,
        name            TEXT,
        spec            TEXT NOT NULL,
        state           TEXT NOT NULL,
        substate        TEXT,
        exit_code       INTEGER,
        message         TEXT,
        container_id    TEXT,
        stop_reason     TEXT,
        idempotency_key TEXT UNIQUE,
        array_id        TEXT,
        array_index     INTEGER,
        created_at      REAL NOT NULL,
        started_at      REAL,
        finished_at     REAL
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_array ON jobs(array_id);
    CREATE TABLE transitions (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id     TEXT NOT NULL,
        at         REAL NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        substate   TEXT,
        reason     TEXT
    );
    CREATE INDEX transitions_job ON transitions(job_id);
    CREATE TABLE job_labels (
        job_id TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  TEXT NOT NULL,
        PRIMARY KEY (job_id, key)
    );
    CREATE INDEX job_labels_kv ON job_labels(key, value);
    """,
    # 2: scheduling. A job's request is kept in columns so the scheduler never re-parses
    # specs; arrays, dependencies and every attempt of a retried job get their own tables.
    """
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN req_cpus REAL;
    ALTER TABLE jobs ADD COLUMN req_memory INTEGER;
    ALTER TABLE jobs ADD COLUMN req_gpus TEXT;
    ALTER TABLE jobs ADD COLUMN gpu_ids TEXT;
    ALTER TABLE jobs ADD COLUMN start_deadline REAL;
    ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN retry_backoff REAL NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN not_before REAL;
    ALTER TABLE jobs ADD COLUMN has_deps INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_runnable ON jobs(priority DESC, created_at) WHERE state IN ('Queued', 'Requeued');
    CREATE INDEX jobs_runnable_cpus ON jobs(req_cpus) WHERE state IN ('Queued', 'Requeued');
    CREATE INDEX jobs_dependent ON jobs(id) WHERE has_deps = 1 AND state IN ('Queued', 'Requeued');
    CREATE INDEX jobs_deadline ON jobs(start_deadline)
        WHERE start_deadline IS NOT NULL AND attempt = 0 AND state IN ('Queued', 'QueuedHeld', 'Requeued', 'RequeuedHeld');
    CREATE TABLE arrays (
        id           TEXT PRIMARY KEY,
        executor_id  TEXT NOT NULL,
        first_index  INTEGER NOT NULL,
        last_index   INTEGER NOT NULL,
        step         INTEGER NOT NULL,
        max_parallel INTEGER,
        created_at   REAL NOT NULL
    );
    CREATE TABLE job_deps (
        job_id    TEXT NOT NULL,
        dep_id    TEXT NOT NULL,
        condition TEXT NOT NULL,
        PRIMARY KEY (job_id, dep_id)
    );
    CREATE INDEX job_deps_dep ON job_deps(dep_id);
    CREATE TABLE attempts (
        job_id       TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        state        TEXT NOT NULL,
        substate     TEXT,
        exit_code    INTEGER,
        message      TEXT,
        container_id TEXT,
        started_at   REAL,
        finished_at  REAL,
        PRIMARY KEY (job_id, attempt)
    );
    """,
    # 3: data. Each job's input filesets (recorded at submit, by digest: never a host path)
    # and output filesets (recorded when it ends); images loaded from tarballs.
    """
    CREATE TABLE job_filesets (
        job_id TEXT NOT NULL,
        role   TEXT NOT NULL,
        target TEXT NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (job_id, role, target)
    );
    CREATE INDEX job_filesets_digest ON job_filesets(digest);
    CREATE TABLE images (
        image_id    TEXT NOT NULL,
        tags        TEXT,
        file_digest TEXT NOT NULL,
        file_name   TEXT,
        loaded_at   REAL NOT NULL,
        PRIMARY KEY (image_id, file_digest)
    );
    """,
]

_JOB_COLUMNS = (
    "id executor_id name spec state substate exit_code message container_id stop_reason "
    "idempotency_key array_id array_index created_at started_at finished_at "
    "priority req_cpus req_memory req_gpus gpu_ids start_deadline retries retry_backoff attempt not_before has_deps"
).split()



def new_job_id() -> str:
    return secrets.token_hex(6)


@dataclass
class JobRecord:
    id: str
    executor_id: str
    spec: JobSpec
    state: JobState = JobState.QUEUED
    name: str | None = None
    substate: str | None = None
    exit_code: int | None = None
    message: str | None = None
    container_id: str | None = None
    stop_reason: str | None = None
    idempotency_key: str | None = None
    array_id: str | None = None
    array_index: int | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    # scheduling: the admission request (CPUs, bytes, GPU request as JSON), the GPUs given
    # at launch, the absolute start deadline, retries and the attempt now running or last run
    priority: int = 0
    req_cpus: float | None = None
    req_memory: int | None = None
    req_gpus: str | None = None
    gpu_ids: str | None = None
    start_deadline: float | None = None
    retries: int = 0
    retry_backoff: float = 0.0
    attempt: int = 0
    not_before: float | None = None
    has_deps: int = 0

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> "JobRecord":
        data = dict(zip(_JOB_COLUMNS, row))
        data["spec"] = spec_from_json(data["spec"])
        data["state"] = JobState(data["state"])
        return cls(**data)

    def _to_row(self) -> tuple:
        data = {**self.__dict__, "spec": self.spec.to_json(), "state": self.state.value}
        return tuple(data[c] for c in _JOB_COLUMNS)


@dataclass(frozen=True)
class ArrayRecord:
    id: str
    executor_id: str
    first: int
    last: int
    step: int
    max_parallel: int | None
    created_at: float

    @property
    def indices(self) -> range:
        return range(self.first, self.last + 1, self.step)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the executor's few threads; the lock serialises use.
        # Other processes (a CLI reading `ps`) open their own and WAL keeps readers unblocked.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    # ----------------------------------------------------------------- plumbing

    def _migrate(self) -> None:
        with self._tx():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self):
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, exc, tb):
                try:
                    store._db.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    store._lock.release()

        return _Tx()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ----------------------------------------------------------------- jobs

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

    def insert_array(self, array: "ArrayRecord", tasks: list[JobRecord]) -> None:
        """An array and all its tasks in one transaction: all of them, or nothing."""
        placeholders = ",".join("?" * len(_JOB_COLUMNS))
        with self._tx():
            self._db.execute(
                "INSERT INTO arrays (id, executor_id, first_index, last_index, step, max_parallel, created_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (array.id, array.executor_id, array.first, array.last, array.step, array.max_parallel, array.created_at),
            )
            self._db.executemany(
                f"INSERT INTO jobs ({','.join(_JOB_COLUMNS)}) VALUES ({placeholders})", [t._to_row() for t in tasks]
            )
            self._insert_extras(tasks)
            now = time.time()
            self._db.executemany(
                "INSERT INTO transitions (job_id, at, from_state, to_state, substate, reason) VALUES (?,?,?,?,?,?)",
                [(t.id, now, None, t.state.value, t.substate, "submitted") for t in tasks],
            )

    def get_array(self, array_id: str) -> "ArrayRecord":
        with self._lock:
            row = self._db.execute(
                "SELECT id, executor_id, first_index, last_index, step, max_parallel, created_at FROM arrays WHERE id=?",
                (array_id,),
            ).fetchone()
        if row is None:
            raise JobNotFound(array_id, "no such array")
        return ArrayRecord(*row)

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

    def attempts(self, job_id: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT attempt, state, substate, exit_code, message, container_id, started_at, finished_at "
                "FROM attempts WHERE job_id=? ORDER BY attempt",
                (job_id,),
            ).fetchall()
        keys = "attempt state substate exit_code message container_id started_at finished_at".split()
        return [dict(zip(keys, r)) for r in rows]

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
            row = self._db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            current = JobState(row[0])
            if current in (JobState.REQUEUED, JobState.REQUEUED_HELD) and to is JobState.FAILED and substate in RETRYABLE:
                return False  # the engine's word on the attempt that was already requeued
            allowed = can_move(current, to) and (expect is None or current in set(expect))
            if not allowed:
                if strict:
                    raise InvalidState(job_id, current.value, f"move to {to.value}")
                return False
            if to is JobState.RUNNING and current in RUNNABLE_STATES:
                if self._array_full(job_id):
                    return False  # max-parallel is enforced here, atomically, whatever a planner thought
                fields = {**fields, "not_before": None}
                self._db.execute("UPDATE jobs SET attempt = attempt + 1 WHERE id=?", (job_id,))
            elif current in ACTIVE_STATES and (to.is_final or to is JobState.REQUEUED):
                to, substate, fields = self._end_attempt(job_id, to, substate, fields)
            cols = {"state": to.value, "substate": substate, **fields}
            assignments = ",".join(f"{k}=?" for k in cols)
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id=?", (*cols.values(), job_id))
            self._record(job_id, current, to, substate, reason)
        return True

    def _array_full(self, job_id: str) -> bool:
        """True when the job is an array task and its array already runs max-parallel tasks."""
        row = self._db.execute(
            "SELECT a.id, a.max_parallel FROM jobs j JOIN arrays a ON a.id = j.array_id WHERE j.id=?", (job_id,)
        ).fetchone()
        if row is None or row[1] is None:
            return False
        (n,) = self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE array_id=? AND {sql_in(ACTIVE_STATES)}", (row[0],)).fetchone()
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

    def delete(self, job_id: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM job_labels WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM job_deps WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM attempts WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM job_filesets WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    # ----------------------------------------------------------------- data

    def set_filesets(self, job_id: str, role: str, items: dict[str, str]) -> None:
        """Replace a job's filesets of one role ('input' or 'output'): target -> digest."""
        with self._tx():
            self._db.execute("DELETE FROM job_filesets WHERE job_id=? AND role=?", (job_id, role))
            self._db.executemany(
                "INSERT INTO job_filesets (job_id, role, target, digest) VALUES (?,?,?,?)",
                [(job_id, role, t, d) for t, d in items.items()],
            )

    def filesets(self, job_id: str | None = None, role: str | None = None) -> list[tuple[str, str, str, str]]:
        """(job id, role, target, digest) rows."""
        sql, params = "SELECT job_id, role, target, digest FROM job_filesets WHERE 1=1", []
        if job_id is not None:
            sql += " AND job_id=?"
            params.append(job_id)
        if role is not None:
            sql += " AND role=?"
            params.append(role)
        with self._lock:
            return self._db.execute(sql + " ORDER BY job_id, role, target", params).fetchall()

    def record_image(self, image_id: str, tags: list[str], file_digest: str, file_name: str | None) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO images (image_id, tags, file_digest, file_name, loaded_at) VALUES (?,?,?,?,?)",
                (image_id, ",".join(tags), file_digest, file_name, time.time()),
            )

    def images(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT image_id, tags, file_digest, file_name, loaded_at FROM images ORDER BY loaded_at"
            ).fetchall()
        return [
            {"image_id": i, "tags": [t for t in (tags or "").split(",") if t], "file_digest": d, "file_name": n, "loaded_at": at}
            for i, tags, d, n, at in rows
        ]

    def transitions(self, job_id: str | None = None, since_seq: int = 0) -> list[Transition]:
        sql = f"SELECT {Transition.COLUMNS} FROM transitions WHERE seq > ?"
        params: list = [since_seq]
        if job_id is not None:
            sql += " AND job_id=?"
            params.append(job_id)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", params).fetchall()
        return [Transition.from_row(r) for r in rows]


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def iter_chunks(path: Path, offset: int = 0, size: int = 1 << 16) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(size):
            yield chunk
