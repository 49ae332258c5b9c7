"""Conveyor against the raw engine, measured side by side in one run. Prints one JSON document.

    .venv/bin/python -m bench                       # every benchmark, default sizes (< 10 min on 2 cores)
    .venv/bin/python -m bench --only cli --repeat 5
    .venv/bin/python -m bench --only logs --log-mb 50

Output: {"machine": {...}, "benchmarks": {NAME: {"unit": ..., "conveyor": {...},
"baseline": {...}, "ratio": ...}}}. A ratio is Conveyor's cost over the baseline's measured
in the same run (> 1: Conveyor takes longer or uses more); a benchmark with several
comparisons gives a dict of ratios. Absolute figures are context only.

Each benchmark lives in its own module (throughput, cli, logs, supervision, queue,
recovery, api, busy, data, cwl, backends, cluster, slurm, usage, ui, scale) with a BENCHMARKS dict and an optional add_arguments(parser); this file only
dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import time

import docker

from .common import Context, remove_bench_containers

MODULES = ["throughput", "cli", "logs", "supervision", "queue", "recovery", "api", "busy", "data", "cwl", "backends",
           "cluster", "slurm", "usage", "ui", "scale"]


def load() -> tuple[dict, list]:
    benchmarks, modules = {}, []
    for name in MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        modules.append(module)
        benchmarks.update(module.BENCHMARKS)
    return benchmarks, modules


def machine(client) -> dict:
    version = client.version()
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_avg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "engine": version.get("Version"),
        "engine_api": version.get("ApiVersion"),
        "storage_driver": client.info().get("Driver"),
    }


def main(argv: list[str] | None = None) -> None:
    benchmarks, modules = load()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(benchmarks), help="run only these (repeatable)")
    parser.add_argument("--repeat", type=int, default=5, help="recorded measurements per figure (default 5)")
    parser.add_argument("--heavy-repeat", type=int, default=3, help="measurements of the figures that take tens of seconds each: concurrent, logs, ps at queue size (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded warm-up rounds first (default 1)")
    parser.add_argument("--network", default="none", help="network of every job, Conveyor's and the baselines' (default none)")
    for module in modules:
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    chosen = [name for name in benchmarks if not args.only or name in args.only]
    client = docker.from_env(version="auto")
    ctx = Context(args=args, client=client)
    result: dict = {"machine": machine(client), "settings": {**vars(args), "only": chosen}, "benchmarks": {}}
    try:
        for name in chosen:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                result["benchmarks"][name] = benchmarks[name](ctx)
            except Exception as exc:  # noqa: BLE001 - one broken benchmark does not lose the others
                import traceback

                traceback.print_exc()
                result["benchmarks"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            result["benchmarks"][name]["took_s"] = time.perf_counter() - t
            print(f"bench: {name} took {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    finally:
        ctx.close()
        remove_bench_containers(client)
        shutil.rmtree(ctx.root, ignore_errors=True)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
