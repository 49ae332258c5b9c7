"""End-to-end: every JobSpec feature really reaches the engine.

Each test starts (or, for GPUs, only creates) a container through Conveyor, then reads it
back with ``docker inspect`` and asserts on what the engine holds — a limit that is
documented but never applied cannot pass here. A few checks also look from inside the job.
"""

from __future__ import annotations

import grp
import os
import socket
import time
import urllib.request
import uuid
from contextlib import contextmanager

import docker.errors
import pytest

from conveyor import Executor, JobSpec, JobState
from conveyor.backends.base import LABEL_EXECUTOR, LABEL_JOB, LABEL_MANAGED, LABEL_NAME

MiB = 1 << 20
SLEEP = ["sleep", "300"]


@pytest.fixture(scope="module")
def ex(docker_client, test_image, tmp_path_factory):
    """One Executor for the module, on its own state directory; everything it made is
    removed at the end."""
    executor = Executor(tmp_path_factory.mktemp("conveyor-home"))
    try:
        yield executor
    finally:
        try:
            executor.cleanup()
        finally:
            executor.close()
        left = docker_client.api.containers(all=True, filters={"label": f"{LABEL_EXECUTOR}={executor.executor_id}"})
        assert left == [], "cleanup left containers behind"


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@contextmanager
def running(ex, docker_client, spec: JobSpec):
    """Start a job; yield (job id, inspect data of its container); remove it afterwards."""
    job_id = ex.start(spec)
    try:
        job = ex.info(job_id)
        assert job.state is JobState.RUNNING, (job.state, job.substate, job.message)
        assert job.container_id
        yield job_id, docker_client.api.inspect_container(job.container_id)
    finally:
        ex.remove(job_id, force=True)


@contextmanager
def created(ex, docker_client, spec: JobSpec):
    """Create (never start) a container for the spec; yield its inspect data."""
    cid = ex.backend.create(f"t{_uid()}", spec)
    try:
        yield docker_client.api.inspect_container(cid)
    finally:
        ex.backend.remove(cid)
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(cid)


def _video_group() -> str:
    try:
        return str(grp.getgrnam("video").gr_gid)
    except KeyError:
        return "video"


# --------------------------------------------------------------------------- one job, many settings


@pytest.fixture(scope="module")
def sink(ex, docker_client, test_image, tmp_path_factory):
    """One running job carrying most settings at once, inspected once (keeps the module fast)."""
    host_dir = tmp_path_factory.mktemp("bind-src")
    (host_dir / "hello.txt").write_text("from-host\n")
    volume = f"conveyor-test-vol-{_uid()}"
    spec = JobSpec(
        image=test_image,
        command=SLEEP,
        name=f"sink-{_uid()}",
        env={"FOO": "bar", "EMPTY": ""},
        labels={"team": "ml", "purpose": "config-test"},
        workdir="/tmp",
        user="1000:1000",
        hostname="sink-host",
        mounts=[f"{host_dir}:/in:ro", f"{volume}:/cache", "/anon", "type=tmpfs,target=/scratch,tmpfs-size=16m"],
        ports=["127.0.0.1::80", "127.0.0.1::53/udp"],
        shm_size="128m",
        # memlock stays below the engine's own hard limit: raising it needs CAP_SYS_RESOURCE,
        # which this machine's dockerd lacks (memlock=-1 is checked on a created container below).
        ulimits=["nofile=1024:2048", "memlock=65536:131072"],
        restart="on-failure:3",
        resources={"cpus": 1.5, "memory": "64m", "memory_swap": "128m", "pids_limit": 64},
    )
    with running(ex, docker_client, spec) as (job_id, info):
        yield {"job_id": job_id, "info": info, "spec": spec, "host_dir": str(host_dir), "volume": volume}


def test_cpu_memory_pids_shm(sink):
    hc = sink["info"]["HostConfig"]
    assert hc["NanoCpus"] == 1_500_000_000
    assert hc["Memory"] == 64 * MiB
    assert hc["MemorySwap"] == 128 * MiB
    assert hc["PidsLimit"] == 64
    assert hc["ShmSize"] == 128 * MiB


def test_ulimits(sink):
    ulimits = sorted(sink["info"]["HostConfig"]["Ulimits"], key=lambda u: u["Name"])
    assert ulimits == [{"Name": "memlock", "Soft": 65536, "Hard": 131072}, {"Name": "nofile", "Soft": 1024, "Hard": 2048}]


