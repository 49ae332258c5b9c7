"""The schema: one SQL script per schema version, applied in order by :class:`Store` on open
(``PRAGMA user_version`` counts the ones applied). Released entries are never edited."""

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
    # 4: listings in creation order (ps, newest first) read a page of this index instead of
    # sorting the whole history.
    """
    CREATE INDEX jobs_created ON jobs(created_at);
    """,
    # 5: the machine a job ran on, for an engine with several (swarm); NULL on one machine.
    """
    ALTER TABLE jobs ADD COLUMN node TEXT;
    """,
    # 6: jobs queued in their engine's own queue (Slurm, Swarm) hold their share like running
    # ones; the planner and max-parallel find them through this index (state.IN_ENGINE_SQL).
    """
    CREATE INDEX jobs_engine_queued ON jobs(substate) WHERE substate = 'engine_queued';
    """,
    # 7: an array its engine runs as one array job (Slurm), max-parallel enforced there:
    # 1 while Conveyor has live tasks of it, 2 once its engine's array job was closed.
    """
    ALTER TABLE arrays ADD COLUMN engine_array INTEGER NOT NULL DEFAULT 0;
    """,
    # 8: a job for an engine that holds jobs for their dependencies (Slurm's --dependency).
    """
    ALTER TABLE jobs ADD COLUMN engine_deps INTEGER NOT NULL DEFAULT 0;
    """,
    # 9: provenance. The token that submitted a job (its name; NULL from an embedded
    # Executor), and where and how each attempt ran, as one JSON document per attempt.
    """
    ALTER TABLE jobs ADD COLUMN submitted_by TEXT;
    CREATE TABLE provenance (
        job_id  TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        doc     TEXT NOT NULL,
        PRIMARY KEY (job_id, attempt)
    );
    """,
    # 10: resource usage. A job's totals (peak memory, CPU seconds, IO bytes, OOM margin, the
    # summary of its samples) as JSON in its row, rewritten at every sample so they survive a
    # crash; the last samples of each running job in a ring (seq counts a job's samples; the
    # sampler deletes those older than its window, and those of jobs that ended).
    """
    ALTER TABLE jobs ADD COLUMN usage TEXT;
    CREATE TABLE usage_samples (
        job_id TEXT NOT NULL,
        seq    INTEGER NOT NULL,
        sample TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    """,
    # 11: leases, a share of the node reserved
    # for a holder that keeps it alive. ``deadline`` is compared with the clock at each
    # scheduler pass and once at reconcile, so a lease outlives an agent restart.
    """
    CREATE TABLE leases (
        id          TEXT PRIMARY KEY,
        executor_id TEXT NOT NULL,
        state       TEXT NOT NULL,
        cpus        REAL NOT NULL,
        memory      INTEGER NOT NULL,
        req_gpus    TEXT,
        gpu_ids     TEXT,
        keepalive   REAL NOT NULL,
        deadline    REAL NOT NULL,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  REAL NOT NULL,
        renewed_at  REAL NOT NULL,
        ended_at    REAL,
        reason      TEXT
    );
    CREATE INDEX leases_live ON leases(state) WHERE state IN ('active', 'draining');
    ALTER TABLE jobs ADD COLUMN lease_id TEXT;
    CREATE INDEX jobs_lease ON jobs(lease_id) WHERE lease_id IS NOT NULL;
    """,
    # 12: a history that grows. `events --since 10m` finds its first transition by time in
    # this index instead of reading the log from the start; retention (prune) finds the
    # ended jobs oldest first without reading the live ones.
    """
    CREATE INDEX transitions_at ON transitions(at);
    CREATE INDEX jobs_ended ON jobs(finished_at) WHERE state IN ('Done', 'Failed');
    """,
    # 13: listings follow the rowid (the order jobs were stored in), which every index ends
    # with; the creation-time index of 4 only cost every insert.
    """
    DROP INDEX jobs_created;
    """,
]
