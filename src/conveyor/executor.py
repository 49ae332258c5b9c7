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
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import BinaryIO, Iterable, Iterator

import docker.errors

from .backends.base import Backend
from .errors import ConveyorError, ImageNotFound, InvalidState, JobNotFound, WaitTimeout
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
        self._futures: dict[str, list[Future]] = {}
        self._futures_lock = threading.Lock()
        self._supervisor: Supervisor | None = None
        if supervise:
            self._supervisor = Supervisor(self.store, self.backend, self.home, self.executor_id, self._changed)
            self._supervisor.start()

    # ------------------------------------------------------------------ plumbing

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from .backends.docker import DockerBackend  # the SDK import costs ~0.2 s: only when needed

            self._backend = DockerBackend(self.executor_id, base_url=self._docker_url)
        return self._backend

    @property
    def supervisor(self) -> Supervisor:
        if self._supervisor is None:
            raise ConveyorError("this Executor was opened with supervise=False")
        return self._supervisor

    def close(self) -> None:
        """Stop supervising. Running jobs keep running; a later Executor picks them up."""
        if self._supervisor is not None:
            self._supervisor.close()
            self._supervisor = None
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
        """Called after a transition is committed: wake whoever waits for a final state."""
        rec = self.store.get(job_id)
        if not rec.state.is_final:
            return
        with self._futures_lock:
            waiting = self._futures.pop(job_id, [])
        job = self._job(rec)
        for fut in waiting:
            if not fut.done():
                fut.set_result(job)

    # ------------------------------------------------------------------ submit and run

    def start(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        stdin: BinaryIO | None = None,
        image_ready: bool = False,
    ) -> str:
        """Create and start a job; returns its id once the container runs (or failed to).

        A missing image raises ImageNotFound before anything is recorded or created. A job
        whose container cannot be created or started is recorded as Failed/start_failed
        with the engine's message, and no container is left behind.
        """
        if not isinstance(spec, JobSpec):
            raise TypeError("start() takes a JobSpec; build one with JobSpec(...) or JobSpec.from_file()")
        supervisor = self.supervisor
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
            )
        )
        try:
            rec.container_id = self.backend.create(rec.id, spec)
        except ConveyorError as exc:
            self._fail_start(rec, str(exc))
            raise
        except docker.errors.APIError as exc:
            substate = Substate.IMAGE_MISSING if exc.status_code == 404 and "image" in str(exc).lower() else None
            self._fail_start(rec, _engine_message(exc), substate=substate)
            return rec.id
        self.store.update(rec.id, container_id=rec.container_id)
        attached = self.backend.attach_stdin(rec.container_id) if stdin is not None and spec.stdin_open else None
        try:
            self.backend.start(rec.container_id)
        except docker.errors.APIError as exc:
            status = self.backend.inspect(rec.container_id)
            self._fail_start(rec, _engine_message(exc), exit_code=status.exit_code if status else None)
            self.backend.remove(rec.container_id)
            return rec.id
        if self.store.transition(rec.id, JobState.RUNNING, expect={JobState.QUEUED}, reason="started", started_at=time.time()):
            rec.state = JobState.RUNNING
        supervisor.watch_timeout(rec)
        if attached is not None:
            threading.Thread(target=_pump_stdin, args=(stdin, attached), daemon=True, name="conveyor-stdin").start()
        return rec.id

    def _fail_start(self, rec: JobRecord, message: str, *, exit_code: int | None = None, substate: str | None = None):
        self.store.transition(
            rec.id,
            JobState.FAILED,
            substate or Substate.START_FAILED,
            reason="start failed",
            message=message,
            exit_code=exit_code,
            finished_at=time.time(),
        )
        self._changed(rec.id)

    def run(self, spec: JobSpec, timeout: float | None = None) -> Job:
        """Start a job and wait for its end. The result carries state, exit code and logs."""
        return self.wait(self.start(spec), timeout=timeout)

    # ------------------------------------------------------------------ waiting

    def future(self, ref: str) -> "Future[Job]":
        """A future resolved with the final Job, without blocking (for asyncio: wrap_future)."""
        job_id = self.store.resolve(ref)
        fut: Future = Future()
        with self._futures_lock:
            self._futures.setdefault(job_id, []).append(fut)
        rec = self.store.get(job_id)  # checked after registering, so no final state slips by
        if rec.state.is_final:
            self._changed(job_id)
        elif self._supervisor is None:
            threading.Thread(target=self._poll_until_final, args=(job_id,), daemon=True).start()
        return fut

    def _poll_until_final(self, job_id: str) -> None:
        # Only for read-only executors: another process supervises and writes the store.
        while not self.store.get(job_id).state.is_final:
            time.sleep(0.25)
        self._changed(job_id)

    def wait(self, ref: str, timeout: float | None = None) -> Job:
        """Block until the job is Done or Failed; WaitTimeout after ``timeout`` seconds."""
        fut = self.future(ref)
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            raise WaitTimeout(self.store.resolve(ref), "finished", timeout or 0) from None

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
        self.supervisor.terminate(rec, Substate.CANCELLED, rec.spec.stop_grace if grace is None else grace)
        return self.wait(rec.id) if wait else self.info(rec.id)

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