def test_unlimited_ulimit(ex, docker_client, test_image):
    spec = JobSpec(image=test_image, command=SLEEP, ulimits={"memlock": -1, "nofile": {"soft": 10, "hard": 20}})
    with created(ex, docker_client, spec) as info:
        assert info["HostConfig"]["Ulimits"] == [
            {"Name": "memlock", "Soft": -1, "Hard": -1},
            {"Name": "nofile", "Soft": 10, "Hard": 20},
        ]


def test_restart_policy(sink):
    assert sink["info"]["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}


def test_port_bindings(sink):
    assert sink["info"]["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
    }
    assert set(sink["info"]["Config"]["ExposedPorts"]) == {"80/tcp", "53/udp"}
    published = sink["info"]["NetworkSettings"]["Ports"]
    assert published["80/tcp"][0]["HostIp"] == "127.0.0.1"
    assert int(published["80/tcp"][0]["HostPort"]) > 0  # the engine picked a free port


def test_mounts(sink, docker_client, ex):
    mounts = {m["Destination"]: m for m in sink["info"]["Mounts"]}
    assert set(mounts) == {"/in", "/cache", "/anon", "/scratch"}
    assert mounts["/in"]["Type"] == "bind" and mounts["/in"]["Source"] == sink["host_dir"]
    assert mounts["/in"]["RW"] is False
    assert mounts["/cache"]["Type"] == "volume" and mounts["/cache"]["Name"] == sink["volume"] and mounts["/cache"]["RW"] is True
    assert mounts["/anon"]["Type"] == "volume" and mounts["/anon"]["Name"]  # an anonymous volume
    assert mounts["/scratch"]["Type"] == "tmpfs"
    declared = {m["Target"]: m for m in sink["info"]["HostConfig"]["Mounts"]}
    assert declared["/in"]["ReadOnly"] is True
    assert declared["/scratch"]["TmpfsOptions"] == {"SizeBytes": 16 * MiB}
    # The named volume did not exist: Conveyor created it, labelled as its own.
    vol = docker_client.api.inspect_volume(sink["volume"])
    assert vol["Labels"][LABEL_MANAGED] == "true"
    assert vol["Labels"][LABEL_EXECUTOR] == ex.executor_id


def test_labels(sink, ex):
    labels = sink["info"]["Config"]["Labels"]
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_EXECUTOR] == ex.executor_id
    assert labels[LABEL_JOB] == sink["job_id"]
    assert labels[LABEL_NAME] == sink["spec"].name
    assert labels["team"] == "ml" and labels["purpose"] == "config-test"


def test_identity_and_environment(sink):
    cfg = sink["info"]["Config"]
    assert cfg["Hostname"] == "sink-host"
    assert cfg["User"] == "1000:1000"
    assert cfg["WorkingDir"] == "/tmp"
    assert "FOO=bar" in cfg["Env"] and "EMPTY=" in cfg["Env"]
    assert cfg["Cmd"] == SLEEP
    assert sink["info"]["Name"] == f"/conveyor-{sink['job_id']}"


def test_defaults_are_engine_defaults(sink):
    hc = sink["info"]["HostConfig"]
    assert hc["NetworkMode"] == "bridge"
    assert hc["Privileged"] is False
    assert hc["AutoRemove"] is False
    assert sink["info"]["Config"]["Tty"] is False and sink["info"]["Config"]["OpenStdin"] is False


# --------------------------------------------------------------------------- the job's own view


def test_job_sees_its_settings(ex, test_image, tmp_path):
    host_in = tmp_path / "in"
    host_in.mkdir()
    (host_in / "hello.txt").write_text("from-host\n")
    out_dir = tmp_path / "out" / "new"  # does not exist: Conveyor creates it for user 1000
    script = (
        "ulimit -n; ulimit -Hn; id -u; id -g; pwd; hostname; echo \"FOO=$FOO\"; cat /in/hello.txt; "
        "touch /in/x 2>/dev/null && echo in-writable || echo in-readonly; "
        "echo written > /out/f && echo out-writable; "
        "grep ' /scratch ' /proc/mounts | grep -o 'size=[0-9]*k'; "
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
        "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"
    )
    spec = JobSpec(
        image=test_image,
        command=["sh", "-c", script],
        user="1000:1000",
        workdir="/tmp/work",
        hostname="inside-host",
        env={"FOO": "bar"},
        ulimits=["nofile=1024:2048"],
        mounts=[f"{host_in}:/in:ro", f"{out_dir}:/out", "type=tmpfs,target=/scratch,tmpfs-size=16m"],
        resources={"memory": "64m", "pids_limit": 64},
    )
    job = ex.run(spec, timeout=30)
    try:
        assert job.state is JobState.DONE, (job.substate, job.message, job.stderr)
        assert job.stdout.split("\n")[:-1] == [
            "1024", "2048", "1000", "1000", "/tmp/work", "inside-host", "FOO=bar", "from-host",
            "in-readonly", "out-writable", "size=16384k", str(64 * MiB), "64",
        ], job.stderr
        st = os.stat(out_dir)
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        assert (out_dir / "f").read_text() == "written\n"
    finally:
        ex.remove(job.id)


