"""A job's usage as a row of `docker stats`: one place for the columns of `conveyor stats` and
of the docker stand-in's `stats`, from the entries Executor.usage gives (executor/usage.py).
Click-free, so the stand-in loads none of the click commands."""

from __future__ import annotations

from typing import Callable

from .humanize import binary_size, human_size

# --format field -> (its header, the row's value); docker's names, then Conveyor's own
STATS_FIELDS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "Container": ("CONTAINER", lambda r: r["ref"]),
    "ID": ("CONTAINER ID", lambda r: r["id"]),
    "Name": ("NAME", lambda r: r["name"]),
    "CPUPerc": ("CPU %", lambda r: r["cpu"]),
    "MemUsage": ("MEM USAGE / LIMIT", lambda r: r["mem"]),
    "MemPerc": ("MEM %", lambda r: r["memperc"]),
    "NetIO": ("NET I/O", lambda r: r["net"]),
    "BlockIO": ("BLOCK I/O", lambda r: r["block"]),
    "PIDs": ("PIDS", lambda r: r["pids"]),
    "MemPeak": ("MEM PEAK", lambda r: r["peak"]),
    "CPUTime": ("CPU TIME", lambda r: r["cputime"]),
    "State": ("STATE", lambda r: r["state"]),
}
DOCKER_TABLE = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
CONVEYOR_TABLE = ("table {{.ID}}\t{{.Name}}\t{{.State}}\t{{.CPUPerc}}\t{{.CPUTime}}\t{{.MemUsage}}\t{{.MemPerc}}"
                  "\t{{.MemPeak}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}")


def stats_row(ref: str, entry: dict) -> dict:
    """The row of one usage entry; a job not running shows zeros, as docker's stopped container
    does (its totals still give MEM PEAK and CPU TIME)."""
    now, totals = entry.get("now"), entry.get("totals") or {}
    row = {"ref": ref, "id": entry["job"], "name": entry["name"] or entry["job"], "state": entry["state"],
           "peak": _size(totals.get("memory_peak"), binary_size),
           "cputime": "--" if totals.get("cpu_seconds") is None else f"{totals['cpu_seconds']:.2f}s"}
    if not now:
        return {**row, "cpu": "0.00%", "mem": "0B / 0B", "memperc": "0.00%", "net": "0B / 0B", "block": "0B / 0B", "pids": "0"}
    used, limit = now["memory"] or 0, now["memory_limit"] or entry["node_memory"]
    if now.get("memory_peak") is not None:  # read now: newer than the totals' last sample
        row["peak"] = binary_size(max(now["memory_peak"], totals.get("memory_peak") or 0))
    return {
        **row,
        "cpu": f"{now.get('cpu_percent') or 0.0:.2f}%",
        "mem": f"{binary_size(used)} / {binary_size(limit)}",
        "memperc": f"{(used / limit * 100.0) if limit else 0.0:.2f}%",
        "net": _pair(now["net_rx"], now["net_tx"]),
        "block": _pair(now["block_read"], now["block_write"]),
        "pids": "--" if now["pids"] is None else str(now["pids"]),
    }


def _size(value: int | None, fmt: Callable[[float], str]) -> str:
    return "--" if value is None else fmt(value)


def _pair(a: int | None, b: int | None) -> str:
    return f"{_size(a, human_size)} / {_size(b, human_size)}"
