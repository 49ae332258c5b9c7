"""Signals to a process job's group: stop, kill, pause and unpause (SIGSTOP/SIGCONT)."""

from __future__ import annotations

import os
import signal as signals
import time
from pathlib import Path

from ..base import EngineConflict, EngineError
from . import cgroups
from .runs import read_json, same_process


class ControlMixin:
    """Part of ProcessBackend: needs ``runs``, ``inspect``, ``_meta``, ``_rundir``,
    ``_alive``, ``_require_alive`` and ``_event``."""

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

    def _killpg(self, handle: str, sig: int) -> None:
        """Signal the job's process group, if its leader is still the process the shim made."""
        shim = read_json(self.runs / handle / "shim.json")
        if shim and same_process(shim["pid"], shim["pid_start"]):
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


def _signal_number(name: str) -> int:
    text = str(name).upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signals.Signals[text if text.startswith("SIG") else f"SIG{text}"])
    except KeyError:
        raise EngineError(f"unknown signal {name!r}; use a name like SIGTERM or HUP, or a number") from None
