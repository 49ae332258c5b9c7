"""The deadline timer: one thread and one heap for every job's timeout and every pending
SIGKILL, however many jobs run."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable

log = logging.getLogger("conveyor.supervisor")


class DeadlineTimer:
    """Fires ``callback(kind, job_id)`` when a deadline passes."""

    def __init__(self, callback: Callable[[str, str], None]):
        self._callback = callback
        self._heap: list[tuple[float, int, str, str]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="conveyor-deadlines", daemon=True)
        self._thread.start()

    def add(self, when: float, kind: str, job_id: str) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._counter), kind, job_id))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.time()):
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.time())
                if self._closed:
                    return
                _, _, kind, job_id = heapq.heappop(self._heap)
            try:
                self._callback(kind, job_id)
            except Exception:  # noqa: BLE001 - a failing callback must not stop the timer
                log.exception("deadline %s for job %s failed", kind, job_id)
