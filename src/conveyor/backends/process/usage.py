"""A process job's usage: from its cgroup, or from its process where it has none."""

from __future__ import annotations

from ..base import NotSupported
from ..cgroup_usage import process_usage, processes_cpu_ns, read_group
from .runs import read_json, same_process


class UsageMixin:
    """Part of ProcessBackend: needs ``_rundir`` and ``group``."""

    def usage(self, handle: str) -> dict | None:
        """From the run's cgroup (CPU from /proc where v1's cpuacct is not in it), else from the
        job's process; no network (a process job shares the host's) nor, on v1, block IO."""
        shim = read_json(self._rundir(handle) / "shim.json")
        if not shim or (self._rundir(handle) / "exit.json").exists() or not same_process(shim["pid"], shim["pid_start"]):
            return None
        group = self.group(handle)
        try:
            if group is None:
                return process_usage(shim["pid"])
            found = read_group(group.dirs)
            if found["cpu_ns"] is None:
                found["cpu_ns"] = processes_cpu_ns(group.dirs)
            return found
        except (FileNotFoundError, ProcessLookupError):
            return None  # it ended meanwhile

    def top(self, handle: str) -> dict:
        raise NotSupported("the process backend does not list a job's processes (capability 'top')")
