"""Smoke run of every benchmark with tiny sizes: the JSON keeps its shape, each benchmark
carries Conveyor's figures, its baseline's and the ratio, and nothing is left running.
Not a timed test: nothing here asserts speed (CI does not run the benchmarks themselves)."""

from __future__ import annotations

import json
import numbers
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TINY = [
    "--repeat", "1", "--heavy-repeat", "1", "--warmup", "0",
    "--inflight", "2", "--log-mb", "1", "--sizes", "1,6", "--wait-sample", "1", "--idle-window", "0.5",
    "--queue-jobs", "20", "--ps-containers", "3", "--recovery-jobs", "2", "--leases", "5",
    "--api-clients", "2", "--api-submits", "10", "--api-inspects", "5", "--api-batch", "20",
    "--data-mb", "2", "--data-files", "20", "--cli-batch", "2",
    "--slurm-jobs", "2", "--slurm-tasks", "4", "--cwl-repeat", "1", "--cluster-tasks", "4",
    "--usage-jobs", "3", "--usage-interval", "0.3", "--usage-window", "1", "--ui-jobs", "200",
    "--busy-jobs", "20", "--scale-sizes", "20,40", "--scale-queued", "10", "--scale-restarts", "0", "--scale-no-cli",
]
# Every benchmark `python -m bench` has; a module dropped from bench/__main__.py fails here.
EXPECTED = {"sequential", "concurrent", "cli", "logs", "supervision", "queue", "scheduling", "leases", "recovery", "api", "busy", "data",
            "cwl", "backends", "cluster", "slurm", "usage", "ui", "scale"}
NO_BASELINE = {"scheduling", "busy"}  # docker has no scheduler or queue: absolute figures, ratio None


def _ratios(value):
    """Every number in a ratio field (a number, None, or a dict of them, nested)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _ratios(v)
    elif value is not None:
        yield value


def _median(summary: dict) -> float:
    assert set(summary) >= {"median", "min", "max", "n"}
    assert summary["min"] <= summary["median"] <= summary["max"]
    return summary["median"]


def test_every_benchmark_prints_figures_baseline_and_ratio(docker_client, test_image):
    """`python -m bench` runs every benchmark, the data benchmark included, and each one
    reports Conveyor's figures next to a baseline's with a real ratio: a benchmark that
    breaks, drops out or loses its comparison fails here before anyone publishes its figures."""
    from bench.__main__ import load

    names = list(load()[0])
    assert EXPECTED <= set(names), EXPECTED - set(names)
    run = f"test-bench-{os.getpid()}"  # this run's containers, not a concurrent run's
    out = subprocess.run(
        [sys.executable, "-m", "bench", *TINY], cwd=REPO, capture_output=True, text=True, timeout=400,
        env={**os.environ, "CONVEYOR_BENCH_RUN": run},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)

    machine = doc["machine"]
    assert machine["cpus"] >= 1 and machine["memory_gb"] > 0 and machine["engine"]
    assert list(doc["benchmarks"]) == names
    for name, bench in doc["benchmarks"].items():
        assert "error" not in bench, (name, bench.get("error"), out.stderr[-3000:])
        assert {"conveyor", "baseline", "ratio"} <= set(bench), name
        ratios = list(_ratios(bench["ratio"]))
        assert ratios or name in NO_BASELINE, (name, bench["ratio"])
        for r in ratios:
            assert isinstance(r, numbers.Real) and r > 0, (name, bench["ratio"])

    seq = doc["benchmarks"]["sequential"]
    conveyor_s = _median(seq["conveyor"]["executor_run_s"])
    assert seq["ratio"]["vs_docker_sdk"] == conveyor_s / _median(seq["baseline"]["docker_sdk_s"])
    assert seq["ratio"]["vs_docker_cli"] == conveyor_s / _median(seq["baseline"]["docker_cli_s"])
    assert "inflight_2" in doc["benchmarks"]["concurrent"]["ratio"]
    cli = doc["benchmarks"]["cli"]["ratio"]
    assert set(cli) == {"run_warm_vs_docker_run", "run_cold_vs_docker_run", "help_vs_docker_help", "ps_vs_docker_ps",
                        "batch_vs_docker_loop"}
    assert all(r > 0 for r in cli.values()), cli
    assert doc["benchmarks"]["logs"]["conveyor"]["mb_per_s"] > 0

    sup = doc["benchmarks"]["supervision"]["conveyor"]
    assert sup["6"]["waiting_futures"] == 6
    # no thread per job: five more jobs add fewer than five threads (the pools are fixed)
    assert sup["6"]["threads"] - sup["1"]["threads"] < 5
    assert doc["benchmarks"]["recovery"]["conveyor"]["restart_to_reattached_s"]["n"] == 1
    assert doc["benchmarks"]["queue"]["conveyor"]["jobs"] == 20
    # usage: both modes measured on 3 jobs, the sampler took rounds, both ways of reading one job timed
    use = doc["benchmarks"]["usage"]["conveyor"]
    assert use["jobs"] == 3 and use["rounds_in_window"] >= 1 and use["sampling_on"]["rss_mb"] > 0
    assert use["read_per_job"]["cgroup"]["wall_ms"] > 0 and use["read_per_job"]["engine_stats_one_shot"]["wall_ms"] > 0

    # busy: every job of the batch waited for, the agent sampled while it worked
    busy = doc["benchmarks"]["busy"]["conveyor"]
    assert busy["jobs"] == 20 and busy["samples"] >= 1 and busy["agent_peak_threads"] >= 1, busy

    # ui: the dashboard's list over the 200 jobs stored, each figure measured once
    ui = doc["benchmarks"]["ui"]
    assert ui["jobs"] == 200 and ui["conveyor"]["first_page"]["n"] == 1 and _median(ui["conveyor"]["deep_page"]) > 0

    # data: 2 MB in 20 files captured out of the container and restored, against docker cp
    data = doc["benchmarks"]["data"]
    assert data["unit"].startswith("seconds to move 2 MB in 20 files"), data["unit"]
    capture, restore = _median(data["conveyor"]["capture_s"]), _median(data["conveyor"]["restore_s"])
    docker_cp = _median(data["baseline"]["docker_cp_s"])
    assert data["conveyor"]["capture_s"]["n"] == data["baseline"]["docker_cp_s"]["n"] == 1
    assert data["ratio"] == {"capture": capture / docker_cp, "restore": restore / docker_cp}

    # scale: both sizes filled and measured, a slope per figure between them
    scale = doc["benchmarks"]["scale"]
    assert scale["sizes"] == [20, 40] and set(scale["conveyor"]) == {"20", "40"}
    assert set(scale["slope"]["40/20"]) >= {"api.ps_first_page_ms", "api.queue_ms", "api.events_since_10m_ms",
                                            "scheduler_pass_ms", "agent_start_ms"}, scale["slope"]
    assert scale["conveyor"]["40"]["state_dir_mb"] > 0

    left = docker_client.containers.list(all=True, filters={"label": f"conveyor-bench={run}"}, sparse=True)
    assert not left, "benchmark containers left behind"
