"""One lock per job, shared by every path that changes a job's container (launch, finish,
relaunch after a crash), so two threads never act on one job at once."""

from __future__ import annotations

import threading


class JobLocks:
    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, job_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(job_id, threading.Lock())
