"""The scheduler: takes queued jobs from the store and launches them on the backend.

Submitting only writes a Queued row and pokes the supervisor; this is the one place that
turns a queued job into a running container. It runs inside whichever process holds the
state directory's supervisor lock, so a job is launched exactly once however many
processes submit.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import docker.errors

from .daemon import WakeReceiver
from .errors import ConveyorError, EngineUnavailable, ImageNotFound, JobNotFound
from .state import JobState, Substate
from .store import JobRecord

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger("conveyor.scheduler")

RUNNABLE = (JobState.QUEUED, JobState.REQUEUED)


class Scheduler:
    def __init__(self, supervisor: "Supervisor", waker: WakeReceiver, launchers: int = 4):
        self.sup = supervisor
        self.store = supervisor.store
        self.backend = supervisor.backend
        self._waker = waker
        # Pulls can be slow: a few launchers so one big image does not hold up the queue.
        self._pool = ThreadPoolExecutor(max_workers=launchers, thread_name_prefix="conveyor-launch")
        self._launching: set[str] = set()
        self._launching_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="conveyor-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._waker.poke()

    def close(self) -> None:
        self._stop.set()
        self._waker.poke()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True)
        self._waker.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatch()
            except Exception:  # noqa: BLE001 - the queue must keep moving
                log.exception("dispatch failed")
            # Woken at once by a submitter; the timeout is only a safety net.
            self._waker.wait(timeout=1.0)

    def dispatch(self) -> None:
        for rec in self.store.list(states=RUNNABLE, executor_id=self.sup.executor_id):
            with self._launching_lock:
                if rec.id in self._launching:
                    continue
                self._launching.add(rec.id)
            self._pool.submit(self._launch_logged, rec.id)

    def _launch_logged(self, job_id: str) -> None:
        try:
            self.launch(job_id)
        except EngineUnavailable as exc:
            log.warning("job %s stays queued: %s", job_id, exc)
        except Exception:  # noqa: BLE001
            log.exception("launching job %s failed", job_id)
        finally:
            with self._launching_lock:
                self._launching.discard(job_id)

    # ------------------------------------------------------------------ launching one job

    def launch(self, job_id: str) -> None:
        """Queued -> image -> container -> claim (Running) -> start. Safe to repeat after a
        crash at any step: the container is found by its name instead of made twice."""
        with self.sup.lock_for(job_id):
            try:
                rec = self.store.get(job_id)
            except JobNotFound:
                return
            if rec.state not in RUNNABLE:
                return
            try:
                self.backend.ensure_image(rec.spec, refresh=False)
            except ImageNotFound as exc:
                self._fail(rec, Substate.IMAGE_MISSING, str(exc))
                return
            if rec.container_id is None:
                try:
                    rec.container_id = self.backend.create(rec.id, rec.spec)
                except docker.errors.APIError as exc:
                    existing = self.backend.inspect(f"conveyor-{rec.id}") if exc.status_code == 409 else None
                    if existing is None:
                        missing = exc.status_code == 404 and "image" in str(exc).lower()
                        self._fail(rec, Substate.IMAGE_MISSING if missing else Substate.START_FAILED, _message(exc))
                        return
                    rec.container_id = existing.id  # made before a crash: adopt our own
                except ConveyorError as exc:
                    self._fail(rec, Substate.START_FAILED, str(exc))
                    return
                self.store.update(rec.id, container_id=rec.container_id)
            # Claim the job before starting it: a hold or cancel that won the race wins, and
            # the container we made for it goes away.
            if not self.store.transition(rec.id, JobState.RUNNING, expect=RUNNABLE, reason="started", started_at=time.time()):
                self.backend.remove(rec.container_id)
                return
            self.start_container(rec)

    def start_container(self, rec: JobRecord) -> None:
        """Start a claimed (Running) job's created container; record a failure to start."""
        try:
            self.backend.start(rec.container_id)
        except docker.errors.APIError as exc:
            status = self.backend.inspect(rec.container_id)
            self._fail(
                rec, Substate.START_FAILED, _message(exc), exit_code=status.exit_code if status else None, remove=True
            )
            return
        rec.started_at = time.time()
        self.sup.watch_timeout(rec)
        self.sup.notify(rec.id)

    def _fail(
        self, rec: JobRecord, substate: str, message: str, exit_code: int | None = None, remove: bool = False
    ) -> None:
        """Record the failure, then remove the useless container, then tell the waiters."""
        moved = self.store.transition(
            rec.id,
            JobState.FAILED,
            substate,
            reason="launch failed",
            message=message,
            exit_code=exit_code,
            finished_at=time.time(),
        )
        if remove and rec.container_id:
            self.backend.remove(rec.container_id)
        if moved:
            self.sup.notify(rec.id)


def _message(exc: docker.errors.APIError) -> str:
    text = exc.explanation or str(exc)
    return text.decode() if isinstance(text, bytes) else str(text)
