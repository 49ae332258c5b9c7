"""Jobs on the three-node swarm through the whole stack (issue 15): an array spread over the
three nodes, placement by label through the job's backend options, and a worker that dies while
its job runs giving the job a true final state instead of a hang."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor import Executor, JobSpec, JobState, Substate
from conveyor.errors import InvalidSpec, InvalidState, WaitTimeout
from helpers import Cli, eventually

from conftest import TEST_IMAGE

WAIT = 90


def _swarm_home(swarm, home: Path, engine_extra: str = "") -> Path:
    home.mkdir()
    nodes = ", ".join(f'"{url}"' for url in swarm.node_urls.values())
    (home / "config.toml").write_text(
        f'[defaults]\ncpus = 0\n[engine]\nname = "swarm"\nurl = "{swarm.manager_url}"\nnodes = [{nodes}]\n{engine_extra}')
    return home


@pytest.fixture
def ex(swarm, tmp_path):
    with Executor(_swarm_home(swarm, tmp_path / "home")) as executor:
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
    assert [t.node for t in tasks] == [_node_of(swarm, ex, t.id) for t in tasks]  # recorded by the job


def test_placement_by_label_and_a_pending_job_starts_once_a_node_has_it(swarm, ex):
    spec = JobSpec(image=TEST_IMAGE, command=["hostname"], backend={"name": "swarm", "options": {
        "constraints": ["node.labels.conveyor-test-pool==special"]}})
    job_id = ex.submit(spec)
    # Handed to Swarm, whose task waits for a node: Queued in Swarm's queue, with its reason.
    eventually("the wait's reason as the job's", lambda: "no suitable node" in (ex.info(job_id).message or ""), timeout=WAIT)
    waiting = ex.info(job_id)
    assert (waiting.state, waiting.substate, waiting.started_at) == (JobState.QUEUED, Substate.ENGINE_QUEUED, None)
    with pytest.raises(WaitTimeout):
        ex.wait_started(job_id, timeout=1)
    with pytest.raises(InvalidState, match="cannot hold it: cancel it instead"):
        ex.hold(job_id)  # Swarm has no hold: refused, not half done
    swarm.label("n2", "conveyor-test-pool", "special")
    try:
        job = ex.wait(job_id, timeout=WAIT)
    finally:
        swarm.unlabel("n2", "conveyor-test-pool")
    assert job.state is JobState.DONE and _node_of(swarm, ex, job_id) == swarm.hostnames["n2"]
    assert job.started_at is not None and JobState.RUNNING in [t.to_state for t in ex.store.transitions(job_id)]


def test_a_worker_that_dies_mid_run_gives_its_job_a_true_final_state(swarm, ex):
    spec = JobSpec(image=TEST_IMAGE, command=["sh", "-c", "echo up; sleep 300"], backend={"name": "swarm", "options": {
        "constraints": [f"node.hostname=={swarm.hostnames['n3']}"]}})
    job_id = ex.submit(spec)
    ex.wait_started(job_id, timeout=WAIT)
    eventually("running on n3", lambda: ex.backend.inspect(ex.store.get(job_id).container_id).status == "running"
               and ex.backend.inspect(ex.store.get(job_id).container_id).started_at is not None, timeout=WAIT)
    eventually("the job's node recorded while it runs", lambda: ex.info(job_id).node == swarm.hostnames["n3"])
    swarm.stop_node("n3")
    try:
        job = ex.wait(job_id, timeout=WAIT)
    finally:
        swarm.start_node("n3")
    assert (job.state, job.substate) == (JobState.FAILED, Substate.CONTAINER_LOST), job
    assert "n3" in job.message and "down" in job.message, job.message
    assert Path(job.logs_dir).exists()


def test_inputs_and_outputs_of_a_job_placed_on_a_worker_travel_through_the_shared_directory(swarm, tmp_path):
    # The three nodes share this machine's filesystem, as a real cluster's nodes share an NFS mount.
    shared = tmp_path / "shared"
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the submitter\n")
    home = _swarm_home(swarm, tmp_path / "home", f'shared_dir = "{shared}"\n')
    spec = JobSpec(image=TEST_IMAGE, user="1234", inputs=[f"{data}:/in"], outputs=["/out"],
                   command=["sh", "-c", "cat /in/in.txt > /out/copy.txt; mkdir /out/sub; id -u > /out/sub/uid; ! touch /in/x"],
                   backend={"name": "swarm", "options": {"constraints": [f"node.hostname=={swarm.hostnames['n2']}"]}})
    with Executor(home) as ex:
        job_id = ex.submit(spec)
        job = ex.wait(job_id, timeout=WAIT)
        assert job.state is JobState.DONE, (job, job.stderr)
        assert _node_of(swarm, ex, job_id) == swarm.hostnames["n2"]
        assert ex.read_output(job_id, "/out/copy.txt") == b"from the submitter\n"
        assert ex.read_output(job_id, "/out/sub/uid") == b"1234\n"
        assert job.node == swarm.hostnames["n2"]
        assert ex.verify(job_id)["bad"] == []
        executor_dir = shared / ex.executor_id
        assert not (executor_dir / "staging" / job_id).exists()  # gone once the job ended
        assert (executor_dir / "outputs" / job_id).exists()  # kept with the job's service
        ex.remove(job_id)
        assert not (executor_dir / "outputs" / job_id).exists()
        ex.cleanup()


def test_without_a_shared_directory_inputs_and_outputs_are_refused_naming_the_setting(ex, tmp_path):
    for kw in ({"outputs": ["/out"]}, {"inputs": [f"{tmp_path}:/in"]}):
        with pytest.raises(InvalidSpec) as refused:
            ex.submit(JobSpec(image=TEST_IMAGE, command=["true"], backend="swarm", **kw))
        assert "set [engine] shared_dir in config.toml" in str(refused.value), refused.value
    assert ex.list() == []


def test_a_worker_drained_mid_run_lets_its_job_end_there_and_gets_no_new_one(swarm, ex):
    n2, n3 = swarm.hostnames["n2"], swarm.hostnames["n3"]
    job_id = ex.submit(JobSpec(image=TEST_IMAGE, command=["sh", "-c", "echo up; sleep 4; echo done"],
                               backend={"name": "swarm", "options": {"constraints": [f"node.hostname=={n3}"]}}))
    eventually("running on n3", lambda: ex.info(job_id).node == n3, timeout=WAIT)
    swarm.set_availability("n3", "drain")
    try:
        later = ex.submit(JobSpec(image=TEST_IMAGE, command=["true"], backend={"name": "swarm", "options": {
            "constraints": ["node.role==worker"]}}))
        job = ex.wait(job_id, timeout=WAIT)
        # Swarm (20.10) does not evict a job's task from a drained node: it runs to its own end
        assert (job.state, job.exit_code, job.stdout, job.node) == (JobState.DONE, 0, "up\ndone\n", n3), job
        assert ex.wait(later, timeout=WAIT).node == n2  # no new work for the drained node
    finally:
        swarm.set_availability("n3", "active")


def test_machine_shows_the_cluster_and_admission_counts_it(swarm, ex):
    m = ex.machine()
    assert sorted(n["name"] for n in m["nodes"]) == sorted(swarm.hostnames.values())
    assert {n["role"] for n in m["nodes"]} == {"manager", "worker"} and all(n["state"] == "ready" for n in m["nodes"])
    assert m["capacity"]["cpus"] == sum(n["cpus"] for n in m["nodes"])  # the cluster's, not the manager's machine
    # scripts/swarm-cluster has each worker advertise one GPU (a generic resource; no device)
    assert {n["name"]: n["gpus"] for n in m["nodes"]} == {
        swarm.hostnames["n1"]: {}, **{swarm.hostnames[w]: {"nvidia": [f"conveyor-test-gpu-{w}"]} for w in ("n2", "n3")}}
    assert sorted(m["capacity"]["gpus"]["nvidia"]) == [f"{swarm.hostnames[w]}/conveyor-test-gpu-{w}" for w in ("n2", "n3")]


def test_the_cli_shows_each_jobs_node_and_each_nodes_gpus(swarm, tmp_path):
    from conveyor.daemon import stop_supervisor
    from conveyor.home import Home

    home = _swarm_home(swarm, tmp_path / "home")
    cli = Cli(home, None, TEST_IMAGE)
    workers = [swarm.hostnames["n2"], swarm.hostnames["n3"]]
    try:
        # with the backend named, and without: options with no name are the node's engine's
        cli.ok("run", "--rm", "--backend", "swarm", "--backend-opt", f"constraints=node.hostname=={workers[0]}", TEST_IMAGE, "true")
        cli.ok("run", "--rm", "--backend-opt", f"constraints=node.hostname=={workers[1]}", TEST_IMAGE, "true")
        refused = cli.run("run", "--runtime", "runsc", TEST_IMAGE, "true")
        assert refused.returncode == 125 and "options.runtime" in refused.stderr.decode() \
            and "the swarm backend's options: constraints, preferences" in refused.stderr.decode(), refused.stderr
        header, *rows = cli.ok("ps", "-a").splitlines()
        assert header.split()[-1] == "NODE", header
        assert sorted(row.split()[-1] for row in rows) == workers
        assert sorted(cli.ok("ps", "-a", "--format", "{{.Node}}").split()) == workers
        assert sorted(job["node"] for job in cli.jobs()) == workers
        table = cli.ok("machine")
        assert "GPUS" in table and table.count("nvidia:1") == 2, table
        swarm_backend = next(b for b in json.loads(cli.ok("backends", "--json")) if b["name"] == "swarm")
        assert swarm_backend["available"] and swarm_backend["default"]
        # as configured: no shared directory, so no files
        assert swarm_backend["capabilities"]["files"] is False and swarm_backend["capabilities"]["gpus"] == ["amd", "intel", "nvidia"]
    finally:
        stop_supervisor(Home(home))


def test_gpu_jobs_run_on_the_nodes_that_have_gpus_and_no_more_at_once_than_the_cluster_has(swarm, ex):
    spec = JobSpec(image=TEST_IMAGE, backend="swarm", resources={"gpus": "1"},
                   # the variable's name has a "-", which a shell does not pass on: read it from pid 1's environment
                   command=["sh", "-c", "tr '\\0' '\\n' < /proc/1/environ | grep '^DOCKER_RESOURCE_NVIDIA-GPU='; sleep 2"])
    jobs = [ex.wait(job_id, timeout=WAIT) for job_id in [ex.submit(spec) for _ in range(3)]]
    assert all(j.state is JobState.DONE for j in jobs), jobs
    for job in jobs:  # Swarm gave each the GPU of the worker it placed it on
        worker = next(w for w in ("n2", "n3") if swarm.hostnames[w] == job.node)
        assert job.stdout == f"DOCKER_RESOURCE_NVIDIA-GPU=conveyor-test-gpu-{worker}\n"
    # two GPUs in the cluster: admission never ran three at once
    for job in jobs:
        overlapping = [j for j in jobs if j.started_at < job.finished_at and job.started_at < j.finished_at]
        assert len(overlapping) <= 2, [(j.started_at, j.finished_at) for j in jobs]
