"""What this machine has: CPUs and memory (within the process's cgroup limits) and GPUs (from
nvidia-smi, or the AMD/Intel render nodes). Capacity (capacity.py) and provenance read it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    cpus: float
    memory: int
    gpus: dict[str, list[str]]


def _cgroup_cpus() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cgroup_memory() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _nvidia_gpus() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def _render_gpus(driver_names: tuple[str, ...], dri_root: str = "/dev/dri") -> list[str]:
    """AMD/Intel GPUs by render node: renderD128 is id "0" (the Docker driver's numbering)."""
    ids = []
    for node in sorted(glob.glob(os.path.join(dri_root, "renderD*"))):
        minor = os.path.basename(node)[len("renderD"):]
        try:
            driver = os.path.basename(os.readlink(f"/sys/class/drm/renderD{minor}/device/driver"))
        except OSError:
            continue
        if driver in driver_names and minor.isdigit():
            ids.append(str(int(minor) - 128))
    return ids


@lru_cache(maxsize=1)
def discover() -> Machine:
    """What the machine has (cached for the process: nvidia-smi is not free)."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    cpus = min(cpus, _cgroup_cpus() or cpus)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    memory = min(memory, _cgroup_memory() or memory)
    gpus = {"nvidia": _nvidia_gpus()}
    if os.path.exists("/dev/kfd"):
        gpus["amd"] = _render_gpus(("amdgpu",))
    gpus["intel"] = _render_gpus(("i915", "xe"))
    return Machine(cpus=float(cpus), memory=int(memory), gpus={k: v for k, v in gpus.items() if v})
