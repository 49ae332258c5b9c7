"""Recovery: ``--recovery-jobs`` (200) sleeping jobs run under a `conveyor serve` (the
run's shared sleeping jobs, see common.Sleepers); the supervisor is SIGKILLed (a crash) and
started again, ``--repeat`` times. The figure is the time from the new
process's spawn until it reports that it supervises, which it does only after it took the
lock, subscribed to the engine's events and reconciled every job against the engine, i.e.
when all running jobs are re-attached. The store is then checked: every job still Running.

Baseline: the least any re-attaching tool must do, from a fresh Python process with the
docker SDK: list the containers by label, inspect each, subscribe to events.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from .common import Context, ratio, summary

BASELINE = """
import sys, docker
api = docker.APIClient(version="auto")
label = "conveyor.executor=" + sys.argv[1]
for c in api.containers(all=True, filters={"label": label}):
    api.inspect_container(c["Id"])
api.events(filters={"type": "container", "label": label}, decode=True)
print("attached", flush=True)
"""


def add_arguments(parser) -> None:
    parser.add_argument("--recovery-jobs", type=int, default=200, help="recovery: running jobs to re-attach (default 200)")


def _baseline(executor_id: str) -> float:
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE, executor_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t
    proc.kill()
    _, err = proc.communicate()
    if b"attached" not in line:
        raise RuntimeError(f"baseline re-attach failed: {err.decode(errors='replace')[-500:]}")
    return elapsed


def recovery(ctx: Context) -> dict:
    n = ctx.args.recovery_jobs
    pool = ctx.sleepers()
    ids = set(pool.grow(n)[:n])
    conveyor: list[float] = []
    baseline: list[float] = []
    for round_no in range(ctx.warmup + ctx.repeat):
        # alternate which goes first, so drift on a busy machine hits both alike
        if round_no % 2:
            b = _baseline(pool.client.executor_id)
            c = pool.crash_and_restart()
        else:
            c = pool.crash_and_restart()
            b = _baseline(pool.client.executor_id)
        running = sum(1 for j in pool.client.list(states=["Running"]) if j.id in ids)
        if running != n:
            raise RuntimeError(f"after restart {running} of {n} jobs are Running")
        if round_no >= ctx.warmup:
            conveyor.append(c)
            baseline.append(b)
    return {
        "unit": f"seconds from a crashed supervisor's restart until its {n} running jobs are re-attached",
        "conveyor": {"jobs": len(pool.ids), "restart_to_reattached_s": summary(conveyor)},
        "baseline": {"sdk_list_inspect_subscribe_s": summary(baseline)},
        "ratio": ratio(statistics.median(conveyor), statistics.median(baseline)),
    }


BENCHMARKS = {"recovery": recovery}
