"""ProcessBackend: the Backend interface over host process groups run by the shim."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal as signals
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

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
    EngineEvent,
    EngineUnavailable,
    ExecResult,
    NotSupported,
)
from . import cgroups, logs, plan
from .shim import proc_start_time, write_json

SHIM = str(Path(__file__).with_name("shim.py"))
_HANDLE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
POLL = 0.2  # an idle events() wakes 5 times a second: one stat of the event log
LIVENESS_EVERY = 10  # ... and every 2 s looks for shims that died without a word


class ProcessBackend:
    """Jobs as host process groups under ``root`` (``<state dir>/process``): ``runs/<handle>/``
    per job run, ``events.log`` for every run's events."""

    name = "process"
    capabilities = Capabilities(pause=True, recover=True, files=True)

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

    def version(self) -> dict:
        return {"name": self.name, "version": platform.release(), "api_version": None}

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
        write_json(str(tmp / "plan.json"), {
            "handle": handle, "job_id": job_id, "events": str(self.events_log),
            "argv": plan.command(spec), "env": plan.environment(spec, user), "cwd": cwd,
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
            subprocess.run([sys.executable, SHIM, str(rundir)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, close_fds=True, check=False)  # returns at the shim's first fork
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ended = _read_json(rundir / "exit.json")
            if ended is not None and ended.get("error"):
                raise EngineError(ended["error"])
            if ended is not None or (rundir / "shim.json").exists():
                return
            time.sleep(0.005)
        raise EngineError(f"the process job {handle}'s supervisor did not start within 15 s")

    def stop(self, handle: str, grace: float) -> None:
        """SIGTERM to the group (and SIGCONT, so a paused job can act on it), SIGKILL after
        ``grace`` seconds; returns when the shim has recorded the end."""
        if not self._alive(handle):
            return
        self._killpg(handle, signals.SIGTERM)
        self._killpg(handle, signals.SIGCONT)
        if not self._wait_end(handle, grace):
            self._kill_all(handle)
            if not self._wait_end(handle, 10):
                raise EngineError(f"the process job {handle} did not end 10 s after SIGKILL")

    def signal(self, handle: str, signal: str) -> None:
        self._require_alive(handle)
        self._killpg(handle, _signal_number(signal))

    def pause(self, handle: str) -> None:
        status = self._require_alive(handle)
        if status.status == "paused":
            raise EngineConflict(f"the process job {handle} is already paused")
        self._killpg(handle, signals.SIGSTOP)
        (self._rundir(handle) / "paused").touch()
        self._event("pause", handle)

    def unpause(self, handle: str) -> None:
        status = self._require_alive(handle)
        if status.status != "paused":
            raise EngineConflict(f"the process job {handle} is not paused")
        self._killpg(handle, signals.SIGCONT)
        (self._rundir(handle) / "paused").unlink(missing_ok=True)
        self._event("unpause", handle)

    def inspect(self, handle: str) -> ContainerStatus | None:
        if not _HANDLE_RE.match(handle):
            return None
        rundir = self.runs / handle
        meta = _read_json(rundir / "meta.json")
        if meta is None:
            return None
        shim = _read_json(rundir / "shim.json") or {}
        ended = _read_json(rundir / "exit.json")
        if ended is None and shim and not _same_process(shim["shim_pid"], shim["shim_start"]):
            ended = _read_json(rundir / "exit.json") or self._mark_dead(handle, meta, shim)
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
        if shim and _same_process(shim["pid"], shim["pid_start"]):
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
        first, so it disappears at once); one already gone is fine."""
        meta = self._meta(handle)
        if meta is None:
            return
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

    def stats(self, handle: str) -> dict:
        raise NotSupported("the process backend does not report resource usage (capability 'stats')")

    def exec(self, handle: str, command: list[str], *, user: str | None = None, workdir: str | None = None,
             env: dict[str, str] | None = None) -> ExecResult:
        raise NotSupported("the process backend cannot run a command inside a job (capability 'exec')")

    def resize(self, handle: str, height: int, width: int) -> None:
        raise NotSupported("the process backend gives jobs no terminal (capability 'tty')")

    def attach_output(self, handle: str) -> BinaryIO:
        raise NotSupported("the process backend gives jobs no terminal (capability 'tty')")

    def attach_stdin(self, handle: str, source: BinaryIO) -> None:
        raise NotSupported("the process backend gives jobs no stdin (capability 'stdin')")

    # ------------------------------------------------------------------ logs and files

    def save_logs(self, handle: str, paths: dict[str, Path]) -> dict[str, int]:
        rundir = self._rundir(handle)
        return {name: logs.save(rundir / name, Path(path)) for name, path in paths.items()}

    def follow_logs(self, handle: str, streams: tuple[str, ...], tail: int | None = None, follow: bool = True,
                    timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
        rundir = self._rundir(handle)

        def ended() -> bool:
            status = self.inspect(handle)
            return status is None or not (status.alive or status.status == "created")

        return logs.follow(rundir, streams, tail, follow, timestamps, ended)

    def read_archive(self, handle: str, path: str) -> BinaryIO | None:
        """A tar of ``path`` as the job saw it (through its bind mounts, else the host's
        path), its top entry named after the path's last part, as docker's archive; None
        when absent. Built in a temporary file, so the caller reads a plain file."""
        meta = self._meta(handle)
        if meta is None:
            raise ContainerNotFound(f"no such process job: {handle}")
        host = plan.host_path(meta["mounts"], path.rstrip("/") or "/")
        if not os.path.lexists(host):
            return None
        out = tempfile.TemporaryFile(dir=self.root)
        with tarfile.open(fileobj=out, mode="w|") as tar:
            tar.add(host, arcname=os.path.basename(path.rstrip("/")) or ".")
        out.seek(0)
        return out

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

    def events(self, since: float | None = None) -> Iterator[EngineEvent]:
        """Events from the event log: subscribed on return (the log's end is taken now; with
        ``since``, earlier lines from that time are replayed first)."""
        f = open(self.events_log, "rb")
        if since is None:
            f.seek(0, os.SEEK_END)
        closed = threading.Event()
        with self._lock:
            self._closers.add(closed)
        return self._read_events(f, since, closed)

    def _read_events(self, f, since: float | None, closed: threading.Event) -> Iterator[EngineEvent]:
        rest, polls = b"", 0
        try:
            while not closed.is_set():
                data = f.read()
                if data:
                    *lines, rest = (rest + data).split(b"\n")
                    for line in lines:
                        ev = _parse_event(line)
                        if ev is not None and (since is None or ev.time >= since):
                            yield ev
                    continue
                polls += 1
                if polls % LIVENESS_EVERY == 0:
                    self._notice_dead_shims()
                closed.wait(POLL)
            raise EngineUnavailable("the process backend's event stream was closed")
        finally:
            f.close()
            with self._lock:
                self._closers.discard(closed)

    def _notice_dead_shims(self) -> None:
        """inspect() of a started run whose shim is gone records it dead (and a die event)."""
        for d in self.runs.iterdir():
            if not d.name.startswith(".") and (d / "shim.json").exists() and not (d / "exit.json").exists():
                self.inspect(d.name)

    def close_events(self) -> None:
        with self._lock:
            for closed in self._closers:
                closed.set()

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
        return _read_json(self.runs / handle / "meta.json") if _HANDLE_RE.match(handle) else None

    def _alive(self, handle: str) -> bool:
        status = self.inspect(handle)
        return status is not None and status.alive

    def _require_alive(self, handle: str) -> ContainerStatus:
        status = self.inspect(handle)
        if status is None:
            raise ContainerNotFound(f"no such process job: {handle}")
        if not status.alive:
            raise EngineConflict(f"the process job {handle} is not running ({status.status})")
        return status

    def _killpg(self, handle: str, sig: int) -> None:
        """Signal the job's process group, if its leader is still the process the shim made."""
        shim = _read_json(self.runs / handle / "shim.json")
        if shim and _same_process(shim["pid"], shim["pid_start"]):
            try:
                os.killpg(shim["pid"], sig)
            except ProcessLookupError:
                pass

    def _kill_all(self, handle: str) -> None:
        self._killpg(handle, signals.SIGKILL)
        meta = self._meta(handle)
        if meta:
            self._kill_cgroup(meta)

    def _kill_cgroup(self, meta: dict) -> None:
        group = cgroups.existing(meta["cgroup"]) if meta.get("cgroup") else None
        for procs in group.procs if group else []:
            try:
                pids = Path(procs).read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signals.SIGKILL)
                except ProcessLookupError:
                    pass

    def _remove_cgroup(self, meta: dict) -> None:
        group = cgroups.existing(meta["cgroup"]) if meta.get("cgroup") else None
        if group is None:
            return
        for _ in range(50):  # a killed process leaves its cgroup a moment after it is reaped
            try:
                group.remove()
                return
            except OSError:
                time.sleep(0.02)

    def _wait_end(self, handle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if not self._alive(handle):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _event(self, action: str, handle: str, job_id: str | None = None) -> None:
        if job_id is None:
            meta = self._meta(handle)
            job_id = meta["job_id"] if meta else None
        line = json.dumps({"t": time.time(), "a": action, "h": handle, "j": job_id}) + "\n"
        fd = os.open(self.events_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:  # written by rename, so never torn; a stray file is not ours
        return None


def _same_process(pid: int, start: int | None) -> bool:
    """The process ``pid`` is the one recorded: same pid AND same start time (pids are reused)."""
    return start is not None and proc_start_time(pid) == start and not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def _parse_event(line: bytes) -> EngineEvent | None:
    try:
        ev = json.loads(line)
        return EngineEvent(action=ev["a"], container_id=ev["h"], job_id=ev.get("j"), time=ev["t"])
    except (ValueError, KeyError, TypeError):
        return None


def _signal_number(name: str) -> int:
    text = str(name).upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signals.Signals[text if text.startswith("SIG") else f"SIG{text}"])
    except KeyError:
        raise EngineError(f"unknown signal {name!r}; use a name like SIGTERM or HUP, or a number") from None
