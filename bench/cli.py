"""The CLI against docker's, wall time per command from a shell, interleaved in one run:

- `conveyor run --rm IMAGE true` against `docker run --rm IMAGE true`, warm (the state
  directory's agent already runs) and cold (no agent: the CLI starts it, as the first command
  on a machine does);
- `conveyor --help` against `docker --help`, and `conveyor ps` (empty store) against
  `docker ps`: start-up alone;
- a batch of 30 short jobs: `conveyor submit --array 1-30` plus `conveyor wait ARRAY`, against
  the same 30 as a loop of `docker run --rm` (what a shell script around docker does).
"""

from __future__ import annotations

import os
import statistics
import subprocess

from .common import CONVEYOR, IMAGE, Context, interleaved, ratio, run_quiet, summary

BATCH = 30


def add_arguments(parser) -> None:
    parser.add_argument("--cli-batch", type=int, default=BATCH, help=f"cli: jobs in the batch comparison (default {BATCH})")


def cli(ctx: Context) -> dict:
    env = {name: {**os.environ, "CONVEYOR_HOME": ctx.home(f"cli-{name}")} for name in ("warm", "cold", "batch", "ps")}
    n = getattr(ctx.args, "cli_batch", BATCH)
    run_args = ["run", "--rm", "--network", ctx.network, IMAGE, "true"]

    def stop(which: str):
        return lambda: subprocess.run([CONVEYOR, "serve", "--stop"], env=env[which], stdout=subprocess.DEVNULL, check=True)

    def conveyor_batch() -> None:
        array = subprocess.run(
            [CONVEYOR, "submit", "--array", f"1-{n}", "--network", ctx.network, IMAGE, "true"],
            env=env["batch"], check=True, capture_output=True, text=True,
        ).stdout.strip()
        run_quiet([CONVEYOR, "wait", array], env["batch"])

    def docker_batch() -> None:
        for _ in range(n):
            run_quiet(ctx.docker_run("true"))

    for which in ("warm", "batch", "ps"):
        run_quiet([CONVEYOR, "ps"], env[which])  # their agents run from here on
    try:
        samples = interleaved(
            {
                "conveyor_run_warm": lambda: run_quiet([CONVEYOR, *run_args], env["warm"]),
                "conveyor_run_cold": lambda: run_quiet([CONVEYOR, *run_args], env["cold"]),
                "docker_run": lambda: run_quiet(ctx.docker_run("true")),
                "conveyor_help": lambda: run_quiet([CONVEYOR, "--help"]),
                "docker_help": lambda: run_quiet(["docker", "--help"]),
                "conveyor_ps": lambda: run_quiet([CONVEYOR, "ps"], env["ps"]),  # an empty store
                "docker_ps": lambda: run_quiet(["docker", "ps"]),
            },
            ctx.repeat,
            ctx.warmup,
            setup={"conveyor_run_cold": stop("cold")},
        )
        batches = interleaved({"conveyor_batch": conveyor_batch, "docker_batch": docker_batch}, ctx.heavy_repeat, 0)
    finally:
        for which in env:
            stop(which)()
    med = {k: statistics.median(v) for k, v in {**samples, **batches}.items()}
    return {
        "unit": "seconds of wall time per command",
        "conveyor": {
            "run_warm_s": summary(samples["conveyor_run_warm"]),
            "run_cold_s": summary(samples["conveyor_run_cold"]),
            "help_s": summary(samples["conveyor_help"]),
            "ps_s": summary(samples["conveyor_ps"]),
            f"batch_{n}_array_s": summary(batches["conveyor_batch"]),
        },
        "baseline": {
            "docker_run_s": summary(samples["docker_run"]),
            "docker_help_s": summary(samples["docker_help"]),
            "docker_ps_s": summary(samples["docker_ps"]),
            f"batch_{n}_docker_run_loop_s": summary(batches["docker_batch"]),
        },
        "ratio": {
            "run_warm_vs_docker_run": ratio(med["conveyor_run_warm"], med["docker_run"]),
            "run_cold_vs_docker_run": ratio(med["conveyor_run_cold"], med["docker_run"]),
            "help_vs_docker_help": ratio(med["conveyor_help"], med["docker_help"]),
            "ps_vs_docker_ps": ratio(med["conveyor_ps"], med["docker_ps"]),
            "batch_vs_docker_loop": ratio(med["conveyor_batch"], med["docker_batch"]),
        },
    }


BENCHMARKS = {"cli": cli}
