"""A busy client: one ``conveyor.Client`` submits ``--busy-jobs`` (2,000; 10,000 for the issue's figure) jobs in one batch
request and waits for every one of them, one long-poll after another, against a `conveyor
serve`; the agent's threads, RSS and CPU are sampled every 0.2 s from the submit until the
last wait has returned. The jobs run `true` on the process backend with ``cpus = 0`` (no
admission limit): 10,000 containers would keep the engine busy for half an hour on 2 cores,
while the agent's part (the batch, the queue, launches, ends, waits) is the same.

What it answers (issue 19): a client that submits 10,000 jobs and waits for all of them must
not make the agent use more than a few threads or a few hundred MB. There is no docker
equivalent (docker has no queue to submit 10,000 jobs into); the figures are absolute.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .common import BENCH_LABEL, BENCH_RUN, Context, Serve


def add_arguments(parser) -> None:
    parser.add_argument("--busy-jobs", type=int, default=2_000, help="busy: jobs one client submits and waits for (default 2000; the issue's figure is 10000)")


class _Sampler(threading.Thread):
    """The agent's threads, RSS and CPU seconds every ``period`` seconds, until stopped."""

    def __init__(self, serve: Serve, period: float = 0.2):
        super().__init__(daemon=True)
        self.serve, self.period = serve, period
        self.samples: list[dict] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.period):
            self.samples.append(self.serve.status())

    def stop(self) -> list[dict]:
        self._done.set()
        self.join()
        return self.samples


def busy(ctx: Context) -> dict:
    from conveyor import Client, JobSpec

    n = ctx.args.busy_jobs
    home = Path(ctx.home("busy"))
    (home / "config.toml").write_text("[defaults]\ncpus = 0\n")
    serve = Serve(str(home))
    try:
        idle = serve.status()
        spec = JobSpec(command=["true"], backend={"name": "process"}, labels={BENCH_LABEL: BENCH_RUN})
        sampler = _Sampler(serve)
        sampler.start()
        with Client(home) as client:
            t0 = time.perf_counter()
            ids = client.submit_many([spec] * n)
            submitted = time.perf_counter() - t0
            ends = {}
            for job_id in ids:
                job = client.wait(job_id, timeout=3600)
                ends[job.state.value] = ends.get(job.state.value, 0) + 1
            all_done = time.perf_counter() - t0
        samples = sampler.stop()
        after = serve.status()
    finally:
        serve.stop()
    if ends.get("Done") != n:
        raise RuntimeError(f"busy: of {n} jobs, ended {ends}")
    return {
        "unit": f"the agent (conveyor serve) while one client submits {n} process-backend `true` jobs in one batch "
                "and waits for each in turn; sampled every 0.2 s",
        "conveyor": {
            "jobs": n,
            "submit_s": round(submitted, 2),
            "all_waited_s": round(all_done, 2),
            "jobs_per_s": round(n / all_done, 1),
            "agent_idle": {k: round(v, 1) for k, v in idle.items()},
            "agent_peak_threads": max(s["threads"] for s in samples),
            "agent_peak_rss_mb": round(max(s["rss_mb"] for s in samples), 1),
            "agent_rss_mb_after": round(after["rss_mb"], 1),
            "agent_cpu_s": round(after["cpu_s"] - idle["cpu_s"], 1),
            "samples": len(samples),
        },
        "baseline": {"note": "no docker equivalent: docker has no queue"},
        "ratio": None,
    }


BENCHMARKS = {"busy": busy}
