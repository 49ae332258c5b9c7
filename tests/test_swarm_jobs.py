"""Jobs on the three-node swarm through the whole stack (issue 15): an array spread over the
three nodes, placement by label through the job's backend options, and a worker that dies while
its job runs giving the job a true final state instead of a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import Executor, JobSpec, JobState, Substate
from helpers import eventually

from conftest import TEST_IMAGE

WAIT = 90


@pytest.fixture
def ex(swarm, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    nodes = ", ".join(f'"{url}"' for url in swarm.node_urls.values())
    (home / "config.toml").write_text(
        f'[defaults]\ncpus = 0\n[engine]\nname = "swarm"\nurl = "{swarm.manager_url}"\nnodes = [{nodes}]\n')
    with Executor(home) as executor:
        yield executor
        executor.cleanup()


def _node_of(swarm, ex: Executor, job_id: str) -> str:
    """The host name of the node the job's task ran on, from the manager."""
    api = swarm.client().api
    tasks = api.tasks(filters={"service": ex.store.get(job_id).container_id})
    names = {node_id: host for host, node_id in ((swarm.hostnames[n], i) for n, i in swarm.node_ids.items())}
    return names[tasks[0]["NodeID"]]


def test_an_array_spreads_over_the_three_nodes(swarm, ex):
    spec = JobSpec(image=TEST_IMAGE, command=["sh", "-c", "sleep 2; echo task $CONVEYOR_TASK_ID"], backend="swarm",
                   resources={"cpus": 1.5})  # 2 cores a node: one such task per node at a time
    array_id = ex.submit_array(spec, 1, 6)
    tasks = [ex.wait(job_id, timeout=WAIT) for job_id, _, _ in ex.array_tasks(array_id)]
    assert [(t.state, t.stdout) for t in tasks] == [(JobState.DONE, f"task {i}\n") for i in range(1, 7)]
    assert {_node_of(swarm, ex, t.id) for t in tasks} == set(swarm.hostnames.values())


def test_placement_by_label_and_a_pending_job_starts_once_a_node_has_it(swarm, ex):
    spec = JobSpec(image=TEST_IMAGE, command=["hostname"], backend={"name": "swarm", "options": {
        "constraints": ["node.labels.conveyor-test-pool==special"]}})
    job_id = ex.submit(spec)
    started = ex.wait_started(job_id, timeout=WAIT)  # started: its task waits for a node
    assert started.state is JobState.RUNNING
    eventually("the wait's reason", lambda: "no suitable node" in (ex.backend.inspect(ex.store.get(job_id).container_id).error or ""))
    swarm.label("n2", "conveyor-test-pool", "special")
    try:
        job = ex.wait(job_id, timeout=WAIT)
    finally:
        swarm.unlabel("n2", "conveyor-test-pool")
    assert job.state is JobState.DONE and _node_of(swarm, ex, job_id) == swarm.hostnames["n2"]


def test_a_worker_that_dies_mid_run_gives_its_job_a_true_final_state(swarm, ex):
    spec = JobSpec(image=TEST_IMAGE, command=["sh", "-c", "echo up; sleep 300"], backend={"name": "swarm", "options": {
        "constraints": [f"node.hostname=={swarm.hostnames['n3']}"]}})
    job_id = ex.submit(spec)
    ex.wait_started(job_id, timeout=WAIT)
    eventually("running on n3", lambda: ex.backend.inspect(ex.store.get(job_id).container_id).status == "running"
               and ex.backend.inspect(ex.store.get(job_id).container_id).started_at is not None, timeout=WAIT)
    swarm.stop_node("n3")
    try:
        job = ex.wait(job_id, timeout=WAIT)
    finally:
        swarm.start_node("n3")
    assert (job.state, job.substate) == (JobState.FAILED, Substate.CONTAINER_LOST), job
    assert "n3" in job.message and "down" in job.message, job.message
    assert Path(job.logs_dir).exists()


def test_machine_shows_the_cluster_and_admission_counts_it(swarm, ex):
    m = ex.machine()
    assert sorted(n["name"] for n in m["nodes"]) == sorted(swarm.hostnames.values())
    assert {n["role"] for n in m["nodes"]} == {"manager", "worker"} and all(n["state"] == "ready" for n in m["nodes"])
    assert m["capacity"]["cpus"] == sum(n["cpus"] for n in m["nodes"])  # the cluster's, not the manager's machine
