"""CPU, memory and pids limits of a process job through cgroups, v2 or v1.

- v2 (``/sys/fs/cgroup/cgroup.controllers`` exists): one group
  ``/sys/fs/cgroup/conveyor.process/<handle>`` with ``cpu.max``, ``memory.max``,
  ``memory.swap.max``, ``pids.max``; OOM kills counted in ``memory.events`` (``oom_kill``).
- v1 (``/sys/fs/cgroup/{cpu,memory,pids}`` writable): a group per controller
  ``/sys/fs/cgroup/<controller>/conveyor.process/<handle>``, with ``cpu.cfs_quota_us``,
  ``memory.limit_in_bytes``, ``memory.memsw.limit_in_bytes``, ``pids.max``; OOM kills counted
  in ``memory.oom_control`` (``oom_kill``). A job always gets a memory group when memory is
  writable, so its OOM kills are seen even without a limit.
- neither writable: :func:`detect` says None, and the backend refuses a job that sets
  limits (``cgroup: auto`` or ``off``) or any job (``cgroup: required``) at ``check``.

Swap follows docker: no ``memory_swap`` allows as much swap as memory; -1 is unlimited.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "conveyor.process"
V1_CONTROLLERS = ("cpu", "memory", "pids")
PERIOD_US = 100_000


@dataclass(frozen=True)
class Group:
    """One job's cgroup(s): the directories and where the job's pid goes."""

    version: int
    dirs: dict[str, Path]  # controller (or "unified") -> directory

    @property
    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in dict.fromkeys(self.dirs.values())]

    @property
    def oom_counter(self) -> str | None:
        if self.version == 2:
            return str(self.dirs["unified"] / "memory.events")
        return str(self.dirs["memory"] / "memory.oom_control") if "memory" in self.dirs else None

    def read(self, name: str) -> str:
        """A control file's content, e.g. ``read("pids.max")``."""
        controller = "unified" if self.version == 2 else name.split(".", 1)[0]
        return (self.dirs[controller] / name).read_text().strip()

    def remove(self) -> None:
        for d in dict.fromkeys(self.dirs.values()):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass


def detect(root: Path = CGROUP_ROOT) -> int | None:
    """2 or 1: the cgroup version whose controllers this process can write; None: neither."""
    if (root / "cgroup.controllers").exists():
        return 2 if os.access(root, os.W_OK) else None
    if all(os.access(root / c, os.W_OK) for c in V1_CONTROLLERS):
        return 1
    return None


def group_dirs(version: int, handle: str, root: Path = CGROUP_ROOT) -> dict[str, Path]:
    if version == 2:
        return {"unified": root / PARENT / handle}
    return {c: root / c / PARENT / handle for c in V1_CONTROLLERS}


def make(version: int, handle: str, cpus: float | None, memory: int | None, swap: int | None,
         pids: int | None, root: Path = CGROUP_ROOT) -> Group:
    """Create the job's group(s) with its limits; OSError if the kernel refuses one."""
    group = Group(version, group_dirs(version, handle, root))
    if version == 2:
        _make_v2(group.dirs["unified"], cpus, memory, swap, pids, root)
    else:
        _make_v1(group.dirs, cpus, memory, swap, pids)
    return group


def _make_v2(d: Path, cpus, memory, swap, pids, root: Path) -> None:
    parent = d.parent
    parent.mkdir(exist_ok=True)
    wanted = {"cpu", "memory", "pids"} & set((root / "cgroup.controllers").read_text().split())
    for level in (root, parent):  # a child sees a controller only if every parent enables it
        (level / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
    d.mkdir()
    if cpus is not None:
        (d / "cpu.max").write_text(f"{int(cpus * PERIOD_US)} {PERIOD_US}")
    if memory is not None:
        (d / "memory.max").write_text(str(memory))
        extra = _swap_extra(memory, swap)
        if (d / "memory.swap.max").exists():
            (d / "memory.swap.max").write_text("max" if extra is None else str(extra))
    if pids is not None:
        (d / "pids.max").write_text("max" if pids <= 0 else str(pids))


def _make_v1(dirs: dict[str, Path], cpus, memory, swap, pids) -> None:
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=False)
    if cpus is not None:
        (dirs["cpu"] / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(int(cpus * PERIOD_US)))
    if memory is not None:
        (dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory))
        extra = _swap_extra(memory, swap)
        memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text("-1" if extra is None else str(memory + extra))
    if pids is not None:
        (dirs["pids"] / "pids.max").write_text("max" if pids <= 0 else str(pids))


def _swap_extra(memory: int, swap: int | None) -> int | None:
    """Swap allowed beyond memory (docker's rule); None: unlimited."""
    if swap is None:
        return memory
    if swap == -1:
        return None
    return max(0, swap - memory)


def existing(handle: str, root: Path = CGROUP_ROOT) -> Group | None:
    """The group(s) a run was given, found again from the handle (after an agent restart)."""
    for version in (2, 1):
        dirs = {c: d for c, d in group_dirs(version, handle, root).items() if d.is_dir()}
        if dirs:
            return Group(version, dirs)
    return None


def leftovers(root: Path = CGROUP_ROOT) -> set[str]:
    """Handles that still have a group under Conveyor's parent."""
    found = set()
    for parent in [root / PARENT, *(root / c / PARENT for c in V1_CONTROLLERS)]:
        if parent.is_dir():
            found.update(p.name for p in parent.iterdir() if p.is_dir())
    return found
