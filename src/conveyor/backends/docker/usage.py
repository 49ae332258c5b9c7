"""A Docker job's usage and processes: read from its cgroup and network namespace where this
process sees them (backends/cgroup_usage.py), else from the engine's stats document."""

from __future__ import annotations

from ..base import ContainerNotFound, NotSupported
from ..cgroup_usage import net_counters, process_dirs, read_group
from .mapping import usage_from_stats
from .translate import engine_errors


class UsageMixin:
    """Part of DockerBackend: needs ``api`` and ``_groups``, handle -> (pid, cgroup directories),
    or None where the files are not the container's (a remote or rootless engine; gVisor's
    sandbox): found once per container, then read without the engine."""

    def usage(self, handle: str) -> dict | None:
        """Read from the container's cgroup and network namespace (no engine call once its
        pid is known); from the engine's stats document where those files are not its own."""
        if handle not in self._groups:
            self._groups[handle] = self._find_group(handle)
            if len(self._groups) > 4096:  # ended containers' entries
                self._groups.pop(next(iter(self._groups)))
        found = self._groups[handle]
        if found is None:
            return self._usage_from_engine(handle)
        pid, dirs = found
        try:
            return {**read_group(dirs), **net_counters(pid)}
        except (FileNotFoundError, ProcessLookupError):
            del self._groups[handle]  # ended: its group is gone
            return None

    def _find_group(self, handle: str) -> tuple[int, dict] | None:
        try:
            with engine_errors():
                info = self.api.inspect_container(handle)
        except ContainerNotFound:
            return None
        pid, full_id = (info.get("State") or {}).get("Pid") or 0, info["Id"]
        try:
            dirs = process_dirs(pid) if pid else {}
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            dirs = {}
        # The container's own group names it; anything else is another machine's pid, or a
        # group this process cannot see (rootless): ask the engine instead.
        if not dirs or not all(full_id in str(d) for d in dirs.values()):
            return None
        return pid, dirs

    def _usage_from_engine(self, handle: str) -> dict | None:
        try:
            with engine_errors():
                raw = self.api.stats(handle, stream=False, one_shot=True)
        except ContainerNotFound:
            return None
        return usage_from_stats(raw) if raw.get("pids_stats") or raw.get("memory_stats") else None

    def top(self, handle: str) -> dict:
        with engine_errors():
            if (self.api.inspect_container(handle).get("HostConfig") or {}).get("Runtime") == "runsc":
                # dockerd maps the pids gVisor's sandbox reports to the host's processes: wrong ones
                raise NotSupported("the processes of a job under gVisor (runtime runsc) cannot be listed: docker top "
                                   "shows host processes for them; use `conveyor stats` for its usage")
            found = self.api.top(handle)
        return {"titles": found.get("Titles") or [], "processes": found.get("Processes") or []}

