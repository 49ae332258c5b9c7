"""Usage sampling cost: what the agent (`conveyor serve`) spends to sample N running jobs
(``--usage-jobs``, default 200, sleeping busybox jobs) every ``--usage-interval`` seconds,
against the same agent with sampling off ([usage] interval = 0), over ``--usage-window`` s.

Baseline: one `docker stats --no-stream` over the same containers, the docker user's way to
take one sample of all of them: its wall time and the CPU it costs (the CLI, and the engine:
dockerd, containerd and the containers' shims).
Ratio: the agent's added CPU per sampling round over the CPU of that one `docker stats`.

Also measured: one job's read both ways the sampler could take it, its cgroup files (what
it does) and the engine's stats document (one_shot), in wall time and CPU (here and the engine's).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .common import Context, Serve, proc_status, ratio, summary


def add_arguments(parser) -> None:
    parser.add_argument("--usage-jobs", type=int, default=200, help="usage: running jobs sampled (default 200)")
    parser.add_argument("--usage-interval", type=float, default=2.0, help="usage: seconds between samples (default 2)")
    parser.add_argument("--usage-window", type=float, default=20.0, help="usage: seconds each mode is measured (default 20)")


class Engine:
    """dockerd, containerd and the containers' shims: `docker stats` has each container's shim
    read its cgroup, so dockerd's own CPU alone would leave most of its cost out. Only the
    engine at /var/run/docker (the test swarm's engines beside it are not counted)."""

    PATTERN = r"^(\S*/)?dockerd$|^(\S*/)?containerd --config /var/run/docker/|containerd-shim.* -address /var/run/docker/"

    def __init__(self) -> None:
        found = subprocess.run(["pgrep", "-f", self.PATTERN], capture_output=True, text=True).stdout.split()
        self.pids = [int(p) for p in found]

    def cpu_s(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                total += proc_status(pid)["cpu_s"]
            except (FileNotFoundError, ProcessLookupError):
                pass  # a shim whose container ended
        return total


def _restart(pool, config: str) -> None:
    """The pool's agent again with ``config`` (its jobs run on meanwhile)."""
    Path(pool.home, "config.toml").write_text("[limits]\nmax_running = 100000\n" + config)
    pool.serve.stop()
    pool.serve = Serve(pool.home)


def _agent_window(pool, engine: Engine, window: float, settle: float) -> dict:
    time.sleep(settle)  # reconciled, the first rounds taken
    before, engine_before = pool.serve.status(), engine.cpu_s()
    time.sleep(window)
    after, engine_after = pool.serve.status(), engine.cpu_s()
    return {
        "cpu_s_per_s": (after["cpu_s"] - before["cpu_s"]) / window,
        "rss_mb": after["rss_mb"],
        "threads": after["threads"],
        "engine_cpu_s_per_s": (engine_after - engine_before) / window,
    }


def _docker_stats(containers: list[str], engine: Engine, repeat: int, idle: float) -> dict:
    """``idle``: the engine's CPU per second with nothing asked of it (200 shims, and whatever
    else runs on the machine), taken off what it spent meanwhile."""
    walls, cpus, spent = [], [], []
    for _ in range(repeat):
        engine_before = engine.cpu_s()
        t = time.perf_counter()
        proc = subprocess.Popen(["docker", "stats", "--no-stream", *containers], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _, status, rusage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t)
        cpus.append(rusage.ru_utime + rusage.ru_stime)
        spent.append(max(engine.cpu_s() - engine_before - idle * walls[-1], 0.0))
    return {"wall_s": summary(walls), "cli_cpu_s": summary(cpus), "engine_cpu_s": summary(spent),
            "cpu_s": summary([c + e for c, e in zip(cpus, spent)])}


def _one_read(backend, handles: list[str], read, engine: Engine, idle: float) -> dict:
    """Wall and CPU (this process, the engine's less ``idle`` a second) of ``read(handle)``
    over ``handles``, per read."""
    read(handles[0])  # a first read finds the container's cgroup (one inspect)
    engine_before, cpu_before, t = engine.cpu_s(), time.process_time(), time.perf_counter()
    for handle in handles:
        if read(handle) is None:
            raise RuntimeError(f"no usage read from {handle}")
    n, wall = len(handles), time.perf_counter() - t
    return {"wall_ms": wall / n * 1000, "cpu_ms": (time.process_time() - cpu_before) / n * 1000,
            "engine_cpu_ms": max(engine.cpu_s() - engine_before - idle * wall, 0.0) / n * 1000}


def usage(ctx: Context) -> dict:
    from conveyor.backends.docker.driver import DockerBackend

    n, interval, window = ctx.args.usage_jobs, ctx.args.usage_interval, ctx.args.usage_window
    pool = ctx.sleepers()
    ids = pool.grow(n)[:n]
    containers = [pool.client.info(i).container_id for i in ids]
    engine = Engine()
    settle = max(2 * interval, 1.0)
    try:
        _restart(pool, "[usage]\ninterval = 0\n")
        off = _agent_window(pool, engine, window, settle)
        _restart(pool, f"[usage]\ninterval = {interval}\n")
        samples_before = pool.client.info(ids[0]).usage["samples"] if pool.client.info(ids[0]).usage else 0
        on = _agent_window(pool, engine, window, settle)
        rounds = (pool.client.info(ids[0]).usage or {"samples": 0})["samples"] - samples_before
    finally:
        _restart(pool, "")  # as the other benchmarks expect it
    idle = off["engine_cpu_s_per_s"]
    baseline = _docker_stats(containers, engine, ctx.repeat, idle)
    backend = DockerBackend("bench-usage")
    sample = containers[: max(1, min(len(containers), 10))]
    reads = {"cgroup": _one_read(backend, sample * 20, backend.usage, engine, idle),
             "engine_stats_one_shot": _one_read(backend, sample, backend._usage_from_engine, engine, idle)}
    added = on["cpu_s_per_s"] - off["cpu_s_per_s"]
    per_round = max(added, 0.0) * interval
    return {
        "unit": f"the agent (conveyor serve) holding {n} sleeping jobs, sampling every {interval:g} s vs not "
                f"sampling, over {window:g} s each; baseline one `docker stats --no-stream` of the same containers",
        "conveyor": {
            "jobs": n, "interval_s": interval, "sampling_off": off, "sampling_on": on,
            "rounds_in_window": rounds,
            "added_cpu_s_per_s": added,
            "added_cpu_percent_of_one_cpu": added * 100,
            "added_cpu_s_per_round": per_round,
            "added_rss_mb": on["rss_mb"] - off["rss_mb"],
            "read_per_job": reads,
        },
        "baseline": {"docker_stats_no_stream": baseline, "engine_processes_counted": len(engine.pids),
                     "engine_idle_cpu_s_per_s_taken_off": idle},
        "ratio": {
            "cpu_per_round_vs_docker_stats": ratio(per_round, baseline["cpu_s"]["median"]) or None,
            "rss_on_vs_off": ratio(on["rss_mb"], off["rss_mb"]),
            "read_cgroup_vs_engine_cpu": ratio(reads["cgroup"]["cpu_ms"] + reads["cgroup"]["engine_cpu_ms"],
                                               reads["engine_stats_one_shot"]["cpu_ms"]
                                               + reads["engine_stats_one_shot"]["engine_cpu_ms"]),
            "read_cgroup_vs_engine_wall": ratio(reads["cgroup"]["wall_ms"], reads["engine_stats_one_shot"]["wall_ms"]),
        },
    }


BENCHMARKS = {"usage": usage}
