"""CLI overhead: `conveyor run --rm IMAGE true` against `docker run --rm IMAGE true`, wall
time per call from a shell; `conveyor --help` against `docker --help` (start-up alone).

`conveyor run` is measured twice: on its own (it becomes the supervisor of its state
directory for the job's lifetime, as on a machine where nothing else runs) and as a client
of a running `conveyor serve` (it queues the job and the supervisor launches it).
"""

from __future__ import annotations

import os
import statistics

from .common import CONVEYOR, IMAGE, Context, Serve, interleaved, ratio, run_quiet, summary


def cli(ctx: Context) -> dict:
    alone = ctx.home("cli")
    served = ctx.home("cli-served")
    run_args = ["run", "--rm", "--network", ctx.network, IMAGE, "true"]
    env_alone = {**os.environ, "CONVEYOR_HOME": alone}
    env_served = {**os.environ, "CONVEYOR_HOME": served}
    serve = Serve(served)
    try:
        samples = interleaved(
            {
                "conveyor_run": lambda: run_quiet([CONVEYOR, *run_args], env_alone),
                "conveyor_run_with_serve": lambda: run_quiet([CONVEYOR, *run_args], env_served),
                "docker_run": lambda: run_quiet(ctx.docker_run("true")),
                "conveyor_help": lambda: run_quiet([CONVEYOR, "--help"]),
                "docker_help": lambda: run_quiet(["docker", "--help"]),
            },
            ctx.repeat,
            ctx.warmup,
        )
    finally:
        serve.stop()
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "unit": "seconds of wall time per call",
        "conveyor": {
            "run_s": summary(samples["conveyor_run"]),
            "run_with_serve_s": summary(samples["conveyor_run_with_serve"]),
            "help_s": summary(samples["conveyor_help"]),
        },
        "baseline": {"docker_run_s": summary(samples["docker_run"]), "docker_help_s": summary(samples["docker_help"])},
        "ratio": {
            "run_vs_docker_run": ratio(med["conveyor_run"], med["docker_run"]),
            "run_with_serve_vs_docker_run": ratio(med["conveyor_run_with_serve"], med["docker_run"]),
            "help_vs_docker_help": ratio(med["conveyor_help"], med["docker_help"]),
        },
    }


BENCHMARKS = {"cli": cli}
