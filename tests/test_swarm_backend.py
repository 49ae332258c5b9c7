"""The swarm backend: pure mapping tests (spec -> service), then the driver on the real
three-node swarm of scripts/swarm-cluster (the ``swarm`` fixture in conftest)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from conveyor.backends.base import LABEL_EXECUTOR, LABEL_JOB, ContainerStatus, EngineConflict, NotSupported
from conveyor.backends.swarm import mapping
from conveyor.errors import InvalidSpec
from conveyor.spec import JobSpec

IMAGE = "conveyor/busybox:latest"


def _spec(**kw) -> JobSpec:
    return JobSpec.model_validate({"image": IMAGE, "command": ["true"], **kw})


# ----------------------------------------------------------------------------- pure mapping


def test_service_args_carry_the_job():
    spec = _spec(
        command=["sh", "-c", "echo hi"], entrypoint=["/bin/env"], env={"A": "1"}, workdir="/tmp", user="1000:1000",
        hostname="h1", name="myjob", labels={"team": "x"}, stop_grace=3.5, read_only=True, init=True,
        resources={"cpus": 1.5, "memory": "64m", "pids_limit": 50},
        mounts=[{"type": "bind", "source": "/srv", "target": "/in", "read_only": True},
                {"type": "volume", "source": "vol1", "target": "/v"},
                {"type": "tmpfs", "target": "/scratch", "size": "1m"}],
        ulimits=["nofile=100:200"],
        backend={"name": "swarm", "options": {"constraints": ["node.labels.pool==gpu"], "preferences": ["spread=node.labels.zone"]}},
    )
    args = mapping.service_args(spec, "E1", "job1")
    assert args["name"] == "conveyor-job1"
    assert args["mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 0}}
    assert args["labels"] == {"conveyor.managed": "true", "conveyor.executor": "E1", "conveyor.job": "job1",
                              "conveyor.name": "myjob", "conveyor.swarm.phase": "created"}
    assert args["endpoint_spec"] == {"Mode": "dnsrr"}
    tt = args["task_template"]
    cs = tt["ContainerSpec"]
    assert cs["Image"] == IMAGE
    assert cs["Command"] == ["/bin/env"] and cs["Args"] == ["sh", "-c", "echo hi"]
    assert cs["Env"] == ["A=1"] and cs["Dir"] == "/tmp" and cs["User"] == "1000:1000" and cs["Hostname"] == "h1"
    assert cs["Labels"] == {"team": "x", "conveyor.managed": "true", "conveyor.executor": "E1",
                            "conveyor.job": "job1", "conveyor.name": "myjob"}
    assert cs["StopGracePeriod"] == 3_500_000_000
    assert cs["ReadOnly"] is True and cs["Init"] is True
    assert cs["Ulimits"] == [{"Name": "nofile", "Soft": 100, "Hard": 200}]
    assert cs["Mounts"] == [
        {"Type": "bind", "Target": "/in", "ReadOnly": True, "Source": "/srv"},
        {"Type": "volume", "Target": "/v", "ReadOnly": False, "Source": "vol1"},
        {"Type": "tmpfs", "Target": "/scratch", "ReadOnly": False, "TmpfsOptions": {"SizeBytes": 1024 * 1024}},
    ]
    assert tt["RestartPolicy"] == {"Condition": "none", "MaxAttempts": 0}
    assert tt["Resources"] == {
        "Limits": {"NanoCPUs": 1_500_000_000, "MemoryBytes": 64 * 1024 * 1024, "Pids": 50},
        "Reservations": {"NanoCPUs": 1_500_000_000, "MemoryBytes": 64 * 1024 * 1024},
    }
    assert tt["Placement"] == {"Constraints": ["node.labels.pool==gpu"],
                               "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]}
    assert tt["LogDriver"]["Name"] == "local"
    assert "Networks" not in tt


def test_minimal_service_and_networks():
    tt = mapping.service_args(_spec(), "E1", "j")["task_template"]
    assert tt["ContainerSpec"] == {"Image": IMAGE, "Labels": {"conveyor.managed": "true", "conveyor.executor": "E1",
                                                              "conveyor.job": "j"},
                                   "Args": ["true"], "StopGracePeriod": 10_000_000_000}
    assert tt["Resources"] == {"Limits": {}, "Reservations": {}} and "Placement" not in tt
    assert mapping.task_template(_spec(network="host"), {})["Networks"] == [{"Target": "host"}]
    assert "Networks" not in mapping.task_template(_spec(network="bridge"), {})
    cleared = mapping.container_spec(_spec(entrypoint=[], command=["echo", "x"]), {})
    assert cleared["Command"] == ["echo", "x"] and "Args" not in cleared


@pytest.mark.parametrize("field,kw", [
    ("privileged", {"privileged": True}), ("ipc_mode", {"ipc_mode": "host"}), ("pid_mode", {"pid_mode": "host"}),
    ("uts_mode", {"uts_mode": "host"}), ("tty", {"tty": True}), ("stdin_open", {"stdin_open": True}),
    ("ports", {"ports": ["8080:80"]}), ("resources.gpus", {"resources": {"gpus": "all"}}),
    ("resources.gpus", {"resources": {"gpus": "device=0"}}),
    ("resources.memory_swap", {"resources": {"memory": "64m", "memory_swap": "128m"}}),
    ("shm_size", {"shm_size": "64m"}), ("restart", {"restart": "on-failure"}), ("network", {"network": "none"}),
])
def test_check_refuses_what_swarm_lacks(field, kw):
    with pytest.raises(InvalidSpec) as info:
        mapping.check(_spec(**kw))
    assert [p[0] for p in info.value.problems] == [field]


@pytest.mark.parametrize("kw", [{"outputs": ["/out"]}, {"inputs": ["sha256:" + "0" * 64 + ":/in"]}])
def test_check_wants_a_shared_directory_for_data(kw):
    with pytest.raises(InvalidSpec) as info:
        mapping.check(_spec(**kw))
    assert "shared_dir" in str(info.value)
    mapping.check(_spec(**kw), shared=True)


def test_gpus_are_asked_of_swarm_as_generic_resources():
    template = mapping.task_template(_spec(resources={"gpus": "amd:2"}), {})
    assert template["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "AMD-GPU", "Value": 2}}]
    pinned = _spec(resources={"gpus": {"vendor": "nvidia", "device_ids": ["n2/a", "n3/b"]}})  # admission's ids
    assert mapping.task_template(pinned, {})["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]
    assert mapping.node_gpus([{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-1"}},
                              {"DiscreteResourceSpec": {"Kind": "INTEL-GPU", "Value": 2}},
                              {"DiscreteResourceSpec": {"Kind": "SSD", "Value": 1}}]) == {
        "nvidia": ["GPU-1"], "intel": ["0", "1"]}


def test_check_accepts_what_swarm_carries():
    mapping.check(_spec(read_only=True, init=True, ulimits=["nofile=10:10"], network="host",
                        resources={"cpus": 1, "memory": "32m", "pids_limit": 10}))


def _svc(phase="started", **labels):
    return {"ID": "S1", "UpdatedAt": "2026-01-01T00:00:10Z",
            "Spec": {"Labels": {LABEL_JOB: "j", "conveyor.swarm.phase": phase, **labels}}}


def _task(state, code=None, err=None, node="N2", it=1, msg=None, ts="2026-01-01T00:00:05Z"):
    return {"ID": f"T{it}", "NodeID": node, "CreatedAt": "2026-01-01T00:00:01Z", "JobIteration": {"Index": it},
            "Status": {"State": state, "Timestamp": ts, "Err": err, "Message": msg,
                       "ContainerStatus": {"ExitCode": code} if code is not None else {}}}


NODES = {"N2": {"ID": "N2", "Description": {"Hostname": "node-two"}, "Status": {"State": "ready"}}}


def test_status_mapping():
    st = mapping.service_status
    assert st(_svc("created"), []).status == "created"
    waiting = st(_svc(), [_task("pending", err="no suitable node (scheduling constraints not satisfied on 3 nodes)",
                                node="")])
    assert waiting.status == "running" and waiting.alive and not waiting.finished
    assert "no suitable node" in waiting.error
    assert st(_svc(), []).status == "running"
    running = st(_svc(), [_task("running")], NODES)
    assert running.status == "running" and running.started_at is not None and running.error is None
    done = st(_svc(), [_task("complete", 0)], NODES, {"T1": 3.0})
    assert (done.status, done.exit_code, done.started_at, done.oom_killed) == ("exited", 0, 3.0, False)
    assert done.finished
    failed = st(_svc(), [_task("failed", 3, err="task: non-zero exit (3)")], NODES)
    assert (failed.status, failed.exit_code) == ("exited", 3)
    rejected = st(_svc(), [_task("rejected", err="No such image: x")], NODES)
    assert rejected.status == "exited" and rejected.exit_code is None and "node-two" in rejected.error
    assert "No such image" in rejected.error
    lost = st(_svc(), [_task("orphaned", msg="node lost")], NODES)
    assert lost.status == "dead" and "node-two" in lost.error and lost.finished
    down = {"N2": {**NODES["N2"], "Status": {"State": "down"}}}
    assert st(_svc(), [_task("running")], down).status == "dead"
    # the newest iteration's task wins
    assert st(_svc(), [_task("complete", 0, it=1), _task("running", it=2)], NODES).status == "running"
    stopping = st(_svc("stopping"), [_task("shutdown", 143)], NODES)
    assert (stopping.status, stopping.exit_code) == ("exited", 143)
    gone = st(_svc("stopping"), [])
    assert gone.status == "dead" and gone.finished
    final = mapping.final_label(ContainerStatus("S1", "exited", 7, False, 1.0, 2.0, None))
    stopped = st(_svc("stopped", **{"conveyor.swarm.final": final}), [])
    assert (stopped.status, stopped.exit_code, stopped.started_at, stopped.finished_at) == ("exited", 7, 1.0, 2.0)
    assert json.loads(final)["exit_code"] == 7


# ----------------------------------------------------------------------------- the real swarm


@pytest.fixture
def backend(swarm, tmp_path):
    from conveyor.backends.swarm import SwarmBackend

    executor = f"sbt-{uuid.uuid4().hex[:8]}"
    workers = [url for name, url in swarm.node_urls.items() if name != "n1"]
    b = SwarmBackend(executor, swarm.manager_url, node_urls=workers, cache_dir=tmp_path / "cache")
    yield b
    for s in b.list():
        b.remove(s.id)


def _wait(backend, handle, pred, timeout=30.0) -> ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        s = backend.inspect(handle)
        if pred(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last status {s}")
        time.sleep(0.1)


def _job() -> str:
    return uuid.uuid4().hex[:12]


def test_lifecycle_exit_code_and_logs_byte_exact(backend, tmp_path):
    job = _job()
    spec = _spec(command=["sh", "-c", "printf 'out1\\nout2'; printf 'err1\\n' >&2; exit 3"],
                 backend={"name": "swarm", "options": {"constraints": ["node.role==worker"]}})
    h = backend.create(job, spec)
    assert backend.inspect(h).status == "created"
    with pytest.raises(EngineConflict):
        backend.create(job, spec)
    assert backend.find(job).id == h
    backend.start(h)
    s = _wait(backend, h, lambda s: s.finished)
    assert (s.status, s.exit_code) == ("exited", 3)
    assert s.started_at is not None and s.finished_at >= s.started_at
    sizes = backend.save_logs(h, {"stdout": tmp_path / "stdout", "stderr": tmp_path / "stderr"})
    assert (tmp_path / "stdout").read_bytes() == b"out1\nout2"
    assert (tmp_path / "stderr").read_bytes() == b"err1\n"
    assert sizes == {"stdout": 9, "stderr": 5}
    assert (tmp_path / "stdout.times").exists()
    backend.remove(h)
    assert backend.inspect(h) is None and backend.find(job) is None
    backend.remove(h)  # gone already: fine


def test_a_stops_exit_code_is_read_from_the_tasks_node_when_swarm_drops_it(backend, swarm):
    # The stop's fallback when Swarm removes the task, or reports its shutdown without the code:
    # the container on its node (a worker here, reached through node_urls) still has it.
    h = backend.create(_job(), _spec(command=["sh", "-c", "exit 5"], backend={"name": "swarm", "options": {
        "constraints": [f"node.hostname=={swarm.hostnames['n3']}"]}}))
    began = time.time()
    backend.start(h)
    _wait(backend, h, lambda s: s.finished)
    tasks = backend.api.tasks(filters={"service": h})
    assert backend._exit_code_on_node(tasks, began) == 5
    assert backend._exit_code_on_node([], began) is None
    # Swarm removed the container too (a loaded node, a task reaped fast): its die event says it.
    cid = tasks[0]["Status"]["ContainerStatus"]["ContainerID"]
    swarm.client("n3").api.remove_container(cid, force=True)
    assert backend._exit_code_on_node(tasks, began) == 5


def test_placement_constraint_lands_on_the_labelled_node(backend, swarm):
    swarm.label("n3", "sbt.pool", "special")
    h = backend.create(_job(), _spec(command=["hostname"],
                                     backend={"name": "swarm", "options": {"constraints": ["node.labels.sbt.pool==special"]}}))
    backend.start(h)
    _wait(backend, h, lambda s: s.finished)
    task = backend.api.tasks(filters={"service": h})[0]
    assert task["NodeID"] == swarm.node_ids["n3"]


def test_pending_shows_why_then_runs_once_labelled(backend, swarm):
    key = f"sbt.wait{uuid.uuid4().hex[:6]}"
    h = backend.create(_job(), _spec(backend={"name": "swarm", "options": {"constraints": [f"node.labels.{key}==yes"]}}))
    backend.start(h)
    s = _wait(backend, h, lambda s: s.error and "no suitable node" in s.error)
    assert s.status == "running" and not s.finished  # a started job waiting: never finalized, never started again
    swarm.label("n2", key, "yes")
    try:
        s = _wait(backend, h, lambda s: s.finished)
        assert s.exit_code == 0
    finally:
        swarm.unlabel("n2", key)


def test_stop_runs_the_term_handler_and_keeps_its_output(backend, tmp_path):
    spec = _spec(command=["sh", "-c", "trap 'echo got TERM; echo bye >&2; exit 7' TERM; echo started; "
                                      "while true; do sleep 0.1; done"], stop_grace=5,
                 backend={"name": "swarm", "options": {"constraints": ["node.role==worker"]}})
    h = backend.create(_job(), spec)
    backend.start(h)
    _wait(backend, h, lambda s: s.status == "running" and s.started_at is not None)
    time.sleep(0.5)
    backend.stop(h, 5)
    s = backend.inspect(h)
    assert (s.status, s.exit_code) == ("exited", 7) and s.finished
    backend.save_logs(h, {"stdout": tmp_path / "stdout", "stderr": tmp_path / "stderr"})
    assert (tmp_path / "stdout").read_bytes() == b"started\ngot TERM\n"
    assert (tmp_path / "stderr").read_bytes() == b"bye\n"


def test_events_list_and_recovery_with_a_new_driver(backend, swarm, tmp_path):
    from conveyor.backends.swarm import SwarmBackend

    events = backend.events(None)
    job = _job()
    h = backend.create(job, _spec(command=["sh", "-c", "sleep 1"]))
    backend.start(h)
    seen = []
    for ev in events:
        seen.append((ev.action, ev.job_id))
        if ev.action == "die":
            break
    assert ("start", job) in seen and seen[-1] == ("die", job)
    again = SwarmBackend(backend.executor_id, swarm.manager_url, cache_dir=tmp_path / "cache")
    listed = again.list()
    assert [s.id for s in listed] == [h] and listed[0].labels[LABEL_EXECUTOR] == backend.executor_id
    assert again.find(job).exit_code == 0
    backend.remove(h)
    for ev in events:
        if ev.action == "destroy":
            assert ev.job_id == job
            break
    backend.close_events()
    with pytest.raises(Exception):
        next(events)


def test_not_supported_is_said(backend):
    assert not backend.capabilities.pause and not backend.capabilities.exec and backend.capabilities.recover
    with pytest.raises(NotSupported):
        backend.pause("x")
    with pytest.raises(NotSupported):
        backend.signal("x", "SIGHUP")


def test_signal_term_as_the_stopper_sends_it_and_follow_logs(backend, tmp_path):
    spec = _spec(command=["sh", "-c", "trap 'echo term; exit 5' TERM; echo up; while true; do sleep 0.1; done"],
                 backend={"name": "swarm", "options": {"constraints": ["node.role==worker"]}})
    h = backend.create(_job(), spec)
    backend.start(h)
    _wait(backend, h, lambda s: s.status == "running" and s.started_at is not None)
    followed = backend.follow_logs(h, ("stdout",), follow=True)
    assert next(followed) == ("stdout", b"up\n")
    backend.signal(h, "SIGTERM")  # returns at once; the stop goes on in the background
    backend.signal(h, "SIGKILL")  # while stopping: Swarm's own SIGKILL after the grace
    s = _wait(backend, h, lambda s: s.finished)
    assert s.exit_code == 5
    assert list(followed) == [("stdout", b"term\n")]
    backend.save_logs(h, {"stdout": tmp_path / "stdout"})
    assert (tmp_path / "stdout").read_bytes() == b"up\nterm\n"


def test_stop_of_a_job_waiting_for_a_node(backend):
    h = backend.create(_job(), _spec(backend={"name": "swarm", "options": {"constraints": ["node.labels.sbt.never==1"]}}))
    backend.start(h)
    _wait(backend, h, lambda s: s.error and "no suitable node" in s.error)
    backend.stop(h, 1)
    s = backend.inspect(h)
    assert s.finished and s.exit_code is None
