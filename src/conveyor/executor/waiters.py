"""Waiters: futures for jobs reaching a state, resolved when a transition is committed.

No thread per waiter: transitions this process commits resolve futures at once (``changed``);
those other processes commit are found by one poller thread that reads the store for every
pending waiter together, and exists only while some waiter is pending.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Iterable

from ..errors import JobNotFound
from ..state import JobState
from ..store import JobRecord, Store

Predicate = Callable[[JobState], bool]


class Waiters:
    def __init__(self, store: Store, make_job: Callable[[JobRecord], object], closed: threading.Event):
        self.store = store
        self._make_job = make_job
        self._closed = closed
        self._waiters: list[tuple[str, Predicate, Future]] = []
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self.poll_interval = 0.2

    def when(self, job_id: str, predicate: Predicate) -> Future:
        """A future resolved with the Job once its state satisfies ``predicate``. Cancelling
        the future forgets it."""
        fut: Future = Future()
        with self._lock:
            self._waiters.append((job_id, predicate, fut))
        fut.add_done_callback(self._forget_cancelled)
        self.changed(job_id)  # checked after registering, so no transition slips by
        if not fut.done():
            self._ensure_poller()
        return fut

    def changed(self, job_id: str) -> JobState | None:
        """A transition of ``job_id`` was committed: resolve whoever waits for its new state.
        Returns that state (None when the job is gone)."""
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            return None
        with self._lock:
            ready = [w for w in self._waiters if w[0] == job_id and w[1](rec.state)]
            self._waiters = [w for w in self._waiters if w not in ready]
        if ready:
            job = self._make_job(rec)
            for _, _, fut in ready:
                if not fut.done():
                    fut.set_result(job)
        return rec.state

    def forget(self, futures: Iterable[Future]) -> None:
        gone = set(map(id, futures))
        with self._lock:
            self._waiters = [w for w in self._waiters if id(w[2]) not in gone]

    def _forget_cancelled(self, fut: Future) -> None:
        if fut.cancelled():
            self.forget([fut])

    def _ensure_poller(self) -> None:
        with self._lock:
            if self._poller is not None:
                return
            self._poller = threading.Thread(target=self._poll, name="conveyor-poller", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        while not self._closed.wait(self.poll_interval):
            with self._lock:
                pending = {w[0] for w in self._waiters}
                if not pending:
                    self._poller = None  # under the lock: a waiter added from now on starts a new one
                    return
            for job_id in pending:
                self.changed(job_id)
        with self._lock:
            self._poller = None
