"""Unit tests (no engine) for the store's read-only mode.

A reader such as an events stream opens the database with ``Store(path, readonly=True)``: it
must see what the writer committed, and it must never change the database (no write, no
migration, no journal-mode change) however it is used.
"""

from __future__ import annotations

import sqlite3

import pytest

from conveyor.spec import JobSpec
from conveyor.state import JobState, Substate
from conveyor.store import MIGRATIONS, JobRecord, Store, new_job_id


def _job() -> JobRecord:
    return JobRecord(id=new_job_id(), executor_id="ex", spec=JobSpec(image="busybox"))


def test_readonly_store_sees_committed_rows_and_refuses_writes(tmp_path):
    """A reader that could write would race the executor's state machine; one that missed
    committed rows would stream stale events."""
    path = tmp_path / "odd ?#% dir" / "state.db"  # characters a file: URI would misread unquoted
    writer = Store(path)
    reader = Store(path, readonly=True)
    try:
        job = writer.insert(_job())
        assert reader.get(job.id).state is JobState.QUEUED
        assert writer.transition(job.id, JobState.QUEUED_HELD, Substate.HELD)
        assert reader.get(job.id).state is JobState.QUEUED_HELD
        assert [(t.to_state, t.substate) for t in reader.transitions(job.id)] == [
            (JobState.QUEUED, None),
            (JobState.QUEUED_HELD, Substate.HELD),
        ]

        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.insert(_job())
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.update(job.id, message="from the reader")
        assert writer.count() == 1
        assert writer.get(job.id).message is None
        writer.insert(_job())  # the failed writes left no transaction or lock behind
        assert reader.count() == 2
    finally:
        reader.close()
        writer.close()


def test_readonly_store_neither_migrates_nor_changes_the_journal_mode(tmp_path):
    """Opening a database for reading must not upgrade its schema or switch it to WAL under
    the process that owns it."""
    path = tmp_path / "state.db"
    plain = sqlite3.connect(path)
    plain.execute("CREATE TABLE other (x)")
    plain.commit()
    plain.close()

    reader = Store(path, readonly=True)
    try:
        assert reader.schema_version == 0
        assert reader.query("PRAGMA journal_mode") == [("delete",)]
    finally:
        reader.close()
    assert Store(path).schema_version == len(MIGRATIONS)  # a writer would have migrated it


def test_readonly_store_does_not_create_a_missing_database(tmp_path):
    with pytest.raises(sqlite3.OperationalError):
        Store(tmp_path / "absent" / "state.db", readonly=True)
    assert not (tmp_path / "absent").exists()
