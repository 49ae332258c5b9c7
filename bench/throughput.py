"""Job throughput: `true` jobs through the library Executor against the docker SDK doing
create/start/wait/logs/remove itself and against `docker run --rm`.

sequential: one job at a time (seconds per job).
concurrent: K jobs in flight (8 and 32 by default), a batch of ``--batch`` x K jobs per
measurement (seconds per batch, jobs/s).
"""

from __future__ import annotations

import statistics
import subprocess
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

import docker

from conveyor import Executor

from .common import BENCH_LABEL, BENCH_RUN, IMAGE, Context, interleaved, ratio, summary


def add_arguments(parser) -> None:
    parser.add_argument("--inflight", default="8,32", help="concurrent: jobs in flight, comma-separated (default 8,32)")
    parser.add_argument("--batch", type=int, default=1, help="concurrent: jobs per measurement = BATCH x in-flight (default 1)")


def sdk_job(ctx: Context, url: str | None = None, runtime: str | None = None):
    """What a caller of the docker SDK does for one job: the same work Conveyor does
    (create, start, wait, read both log streams, remove). ``url``: another engine's API
    (podman's); ``runtime``: an OCI runtime (runsc)."""
    local = threading.local()  # one client per thread, as a concurrent SDK caller has

    def job() -> None:
        api = getattr(local, "api", None)
        if api is None:
            api = local.api = docker.APIClient(base_url=url, version="auto") if url else docker.APIClient(version="auto")
        hc = api.create_host_config(network_mode=ctx.network, runtime=runtime)
        cid = api.create_container(IMAGE, ["true"], labels={BENCH_LABEL: BENCH_RUN}, host_config=hc)["Id"]
        api.start(cid)
        api.wait(cid)
        api.logs(cid, stdout=True, stderr=False)
        api.logs(cid, stdout=False, stderr=True)
        api.remove_container(cid, force=True)

    return job


def _check(job) -> None:
    if job.state.value != "Done":
        raise RuntimeError(f"benchmark job {job.id} ended {job.state.value}/{job.substate}: {job.message}")


def sequential(ctx: Context) -> dict:
    """One `true` job at a time."""
    cli = ctx.docker_run("true")
    with Executor(ctx.home("sequential")) as ex:
        spec = ctx.spec(["true"], auto_remove=True)
        samples = interleaved(
            {
                "conveyor": lambda: _check(ex.run(spec)),
                "docker_sdk": sdk_job(ctx),
                "docker_cli": lambda: subprocess.run(cli, check=True, stdout=subprocess.DEVNULL),
            },
            ctx.repeat,
            ctx.warmup,
        )
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "unit": "seconds per job, one at a time (jobs_per_s = 1 / median)",
        "conveyor": {"executor_run_s": summary(samples["conveyor"]), "jobs_per_s": 1 / med["conveyor"]},
        "baseline": {
            "docker_sdk_s": summary(samples["docker_sdk"]),
            "docker_cli_s": summary(samples["docker_cli"]),
            "jobs_per_s": {"docker_sdk": 1 / med["docker_sdk"], "docker_cli": 1 / med["docker_cli"]},
        },
        "ratio": {
            "vs_docker_sdk": ratio(med["conveyor"], med["docker_sdk"]),
            "vs_docker_cli": ratio(med["conveyor"], med["docker_cli"]),
        },
    }


def _conveyor_batch(ex: Executor, spec, n: int, k: int) -> None:
    """Keep ``k`` jobs in flight until ``n`` have finished: submit, wait on futures."""
    pending: set = set()
    submitted = finished = 0
    while finished < n:
        while submitted < n and len(pending) < k:
            pending.add(ex.future(ex.submit(spec)))
            submitted += 1
        done, pending = futures_wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            _check(fut.result())
        finished += len(done)


def _pool_batch(job, n: int, k: int) -> None:
    with ThreadPoolExecutor(max_workers=k) as pool:
        for _ in pool.map(lambda _: job(), range(n)):
            pass


def concurrent(ctx: Context) -> dict:
    """K `true` jobs in flight at a time."""
    levels = [int(x) for x in ctx.args.inflight.split(",")]
    cli = ctx.docker_run("true")
    sdk = sdk_job(ctx)
    out: dict = {"unit": "seconds per batch of BATCH x K jobs with K in flight; jobs_per_s = batch / median",
                 "conveyor": {}, "baseline": {}, "ratio": {}}
    with Executor(ctx.home("concurrent")) as ex:
        spec = ctx.spec(["true"], auto_remove=True)
        for level, k in enumerate(levels):
            n = max(1, ctx.args.batch) * k
            samples = interleaved(
                {
                    "conveyor": lambda: _conveyor_batch(ex, spec, n, k),
                    "docker_sdk": lambda: _pool_batch(sdk, n, k),
                    "docker_cli": lambda: _pool_batch(lambda: subprocess.run(cli, check=True, stdout=subprocess.DEVNULL), n, k),
                },
                ctx.heavy_repeat,
                ctx.warmup if level == 0 else 0,  # the first level warms up the engine for all
            )
            med = {name: statistics.median(v) for name, v in samples.items()}
            key = f"inflight_{k}"
            out["conveyor"][key] = {"batch": n, "batch_s": summary(samples["conveyor"]), "jobs_per_s": n / med["conveyor"]}
            out["baseline"][key] = {
                "batch": n,
                "docker_sdk_batch_s": summary(samples["docker_sdk"]),
                "docker_cli_batch_s": summary(samples["docker_cli"]),
                "jobs_per_s": {"docker_sdk": n / med["docker_sdk"], "docker_cli": n / med["docker_cli"]},
            }
            out["ratio"][key] = {
                "vs_docker_sdk": ratio(med["conveyor"], med["docker_sdk"]),
                "vs_docker_cli": ratio(med["conveyor"], med["docker_cli"]),
            }
    return out


BENCHMARKS = {"sequential": sequential, "concurrent": concurrent}
