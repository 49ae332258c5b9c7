"""A `true` job per backend, each against its own raw baseline (issue 14), one at a time:

- docker: the Executor against the docker SDK doing create/start/wait/logs/remove itself;
- docker+runsc: the same with the gVisor runtime on both sides;
- podman: the Executor on a podman node against the docker SDK on podman's Docker-compatible API;
- process: the Executor's process backend against ``subprocess.run`` capturing both streams.

A backend whose engine is not there is reported as such (``"error"``), not measured.
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

from conveyor import Executor, JobSpec

from .common import IMAGE, Context, interleaved, ratio, summary
from .throughput import sdk_job

PODMAN_URL = "unix:///run/conveyor-podman/podman.sock"

KINDS = {
    # id: (node's engine, engine url, the job's backend field, runtime)
    "docker": ("docker", None, None, None),
    "docker+runsc": ("docker", None, {"options": {"runtime": "runsc"}}, "runsc"),
    "podman": ("podman", PODMAN_URL, None, None),
    "process": ("docker", None, {"name": "process"}, None),
}


def _process_job() -> None:
    subprocess.run(["true"], capture_output=True, check=True)


def _one(ctx: Context, kind: str) -> dict:
    engine, url, backend, runtime = KINDS[kind]
    home = Path(ctx.home(f"backend-{kind}"))
    config = f'[defaults]\ncpus = 0\n[engine]\nname = "{engine}"\n' + (f'url = "{url}"\n' if url else "")
    (home / "config.toml").write_text(config)
    if backend and backend.get("name") == "process":
        spec = JobSpec(command=["true"], backend=backend, auto_remove=True)
        baseline, baseline_name = _process_job, "subprocess_run"
    else:
        spec = JobSpec(image=IMAGE, command=["true"], network=ctx.network, backend=backend, auto_remove=True)
        baseline, baseline_name = sdk_job(ctx, url, runtime), "docker_sdk" if engine == "docker" else "podman_api"
    try:
        with Executor(home) as ex:

            def conveyor() -> None:
                job = ex.run(spec)
                if job.state.value != "Done":
                    raise RuntimeError(f"{kind}: job {job.id} ended {job.state.value}/{job.substate}: {job.message}")

            samples = interleaved({"conveyor": conveyor, baseline_name: baseline}, ctx.repeat, ctx.warmup)
    except Exception as exc:  # noqa: BLE001 - an engine that is not there is reported, not measured
        return {"error": f"{type(exc).__name__}: {exc}"}
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "conveyor_s": summary(samples["conveyor"]),
        f"{baseline_name}_s": summary(samples[baseline_name]),
        "ratio": ratio(med["conveyor"], med[baseline_name]),
    }


def backends(ctx: Context) -> dict:
    """One `true` job at a time on each backend, against that backend's raw baseline."""
    results = {kind: _one(ctx, kind) for kind in KINDS}
    return {
        "unit": "seconds per job, one at a time",
        "conveyor": {k: v.get("conveyor_s") for k, v in results.items()},
        "baseline": {k: {n: s for n, s in v.items() if n.endswith("_s") and n != "conveyor_s"} for k, v in results.items()},
        "ratio": {k: v.get("ratio") for k, v in results.items()},
        "errors": {k: v["error"] for k, v in results.items() if "error" in v},
    }


BENCHMARKS = {"backends": backends}
