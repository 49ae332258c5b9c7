"""Executor: the public interface. Submit, run, wait, control, read logs, clean up.

    from conveyor import Executor, JobSpec
    with Executor() as ex:
        job = ex.run(JobSpec(image="busybox", command=["echo", "hi"]))
        print(job.state, job.exit_code, job.stdout)
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from typing import BinaryIO, Callable, Iterable, Iterator

import docker.errors

from .backends.base import Backend
from .errors import ConveyorError, InvalidState, JobNotFound, WaitTimeout
from .daemon import SupervisorLock, wake
from .home import Home
from .job import Job
from .spec import JobSpec
from .state import WAITING_STATES, JobState, Substate
from .store import JobRecord, Store, iter_chunks, new_job_id
from .supervisor import Supervisor

STREAMS = ("stdout", "stderr")


class Executor:
    """Runs jobs on this node. One instance supervises the jobs of one state directory.

    ``supervise=False`` gives a read-only view (list, info, logs of finished jobs) that
    does not need the engine until it is asked for something live.
    """

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        *,
        docker_url: str | None = None,
        backend: Backend | None = None,
        supervise: bool = True,
    ):
        self.home = Home(home)
        self.store = Store(self.home.db)
        self.executor_id = self.home.executor_id()
        self._docker_url = docker_url
        self._backend = backend
        self._waiters: list[tuple[str, Callable[[JobState], bool], Future]] = []
        self._waiters_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()
        self._supervisor: Supervisor | None = None
        # One supervisor per state directory. Without the lock this executor is a client:
        # it queues work and reads the store; the lock holder launches and watches.
        self._lock = SupervisorLock(self.home)
        if supervise and self._lock.acquire():
            try:
                self._supervisor = Supervisor(self.store, self.backend, self.home, self.executor_id, self._changed)
                self._supervisor.start()
            except BaseException:
                self._lock.release()
                raise

    # ------------------------------------------------------------------ plumbing

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from .backends.docker import DockerBackend  # the SDK import costs ~0.2 s: only when needed

            self._backend = DockerBackend(self.executor_id, base_url=self._docker_url)
        return self._backend

    @property
    def supervising(self) -> bool:
        """True when this executor holds the state directory's supervisor lock."""
        return self._supervisor is not None

    @property
    def supervisor(self) -> Supervisor:
        if self._supervisor is None:
            holder = self._lock.holder()
            who = f"process {holder} supervises this state directory" if holder else "no process supervises it"
            raise ConveyorError(f"this Executor is not the supervisor ({who})")
        return self._supervisor

    def close(self) -> None:
        """Stop supervising. Running jobs keep running; a later Executor picks them up."""
        self._closed.set()
        if self._supervisor is not None:
            self._supervisor.close()
            self._supervisor = None
        self._lock.release()
        self.store.close()

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _job(self, rec: JobRecord) -> Job:
        return Job.from_record(rec, self.home.job_logs(rec.id))

    def _record(self, ref: str) -> JobRecord:
        return self.store.get(self.store.resolve(ref))

    def _changed(self, job_id: str) -> None:
        """Called after a transition is committed: wake whoever waits for this job."""
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            return
        with self._waiters_lock:
            ready = [w for w in self._waiters if w[0] == job_id and w[1](rec.state)]
            self._waiters = [w for w in self._waiters if w not in ready]
        if ready:
            job = self._job(rec)
            for _, _, fut in ready:
                if not fut.done():
                    fut.set_result(job)

    def _when(self, job_id: str, predicate: Callable[[JobState], bool]) -> "Future[Job]":
        fut: Future = Future()
        with self._waiters_lock:
            self._waiters.append((job_id, predicate, fut))
        self._changed(job_id)  # checked after registering, so no transition slips by
        if self._supervisor is None and not fut.done():
            self._ensure_poller()
        return fut

    def _forget(self, futures: Iterable[Future]) -> None:
        gone = set(map(id, futures))
        with self._waiters_lock:
            self._waiters = [w for w in self._waiters if id(w[2]) not in gone]

    def _ensure_poller(self) -> None:
        # A client learns about transitions from the store, which another process writes:
        # one thread polls for all waiters together.
        with self._waiters_lock:
            if self._poller is not None and self._poller.is_alive():
                return
            self._poller = threading.Thread(target=self._poll, name="conveyor-poller", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        while not self._closed.wait(0.2):
            with self._waiters_lock:
                pending = {w[0] for w in self._waiters}
            if not pending:
                return
            for job_id in pending:
                self._changed(job_id)

    def _wake_scheduler(self) -> None:
        if self._supervisor is not None:
            self._supervisor.scheduler.wake()
        else:
            wake(self.home)

    # ------------------------------------------------------------------ submit and run

    def submit(
        self,
        spec: JobSpec,
        *,
        hold: bool = False,
        idempotency_key: str | None = None,
        image_ready: bool = False,
    ) -> str:
        """Queue a job (QueuedHeld with ``hold``) and return its id at once.

        The image is checked here, so a missing one raises ImageNotFound before anything is
        recorded. ``idempotency_key`` ("digest" for the spec's content digest) makes a second
        submit with the same key return the first job instead of running another.
        """
        if not isinstance(spec, JobSpec):
            raise TypeError("submit() takes a JobSpec; build one with JobSpec(...) or JobSpec.from_file()")
        if idempotency_key == "digest":
            idempotency_key = spec.digest()
        existing = idempotency_key and self.store.by_idempotency_key(idempotency_key)
        if existing:
            return existing.id
        if not image_ready:  # the caller may have pulled already (the CLI does, interruptibly)
            self.backend.ensure_image(spec)
        rec = self.store.insert(
            JobRecord(
                id=new_job_id(),
                executor_id=self.executor_id,
                spec=spec,
                name=spec.name,
                idempotency_key=idempotency_key,
                state=JobState.QUEUED_HELD if hold else JobState.QUEUED,
                substate=Substate.HELD if hold else None,
            )
        )
        if not hold:
            self._wake_scheduler()
        return rec.id

    def start(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        stdin: BinaryIO | None = None,
        image_ready: bool = False,
    ) -> str:
        """Submit a job and return its id once it runs (or failed to start).

        A job whose container cannot be created or started is recorded as
        Failed/start_failed with the engine's message, and no container is left behind.
        With ``stdin`` (and ``stdin_open`` in the spec) the data is fed to the job.
        """
        job_id = self.submit(spec, idempotency_key=idempotency_key, image_ready=image_ready)
        if self._supervisor is None and stdin is None:
            return job_id
        job = self.wait_started(job_id)
        if stdin is not None and spec.stdin_open and job.container_id and not job.state.is_final:
            try:
                attached = self.backend.attach_stdin(job.container_id)
            except docker.errors.APIError:
                return job_id  # it ended before we could attach
            threading.Thread(target=_pump_stdin, args=(stdin, attached), daemon=True, name="conveyor-stdin").start()
        return job_id

    def run(self, spec: JobSpec, timeout: float | None = None) -> Job:
        """Start a job and wait for its end. The result carries state, exit code and logs."""
        return self.wait(self.start(spec), timeout=timeout)

    # ------------------------------------------------------------------ waiting

    def future(self, ref: str) -> "Future[Job]":
        """A future resolved with the final Job, without blocking (for asyncio: wrap_future)."""
        return self._when(self.store.resolve(ref), lambda s: s.is_final)

    def wait(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job is Done or Failed; WaitTimeout after ``timeout`` seconds."""
        return self._wait_for(ref, lambda s: s.is_final, "finished", timeout)

    def wait_started(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job has left the queue (running, suspended, or already ended)."""
        return self._wait_for(ref, lambda s: s not in WAITING_STATES, "started", timeout)

    def _wait_for(self, ref: str, predicate, what: str, timeout: float | None) -> Job:
        job_id = self.store.resolve(ref)
        fut = self._when(job_id, predicate)
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            self._forget([fut])
            raise WaitTimeout(job_id, what, timeout or 0) from None

    def wait_any(self, refs: Iterable[str], timeout: float | None = None) -> Job:
        """The first of ``refs`` to finish (DRMAA2 waitAnyTerminated)."""
        ids = [self.store.resolve(r) for r in refs]
        if not ids:
            raise ValueError("wait_any needs at least one job")
        futures = [self._when(i, lambda s: s.is_final) for i in ids]
        done, _ = futures_wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        self._forget(futures)
        if not done:
            raise WaitTimeout(",".join(ids), "finished", timeout or 0)
        return min((f.result() for f in done), key=lambda j: j.finished_at or 0)

    # ------------------------------------------------------------------ control

    def cancel(self, ref: str, grace: float | None = None, *, wait: bool = True) -> Job:
        """Terminate a job: SIGTERM, then SIGKILL after ``grace`` seconds (default: the spec's
        stop_grace). A job that has not started yet is failed at once."""
        rec = self._record(ref)
        if rec.state.is_final:
            raise InvalidState(rec.id, rec.state.value, "cancel")
        if rec.state in WAITING_STATES or rec.container_id is None:
            self.store.transition(rec.id, JobState.FAILED, Substate.CANCELLED, reason="cancelled", finished_at=time.time())
            self._changed(rec.id)
            return self.info(rec.id)
        grace = rec.spec.stop_grace if grace is None else grace
        if self._supervisor is not None:
            self._supervisor.terminate(rec, Substate.CANCELLED, grace)
        else:  # a client: the engine itself does SIGTERM, the grace, then SIGKILL
            self.store.update(rec.id, stop_reason=Substate.CANCELLED)
            if self.backend.inspect(rec.container_id) and self.store.get(rec.id).state is JobState.SUSPENDED:
                self.backend.signal(rec.container_id, "SIGTERM")
                self.backend.unpause(rec.container_id)
            try:
                self.backend.stop(rec.container_id, grace)
            except docker.errors.NotFound:
                pass
        return self.wait(rec.id) if wait else self.info(rec.id)

    def hold(self, ref: str) -> Job:
        """Keep a queued job from starting (Queued -> QueuedHeld)."""
        return self._hold(ref, hold=True)

    def release(self, ref: str) -> Job:
        """Let a held job start again (QueuedHeld -> Queued)."""
        return self._hold(ref, hold=False)

    def _hold(self, ref: str, hold: bool) -> Job:
        rec = self._record(ref)
        pairs = {
            JobState.QUEUED: JobState.QUEUED_HELD,
            JobState.REQUEUED: JobState.REQUEUED_HELD,
        }
        if not hold:
            pairs = {v: k for k, v in pairs.items()}
        if rec.state not in pairs:
            raise InvalidState(rec.id, rec.state.value, "hold" if hold else "release")
        if not self.store.transition(
            rec.id, pairs[rec.state], Substate.HELD if hold else None, expect={rec.state}, reason="held" if hold else "released"
        ):
            raise InvalidState(rec.id, self.store.get(rec.id).state.value, "hold" if hold else "release")
        if not hold:
            self._wake_scheduler()
        return self.info(rec.id)

    def suspend(self, ref: str) -> Job:
        """Freeze the job's processes (cgroup freezer); the state says Suspended."""
        return self._pause(ref, pause=True)

    def resume(self, ref: str) -> Job:
        return self._pause(ref, pause=False)

    def _pause(self, ref: str, pause: bool) -> Job:
        rec = self._record(ref)
        src, dst = (JobState.RUNNING, JobState.SUSPENDED) if pause else (JobState.SUSPENDED, JobState.RUNNING)
        if rec.state is not src:
            raise InvalidState(rec.id, rec.state.value, "suspend" if pause else "resume")
        try:
            (self.backend.pause if pause else self.backend.unpause)(rec.container_id)
        except docker.errors.APIError as exc:
            current = self.store.get(rec.id).state
            raise InvalidState(rec.id, current.value, f"{'suspend' if pause else 'resume'} ({_engine_message(exc)})")
        self.store.transition(rec.id, dst, expect={src}, reason="suspended" if pause else "resumed")
        return self.info(rec.id)

    # ------------------------------------------------------------------ reading

    def info(self, ref: str) -> Job:
        return self._job(self._record(ref))

    def list(self, states: Iterable[JobState | str] | None = None, labels: dict[str, str] | None = None) -> list[Job]:
        wanted = None if states is None else [JobState(s) for s in states]
        return [self._job(r) for r in self.store.list(states=wanted, labels=labels)]

    def logs(
        self, ref: str, stream: str = "all", *, tail: int | None = None, follow: bool = False
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` pairs of a job's output, stdout and stderr kept apart.

        Finished jobs are read from the store; running ones from the engine. With ``follow``
        the stream goes on until the job ends and includes every byte it wrote."""
        if stream not in (*STREAMS, "all"):
            raise ValueError("stream must be 'stdout', 'stderr' or 'all'")
        streams = STREAMS if stream == "all" else (stream,)
        job_id = self.store.resolve(ref)
        rec = self.store.get(job_id)
        while follow and rec.state in WAITING_STATES:
            time.sleep(0.2)
            rec = self.store.get(job_id)
        if rec.state.is_final or rec.container_id is None:
            yield from self._stored_logs(job_id, streams, tail)
            return
        sent = dict.fromkeys(streams, 0)
        try:
            for name, chunk in self.backend.follow_logs(rec.container_id, streams, tail, follow):
                sent[name] += len(chunk)
                yield name, chunk
        except ConveyorError:
            pass  # the container went away mid-stream; the stored copy has the rest
        if follow and tail is None:
            # Whatever the engine stream missed (it ends at exit, or broke) is in the store.
            self.wait(job_id)
            for name in streams:
                path = self.home.job_logs(job_id) / name
                if path.exists():
                    for chunk in iter_chunks(path, offset=sent[name]):
                        yield name, chunk

    def _stored_logs(self, job_id: str, streams: tuple[str, ...], tail: int | None) -> Iterator[tuple[str, bytes]]:
        for name in streams:
            path = self.home.job_logs(job_id) / name
            if not path.exists():
                continue
            if tail is None:
                for chunk in iter_chunks(path):
                    yield name, chunk
            else:
                data = _last_lines(path, tail)
                if data:
                    yield name, data

    # ------------------------------------------------------------------ removal

    def discard_container(self, ref: str) -> None:
        """Remove a finished job's container; its record, logs and exit code stay."""
        rec = self._record(ref)
        if not rec.state.is_final:
            raise InvalidState(rec.id, rec.state.value, "remove the container of")
        if rec.container_id:
            self.backend.remove(rec.container_id)

    def remove(self, ref: str, force: bool = False) -> None:
        """Forget a finished job: its container, logs and record. ``force`` cancels a live one first."""
        rec = self._record(ref)
        if not rec.state.is_final:
            if not force:
                raise InvalidState(rec.id, rec.state.value, "remove (cancel it first, or force)")
            rec = self.store.get(self.cancel(rec.id, grace=0).id)
        if rec.container_id:
            self.backend.remove(rec.container_id)
        shutil.rmtree(self.home.job_logs(rec.id), ignore_errors=True)
        self.store.delete(rec.id)

    def cleanup(self) -> dict[str, int]:
        """Remove every container, volume and network that carries this executor's label,
        and nothing else. Live jobs are cancelled first and their logs saved."""
        removed = 0
        for status in self.backend.list():
            job_id = status.labels.get("conveyor.job")
            try:
                rec = self.store.get(job_id) if job_id else None
            except JobNotFound:
                rec = None
            if rec is not None and not rec.state.is_final:
                if status.alive:
                    self.supervisor.terminate(rec, Substate.CANCELLED, grace=0)
                    self.wait(rec.id, timeout=60)
                else:
                    self.supervisor.finalize(rec.id)
            self.backend.remove(status.id)
            removed += 1
        return {"containers": removed, **self.backend.remove_volumes_and_networks()}

    @property
    def orphans(self) -> list[str]:
        """Containers with this executor's label whose job the store does not know."""
        return sorted(self.supervisor.orphans)


def _engine_message(exc: docker.errors.APIError) -> str:
    text = exc.explanation or str(exc)
    return text.decode() if isinstance(text, bytes) else str(text)


def _pump_stdin(source: BinaryIO, attached) -> None:
    """Copy the caller's stdin into the container, then close the container's stdin."""
    sock = getattr(attached, "_sock", attached)
    try:
        while chunk := (source.read1(65536) if hasattr(source, "read1") else source.read(65536)):
            sock.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _last_lines(path, n: int, block: int = 1 << 16) -> bytes:
    """The last ``n`` lines of a file, reading backwards (files may be gigabytes)."""
    if n <= 0:
        return b""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        data = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
            # one more newline than lines wanted, ignoring a trailing newline
            if data.count(b"\n", 0, len(data) - 1 if data.endswith(b"\n") else len(data)) >= n:
                break
    body = data[:-1] if data.endswith(b"\n") else data
    lines = body.split(b"\n")[-n:]
    return b"\n".join(lines) + (b"\n" if data.endswith(b"\n") else b"")
