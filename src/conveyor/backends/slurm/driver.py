"""The slurm driver: the Backend interface on a Slurm cluster, through its commands.

See the package docstring for the design (the job directory, create/start, the step, states,
stop, recovery). Every Slurm call goes through commands.Slurm, so callers see only Conveyor's
errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from ...spec import JobSpec, Mount
from ...spec.backend import SlurmOptions
from ..base import (
    LABEL_ARRAY,
    LABEL_ARRAY_MAX,
    LABEL_TASK,
    Capabilities,
    ContainerNotFound,
    ContainerStatus,
    EngineConflict,
    NoUsage,
    NotSupported,
)
from ..hostfiles import fresh_dir, host_path, mount_holding, tar_of, under, write_json
from ..polling import PolledEvents
from ..process import logs as filelogs
from . import mapping
from .commands import Slurm
from .arrays import ArrayMixin
from .stopping import StopMixin

STREAMS = ("stdout", "stderr")
START_WAIT_S = 10.0  # how long start waits for the job to run, when Slurm gives no reason to wait


class SlurmBackend(StopMixin, ArrayMixin, PolledEvents, NoUsage):
    """The Backend for a Slurm cluster. ``conf``: its slurm.conf (None: SLURM_CONF, or the
    site's default); ``shared_dir``: a directory every node mounts at the same path, where each
    job's directory is (``<shared_dir>/<executor id>/slurm/<job id>``)."""

    name = "slurm"
    capabilities = Capabilities(recover=True, files=True, oom=True, pause=True, gpus=frozenset({"nvidia"}), queues=True,
                                arrays=True, dependencies=True)
    poll_s = 0.25

    def __init__(self, executor_id: str, shared_dir: str | os.PathLike, conf: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None):
        self.executor_id = executor_id
        self.shared = Path(shared_dir) / executor_id
        self.jobs_dir = self.shared / "slurm"
        self.arrays_dir = self.shared / "slurm-arrays"  # one per job array: its batch script, tasks/<index>
        self._arrays_lock = threading.Lock()
        self.slurm = Slurm(conf)
        self.slurm.ping()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.cache = Path(cache_dir) if cache_dir else self.jobs_dir
        self.cache.mkdir(parents=True, exist_ok=True)
        self._events_lock = threading.Lock()
        self._labels: dict[str, dict[str, str]] = {}

    # ------------------------------------------------------------------ the cluster

    def version(self) -> dict:
        return {"name": self.name, "version": self.slurm.version(), "api_version": None}

    def engine(self) -> dict:
        return {"version": self.version(), "info": {"nodes": self.nodes()}}

    def runtimes(self) -> dict[str, dict]:
        return {}  # a container runs with its node's engine's default runtime

    def nodes(self) -> list[dict]:
        running: dict[str, int] = {}
        for s in self.list():
            if s.alive and s.node:
                running[s.node] = running.get(s.node, 0) + 1
        return sorted((mapping.node_info(r, running.get(r.get("NodeName", ""), 0)) for r in self.slurm.nodes()),
                      key=lambda n: n["name"] or "")

    def check(self, spec: JobSpec) -> None:
        mapping.check(spec, shared=True)

    # ------------------------------------------------------------------ images: the nodes' engines'

    def ensure_image(self, spec: JobSpec, refresh: bool = True) -> None:
        """Nothing here: the node Slurm picks pulls the image (per the job's pull policy) when
        its step runs; an image it cannot get fails the job's start, in its engine's words."""

    def load_image(self, chunks: Iterable[bytes]) -> list[str]:
        raise NotSupported("the slurm backend cannot load images: load them on each node's engine (capability image_load)")

    def image_tags(self, image_id: str) -> list[str]:
        return []

    def images(self) -> list[dict]:
        raise NotSupported("the slurm backend lists no images: each node's engine has its own (capability images)")

    def image_inspect(self, name: str) -> dict | None:
        raise NotSupported("the slurm backend lists no images: each node's engine has its own (capability images)")

    def pull(self, name: str) -> Iterator[dict]:
        raise NotSupported("the slurm backend pulls no images: each node's engine pulls a job's image (capability images)")

    # ------------------------------------------------------------------ a job's directory

    def _dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def _read_json(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _job_labels(self, job_id: str) -> dict[str, str]:
        """Its status's labels, read once from job.json: an array task's array and index too,
        as a container of the docker backend carries them."""
        if job_id not in self._labels:
            plan = self._read_json(self._dir(job_id) / "job.json") or {}
            task = {k: v for k, v in (plan.get("labels") or {}).items() if k in (LABEL_ARRAY, LABEL_TASK)}
            self._labels[job_id] = {**mapping.labels(self.executor_id, job_id, (plan.get("spec") or {}).get("name")), **task}
        return self._labels[job_id]

    def _status(self, slurm_id: str, job_id: str, record: dict[str, str] | None | bool = False) -> ContainerStatus | None:
        """The job's status from its directory and Slurm (``record``: Slurm's record if the
        caller has it, None if Slurm did not know the job; False: ask)."""
        job_dir = self._dir(job_id)
        if not (job_dir / "job.json").exists():
            return None
        handle = mapping.handle_of(slurm_id, job_id)
        result = self._read_json(job_dir / "result.json")
        started = self._read_json(job_dir / "started.json")
        phase = "started" if (job_dir / "released").exists() else "created"
        frozen = (job_dir / "paused").exists()
        if result is None:
            if record is False:
                record = self.slurm.job(slurm_id)
            name = self._slurm_name(job_id, slurm_id)
            if record is not None and record.get("JobName") != name:
                record = None  # the id is another job's now (the cluster's job ids began again)
            if record is None:  # (an array element ran under a job id of its own)
                record = self.slurm.completed((started or {}).get("slurm_job_id") or slurm_id, name)
                result = self._read_json(job_dir / "result.json")  # written while we asked
        status = mapping.job_status(handle, record or None, phase, started, result, self._job_labels(job_id), frozen)
        if result is None and status.finished:  # the step did not finish: what it (or Slurm) said last
            said = _last_line(job_dir / "slurm.err")
            if said:
                status = dataclasses.replace(status, error=f"{status.error}; its step said: {said}")
        return status

    # ------------------------------------------------------------------ lifecycle

    def create(self, job_id: str, spec: JobSpec) -> str:
        """Write the job's directory (its spec, its batch script) and submit it held: it exists
        in Slurm (find() sees it after a crash) and runs nothing until start releases it."""
        job_dir = self._dir(job_id)
        # A job.json without a slurm-id: a create cut off after sbatch, maybe (find() adopts it).
        # Without job.json, a live Slurm job of this name is an earlier attempt's, still ending.
        if (job_dir / "slurm-id").exists() or (
                (job_dir / "job.json").exists() and self.slurm.find(mapping.job_name(job_id), alive=True)):
            raise EngineConflict(f"a Slurm job for job {job_id} exists already")
        fresh_dir(job_dir, 0o755)
        if spec.outputs:
            spec = spec.model_copy(update={"mounts": [*spec.mounts, *self._output_mounts(job_dir, spec.outputs)]})
        # Inputs and outputs are bind mounts by now (staged, and made above): the step runs
        # the mounts, and the spec stays valid when read back.
        # Conveyor's own labels (an array task's) are not a user's to give: kept apart, so the
        # step can validate the rest as a job spec again.
        plan = spec.model_dump(mode="json", exclude_defaults=True, exclude={"inputs", "outputs", "labels"})
        plan["labels"] = {k: v for k, v in spec.labels.items() if not k.startswith("conveyor.")}
        own = {k: v for k, v in spec.labels.items() if k.startswith("conveyor.")}
        job = {"executor": self.executor_id, "job": job_id, "spec": plan, "labels": own}
        if spec.image is None:  # a process: what to run, ready (see step.run_process)
            job["process"] = {"argv": [*(spec.entrypoint or []), *(spec.full_command or [])], "env": spec.env,
                              "workdir": spec.workdir}
        write_json(job_dir / "job.json", job)
        script = job_dir / "step.sh"
        script.write_text(mapping.step_script(shlex.quote(str(job_dir))))
        script.chmod(0o755)
        options = spec.backend.options_for(self.name) if spec.backend is not None else SlurmOptions()
        try:
            slurm_id = self._array_element(job_id, spec, options) if LABEL_ARRAY_MAX in spec.labels else None
            if slurm_id is None:
                slurm_id = self.slurm.submit(mapping.sbatch_args(spec, options, self.executor_id, job_id, str(job_dir)),
                                             script)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        (job_dir / "slurm-id").write_text(slurm_id)
        return mapping.handle_of(slurm_id, job_id)

    @staticmethod
    def _output_mounts(job_dir: Path, outputs: list[str]) -> list[Mount]:
        """A fresh directory in the job's directory for each output path, bind-mounted there:
        whichever node runs the job writes its outputs where this agent reads them. Writable by
        any user (the job's user is a name inside its image, unknown here)."""
        return [Mount(type="bind", source=str(fresh_dir(job_dir / "outputs" / str(n), 0o777)), target=target,
                      read_only=False) for n, target in enumerate(outputs)]

    def start(self, handle: str) -> None:
        """Release the held job, and return once it runs (its step started it), as docker's
        start does -- or once Slurm says why it waits (Resources, Priority, ...), or ended it,
        or after START_WAIT_S (its node is still pulling the image): then the job is started in
        Conveyor's terms and waits in Slurm's, with the reason in its status."""
        slurm_id, job_id = self._parse(handle)
        job_dir = self._dir(job_id)
        marker = job_dir / "released"
        if marker.exists():
            raise EngineConflict(f"Slurm job {slurm_id} was started already")
        marker.touch()
        self.slurm.release(slurm_id)
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline and not (job_dir / "started.json").exists():
            record = self.slurm.job(slurm_id)
            state = (record or {}).get("JobState", "")
            if record is None or state in mapping.ENDED or (state == "PENDING" and record.get("Reason") != "None"):
                return
            time.sleep(0.1)

    def inspect(self, handle: str) -> ContainerStatus | None:
        slurm_id, job_id = self._parse(handle)
        return self._status(slurm_id, job_id)

    def find(self, job_id: str) -> ContainerStatus | None:
        job_dir = self._dir(job_id)
        if not (job_dir / "job.json").exists():
            return None
        try:
            slurm_id = (job_dir / "slurm-id").read_text().strip()
        except FileNotFoundError:  # sbatch answered, the id was not written: a crash between
            slurm_id = self.slurm.find(mapping.job_name(job_id))
            if slurm_id is None:
                return None
            (job_dir / "slurm-id").write_text(slurm_id)
        return self._status(slurm_id, job_id)

    def list(self) -> list[ContainerStatus]:
        """Every job this executor has in Slurm: its job directories, and one look at Slurm."""
        records = self.slurm.jobs()
        out = []
        for job_dir in self.jobs_dir.iterdir() if self.jobs_dir.exists() else ():
            try:
                slurm_id = (job_dir / "slurm-id").read_text().strip()
            except (FileNotFoundError, NotADirectoryError):
                continue
            status = self._status(slurm_id, job_dir.name, records.get(slurm_id))
            if status is not None:
                out.append(status)
        return out

    def remove(self, handle: str) -> None:
        """Cancel the job in Slurm if it is alive, and remove its directory (logs and outputs
        were saved before any removal); one already gone is fine."""
        slurm_id, job_id = self._parse(handle)
        status = self._status(slurm_id, job_id)
        if status is not None and not status.finished:
            self.slurm.cancel(slurm_id)
        shutil.rmtree(self._dir(job_id), ignore_errors=True)
        self._labels.pop(job_id, None)

    def stats(self, handle: str) -> dict:
        raise NotSupported("the slurm backend gives no resource usage (the job runs on its node; capability stats)")

    def open_exec(self, handle: str, spec):
        raise NotSupported("the slurm backend cannot run commands inside a job (capability exec)")

    def open_port(self, handle: str, port: int):
        raise NotSupported("the slurm backend cannot reach a job's ports from the agent (port-forward)")

    # ------------------------------------------------------------------ input, output, logs

    def resize(self, handle: str, height: int, width: int) -> None:
        raise NotSupported("the slurm backend gives no terminal (capability tty)")

    def attach_output(self, handle: str):
        raise NotSupported("the slurm backend gives no terminal (capability tty)")

    def attach_stdin(self, handle: str, source) -> None:
        raise NotSupported("the slurm backend cannot feed stdin (capability stdin)")

    def save_logs(self, handle: str, paths: dict[str, Path]) -> dict[str, int]:
        job_dir = self._dir(self._parse(handle)[1])
        return {stream: filelogs.save(job_dir / stream, dest) for stream, dest in paths.items()}

    def follow_logs(self, handle: str, streams: tuple[str, ...], tail: int | None, follow: bool,
                    timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
        """The job's output as its step writes it on the shared directory."""
        slurm_id, job_id = self._parse(handle)
        job_dir = self._dir(job_id)
        asked = [0.0]

        def ended() -> bool:  # the step's result is there; Slurm is asked at most every 2 s
            if (job_dir / "result.json").exists() or not job_dir.exists():
                return True
            if time.monotonic() - asked[0] < 2:
                return False
            asked[0] = time.monotonic()
            status = self._status(slurm_id, job_id)
            return status is None or status.finished

        return filelogs.follow(job_dir, streams, tail, follow, timestamps, ended)

    def read_archive(self, handle: str, path: str):
        """A tar of ``path`` from the job's directory, when one of the job's mounts puts it
        there (every output path does); a path elsewhere is on the node that ran it."""
        job_dir = self._dir(self._parse(handle)[1])
        plan = self._read_json(job_dir / "job.json")
        if plan is None:
            raise ContainerNotFound(f"no such Slurm job: {handle}")
        mounts = [{"source": m.get("source") or "", "target": m["target"]}
                  for m in plan["spec"].get("mounts") or [] if m.get("type") == "bind"]
        path = path.rstrip("/") or "/"
        mount = mount_holding(mounts, path)
        if mount is None or not under(mount["source"], str(self.shared)):
            raise NotSupported(f"the slurm backend reads only a job's outputs (and paths on the shared directory), "
                               f"not {path!r}: the job's other files are on the node that ran it")
        return tar_of(host_path([mount], path), path, self.cache)

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> dict[str, int]:
        """Remove job directories no Slurm job stands behind (left by a crash in create)."""
        removed = 0
        for job_dir in self.jobs_dir.iterdir() if self.jobs_dir.exists() else ():
            if not (job_dir / "slurm-id").exists() and self.slurm.find(mapping.job_name(job_dir.name)) is None:
                shutil.rmtree(job_dir, ignore_errors=True)
                removed += 1
        return {"job_dirs": removed}

    def _parse(self, handle: str) -> tuple[str, str]:
        try:
            return mapping.parse_handle(handle)
        except ValueError:
            raise ContainerNotFound(f"no such Slurm job: {handle}") from None


def _last_line(path: Path, limit: int = 4096) -> str | None:
    """The last non-empty line of a (possibly large) file, or None."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1].strip()[:500] if lines else None
