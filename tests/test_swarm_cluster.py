"""The three-node Swarm of scripts/swarm-cluster is real: checked with the plain docker SDK,
no Conveyor code involved (the swarm backend's own tests build on the same `swarm` fixture).

Services are made as Conveyor's backend makes jobs: one `replicated-job` service per job, one
replica, restart condition none, labelled conveyor.managed (the fixture removes leftovers at
session end). The SDK never asks a registry to resolve the image (the engine only does that for
API < 1.30), which is the CLI's --no-resolve-image: no registry is reachable here.
"""

from __future__ import annotations

import time
import uuid

import docker
import docker.errors
import pytest
from docker.types import RestartPolicy, ServiceMode

from conftest import SWARM_MANAGED_LABEL, TEST_IMAGE

TERMINAL = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}


def _job(swarm, script: str, constraints=(), name_hint: str = "job"):
    """A one-task replicated-job service running `sh -c script` (restart condition none)."""
    return swarm.client().services.create(
        TEST_IMAGE,
        command=["sh", "-c", script],
        name=f"conveyor-test-{name_hint}-{uuid.uuid4().hex[:8]}",
        mode=ServiceMode("replicated-job", replicas=1, concurrency=1),
        restart_policy=RestartPolicy(condition="none"),
        constraints=list(constraints),
        labels={SWARM_MANAGED_LABEL: "test_swarm_cluster"},
    )


def _task(service):
    tasks = service.tasks()
    assert len(tasks) <= 1, f"a one-task job got {len(tasks)} tasks: {tasks}"
    return tasks[0] if tasks else None


def _wait_task(service, states, timeout: float = 30):
    """The service's only task once its state is one of `states`."""
    deadline = time.monotonic() + timeout
    task = None
    while time.monotonic() < deadline:
        task = _task(service)
        if task is not None and task["Status"]["State"] in states:
            return task
        time.sleep(0.1)
    raise AssertionError(f"task not in {sorted(states)} within {timeout} s: {task and task['Status']}")


def _logs(service, *, stdout: bool, stderr: bool) -> str:
    return b"".join(service.logs(stdout=stdout, stderr=stderr, follow=False)).decode()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _remove(service):
    try:
        service.remove()
    except docker.errors.NotFound:
        pass


def test_three_nodes_ready_one_manager_two_workers(swarm):
    nodes = swarm.client().nodes.list()
    assert len(nodes) == 3
    by_id = {n.id: n for n in nodes}
    assert set(by_id) == set(swarm.node_ids.values())
    for name, node_id in swarm.node_ids.items():
        attrs = by_id[node_id].attrs
        assert attrs["Status"]["State"] == "ready", (name, attrs["Status"])
        assert attrs["Spec"]["Availability"] == "active"
        assert attrs["Spec"]["Role"] == ("manager" if name == "n1" else "worker")
    assert by_id[swarm.node_ids["n1"]].attrs["ManagerStatus"]["Leader"] is True
    # Each node has its own host name (the placement constraints below rely on it) and its own
    # address on the private subnet.
    assert len(set(swarm.hostnames.values())) == 3
    addrs = {by_id[i].attrs["Status"]["Addr"] for i in swarm.node_ids.values()}
    assert addrs == {"10.231.0.11", "10.231.0.12", "10.231.0.13"}
    # Every node has the test image, with the same id as the engine it was copied from.
    ids = {swarm.client(name).images.get(TEST_IMAGE).id for name in swarm.node_urls}
    assert len(ids) == 1


def test_job_placed_on_n3_reports_its_exit_code(swarm):
    service = _job(
        swarm,
        "echo placed; exit 3",
        constraints=[f"node.hostname=={swarm.hostnames['n3']}"],
        name_hint="exit",
    )
    try:
        task = _wait_task(service, TERMINAL)
        assert task["NodeID"] == swarm.node_ids["n3"]
        assert task["Status"]["State"] == "failed", task["Status"]
        assert task["Status"]["ContainerStatus"]["ExitCode"] == 3
        assert "non-zero exit (3)" in task["Status"].get("Err", "")
        # The task's container is on n3's own engine, not on the manager's.
        container_id = task["Status"]["ContainerStatus"]["ContainerID"]
        assert swarm.client("n3").containers.get(container_id).attrs["State"]["ExitCode"] == 3
        with pytest.raises(docker.errors.NotFound):
            swarm.client("n1").containers.get(container_id)
        # Restart condition none: no second task, even for a failure.
        time.sleep(1)
        assert len(service.tasks()) == 1
    finally:
        _remove(service)


