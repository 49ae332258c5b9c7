"""Conveyor against the raw engine, measured side by side in one run. Prints one JSON document.

    .venv/bin/python -m bench                 # all benchmarks, default sizes
    .venv/bin/python -m bench --only cli --repeat 5

Each benchmark measures its baseline in the same run; ratios are the headline
(>1 means Conveyor takes longer). Absolute times are context only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker

from conveyor import Executor, JobSpec

IMAGE = "conveyor/busybox:latest"
CONVEYOR = str(Path(sys.executable).parent / "conveyor")


def summary(samples: list[float]) -> dict:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def timed(fn, repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench_sequential(client, home: str, repeat: int) -> dict:
    """One `true` job at a time: Executor.run vs SDK create/start/wait/logs/remove vs `docker run --rm`."""
    with Executor(home) as ex:
        spec = JobSpec(image=IMAGE, command=["true"], auto_remove=True)
        conveyor = timed(lambda: ex.run(spec), repeat)

    def sdk():
        c = client.containers.create(IMAGE, ["true"])
        c.start()
        c.wait()
        c.logs(stdout=True, stderr=False)
        c.logs(stdout=False, stderr=True)
        c.remove(force=True)

    sdk_s = timed(sdk, repeat)
    cli_s = timed(lambda: subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True), repeat)
    c, s, d = (statistics.median(x) for x in (conveyor, sdk_s, cli_s))
    return {
        "conveyor_executor_s": summary(conveyor),
        "docker_sdk_s": summary(sdk_s),
        "docker_cli_s": summary(cli_s),
        "jobs_per_s": {"conveyor": 1 / c, "docker_sdk": 1 / s, "docker_cli": 1 / d},
        "ratio_vs_sdk": c / s,
        "ratio_vs_cli": c / d,
    }


def bench_cli(home: str, repeat: int) -> dict:
    """`conveyor run --rm IMAGE true` vs `docker run --rm IMAGE true`, and `conveyor --help` start-up."""
    env = {**os.environ, "CONVEYOR_HOME": home}
    conv = timed(lambda: subprocess.run([CONVEYOR, "run", "--rm", IMAGE, "true"], check=True, env=env), repeat)
    dock = timed(lambda: subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True), repeat)
    helps = timed(lambda: subprocess.run([CONVEYOR, "--help"], check=True, capture_output=True), repeat)
    return {
        "conveyor_run_s": summary(conv),
        "docker_run_s": summary(dock),
        "conveyor_help_s": summary(helps),
        "ratio_vs_docker_run": statistics.median(conv) / statistics.median(dock),
    }


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_supervision(home: str, sizes: list[int]) -> dict:
    """Threads and RSS of one Executor supervising N sleeping jobs."""
    out = {}
    with Executor(home) as ex:
        base_threads, base_rss = threading.active_count(), _rss_kb()
        ids: list[str] = []
        for n in sizes:
            while len(ids) < n:
                ids.append(ex.start(JobSpec(image=IMAGE, command=["sleep", "600"], auto_remove=True)))
            futures = [ex.future(i) for i in ids]  # every job has a waiter, as a real caller would
            time.sleep(1)
            out[str(n)] = {
                "threads": threading.active_count(),
                "threads_added": threading.active_count() - base_threads,
                "rss_mb": _rss_kb() / 1024,
                "rss_added_mb": (_rss_kb() - base_rss) / 1024,
                "waiting_futures": len(futures),
            }
        ex.cleanup()
    return out


def machine(client) -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "engine": client.version().get("Version"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=["sequential", "cli", "supervision"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--sizes", default="1,50,200", help="sleeping jobs for the supervision benchmark")
    args = parser.parse_args()
    chosen = args.only or ["sequential", "cli", "supervision"]
    client = docker.from_env(version="auto")
    home = tempfile.mkdtemp(prefix="conveyor-bench-")
    result = {"machine": machine(client), "benchmarks": {}}
    try:
        if "sequential" in chosen:
            result["benchmarks"]["sequential"] = bench_sequential(client, home, args.repeat)
        if "cli" in chosen:
            result["benchmarks"]["cli"] = bench_cli(home, args.repeat)
        if "supervision" in chosen:
            sizes = [int(s) for s in args.sizes.split(",")]
            result["benchmarks"]["supervision"] = bench_supervision(home, sizes)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
