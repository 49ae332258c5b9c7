"""A process job's output: its logs and its files; and the calls it does not support."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

from ..base import ContainerNotFound, EngineConflict, NotSupported
from ..hostfiles import host_path, tar_of
from . import logs, stdin
from .runs import read_json


class FilesMixin:
    """Part of ProcessBackend: needs ``root``, ``inspect``, ``_meta``, ``_rundir`` and
    ``_require_alive``."""

    def stats(self, handle: str) -> dict:
        raise NotSupported("the process backend does not report resource usage (capability 'stats')")

    def open_exec(self, handle: str, spec):
        raise NotSupported("the process backend cannot run a command inside a job (capability 'exec')")

    def open_port(self, handle: str, port: int):
        raise NotSupported("the process backend cannot reach a job's ports from the agent (port-forward)")

    def resize(self, handle: str, height: int, width: int) -> None:
        raise NotSupported("the process backend gives jobs no terminal (capability 'tty')")

    def attach_output(self, handle: str) -> BinaryIO:
        raise NotSupported("the process backend gives jobs no terminal (capability 'tty')")

    def attach_stdin(self, handle: str, source: BinaryIO) -> None:
        """Copy ``source`` into the running job's stdin in a daemon thread; its stdin is closed
        at EOF. One attach per job (its shim takes one); ContainerNotFound or EngineConflict when
        it cannot be made (not running, no stdin_open, attached already)."""
        self._require_alive(handle)
        rundir = self._rundir(handle)
        if not (read_json(rundir / "plan.json") or {}).get("stdin"):
            raise EngineConflict(f"the process job {handle} was created without stdin_open: its stdin is /dev/null")
        stdin.attach(rundir, handle, source)

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
        return tar_of(host_path(meta["mounts"], path.rstrip("/") or "/"), path, self.root)
