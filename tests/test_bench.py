"""Smoke run of the benchmarks with tiny sizes: the JSON keeps its shape and the figures are
real measurements. Not a timed test: nothing here asserts speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_prints_json_with_baselines(docker_client, test_image):
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "sequential", "--only", "supervision", "--repeat", "1", "--sizes", "1,3"],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=True,
    )
    doc = json.loads(out.stdout)
    assert doc["machine"]["cpus"] >= 1 and doc["machine"]["engine"]
    seq = doc["benchmarks"]["sequential"]
    for key in ("conveyor_executor_s", "docker_sdk_s", "docker_cli_s"):
        assert seq[key]["n"] == 1 and seq[key]["median"] > 0
    assert seq["ratio_vs_sdk"] == seq["conveyor_executor_s"]["median"] / seq["docker_sdk_s"]["median"]
    sup = doc["benchmarks"]["supervision"]
    assert sup["3"]["waiting_futures"] == 3
    # supervision cost does not grow with the number of jobs: no thread per job
    assert sup["3"]["threads"] == sup["1"]["threads"]
    sleeping = docker_client.containers.list(filters={"label": "conveyor.managed=true"}, sparse=True)
    assert not [c for c in sleeping if "sleep 600" in str(c.attrs.get("Command"))], "benchmark jobs left running"