def test_user_by_name(ex, test_image):
    job = ex.run(JobSpec(image=test_image, command=["id", "-un"], user="nobody"), timeout=30)
    try:
        assert job.state is JobState.DONE and job.stdout == "nobody\n"
    finally:
        ex.remove(job.id)


def test_published_port_is_reachable(ex, docker_client, test_image):
    script = "mkdir -p /tmp/www && echo hello-port > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www"
    with running(ex, docker_client, JobSpec(image=test_image, command=["sh", "-c", script], ports=["127.0.0.1::80"])) as (_, info):
        port = int(docker_client.api.inspect_container(info["Id"])["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                    assert r.read() == b"hello-port\n"
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def test_fixed_host_port(ex, docker_client, test_image):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with running(ex, docker_client, JobSpec(image=test_image, command=SLEEP, ports=[f"127.0.0.1:{free}:8080"])) as (_, info):
        assert info["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(free)}]}


# --------------------------------------------------------------------------- namespaces, networks


def test_network_none(ex, docker_client, test_image):
    with running(ex, docker_client, JobSpec(image=test_image, command=SLEEP, network="none")) as (_, info):
        assert info["HostConfig"]["NetworkMode"] == "none"
        assert info["HostConfig"]["PortBindings"] in ({}, None)


def test_host_namespaces(ex, docker_client, test_image):
    spec = JobSpec(image=test_image, command=SLEEP, network="host", ipc_mode="host", uts_mode="host", pid_mode="host")
    with running(ex, docker_client, spec) as (_, info):
        hc = info["HostConfig"]
        assert hc["NetworkMode"] == "host"
        assert hc["IpcMode"] == "host"
        assert hc["UTSMode"] == "host"
        assert hc["PidMode"] == "host"
        assert hc["Privileged"] is False


def test_privileged(ex, docker_client, test_image):
    # Created, not started: this machine's engine runs without the capabilities that a
    # privileged container needs at start ("unable to apply caps"); the config is what we test.
    with created(ex, docker_client, JobSpec(image=test_image, command=SLEEP, privileged=True)) as info:
        assert info["HostConfig"]["Privileged"] is True


def test_named_network_is_created_with_executor_label(ex, docker_client, test_image):
    net = f"conveyor-test-net-{_uid()}"
    assert not docker_client.api.networks(names=[net])
    with running(ex, docker_client, JobSpec(image=test_image, command=SLEEP, network=net)) as (_, info):
        assert info["HostConfig"]["NetworkMode"] == net
        assert net in info["NetworkSettings"]["Networks"]
        (found,) = [n for n in docker_client.api.networks(names=[net]) if n["Name"] == net]
        assert found["Labels"][LABEL_EXECUTOR] == ex.executor_id
        assert found["Labels"][LABEL_MANAGED] == "true"


# --------------------------------------------------------------------------- process settings


def test_entrypoint_tty_stdin(ex, docker_client, test_image):
    spec = JobSpec(image=test_image, entrypoint=["sh", "-c"], command=["exec sleep 300"], tty=True, stdin_open=True)
    with running(ex, docker_client, spec) as (_, info):
        cfg = info["Config"]
        assert cfg["Entrypoint"] == ["sh", "-c"]
        assert cfg["Cmd"] == ["exec sleep 300"]
        assert cfg["Tty"] is True
        assert cfg["OpenStdin"] is True


@pytest.fixture(scope="module")
def entrypoint_image(docker_client, test_image):
    """The test image with an ENTRYPOINT of its own (the test image has none, so clearing
    its entrypoint could not be told from doing nothing)."""
    repository, tag = "conveyor-test/entrypoint", f"{os.getpid()}-{_uid()}"
    base = docker_client.containers.create(test_image, ["true"])
    try:
        base.commit(repository=repository, tag=tag, changes='ENTRYPOINT ["echo", "image-entrypoint"]')
    finally:
        base.remove()
    yield f"{repository}:{tag}"
    docker_client.images.remove(f"{repository}:{tag}", force=True)


def test_empty_entrypoint_clears_image_entrypoint(ex, docker_client, entrypoint_image):
    """`entrypoint: []` runs the command itself, not the image's entrypoint with the
    command as its arguments."""
    with created(ex, docker_client, JobSpec(image=entrypoint_image, command=SLEEP)) as info:
        assert info["Config"]["Entrypoint"] == ["echo", "image-entrypoint"]  # inherited unless cleared
    with created(ex, docker_client, JobSpec(image=entrypoint_image, entrypoint=[], command=SLEEP)) as info:
        assert info["Config"]["Entrypoint"] in (None, [""])  # the engine shows "cleared" either way
        assert info["Config"]["Cmd"] == SLEEP
    job = ex.run(JobSpec(image=entrypoint_image, entrypoint=[], command=["echo", "the-command"], network="none"), timeout=30)
    try:
        assert (job.state, job.stdout) == (JobState.DONE, "the-command\n"), job.message
    finally:
        ex.remove(job.id)


def test_auto_remove_is_never_the_engines(ex, docker_client, test_image):
    with running(ex, docker_client, JobSpec(image=test_image, command=SLEEP, auto_remove=True)) as (_, info):
        assert info["HostConfig"]["AutoRemove"] is False


def test_unlimited_swap(ex, docker_client, test_image):
    spec = JobSpec(image=test_image, command=SLEEP, resources={"memory": "32m", "memory_swap": -1})
    with created(ex, docker_client, spec) as info:
        assert info["HostConfig"]["Memory"] == 32 * MiB
        assert info["HostConfig"]["MemorySwap"] == -1


# --------------------------------------------------------------------------- GPUs (created, never started: no GPU here)


@pytest.mark.parametrize(
    "gpus, count, ids",
    [("all", -1, []), (2, 2, []), ("device=0,1", 0, ["0", "1"])],
)
def test_nvidia_device_requests(ex, docker_client, test_image, gpus, count, ids):
    with created(ex, docker_client, JobSpec(image=test_image, command=SLEEP, resources={"gpus": gpus})) as info:
        (req,) = info["HostConfig"]["DeviceRequests"]
        assert req["Driver"] == "nvidia"
        assert req["Count"] == count
        assert (req["DeviceIDs"] or []) == ids
        assert req["Capabilities"] == [["gpu"]]
        assert not info["HostConfig"]["Devices"]


def _devices(info) -> list[tuple[str, str, str]]:
    return [(d["PathOnHost"], d["PathInContainer"], d["CgroupPermissions"]) for d in info["HostConfig"]["Devices"] or []]


def test_amd_all_devices_and_group(ex, docker_client, test_image):
    with created(ex, docker_client, JobSpec(image=test_image, command=SLEEP, resources={"gpus": {"vendor": "amd"}})) as info:
        assert _devices(info) == [("/dev/kfd", "/dev/kfd", "rwm"), ("/dev/dri", "/dev/dri", "rwm")]
        assert _video_group() in info["HostConfig"]["GroupAdd"]
        assert not info["HostConfig"]["DeviceRequests"]


def test_amd_device_id(ex, docker_client, test_image):
    spec = JobSpec(image=test_image, command=SLEEP, resources={"gpus": {"vendor": "amd", "device_ids": ["1"]}})
    with created(ex, docker_client, spec) as info:
        assert _devices(info) == [("/dev/kfd", "/dev/kfd", "rwm"), ("/dev/dri/renderD129", "/dev/dri/renderD129", "rwm")]


def test_intel_all_devices(ex, docker_client, test_image):
    with created(ex, docker_client, JobSpec(image=test_image, command=SLEEP, resources={"gpus": {"vendor": "intel"}})) as info:
        assert _devices(info) == [("/dev/dri", "/dev/dri", "rwm")]
        assert not info["HostConfig"]["GroupAdd"]
        assert not info["HostConfig"]["DeviceRequests"]


def test_backend_options_reach_the_host_config(ex, docker_client, test_image):
    spec = JobSpec(image=test_image, command=["sleep", "30"], network="none",
                   backend={"name": "docker", "options": {"security_opt": ["no-new-privileges"], "cgroup_parent": "/conveyor-test"}})
    with running(ex, docker_client, spec) as (job_id, info):
        hc = info["HostConfig"]
        assert (hc["SecurityOpt"], hc["CgroupParent"], hc["Runtime"]) == (["no-new-privileges"], "/conveyor-test", "runc")
        status = open(f"/proc/{info['State']['Pid']}/status").read()
        assert "NoNewPrivs:\t1" in status  # in force, not only recorded
