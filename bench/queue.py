"""Queue scale: ``--queue-jobs`` (10,000) held jobs submitted through the library while a
`conveyor serve` supervises the state directory; then, at that size, `conveyor ps` latency
and peak memory and the supervisor's memory.

There is no docker equivalent of a queue of held jobs, so submission has no baseline: its
jobs/s are absolute. `conveyor ps` has one: `docker ps -a` over the same number of
containers. Creating 10,000 containers is not feasible here, so that comparison runs at
``--ps-containers`` (200): that many created (never started) containers against a state
directory with that many held jobs, interleaved.

More queue and scheduler figures (scheduling decision time, release of a large queue)
belong here too: add a function and list it in BENCHMARKS.
"""

from __future__ import annotations

import os
import statistics
import time

from conveyor import Executor

from .common import BENCH_LABEL, BENCH_RUN, CONVEYOR, IMAGE, Context, Serve, interleaved, ratio, run_measured, summary

SUBMIT_BATCHES = 10


def add_arguments(parser) -> None:
    parser.add_argument("--queue-jobs", type=int, default=10_000, help="queue: held jobs to submit (default 10000)")
    parser.add_argument("--ps-containers", type=int, default=200, help="queue: size of the ps comparison with docker ps -a (default 200)")
    parser.add_argument("--leases", type=int, default=1000, help="leases: live leases on the scheduler pass (default 1000)")


def _submit_held(ex: Executor, spec, n: int) -> list[float]:
    """Submit ``n`` held jobs in SUBMIT_BATCHES batches; seconds per job of each batch."""
    per_job = []
    batches = min(SUBMIT_BATCHES, n)
    for b in range(batches):
        count = n // batches + (1 if b < n % batches else 0)
        t = time.perf_counter()
        for _ in range(count):
            ex.submit(spec, hold=True)
        per_job.append((time.perf_counter() - t) / count)
    return per_job


def _ps_figures(ctx: Context, home: str) -> dict:
    env = {**os.environ, "CONVEYOR_HOME": home}
    runs = {"table": [CONVEYOR, "ps"], "json": [CONVEYOR, "ps", "--json"]}
    out = {}
    for name, cmd in runs.items():
        for _ in range(ctx.warmup):
            run_measured(cmd, env)
        samples = [run_measured(cmd, env) for _ in range(ctx.heavy_repeat)]
        out[f"ps_{name}_s"] = summary([s[0] for s in samples])
        out[f"ps_{name}_peak_rss_mb"] = max(s[1] for s in samples)
    return out


def queue(ctx: Context) -> dict:
    n = ctx.args.queue_jobs
    home = ctx.home("queue")
    serve = Serve(home)
    try:
        with Executor(home) as ex:
            spec = ctx.spec(["true"])
            empty = serve.status()
            per_job = _submit_held(ex, spec, n)
            held = len(ex.list(states=["QueuedHeld"]))
            if held != n:
                raise RuntimeError(f"{held} held jobs in the store, {n} submitted")
        time.sleep(2.0)  # a scheduler pass or two over the full store
        full = serve.status()
        ps = _ps_figures(ctx, home)
    finally:
        serve.stop()
    compare = _ps_comparison(ctx)
    med = statistics.median(per_job)
    return {
        "unit": "submission: seconds per held job (median over batches); ps: wall seconds per call",
        "conveyor": {
            "jobs": n,
            "submit_s_per_job": summary(per_job),
            "submit_jobs_per_s": 1 / med,
            "supervisor_rss_mb": {"empty": empty["rss_mb"], "full": full["rss_mb"]},
            "store_mb": os.path.getsize(os.path.join(home, "conveyor.db")) / 1e6,
            **ps,
            f"ps_vs_docker_at_{compare['size']}": compare["conveyor"],
        },
        "baseline": {
            "submit": None,
            "note": "docker has no queue of held jobs: submission is absolute; ps is compared at "
            f"{compare['size']} containers (creating {n} is not feasible here)",
            f"docker_ps_a_at_{compare['size']}": compare["docker"],
        },
        "ratio": {f"ps_vs_docker_ps_a_at_{compare['size']}": compare["ratio"]},
    }


