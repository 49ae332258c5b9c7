"""The jobs part of :class:`~conveyor.store.Store`: insert, look up (by id, prefix, name or
idempotency key), list, count, update plain columns and delete jobs. Like every store mixin it
uses the connection, lock and transactions that :class:`~conveyor.store.Store` owns."""

from __future__ import annotations

import functools
import re
import time
from typing import Iterable

from .. import faults
from ..faults import Point
from ..errors import JobNotFound
from ..state import FINAL_STATES, LIVE_STATES, JobState, sql_in
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

    def insert_many(self, jobs: list[JobRecord]) -> None:
        """New jobs (no idempotency keys) and their first transitions in one transaction: all of
        them, or none."""
        with self._tx():
            self._insert_jobs(jobs)
            if jobs:
                faults.reached(Point.BATCH_WRITING, jobs[0].id)

    def _insert_jobs(self, jobs: list[JobRecord]) -> None:
        # An array's tasks (or a batch of one spec) share one spec object: serialised once.
        texts: dict[int, str] = {}
        for job in jobs:
            if id(job.spec) not in texts:
                texts[id(job.spec)] = job.spec.to_json()
        self._db.executemany(
            f"INSERT INTO jobs ({','.join(_JOB_COLUMNS)}) VALUES ({','.join('?' * len(_JOB_COLUMNS))})",
            [job._to_row(texts[id(job.spec)]) for job in jobs],
        )
        self._insert_extras(jobs)
        now = time.time()
        self._db.executemany(
            "INSERT INTO transitions (job_id, at, from_state, to_state, substate, reason) VALUES (?,?,?,?,?,?)",
            [(job.id, now, None, job.state.value, job.substate, "submitted") for job in jobs],
        )

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

    def unended_dependencies(self, job_id: str) -> list[tuple[str, str | None]]:
        """(condition, engine handle) of each job ``job_id`` depends on that has not ended."""
        with self._lock:
            return self._db.execute(
                f"SELECT d.condition, j.container_id FROM job_deps d JOIN jobs j ON j.id = d.dep_id "
                f"WHERE d.job_id = ? AND NOT {sql_in(FINAL_STATES, 'j.state')} ORDER BY d.rowid", (job_id,)
            ).fetchall()

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
        labels: dict[str, str | None] | None = None,
        executor_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        *,
        newest_first: bool = False,
        ids: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        images: Iterable[str] | None = None,
        exit_codes: Iterable[int] | None = None,
        before: str | None = None,
        since: str | None = None,
    ) -> list[JobRecord]:
        """Jobs oldest first (``newest_first``: the most recent first, as ``docker ps``), filtered
        as :meth:`_where` says. Ordering, filters and ``limit``/``offset`` are all SQL, so
        ``ps -n 5`` over a 100,000-job store parses 5 specs, not 100,000.

        "Oldest" is the order the jobs were stored in, their rowid, which only grows (an array's
        tasks in index order): every index of the table ends with the rowid, so the jobs of
        one state, array or lease come out of their index already in order, where ordering by
        ``created_at`` would sort every match first."""
        where, params = self._where(states, labels, executor_id, ids, names, images, exit_codes, before, since)
        sql = f"SELECT {','.join(_JOB_COLUMNS)} FROM jobs WHERE {where} ORDER BY rowid{' DESC' if newest_first else ''}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if limit is None else limit, offset]
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [JobRecord._from_row(r) for r in rows]

    def page(
        self, limit: int, cursor: str | None = None, *, newest_first: bool = False, **filters
    ) -> tuple[list[JobRecord], str | None]:
        """One page of :meth:`list`: at most ``limit`` jobs after ``cursor`` (None: from the
        first), and the cursor of the next page (None: this is the last). Keyset paging on the
        rowid: a page costs the same at job 100 as at job 100,000 (OFFSET would walk past every
        earlier one), and a job submitted between two pages shifts nothing. ``filters``:
        list()'s (states, labels, ids, ...) and the dashboard's ``search`` (a part of the name
        or the start of the id), ``array_id`` and ``lease_id``."""
        where, params = self._where(**{**dict.fromkeys(_FILTERS), **filters})
        if cursor is not None:
            where += f" AND rowid {'<' if newest_first else '>'} ?"
            params.append(_parse_cursor(cursor))
        sql = (f"SELECT {','.join(_JOB_COLUMNS)}, rowid FROM jobs WHERE {where} "
               f"ORDER BY rowid{' DESC' if newest_first else ''} LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, [*params, limit + 1]).fetchall()
        more, rows = len(rows) > limit, rows[:limit]
        return [JobRecord._from_row(r[:-1]) for r in rows], str(rows[-1][-1]) if more else None

    def count(
        self,
        states: Iterable[JobState] | None = None,
        labels: dict[str, str | None] | None = None,
        executor_id: str | None = None,
        *,
        ids: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        images: Iterable[str] | None = None,
        exit_codes: Iterable[int] | None = None,
        before: str | None = None,
        since: str | None = None,
    ) -> int:
        where, params = self._where(states, labels, executor_id, ids, names, images, exit_codes, before, since)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", params).fetchone()[0]

    def state_counts(self) -> dict[str, int]:
        """How many jobs are in each state (states without a job left out): one pass over the
        state index."""
        with self._lock:
            return dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def _where(self, states, labels, executor_id, ids, names, images, exit_codes, before, since,
               search=None, array_id=None, lease_id=None) -> tuple[str, list]:
        """The WHERE clause of list() and count(). Each filter is None for "any"; an empty one
        matches nothing. Within a filter any value matches (``docker ps --filter`` ORs the values
        of one key), labels excepted: every label must match (a value None: the key is set).

        ``ids``: id prefixes. ``names``: regular expressions searched in the name and in "/name"
        (docker's ``name=^/web$`` idiom). ``images``: image references, ``busybox`` and
        ``docker.io/library/busybox:latest`` being one. ``before``/``since``: a job (id, prefix or
        name); only jobs created before / after it."""
        where = _Where()
        if states is not None:
            where.one_of("state", [s.value for s in states])
        if executor_id is not None:
            where.add("executor_id=?", executor_id)
        for key, value in (labels or {}).items():
            if value is None:
                where.add("id IN (SELECT job_id FROM job_labels WHERE key=?)", key)
            else:
                where.add("id IN (SELECT job_id FROM job_labels WHERE key=? AND value=?)", key, value)
        if ids is not None:
            where.any_of("id LIKE ? ESCAPE '\\'", [(_like_prefix(i),) for i in ids])
        if names is not None:
            self._allow_regexp()
            where.any_of("(name REGEXP ? OR ('/' || name) REGEXP ?)", [(p, p) for p in map(_name_pattern, names)])
        if images is not None:
            where.one_of("json_extract(spec, '$.image')", [form for ref in images for form in _image_forms(ref)])
        if exit_codes is not None:
            where.one_of("exit_code", [int(c) for c in exit_codes])
        # created before/after a job: the list's own order, so an array's tasks split as listed
        if before is not None:
            where.add("rowid < (SELECT rowid FROM jobs WHERE id=?)", self.resolve(before))
        if since is not None:
            where.add("rowid > (SELECT rowid FROM jobs WHERE id=?)", self.resolve(since))
        if search:
            where.add("(name LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\')", "%" + _like_prefix(search), _like_prefix(search))
        if array_id is not None:
            where.add("array_id=?", array_id)
        if lease_id is not None:
            where.add("lease_id=?", lease_id)
        return where.sql, where.params

    def _allow_regexp(self) -> None:
        # SQLite parses REGEXP but leaves the function to the application; registering it
        # again is cheap and keeps it on whichever connection (writer or reader) runs the query.
        with self._lock:
            self._db.create_function("regexp", 2, _regexp, deterministic=True)

    def update(self, job_id: str, **fields) -> None:
        """Set plain columns (container id, stop reason, ...). Never the state: see transition()."""
        if not fields or "state" in fields or set(fields) - set(_JOB_COLUMNS):
            raise ValueError(f"bad update fields: {sorted(fields)}")
        assignments = ",".join(f"{k}=?" for k in fields)
        with self._tx():
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id=?", (*fields.values(), job_id))

    def delete(self, job_id: str) -> None:
        with self._tx():
            self._delete([job_id])

    def _delete(self, ids: list[str], history: bool = False) -> None:
        """Every row of these jobs (``history``: their transitions too) in the open transaction."""
        marks = ",".join("?" * len(ids))
        for table in ("job_labels", "job_deps", "attempts", "provenance", "job_filesets", "usage_samples",
                      *(("transitions",) if history else ())):
            self._db.execute(f"DELETE FROM {table} WHERE job_id IN ({marks})", ids)
        self._db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids)

    def prune_jobs(self, ids: list[str]) -> int:
        """Forget ended jobs, their transitions included (retention: the history stops
        growing), a batch a transaction; a job that is not ended (any more) is left alone.
        Returns how many were removed."""
        removed = 0
        for start in range(0, len(ids), 500):
            batch = ids[start:start + 500]
            with self._tx():
                ended = [r[0] for r in self._db.execute(
                    f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(batch))}) AND {sql_in(FINAL_STATES)}", batch)]
                if ended:
                    self._delete(ended, history=True)
                removed += len(ended)
        return removed

    def missing(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` no job of the store has."""
        have: set[str] = set()
        for start in range(0, len(ids), 500):
            batch = ids[start:start + 500]
            have.update(r[0] for r in self.query(f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(batch))})", batch))
        return [i for i in ids if i not in have]

    def prunable(self, ended_before: float | None, keep_last: int | None) -> list[tuple[str, str | None]]:
        """(id, container id) of the ended jobs retention lets go, oldest end first: ended before
        ``ended_before`` (None: any time) and not among the newest ``keep_last`` ended ones. Never
        one a live job depends on: its end is that job's condition to start."""
        where, params = [sql_in(FINAL_STATES)], []
        if ended_before is not None:
            where.append("finished_at < ?")
            params.append(ended_before)
        if keep_last is not None:
            where.append(f"id NOT IN (SELECT id FROM jobs INDEXED BY jobs_ended WHERE {sql_in(FINAL_STATES)} "
                         "ORDER BY finished_at DESC LIMIT ?)")
            params.append(keep_last)
        where.append(f"id NOT IN (SELECT d.dep_id FROM job_deps d JOIN jobs q ON q.id = d.job_id "
                     f"WHERE {sql_in(LIVE_STATES, 'q.state')})")
        return self.query(f"SELECT id, container_id FROM jobs INDEXED BY jobs_ended WHERE {' AND '.join(where)} "
                          "ORDER BY finished_at", params)


_FILTERS = ("states", "labels", "executor_id", "ids", "names", "images", "exit_codes", "before", "since",
            "search", "array_id", "lease_id")


def _parse_cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        raise ValueError(f"cursor {cursor!r} is not one a page answered with; give its next_cursor, or none for the first page") from None


class _Where:
    """A WHERE clause built a filter at a time: filters are ANDed, the values of one ORed."""

    def __init__(self) -> None:
        self.terms: list[str] = ["1=1"]
        self.params: list = []

    def add(self, term: str, *params) -> None:
        self.terms.append(term)
        self.params += params

    def one_of(self, column: str, values: list) -> None:
        self.add(f"{column} IN ({','.join('?' * len(values))})", *values)  # IN (): nothing matches

    def any_of(self, term: str, values: list[tuple]) -> None:
        self.add("(" + (" OR ".join([term] * len(values)) or "0") + ")", *(p for v in values for p in v))

    @property
    def sql(self) -> str:
        return " AND ".join(self.terms)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _name_pattern(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"name filter {text!r} is not a regular expression: {exc}") from None
    return text


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _regexp(pattern: str, value: str | None) -> bool:
    return value is not None and _compiled(pattern).search(value) is not None


_HUB_PREFIXES = ("docker.io/", "index.docker.io/")


def _image_forms(ref: str) -> list[str]:
    """The spellings of one image reference: busybox, busybox:latest, library/busybox and
    docker.io/library/busybox[:latest] all name one image, so ``ancestor=busybox`` finds a job
    submitted with any of them. (docker compares image ids; the store has only the reference.)"""
    name, at, digest = ref.partition("@")
    repo, tag = name, ""
    if ":" in name.rsplit("/", 1)[-1]:
        repo, _, tag = name.rpartition(":")
    if not at and not tag:
        tag = "latest"
    for hub in _HUB_PREFIXES:
        if repo.startswith(hub):
            repo = repo[len(hub):]
            break
    if repo.startswith("library/") and repo.count("/") == 1:
        repo = repo[len("library/"):]
    first = repo.split("/", 1)[0]
    repos = [repo]
    if "/" not in repo:
        repos += ["library/" + repo, "docker.io/library/" + repo]
    elif not ("." in first or ":" in first or first == "localhost"):
        repos.append("docker.io/" + repo)
    tails = [f":{tag}"] + ([""] if tag == "latest" else []) if tag else [""]
    return [r + t + (at + digest) for r in repos for t in tails]
