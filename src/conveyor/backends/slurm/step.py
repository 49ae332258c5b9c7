"""The Slurm batch step: what runs on the node Slurm picked, for one job (``python -m
conveyor.backends.slurm.step JOB_DIR``), the way Arvados runs crunch-run under Slurm.

It reads the job (``job.json``) from the job's directory on the shared filesystem, runs it --
in a container through the node's own engine (the docker backend: DOCKER_HOST or the local
socket) when the job has an image, else as a process group -- and writes there what the agent
reads: the job's stdout and stderr byte for byte with their times (``stdout``, ``stderr`` and
their ``.idx``, as the process backend's shim writes them), ``started.json`` when the job runs,
and ``result.json`` (exit code, OOM, times) at its end, before the container is removed.

Stopping: the driver asks for SIGTERM and SIGKILL with the files ``term`` and ``kill``, which
the step looks for while the job runs (a file reaches a step on any node, also one Slurm has
just resumed, where ``scancel --signal`` was seen to be lost; and a SIGKILL to the step would
kill it and leave its container running, as a plain ``docker run`` killed by scancel does).
Slurm's own SIGTERM (at the job's time limit, an operator's ``scancel``) reaches the step's
handler. Either way the step passes SIGTERM to the job and kills it if it has not ended after
the grace period (``grace``, written by the driver's ``stop``; else the spec's ``stop_grace``).
Slurm sends its own SIGKILL KillWait seconds after its SIGTERM: a grace longer than the site's
KillWait is cut there.

Suspending: the driver's ``pause`` writes ``pause``; the step freezes the job (the container
through its engine, a process group with SIGSTOP) and answers with ``paused``; only then does
the driver ``scontrol suspend`` the Slurm job, which stops this step too (Slurm's suspend
stops the job's processes, which a container's are not). ``scontrol resume`` comes first on the
way back, then the step sees ``pause`` gone and thaws the job.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

from ..hostfiles import write_json

STREAMS = ("stdout", "stderr")


class Output:
    """One stream of the job: its bytes, and one ``<bytes> <epoch ns>`` line per chunk."""

    def __init__(self, job_dir: Path, name: str):
        self.data = open(job_dir / name, "ab")
        self.index = open(job_dir / f"{name}.idx", "ab")

    def write(self, chunk: bytes) -> None:
        if chunk:
            self.data.write(chunk)
            self.data.flush()
            self.index.write(f"{len(chunk)} {time.time_ns()}\n".encode())
            self.index.flush()

    def close(self) -> None:
        for f in (self.data, self.index):
            f.flush()
            os.fsync(f.fileno())
            f.close()


class Step:
    def __init__(self, job_dir: Path):
        self.dir = job_dir
        self.plan = json.loads((job_dir / "job.json").read_text())
        self.executor_id, self.job_id = self.plan["executor"], self.plan["job"]
        self.stop_grace = float(self.plan["spec"].get("stop_grace", 10.0))
        self.node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        self.term = threading.Event()
        self.outputs = {name: Output(job_dir, name) for name in STREAMS}
        signal.signal(signal.SIGTERM, lambda *_: self.term.set())

    def grace(self) -> float:
        try:
            return float((self.dir / "grace").read_text())
        except (OSError, ValueError):
            return self.stop_grace

    def terminating(self) -> bool:
        """A SIGTERM came (from Slurm: its time limit, an operator's scancel), or the driver
        asked for one with the file ``term``."""
        return self.term.is_set() or (self.dir / "term").exists()

    def kill_due(self, deadline: float | None) -> bool:
        """The driver asked for SIGKILL, or the grace after a SIGTERM is over."""
        return (deadline is not None and time.monotonic() >= deadline) or (self.dir / "kill").exists()

    def pause_wanted(self) -> bool:
        """The driver's ``pause`` asks with the file ``pause``; ``unpause`` removes it. Not once
        a SIGTERM came: a frozen job cannot handle it, so a stop thaws it first."""
        return (self.dir / "pause").exists() and not self.terminating()

    def paused(self, paused: bool) -> None:
        """Tell the driver the job is frozen (``paused`` exists) or runs again."""
        marker = self.dir / "paused"
        if paused:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def started(self, at: float) -> None:
        # Slurm's own id of the run: an array element's differs from its ARRAYID_INDEX handle.
        write_json(self.dir / "started.json", {"started_at": at, "node": self.node,
                                               "slurm_job_id": os.environ.get("SLURM_JOB_ID")})

    def finish(self, exit_code: int | None, *, oom: bool = False, started_at: float | None = None,
               finished_at: float | None = None, error: str | None = None, start_failed: bool = False) -> int:
        for out in self.outputs.values():
            out.close()
        write_json(self.dir / "result.json", {
            "exit_code": exit_code, "oom_killed": oom, "started_at": started_at,
            "finished_at": finished_at or time.time(),
            "error": error, "start_failed": start_failed, "node": self.node,
        })
        return 125 if exit_code is None else min(exit_code, 255)

    def run(self) -> int:
        return self.run_process(self.plan["process"]) if "process" in self.plan else self.run_container()

    # ------------------------------------------------------------------ a container

    def run_container(self) -> int:
        from ...errors import ConveyorError, EngineError
        from ...spec import JobSpec
        from ..docker import DockerBackend

        spec = JobSpec.model_validate(self.plan["spec"])
        # The node's engine runs it as its own job: Slurm's options (the job's backend choice)
        # are not the engine's.
        spec = spec.model_copy(update={"labels": {**spec.labels, **self.plan.get("labels", {})}, "backend": None})
        spec = self._gpus_slurm_gave(spec)
        try:
            engine = DockerBackend(self.executor_id)
            old = engine.find(self.job_id)  # an earlier attempt's, left by a step killed outright
            if old is not None:
                engine.remove(old.id)
            engine.ensure_image(spec)
            handle = engine.create(self.job_id, spec)
        except ConveyorError as exc:
            return self.finish(None, error=str(exc), start_failed=True)
        try:
            pump = threading.Thread(target=self._copy_logs, args=(engine, handle), daemon=True)
            try:
                engine.start(handle)
            except EngineError as exc:
                status = engine.inspect(handle)
                return self.finish(status.exit_code if status else None, error=str(exc), start_failed=True)
            status = engine.inspect(handle)
            self.started(status.started_at if status and status.started_at else time.time())
            pump.start()
            deadline, killed, paused = None, False, False
            while True:
                status = engine.inspect(handle)
                if status is None or status.finished:
                    break
                try:
                    if self.pause_wanted() != paused:
                        paused = not paused
                        (engine.pause if paused else engine.unpause)(handle)
                        self.paused(paused)
                    if self.terminating() and deadline is None:
                        deadline = time.monotonic() + self.grace()
                        engine.signal(handle, "SIGTERM")
                    if not killed and self.kill_due(deadline):
                        killed = True
                        engine.signal(handle, "SIGKILL")
                except EngineError:
                    pass  # it ended between the look and the signal
                time.sleep(0.05)
            pump.join(timeout=30)
            if status is None:
                return self.finish(None, error="the container was removed from the node while it ran")
            return self.finish(status.exit_code, oom=status.oom_killed, started_at=status.started_at,
                               finished_at=status.finished_at)
        finally:
            try:
                engine.remove(handle)
            except ConveyorError:
                pass  # the node's engine keeps it; `docker container prune` on the node clears it

    def _copy_logs(self, engine, handle: str) -> None:
        for stream, chunk in engine.follow_logs(handle, STREAMS, None, True):
            self.outputs[stream].write(chunk)

    def _gpus_slurm_gave(self, spec):
        """The GPUs Slurm allocated (its --gres sets CUDA_VISIBLE_DEVICES on the node), by id,
        so the container gets exactly those rather than any N."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = spec.resources.gpus
        if gpus is None or not gpus.count or not visible:
            return spec
        request = gpus.model_copy(update={"count": None, "device_ids": visible.split(",")})
        return spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpus": request})})

    # ------------------------------------------------------------------ a process

    def run_process(self, process: dict) -> int:
        """A job without an image: its command (``process``: argv, env, workdir, as the driver
        wrote them) as a process group on the node, in the job's workdir (default: its
        directory), with its env on top of the step's. No job spec is read back: this path
        imports nothing but the standard library, so it starts fast."""
        argv = process["argv"]
        env = {**os.environ, **process["env"]}
        try:
            child = subprocess.Popen(argv, cwd=process.get("workdir") or self.dir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return self.finish(127 if isinstance(exc, FileNotFoundError) else 126,
                               error=f"cannot run {argv[0]!r}: {exc.strerror}", start_failed=True)
        began = time.time()
        self.started(began)
        pumps = [threading.Thread(target=self._copy, args=(pipe, self.outputs[name]), daemon=True)
                 for name, pipe in (("stdout", child.stdout), ("stderr", child.stderr))]
        for p in pumps:
            p.start()
        deadline, paused = None, False
        while child.poll() is None:
            if self.pause_wanted() != paused:
                paused = not paused
                _kill_group(child.pid, signal.SIGSTOP if paused else signal.SIGCONT)
                self.paused(paused)
            if self.terminating() and deadline is None:
                deadline = time.monotonic() + self.grace()
                _kill_group(child.pid, signal.SIGTERM)
            if self.kill_due(deadline):
                _kill_group(child.pid, signal.SIGKILL)
            time.sleep(0.05)
        _kill_group(child.pid, signal.SIGKILL)  # what the job left behind in its group
        for p in pumps:
            p.join(timeout=30)
        code = child.returncode
        return self.finish(128 - code if code < 0 else code, started_at=began)

    @staticmethod
    def _copy(pipe: BinaryIO, out: Output) -> None:
        while chunk := os.read(pipe.fileno(), 65536):
            out.write(chunk)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    return Step(Path(argv[1]).resolve()).run()  # (an array's tasks/<index> leads to the task's directory)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