def test_service_logs_of_a_task_on_a_worker_keep_stdout_and_stderr_apart(swarm):
    service = _job(
        swarm,
        "echo to-stdout; echo to-stderr >&2; echo more-stdout",
        constraints=[f"node.hostname=={swarm.hostnames['n2']}"],
        name_hint="logs",
    )
    try:
        task = _wait_task(service, TERMINAL)
        assert task["NodeID"] == swarm.node_ids["n2"]
        assert task["Status"]["State"] == "complete", task["Status"]
        assert task["Status"]["ContainerStatus"]["ExitCode"] == 0
        # The worker ships its logs to the manager; give them a moment to arrive.
        deadline = time.monotonic() + 10
        while True:
            out = _logs(service, stdout=True, stderr=False)
            err = _logs(service, stdout=False, stderr=True)
            if ("more-stdout" in out and "to-stderr" in err) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert out.splitlines() == ["to-stdout", "more-stdout"], out
        assert err.splitlines() == ["to-stderr"], err
    finally:
        _remove(service)


def test_missing_label_stays_pending_then_starts_once_the_label_is_added(swarm):
    key = f"conveyor-test-pool-{uuid.uuid4().hex[:8]}"
    service = _job(swarm, "echo on-gpu-node", constraints=[f"node.labels.{key}==gpu"], name_hint="label")
    try:
        time.sleep(2)
        task = _task(service)
        assert task is not None
        assert task["Status"]["State"] == "pending", task["Status"]
        assert "no suitable node" in task["Status"].get("Err", ""), task["Status"]
        assert not task.get("NodeID")

        swarm.label("n2", key, "gpu")
        labelled = time.monotonic()
        task = _wait_task(service, {"running", "complete", "failed"}, timeout=15)
        started_after = time.monotonic() - labelled
        assert task["NodeID"] == swarm.node_ids["n2"]
        assert started_after < 10, f"started {started_after:.1f} s after the label was added"
        task = _wait_task(service, TERMINAL)
        assert task["Status"]["State"] == "complete", task["Status"]
    finally:
        _remove(service)
        swarm.unlabel("n2", key)


def test_task_containers_stay_after_service_removal_and_are_pruned_by_label(swarm):
    service = _job(
        swarm, "true", constraints=[f"node.hostname=={swarm.hostnames['n3']}"], name_hint="prune"
    )
    try:
        task = _wait_task(service, TERMINAL)
        assert task["Status"]["State"] == "complete", task["Status"]
        container_id = task["Status"]["ContainerStatus"]["ContainerID"]
    finally:
        _remove(service)
    n3 = swarm.client("n3")
    time.sleep(1)
    # The task container outlives its service.
    container = n3.containers.get(container_id)
    assert container.labels["com.docker.swarm.task.id"] == task["ID"]
    assert container.labels["com.docker.swarm.service.id"] == service.id
    # Pruned by the com.docker.swarm.task label (every task container has it).
    leftovers = n3.containers.list(
        all=True, filters={"label": ["com.docker.swarm.task", f"com.docker.swarm.service.id={service.id}"]}
    )
    assert [c.id for c in leftovers] == [container_id]
    for c in leftovers:
        c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        n3.containers.get(container_id)


def test_stop_node_kills_a_worker_and_start_node_brings_it_back(swarm):
    service = _job(
        swarm, "sleep 300", constraints=[f"node.hostname=={swarm.hostnames['n3']}"], name_hint="death"
    )
    try:
        task = _wait_task(service, {"running"})
        container = swarm.client("n3").containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
        pid = container.attrs["State"]["Pid"]
        # The task's processes are in the node's own cgroup parent (dockerd --cgroup-parent).
        with open(f"/proc/{pid}/cgroup") as f:
            assert "/conveyor-swarm-n3/" in f.read()

        swarm.stop_node("n3")
        assert not _alive(pid)  # the job's process died with its node
        swarm.wait_node_state("n3", "down", timeout=30)
        assert swarm.node_state("n2") == "ready"
    finally:
        _remove(service)
        swarm.start_node("n3")
    assert swarm.node_state("n3") == "ready"
    assert swarm.client("n3").ping()