def _ps_comparison(ctx: Context) -> dict:
    m = ctx.args.ps_containers
    home = ctx.home("queue-ps")
    api = ctx.client.api
    run_label = f"{BENCH_LABEL}.ps={os.getpid()}"
    created: list[str] = []
    try:
        with Executor(home, supervise=False) as ex:
            spec = ctx.spec(["true"])
            for _ in range(m):
                ex.submit(spec, hold=True)
        hc = api.create_host_config(network_mode=ctx.network)
        for _ in range(m):
            created.append(
                api.create_container(IMAGE, ["true"], labels={BENCH_LABEL: BENCH_RUN, run_label.split("=")[0]: str(os.getpid())}, host_config=hc)["Id"]
            )
        env = {**os.environ, "CONVEYOR_HOME": home}
        samples = interleaved(
            {
                "conveyor": lambda: run_measured([CONVEYOR, "ps"], env),
                "docker": lambda: run_measured(["docker", "ps", "-a", "--filter", f"label={run_label}"]),
            },
            ctx.repeat,
            ctx.warmup,
        )
    finally:
        for cid in created:
            try:
                api.remove_container(cid, force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
    return {
        "size": m,
        "conveyor": {"ps_s": summary(samples["conveyor"])},
        "docker": {"ps_a_s": summary(samples["docker"])},
        "ratio": ratio(statistics.median(samples["conveyor"]), statistics.median(samples["docker"])),
    }


# ----------------------------------------------------------------------------- scheduling (issue 4)


def scheduling(ctx: Context) -> dict:
    """Issue 4's figures over a store of ``--queue-jobs`` queued jobs plus an array of as many
    tasks, with no supervisor (so nothing starts and the queue stays full):

    - submission of queued (not held) jobs one by one, and of one array, in jobs/s;
    - `conveyor queue` (table and --json) and `conveyor ps` latency at that size;
    - the scheduler's decision time: Planner passes over the full queue, draining it with a
      capacity of 8 one-CPU slots (jobs are moved to Running and Done in the store, without
      the engine), per pass and per job started; and one worst-case pass in which every
      queued job waits for a dependency (the pass reads SCAN_LIMIT jobs and starts none).
    """
    from conveyor.capacity import SchedulingConfig, node_capacity
    from conveyor.scheduler import Planner
    from conveyor.state import JobState

    n = ctx.args.queue_jobs
    home = ctx.home("scheduling")
    env = {**os.environ, "CONVEYOR_HOME": home}
    config = {"capacity": {"cpus": 8, "memory": "64g"}}
    with Executor(home, supervise=False, scheduling=config) as ex:
        spec = ctx.spec(["true"], resources={"cpus": 1})
        ex.submit(spec)  # warm: image check, store
        per_job = []
        batches = min(SUBMIT_BATCHES, n)
        for b in range(batches):
            count = n // batches + (1 if b < n % batches else 0)
            t = time.perf_counter()
            for _ in range(count):
                ex.submit(spec)
            per_job.append((time.perf_counter() - t) / count)
        t = time.perf_counter()
        ex.submit_array(spec, 1, n)
        array_s = time.perf_counter() - t

        stored = ex.store.query("SELECT COUNT(*) FROM jobs")[0][0]
        cli = {}
        for name, cmd in {"queue": [CONVEYOR, "queue"], "queue_json": [CONVEYOR, "queue", "--json", "-n", "0"],
                          "ps": [CONVEYOR, "ps"]}.items():
            for _ in range(ctx.warmup):
                run_measured(cmd, env)
            cli[f"{name}_s"] = summary([run_measured(cmd, env)[0] for _ in range(ctx.repeat)])

        planner = Planner(ex.store, ex.executor_id, SchedulingConfig.model_validate(config),
                          node_capacity(SchedulingConfig.model_validate(config)))
        passes, started, running = [], 0, []
        drain = min(2000, n)
        while started < drain:
            for job_id in running:  # the jobs of the last pass end, freeing their CPUs
                ex.store.transition(job_id, JobState.DONE, "exited", exit_code=0, finished_at=time.time())
            t = time.perf_counter()
            plan = planner.plan()
            passes.append(time.perf_counter() - t)
            running = [job_id for job_id, _ in plan.starts]
            for job_id in running:
                ex.store.transition(job_id, JobState.RUNNING, started_at=time.time())
            started += len(running)
            if not running:
                break

        for job_id in running:
            ex.store.transition(job_id, JobState.DONE, "exited", exit_code=0, finished_at=time.time())
        # worst case: the node is free but every queued job waits for one that never ends
        blocker = ex.submit(ctx.spec(["true"], resources={"cpus": 1}), hold=True)
        import sqlite3

        with sqlite3.connect(os.path.join(home, "conveyor.db"), timeout=30) as db:
            db.execute("INSERT INTO job_deps (job_id, dep_id, condition) "
                       "SELECT id, ?, 'ok' FROM jobs WHERE state IN ('Queued', 'Requeued')", (blocker,))
            db.execute("UPDATE jobs SET has_deps = 1 WHERE state IN ('Queued', 'Requeued')")
        worst = []
        for _ in range(ctx.repeat):
            t = time.perf_counter()
            plan = planner.plan()
            worst.append(time.perf_counter() - t)
    pass_med = statistics.median(passes)
    return {
        "unit": "submission: jobs/s; CLI: wall seconds per call; planner: seconds per pass / per job started",
        "conveyor": {
            "jobs_stored": stored,
            "submit_queued_s_per_job": summary(per_job),
            "submit_queued_jobs_per_s": 1 / statistics.median(per_job),
            "submit_array_tasks_per_s": n / array_s,
            **cli,
            "planner_pass_s": summary(passes),
            "planner_passes": len(passes),
            "planner_jobs_started": started,
            "planner_s_per_job_started": sum(passes) / max(1, started),
            "planner_pass_all_waiting_on_dependency_s": summary(worst),
            "planner_rows_read_in_that_pass": plan.scanned,
        },
        "baseline": {"note": "docker has no queue or scheduler: figures are absolute", "median_pass_s": pass_med},
        "ratio": None,
    }


# ----------------------------------------------------------------------------- leases (issue 18)


def leases(ctx: Context) -> dict:
    """The cost of ``--leases`` (1,000) live leases on the scheduler pass. The same store both
    ways: that many running jobs and ``--queue-jobs`` (capped at 2,000) queued ones; first
    with no lease, then with each running job inside a lease of its own. Also the rate of
    lease creation (each one admitted against the node in a write transaction) and the
    expiry check each pass makes (runtime/leases.py) with none overdue. No supervisor: the
    planner is called directly, nothing starts."""
    from conveyor.capacity import SchedulingConfig, node_capacity
    from conveyor.runtime.leases import keep_leases
    from conveyor.scheduler import Planner
    from conveyor.state import JobState

    n, queued = ctx.args.leases, min(2000, ctx.args.queue_jobs)
    samples = max(5, ctx.repeat)
    config = {"capacity": {"cpus": n * 0.01 + 64, "memory": "64g"}}
    figures: dict = {}
    for mode in ("without", "with"):
        home = ctx.home(f"leases-{mode}")
        with Executor(home, supervise=False, scheduling=config) as ex:
            t = time.perf_counter()
            ids = [ex.lease_create(cpus=0.01, keepalive=3600)["id"] for _ in range(n)] if mode == "with" else [None] * n
            create_s = time.perf_counter() - t
            for lease_id in ids:
                job_id = ex.submit(ctx.spec(["true"], resources={"cpus": 0.01}, lease=lease_id))
                ex.store.transition(job_id, JobState.RUNNING, started_at=time.time())
            for _ in range(queued):
                ex.submit(ctx.spec(["true"], resources={"cpus": 1}))
            settings = SchedulingConfig.model_validate(config)
            planner = Planner(ex.store, ex.executor_id, settings, node_capacity(settings))
            passes, checks = [], []
            for _ in range(samples):
                t = time.perf_counter()
                plan = planner.plan()
                passes.append(time.perf_counter() - t)
                t = time.perf_counter()
                keep_leases(ex.store, ex.executor_id, lambda *a: None, lambda job_id: None)
                checks.append(time.perf_counter() - t)
            figures[mode] = {"planner_pass_s": summary(passes), "lease_check_s": summary(checks),
                             "jobs_started_per_pass": len(plan.starts), "live_leases": len(plan.leases)}
            if mode == "with":
                figures[mode]["lease_create_per_s"] = n / create_s
    with_, without = figures["with"], figures["without"]
    return {
        "unit": "seconds per scheduler pass (planner) and per expiry check; leases created per second",
        "conveyor": {"leases": n, "running_jobs": n, "queued_jobs": queued, **with_},
        "baseline": {"note": f"the same {n} running and {queued} queued jobs, no lease", **without},
        "ratio": ratio(with_["planner_pass_s"]["median"], without["planner_pass_s"]["median"]),
    }


BENCHMARKS = {"queue": queue, "scheduling": scheduling, "leases": leases}
