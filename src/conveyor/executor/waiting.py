"""Waiting: DRMAA2's wait started / wait terminated / wait any, with timeouts, and futures
for callers that must not block (asyncio: ``asyncio.wrap_future``)."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from typing import Iterable

from ..arguments import job_ref, job_refs
from ..errors import WaitTimeout
from ..job import Job
from ..state import WAITING_STATES, JobState
from .base import ExecutorBase


def finished(state: JobState) -> bool:
    return state.is_final


def started(state: JobState) -> bool:
    """Left the queue: running, suspended, or already ended."""
    return state not in WAITING_STATES


class WaitMixin(ExecutorBase):
    def future(self, ref: str, *, until: str = "finished") -> "Future[Job]":
        """A future resolved with the Job once it has finished (or, with ``until="started"``,
        left the queue), without blocking. Cancel it to stop waiting."""
        job_ref("future", ref)
        return self._waiters.when(self.store.resolve(ref), started if until == "started" else finished)

    def wait(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job is Done or Failed; WaitTimeout after ``timeout`` seconds."""
        job_ref("wait", ref)
        return self._wait_for(ref, finished, "finished", timeout)

    def wait_started(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job has left the queue (running, suspended, or already ended)."""
        job_ref("wait_started", ref)
        return self._wait_for(ref, started, "started", timeout)

    def _wait_for(self, ref: str, predicate, what: str, timeout: float | None) -> Job:
        job_id = self.store.resolve(ref)
        fut = self._waiters.when(job_id, predicate)
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            fut.cancel()
            raise WaitTimeout(job_id, what, timeout or 0) from None

    def wait_any(self, refs: Iterable[str], timeout: float | None = None) -> Job:
        """The first of ``refs`` to finish (DRMAA2 waitAnyTerminated)."""
        ids = [self.store.resolve(r) for r in job_refs("wait_any", refs)]
        if not ids:
            raise ValueError("wait_any needs at least one job")
        futures = [self._waiters.when(i, finished) for i in ids]
        done, _ = futures_wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        for fut in futures:
            fut.cancel()
        if not done:
            raise WaitTimeout(",".join(ids), "finished", timeout or 0)
        return min((f.result() for f in done), key=lambda j: j.finished_at or 0)
