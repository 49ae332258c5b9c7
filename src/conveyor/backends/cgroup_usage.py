"""A job's resource usage read from its cgroup (v1 or v2) and its network namespace, as the
sample of :mod:`conveyor.usage`.

Reading the kernel's files costs about a millisecond a job; asking dockerd for a stats document
costs a request that dockerd answers by reading the same files and more, and it waits about a
second for it (bench ``usage`` measures both). A driver that cannot read the files (a remote
engine, a rootless one) converts its engine's document instead.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ..usage import UNLIMITED, sample

V1_CONTROLLERS = ("memory", "cpuacct", "blkio", "pids")
UNIFIED = "unified"


@functools.lru_cache(maxsize=1)
def _mounts() -> dict[str, Path]:
    """Where each cgroup hierarchy is mounted: a v1 controller's name, or "unified" (v2)."""
    found: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, options = (right.split() + ["", "", ""])[:3]
            point = Path(left.split()[4])
            if fstype == "cgroup2":
                found.setdefault(UNIFIED, point)
            elif fstype == "cgroup":
                for opt in options.split(","):
                    if opt in V1_CONTROLLERS:
                        found.setdefault(opt, point)
    return found


def process_dirs(pid: int) -> dict[str, Path]:
    """The cgroup directories of process ``pid``, by v1 controller and "unified"; FileNotFoundError
    when the process is gone. Paths are as this process sees them (the caller checks they are
    the container's: a pid of another machine's engine means nothing here)."""
    mounts = _mounts()
    dirs: dict[str, Path] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            names = [UNIFIED] if controllers == "" else controllers.split(",")
            for name in names:
                if name in mounts:
                    dirs[name] = mounts[name] / path.lstrip("/")
    return dirs


def read_group(dirs: dict[str, Path]) -> dict:
    """A sample (without network) from a group's directories, keyed as :func:`process_dirs`
    keys them. Each counter comes from its v1 controller when the group has one there, else
    from the unified (v2) directory. FileNotFoundError once the group is gone."""
    v2 = dirs.get(UNIFIED)
    counters: dict = {}
    if "memory" in dirs:
        counters.update(_memory_v1(dirs["memory"]))
    elif v2 is not None:
        counters.update(_memory_v2(v2))
    if "cpuacct" in dirs:
        counters["cpu_ns"] = int(_text(dirs["cpuacct"] / "cpuacct.usage"))
    elif v2 is not None and (v2 / "cpu.stat").exists():
        counters["cpu_ns"] = _keyed(v2 / "cpu.stat").get("usage_usec", 0) * 1000
    if "blkio" in dirs:
        counters.update(_block_v1(dirs["blkio"]))
    elif v2 is not None and (v2 / "io.stat").exists():
        counters.update(_block_v2(v2))
    pids_dir = dirs.get("pids", v2)
    if pids_dir is not None and (pids_dir / "pids.current").exists():
        counters["pids"] = int(_text(pids_dir / "pids.current"))
    return sample(**counters)


def net_counters(pid: int) -> dict:
    """Bytes received and sent on every interface but loopback of ``pid``'s network namespace."""
    rx = tx = 0
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f.readlines()[2:]:
            name, _, fields = line.partition(":")
            if name.strip() == "lo":
                continue
            values = fields.split()
            rx, tx = rx + int(values[0]), tx + int(values[8])
    return {"net_rx": rx, "net_tx": tx}


def _memory_v1(d: Path) -> dict:
    stat = _keyed(d / "memory.stat")
    usage = int(_text(d / "memory.usage_in_bytes"))
    limit = int(_text(d / "memory.limit_in_bytes"))
    return {
        "memory": max(usage - stat.get("total_inactive_file", 0), 0),
        "memory_peak": int(_text(d / "memory.max_usage_in_bytes")),
        "memory_limit": limit if limit < UNLIMITED else None,
    }


def _memory_v2(d: Path) -> dict:
    stat = _keyed(d / "memory.stat")
    usage = int(_text(d / "memory.current"))
    limit = _text(d / "memory.max")
    peak = d / "memory.peak"  # Linux 5.19 and later
    return {
        "memory": max(usage - stat.get("inactive_file", 0), 0),
        "memory_peak": int(_text(peak)) if peak.exists() else None,
        "memory_limit": None if limit == "max" else int(limit),
    }


def _block_v1(d: Path) -> dict:
    read = write = 0
    for name in ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes"):
        if (d / name).exists():
            for line in _text(d / name).splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1] == "Read":
                    read += int(parts[2])
                elif len(parts) == 3 and parts[1] == "Write":
                    write += int(parts[2])
            break
    return {"block_read": read, "block_write": write}


def _block_v2(d: Path) -> dict:
    read = write = 0
    for line in _text(d / "io.stat").splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                write += int(value)
    return {"block_read": read, "block_write": write}


def processes_cpu_ns(dirs: dict[str, Path]) -> int:
    """CPU time of the processes in a group, from /proc (for a v1 group without cpuacct): each
    one's own time and that of the children it reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = dirs.get("memory", dirs.get(UNIFIED, next(iter(dirs.values())))) / "cgroup.procs"
    total = 0
    for pid in _text(procs).split():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # ended between the listing and the read
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total * 1_000_000_000 // tick


def process_usage(pid: int) -> dict:
    """A sample of one process (and the children it reaped) from /proc, for a job without a
    cgroup: its CPU time, resident memory and its high-water mark, threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = {k: v.split() for k, _, v in (line.partition(":") for line in _text(Path(f"/proc/{pid}/status")).splitlines())}
    kib = 1024
    return sample(
        cpu_ns=sum(int(v) for v in fields[11:15]) * 1_000_000_000 // os.sysconf("SC_CLK_TCK"),
        memory=int(status["VmRSS"][0]) * kib, memory_peak=int(status["VmHWM"][0]) * kib, pids=int(status["Threads"][0]),
    )


def _text(path: Path) -> str:
    return path.read_text().strip()


def _keyed(path: Path) -> dict[str, int]:
    out = {}
    for line in _text(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out
