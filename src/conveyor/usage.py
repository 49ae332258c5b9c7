"""Resource usage: the sample every driver reports, and the totals kept of a job's samples.

A sample is a plain dict (stored as JSON, sent as it is)::

    at            when it was read (epoch seconds)
    cpu_ns        CPU time used since the job started, all its processes (ns)
    memory        memory in use, as docker stats counts it: usage minus inactive page cache
    memory_peak   the kernel's high-water mark of the group's usage (None where it keeps none)
    memory_limit  the group's memory limit (None: unlimited)
    block_read, block_write   bytes read from and written to block devices
    net_rx, net_tx            bytes received and sent on the job's interfaces but loopback
    pids          processes (and threads) in the job now

A counter the driver cannot read is None, never 0. The sampler (runtime/sampler.py) adds
``cpu_percent``, the CPU used since the sample before (100: one CPU).

The totals of a job (its record's ``usage``) are rewritten at every sample, so they are what
the job used until its last sample, and survive a crash of the agent: :func:`accumulate`.
"""

from __future__ import annotations

import time

USAGE_KEYS = ("at", "cpu_ns", "memory", "memory_peak", "memory_limit", "block_read", "block_write", "net_rx",
              "net_tx", "pids")
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2**63-1
COUNTERS = ("block_read", "block_write", "net_rx", "net_tx")


def sample(**counters: int | float | None) -> dict:
    """A sample with every key (a counter not given is None), taken now unless ``at`` says."""
    out = dict.fromkeys(USAGE_KEYS)
    out.update(counters)
    if out["at"] is None:
        out["at"] = time.time()
    return out


def cpu_percent(before: dict | None, now: dict) -> float | None:
    """CPU use between two samples of one run, in percent of one CPU (docker stats' CPU %)."""
    if not before or before.get("cpu_ns") is None or now.get("cpu_ns") is None or now["at"] <= before["at"]:
        return None
    return max(now["cpu_ns"] - before["cpu_ns"], 0) / ((now["at"] - before["at"]) * 1e9) * 100.0


def accumulate(totals: dict | None, now: dict, handle: str, limit: int | None) -> dict:
    """The totals with one more sample of the run ``handle`` (another run's totals start
    over: a retried job's new container counts from zero). ``limit``: the memory limit the job
    was given, for the OOM margin; else the sample's. ``now`` gets its ``cpu_percent``."""
    if not totals or totals.get("container") != handle:
        totals = {"container": handle, "samples": 0, "first_at": now["at"], "first_cpu_ns": now["cpu_ns"],
                  "cpu_percent_max": None, "memory_peak": None, "memory_sum": 0, "pids_max": None}
    now["cpu_percent"] = cpu_percent(last_of(totals), now)
    memory = now["memory"] or 0
    peak = max(v for v in (now["memory_peak"], memory, totals["memory_peak"]) if v is not None)
    limit = limit or now["memory_limit"]
    n = totals["samples"] + 1
    span = now["at"] - totals["first_at"]
    out = {
        **totals,
        "samples": n,
        "last_at": now["at"],
        "cpu_seconds": now["cpu_ns"] / 1e9 if now["cpu_ns"] is not None else None,
        "cpu_percent_max": _max(totals["cpu_percent_max"], now["cpu_percent"]),
        "cpu_percent_mean": ((now["cpu_ns"] - totals["first_cpu_ns"]) / (span * 1e9) * 100.0
                             if span > 0 and now["cpu_ns"] is not None and totals["first_cpu_ns"] is not None else None),
        "memory": memory,
        "memory_peak": peak,
        "memory_sum": totals["memory_sum"] + memory,
        "memory_mean": (totals["memory_sum"] + memory) / n,
        "memory_limit": limit,
        "oom_margin": limit - peak if limit else None,
        "pids": now["pids"],
        "pids_max": _max(totals["pids_max"], now["pids"]),
        "last_cpu_ns": now["cpu_ns"],
    }
    out.update({k: now[k] for k in COUNTERS})  # cumulative counters: the last is the total
    return out


def last_of(totals: dict | None) -> dict | None:
    """The time and CPU of the totals' last sample: what the next one's CPU % is counted from."""
    if not totals or not totals.get("samples"):
        return None
    return {"at": totals["last_at"], "cpu_ns": totals.get("last_cpu_ns")}


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)
