"""Waiting through the agent: long-polls of at most POLL seconds each, asked again until the
caller's timeout, so no request hangs on a connection for hours."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Iterable

from ..arguments import job_ref, job_refs
from ..errors import WaitTimeout
from ..job import Job
from .base import ClientBase, route

POLL = 30.0  # seconds per long-poll request


class WaitMixin(ClientBase):
    def _long_poll(self, request, what: str, timeout: float | None) -> Job:
        """``request(step)`` long-polls for at most ``step`` seconds; again until ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
            try:
                return self._job(request(round(step, 3)))
            except WaitTimeout as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(exc.job_id, what, timeout or 0) from None

    def _wait(self, ref: str, until: str, timeout: float | None) -> Job:
        def request(step: float) -> dict:
            return self._http.call("GET", route("wait", ref), {"timeout": step, "until": until}, timeout=step + 30)

        return self._long_poll(request, until, timeout)

    def wait(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job is Done or Failed; WaitTimeout after ``timeout`` seconds."""
        job_ref("wait", ref)
        return self._wait(ref, "finished", timeout)

    def wait_started(self, ref: str, timeout: float | None = None) -> Job:
        job_ref("wait_started", ref)
        return self._wait(ref, "started", timeout)

    def wait_any(self, refs: Iterable[str], timeout: float | None = None) -> Job:
        ids = job_refs("wait_any", refs)
        if not ids:
            raise ValueError("wait_any needs at least one job")

        def request(step: float) -> dict:
            return self._http.call("POST", route("wait_any"), body={"ids": ids, "timeout": step}, timeout=step + 30)

        return self._long_poll(request, "finished", timeout)

    def future(self, ref: str, *, until: str = "finished") -> "Future[Job]":
        """A future resolved with the Job once it finished (or started); one thread
        long-polls for it."""
        job_ref("future", ref)
        fut: Future = Future()
        job_id = self.info(ref).id

        def poll() -> None:
            try:
                fut.set_result(self._wait(job_id, until, None))
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
            finally:
                self.close()

        threading.Thread(target=poll, daemon=True, name="conveyor-client-future").start()
        return fut
