"""ProcessBackend: the Backend interface over host process groups run by the shim."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal as signals
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from ...spec import JobSpec
from ..base import (
    LABEL_EXECUTOR,
    LABEL_JOB,
    LABEL_MANAGED,
    LABEL_NAME,
    Capabilities,
    ContainerNotFound,
    ContainerStatus,
    EngineConflict,
    EngineError,
    NotSupported,
)
from . import cgroups, plan
from .control import ControlMixin
from .events import EventsMixin
from .files import FilesMixin
from .runs import read_json, same_process
from .shim import write_json
from .usage import UsageMixin

SHIM = str(Path(__file__).with_name("shim.py"))
_HANDLE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ProcessBackend(ControlMixin, FilesMixin, EventsMixin, UsageMixin):
    """Jobs as host process groups under ``root`` (``<state dir>/process``): ``runs/<handle>/``
    per job run, ``events.log`` for every run's events."""

    name = "process"
    capabilities = Capabilities(pause=True, recover=True, files=True, stdin=True, signals=True, oom=True, usage=True)

    def __init__(self, executor_id: str, root: Path):
        self.executor_id = executor_id
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.events_log = self.root / "events.log"
        self.events_log.touch()
        self.cgroup_version = cgroups.detect()
        self._closers: set[threading.Event] = set()
        self._lock = threading.Lock()
        for marker in self.runs.glob("*/removing"):  # removals a crash cut short
            meta = self._meta(marker.parent.name)
            if meta is not None:
                self._finish_removal(marker.parent.name, meta)

    def version(self) -> dict:
        return {"name": self.name, "version": platform.release(), "api_version": None}

    def nodes(self) -> None:
        return None  # this machine

    def runtimes(self) -> dict[str, dict]:
        return {}  # no OCI runtime: host processes

    # ------------------------------------------------------------------ images: none

    def ensure_image(self, spec: JobSpec, refresh: bool = True) -> None:
        """Nothing to pull: the process backend runs the host's programs."""

    def _no_images(self, what: str):
        raise NotSupported(f"the process backend has no images ({what}): it runs the host's programs; "
                           "use a container backend for images")

    def load_image(self, chunks: Iterable[bytes]) -> list[str]:
        self._no_images("cannot load an image")

    def image_tags(self, image_id: str) -> list[str]:
        self._no_images("no tags")

    def images(self) -> list[dict]:
        self._no_images("nothing to list")

    def image_inspect(self, name: str) -> dict | None:
        self._no_images("nothing to inspect")

    def pull(self, name: str) -> Iterator[dict]:
        self._no_images("nothing to pull")

    def engine(self) -> dict:
        raise NotSupported("the process backend has no engine to describe; version() gives the kernel release")

    # ------------------------------------------------------------------ lifecycle

    def check(self, spec: JobSpec) -> None:
        """InvalidSpec naming the first field of ``spec`` this backend cannot honour."""
        plan.check(spec, self.cgroup_version)

    def create(self, job_id: str, spec: JobSpec) -> str:
        """Prepare the job's run directory (not started). The directory is built under a
        temporary name and renamed into place, which is the claim: EngineConflict when the
        job already has a run (the launcher then adopts it with find)."""
        self.check(spec)
        handle = self._handle(job_id)
        user = plan.resolve_user(spec.user)
        tmp = Path(tempfile.mkdtemp(prefix=f".{handle}.", dir=self.runs))
        final = self.runs / handle
        try:
            self._prepare(tmp, final, handle, job_id, spec, user)
            os.rename(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if final.exists():
                raise EngineConflict(f"the process job run {handle!r} already exists") from None
            raise EngineError(f"cannot prepare the process job {handle}: {exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            self._make_cgroup(handle, spec)
        except OSError as exc:
            shutil.rmtree(final, ignore_errors=True)
            raise EngineError(f"cannot set the job's cgroup limits: {exc}") from None
        return handle

    def _prepare(self, tmp: Path, final: Path, handle: str, job_id: str, spec: JobSpec, user: dict | None) -> None:
        opts = plan.options(spec)
        mounts, cwd = plan.mounts_and_cwd(spec, tmp, user)
        # The paths below are final ones: the directory is renamed before anything uses them.
        mounts = [{**m, "source": m["source"].replace(str(tmp), str(final), 1)} for m in mounts]
        cwd = cwd.replace(str(tmp), str(final), 1)
        group = self._group_plan(handle, spec, opts)
        if mounts:
            for n in range(len(mounts) + 1):  # one scratch mount point per shadowed directory, at most
                (tmp / "ns" / str(n)).mkdir(parents=True)
        for stream in ("stdout", "stderr"):
            (tmp / stream).touch()  # there from the start: a follower or a save before start reads them empty
        write_json(str(tmp / "plan.json"), {
            "handle": handle, "job_id": job_id, "events": str(self.events_log),
            "argv": plan.command(spec), "env": plan.environment(spec, user), "cwd": cwd, "stdin": spec.stdin_open,
            "user": user, "rlimits": plan.rlimits(spec), "nice": opts.nice, "umask": int(opts.umask, 8),
            "mounts": mounts, "scratch": str(final / "ns"),
            "cgroup_procs": group.procs if group else [], "oom_counter": group.oom_counter if group else None,
        })
        labels = {**spec.labels, LABEL_MANAGED: "true", LABEL_EXECUTOR: self.executor_id, LABEL_JOB: job_id}
        if spec.name:
            labels[LABEL_NAME] = spec.name
        write_json(str(tmp / "meta.json"), {
            "job_id": job_id, "executor": self.executor_id, "labels": labels, "created_at": time.time(),
            "mounts": mounts, "cgroup": self._cgroup_name(handle) if group else None,
            "cgroup_version": group.version if group else None,
        })

    def _group_plan(self, handle: str, spec: JobSpec, opts) -> cgroups.Group | None:
        if opts.cgroup == "off" or self.cgroup_version is None:
            return None
        return cgroups.Group(self.cgroup_version, cgroups.group_dirs(self.cgroup_version, self._cgroup_name(handle)))

    def _make_cgroup(self, handle: str, spec: JobSpec) -> None:
        meta = self._meta(handle)
        if meta is None or meta["cgroup"] is None:
            return
        r = spec.resources
        cgroups.make(meta["cgroup_version"], meta["cgroup"], r.cpus, r.memory, r.memory_swap, r.pids_limit)

    def _cgroup_name(self, handle: str) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self.executor_id)}.{handle}"

    def group(self, handle: str) -> cgroups.Group | None:
        """The run's cgroup(s), e.g. to read a limit back."""
        meta = self._meta(handle)
        return cgroups.existing(meta["cgroup"]) if meta and meta["cgroup"] else None

    def start(self, handle: str) -> None:
        """Start the shim and return once the job has been exec'd (EngineError, with the
        reason, when it could not be: no such program, no such user, ...)."""
        rundir = self._rundir(handle)
        try:
            fd = os.open(rundir / "started", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
        except FileExistsError:
            if (rundir / "shim.json").exists() or (rundir / "exit.json").exists():
                raise EngineConflict(f"the process job {handle} was started already") from None
        else:
            subprocess.run([sys.executable, "-I", SHIM, str(rundir)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, close_fds=True, check=False)  # returns at the shim's first fork
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ended = read_json(rundir / "exit.json")
            if ended is not None and ended.get("error"):
                raise EngineError(ended["error"])
            if ended is not None or (rundir / "shim.json").exists():
                return
            time.sleep(0.005)
        raise EngineError(f"the process job {handle}'s supervisor did not start within 15 s")

    def inspect(self, handle: str) -> ContainerStatus | None:
        if not _HANDLE_RE.match(handle) or (self.runs / handle / "removing").exists():
            return None  # being removed: gone, as a container is from the start of `docker rm -f`
        return self._status(handle)

    def _status(self, handle: str) -> ContainerStatus | None:
        """The run's status, also while it is being removed."""
        rundir = self.runs / handle
        meta = read_json(rundir / "meta.json")
        if meta is None:
            return None
        shim = read_json(rundir / "shim.json") or {}
        ended = read_json(rundir / "exit.json")
        if ended is None and shim and not same_process(shim["shim_pid"], shim["shim_start"]):
            ended = read_json(rundir / "exit.json") or self._mark_dead(handle, meta, shim)
        if ended is None and not shim and (rundir / "started").exists():
            if time.time() - (rundir / "started").stat().st_mtime > 30:  # the shim never came up
                ended = self._mark_dead(handle, meta, shim)
        if ended is not None:
            status = "dead" if ended.get("dead") else "exited"
            return ContainerStatus(
                id=handle, status=status, exit_code=ended["exit_code"], oom_killed=ended["oom_killed"],
                started_at=shim.get("started_at"), finished_at=ended["finished_at"], error=ended.get("error"),
                labels=meta["labels"],
            )
        if not shim:
            status = "created"
        else:
            status = "paused" if (rundir / "paused").exists() else "running"
        return ContainerStatus(id=handle, status=status, exit_code=None, oom_killed=False,
                               started_at=shim.get("started_at"), finished_at=None, labels=meta["labels"])

    def _mark_dead(self, handle: str, meta: dict, shim: dict) -> dict:
        """The shim is gone without recording the end (killed): nobody supervises the job any
        more, so whatever is left of it is killed, and the run says it is dead, code unknown."""
        if shim and same_process(shim["pid"], shim["pid_start"]):
            try:
                os.killpg(shim["pid"], signals.SIGKILL)
            except ProcessLookupError:
                pass
        self._kill_cgroup(meta)
        ended = {"exit_code": None, "signal": None, "oom_killed": False, "finished_at": time.time(), "dead": True,
                 "error": "the job's supervisor (shim) was killed; its exit status is unknown"}
        write_json(str(self._rundir(handle) / "exit.json"), ended)
        self._event("die", handle, meta["job_id"])
        return ended

    def find(self, job_id: str) -> ContainerStatus | None:
        return self.inspect(job_id) if _HANDLE_RE.match(job_id) else None

    def remove(self, handle: str) -> None:
        """Kill the job if it lives, then remove its cgroups and run directory (renamed away
        first, so it disappears at once); one already gone is fine. The run is gone for
        inspect from the first step, as a container is for ``docker rm -f``: a job removed
        while it ran is lost, whatever its processes said while they were being killed."""
        meta = self._meta(handle)
        if meta is None:
            return
        try:
            (self.runs / handle / "removing").touch()
        except FileNotFoundError:
            return
        self._finish_removal(handle, meta)

    def _finish_removal(self, handle: str, meta: dict) -> None:
        if self._alive(handle):
            self._kill_all(handle)
            self._wait_end(handle, 10)
        self._remove_cgroup(meta)
        trash = self.runs / f".removed-{handle}-{time.monotonic_ns()}"
        try:
            os.rename(self.runs / handle, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)
        self._event("destroy", handle, meta["job_id"])

    # ------------------------------------------------------------------ recover and watch

    def list(self) -> list[ContainerStatus]:
        found = []
        for d in sorted(self.runs.iterdir()):
            if d.name.startswith("."):
                continue
            status = self.inspect(d.name)
            if status is not None and status.labels.get(LABEL_EXECUTOR) == self.executor_id:
                found.append(status)
        return found

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> dict[str, int]:
        """Remove the cgroups this executor made for runs that are gone or ended."""
        prefix = self._cgroup_name("")
        removed = 0
        for name in cgroups.leftovers():
            if not name.startswith(prefix):
                continue
            status = self.inspect(name[len(prefix):])
            if status is None or not (status.alive or status.status == "created"):
                group = cgroups.existing(name)
                if group is not None:
                    group.remove()
                    removed += 1
        return {"cgroups": removed}

    # ------------------------------------------------------------------ helpers

    def _handle(self, job_id: str) -> str:
        if not _HANDLE_RE.match(job_id):
            raise EngineError(f"job id {job_id!r} cannot name a process run (letters, digits, '_', '.', '-')")
        return job_id

    def _rundir(self, handle: str) -> Path:
        if not _HANDLE_RE.match(handle) or not (self.runs / handle / "meta.json").exists():
            raise ContainerNotFound(f"no such process job: {handle}")
        return self.runs / handle

    def _meta(self, handle: str) -> dict | None:
        return read_json(self.runs / handle / "meta.json") if _HANDLE_RE.match(handle) else None

    def _alive(self, handle: str) -> bool:
        status = self._status(handle)
        return status is not None and status.alive

    def _require_alive(self, handle: str) -> ContainerStatus:
        status = self.inspect(handle)
        if status is None:
            raise ContainerNotFound(f"no such process job: {handle}")
        if not status.alive:
            raise EngineConflict(f"the process job {handle} is not running ({status.status})")
        return status
