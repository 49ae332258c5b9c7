"""Supervision cost: RSS, PSS, threads and idle CPU of a `conveyor serve` supervisor holding
1, 50, 200 (``--sizes``) sleeping jobs, with a client process waiting on every job's future.

Baseline: supervising detached containers from a shell takes one `docker wait` process per
job. Its cost is measured on min(N, ``--wait-sample``) real `docker wait` processes and
scaled to N (PSS, so shared pages count once). Ratio: the supervisor's PSS over that.
"""

from __future__ import annotations

import subprocess
import time

from .common import Context, proc_status, ratio

def add_arguments(parser) -> None:
    parser.add_argument("--sizes", default="1,50,200", help="supervision: sleeping jobs held, comma-separated (default 1,50,200)")
    parser.add_argument("--wait-sample", type=int, default=10, help="supervision: real `docker wait` processes measured (default 10)")
    parser.add_argument("--idle-window", type=float, default=3.0, help="supervision: seconds over which idle CPU is measured (default 3)")


def _docker_wait_cost(container_ids: list[str], window: float) -> dict:
    procs = [subprocess.Popen(["docker", "wait", c], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in container_ids]
    try:
        time.sleep(1.0)  # connected and waiting
        before = [proc_status(p.pid) for p in procs]
        time.sleep(window)
        after = [proc_status(p.pid) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    k = len(procs)
    return {
        "processes": k,
        "pss_mb_each": sum(s["pss_mb"] for s in after) / k,
        "rss_mb_each": sum(s["rss_mb"] for s in after) / k,
        "threads_each": sum(s["threads"] for s in after) / k,
        "idle_cpu_s_per_s_each": sum(a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before)) / k / window,
    }


def supervision(ctx: Context) -> dict:
    sizes = sorted(int(s) for s in ctx.args.sizes.split(","))
    window = ctx.args.idle_window
    pool = ctx.sleepers()
    client = pool.client
    out: dict = {
        "unit": "the supervisor process (conveyor serve) holding N sleeping jobs, a client waiting on "
        f"each job's future; idle CPU over {window:g} s",
        "conveyor": {"before_these_jobs": pool.serve.status()},
        "baseline": {},
        "ratio": {},
    }
    for n in sizes:
        ids = pool.grow(n)[:n]
        futures = [client.future(i) for i in ids]  # every job has a waiter, as a real caller would
        time.sleep(1.0)
        before, cpu_before = pool.serve.status(), time.process_time()
        time.sleep(window)
        after, cpu_after = pool.serve.status(), time.process_time()
        for fut in futures:
            fut.cancel()  # stops waiting (the waiter is forgotten)
        out["conveyor"][str(n)] = {
            "rss_mb": after["rss_mb"],
            "pss_mb": after["pss_mb"],
            "threads": after["threads"],
            "idle_cpu_s_per_s": (after["cpu_s"] - before["cpu_s"]) / window,
            "waiting_futures": len(futures),
            "client_idle_cpu_s_per_s": (cpu_after - cpu_before) / window,
        }
        containers = [client.info(i).container_id for i in ids[: max(1, min(n, ctx.args.wait_sample))]]
        each = _docker_wait_cost(containers, window)
        base = {
            **each,
            "pss_mb": each["pss_mb_each"] * n,
            "threads": each["threads_each"] * n,
            "idle_cpu_s_per_s": each["idle_cpu_s_per_s_each"] * n,
            "note": f"{each['processes']} docker wait processes measured, scaled to {n}",
        }
        out["baseline"][str(n)] = base
        out["ratio"][str(n)] = {
            "pss": ratio(after["pss_mb"], base["pss_mb"]),
            "threads": ratio(after["threads"], base["threads"]),
        }
    return out


BENCHMARKS = {"supervision": supervision}
