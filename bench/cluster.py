"""A 30-task array of `sleep 1` on the three-node swarm (scripts/swarm-cluster), against the
same array on the local Docker engine and against the raw "docker service create" loop a
user would write with the docker SDK on the swarm manager:

- conveyor_swarm: ``Executor.submit_array`` on a state directory whose engine is the swarm
  (``[engine] name = "swarm"``), then ``wait`` on every task;
- conveyor_local: the same array on a state directory on the local Docker engine;
- raw_service_loop: 30 one-task ``replicated-job`` services (restart condition none) created in
  a loop, tasks polled until all are complete, then the services removed.

Seconds per array; slow (each measurement is tens of seconds), so at most 3 rounds.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

import docker

from conveyor import Executor, JobSpec

from .common import BENCH_LABEL, BENCH_RUN, IMAGE, Context, interleaved, ratio, summary

SWARM_URL = "unix:///run/conveyor-swarm/n1.sock"
CLUSTER_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "swarm-cluster"
TASKS = 30  # default of --cluster-tasks
ROUND_LABEL = "conveyor-bench.cluster"  # on the raw loop's services: cleanup removes exactly these
LABEL_JOB = "conveyor.job"  # what the swarm backend puts on a job's service


def add_arguments(parser) -> None:
    parser.add_argument("--cluster-tasks", type=int, default=TASKS, help=f"cluster: tasks of the array (default {TASKS})")


def _run_array(ex: Executor, spec: JobSpec, job_ids: list[str], n: int) -> None:
    array_id = ex.submit_array(spec, 1, n)
    tasks = ex.array_tasks(array_id)
    if len(tasks) != n:
        raise RuntimeError(f"array {array_id} has {len(tasks)} tasks, not {n}")
    for job_id, _index, _state in tasks:
        job = ex.wait(job_id, timeout=600)
        if job.state.value != "Done":
            raise RuntimeError(f"task {job_id} ended {job.state.value}/{job.substate}: {job.message}")
    job_ids.extend(t[0] for t in tasks)


def _raw_loop(api: docker.APIClient, counter: list[int], n: int) -> None:
    """docker service create x n (replicated-job), poll tasks until all complete, remove."""
    counter[0] += 1
    tag = f"{counter[0]}-{time.time_ns()}"
    labels = {BENCH_LABEL: BENCH_RUN, ROUND_LABEL: tag}
    task_template = docker.types.TaskTemplate(
        container_spec=docker.types.ContainerSpec(IMAGE, ["sleep", "1"], labels={BENCH_LABEL: BENCH_RUN}),
        restart_policy=docker.types.RestartPolicy(condition="none"),
    )
    mode = docker.types.ServiceMode("replicated-job", concurrency=1, replicas=1)
    services = [api.create_service(task_template, mode=mode, labels=labels)["ID"] for _ in range(n)]
    deadline = time.monotonic() + 600
    while True:
        tasks = api.tasks(filters={"label": f"{ROUND_LABEL}={tag}"}) or []
        done = {t["ServiceID"] for t in tasks if t["Status"]["State"] == "complete"}
        bad = [t for t in tasks if t["Status"]["State"] in ("failed", "rejected", "orphaned")]
        if bad:
            raise RuntimeError(f"raw loop: task {bad[0]['ID']} {bad[0]['Status']['State']}: {bad[0]['Status'].get('Err')}")
        if done >= set(services):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw loop: {len(done)} of {n} tasks complete after 600 s")
        time.sleep(0.1)
    for sid in services:
        api.remove_service(sid)


def _remove_raw_services(api: docker.APIClient) -> None:
    for s in api.services(filters={"label": [ROUND_LABEL, f"{BENCH_LABEL}={BENCH_RUN}"]}):
        try:
            api.remove_service(s["ID"])
        except Exception:  # noqa: BLE001, S110 - already gone
            pass


def _placement(api: docker.APIClient, job_ids: list[str], count: Counter) -> None:
    """Add to ``count`` (hostname -> tasks) where the jobs' swarm tasks ran, and forget those
    jobs. Untimed, right after each swarm round: the services can be gone later (another user
    of the shared swarm cleaning up)."""
    if not job_ids:
        return
    names = {n["ID"]: n["Description"]["Hostname"] for n in api.nodes()}
    wanted = set(job_ids)
    job_ids.clear()
    for s in api.services(filters={"label": LABEL_JOB}):
        if s["Spec"].get("Labels", {}).get(LABEL_JOB) not in wanted:
            continue
        for t in api.tasks(filters={"service": s["ID"]}):
            if t.get("NodeID"):
                count[names.get(t["NodeID"], t["NodeID"])] += 1


def cluster(ctx: Context) -> dict:
    """An array of --cluster-tasks `sleep 1` tasks (30): Conveyor on the swarm, on local Docker, and the raw service loop."""
    tasks = ctx.args.cluster_tasks
    subprocess.run([str(CLUSTER_SCRIPT), "up"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rounds = min(ctx.repeat, 3)
    swarm_home = Path(ctx.home("cluster-swarm"))
    (swarm_home / "config.toml").write_text(f'[engine]\nname = "swarm"\nurl = "{SWARM_URL}"\n[defaults]\ncpus = 0\n')
    local_home = Path(ctx.home("cluster-local"))
    (local_home / "config.toml").write_text("[defaults]\ncpus = 0\n")
    labels = {BENCH_LABEL: BENCH_RUN}
    swarm_spec = JobSpec(image=IMAGE, command=["sleep", "1"], backend={"name": "swarm"}, labels=labels)
    local_spec = JobSpec(image=IMAGE, command=["sleep", "1"], network=ctx.network, labels=labels)
    api = docker.APIClient(base_url=SWARM_URL, version="auto")
    swarm_ids: list[str] = []
    local_ids: list[str] = []
    counter = [0]
    count: Counter = Counter()
    placement_errors: list[str] = []

    def record_placement() -> None:
        try:
            _placement(api, swarm_ids, count)
        except Exception as exc:  # noqa: BLE001 - optional figure
            placement_errors.append(f"{type(exc).__name__}: {exc}")
    try:
        with Executor(str(swarm_home)) as swarm_ex, Executor(str(local_home)) as local_ex:
            try:
                samples = interleaved(
                    {
                        "conveyor_swarm": lambda: _run_array(swarm_ex, swarm_spec, swarm_ids, tasks),
                        "conveyor_local": lambda: _run_array(local_ex, local_spec, local_ids, tasks),
                        "raw_service_loop": lambda: _raw_loop(api, counter, tasks),
                    },
                    rounds,
                    ctx.warmup,
                    setup={name: record_placement for name in ("conveyor_swarm", "conveyor_local", "raw_service_loop")},
                )
                record_placement()
            finally:
                for ex in (swarm_ex, local_ex):
                    try:
                        ex.cleanup()
                    except Exception:  # noqa: BLE001, S110 - best effort
                        pass
    finally:
        _remove_raw_services(api)
        api.close()
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "unit": f"seconds per array of {tasks} `sleep 1` tasks, submit to every task ended",
        "conveyor": {
            "swarm_array_s": summary(samples["conveyor_swarm"]),
            "local_array_s": summary(samples["conveyor_local"]),
            "swarm_tasks_per_node": dict(sorted(count.items())),
            "swarm_tasks_per_node_errors": placement_errors,
        },
        "baseline": {"raw_service_loop_s": summary(samples["raw_service_loop"])},
        "ratio": {
            "swarm_vs_raw_service_loop": ratio(med["conveyor_swarm"], med["raw_service_loop"]),
            "swarm_vs_local": ratio(med["conveyor_swarm"], med["conveyor_local"]),
        },
        "notes": "raw_service_loop includes removing its services (a user's loop must); the Conveyor "
                 "arrays leave their jobs' services/containers until cleanup after the run. "
                 "swarm_tasks_per_node covers every recorded and warm-up swarm round.",
    }


BENCHMARKS = {"cluster": cluster}
