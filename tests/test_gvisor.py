"""gVisor as an isolation level of the Docker backend: a job with ``backend: {name: docker,
options: {runtime: runsc}}`` runs in gVisor's sandbox (runtime registered by
scripts/ensure-docker), and a runtime the engine does not know is a clear error that leaves
nothing behind. Under CI=true a missing runsc runtime fails these tests.
"""

from __future__ import annotations

import time
import uuid

import pytest

from conveyor import JobSpec
from conveyor.backends.base import LABEL_EXECUTOR
from conveyor.backends.docker import DockerBackend
from conveyor.errors import InvalidSpec


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def backend(docker_client, test_image):
    driver = DockerBackend(f"test-gvisor-{_uid()}")
    try:
        yield driver
    finally:
        label = {"label": f"{LABEL_EXECUTOR}={driver.executor_id}"}
        for c in docker_client.api.containers(all=True, filters=label):
            docker_client.api.remove_container(c["Id"], force=True, v=True)
        assert docker_client.api.containers(all=True, filters=label) == []


def _spec(image: str, command: list[str], runtime: str | None, **fields) -> JobSpec:
    options = {"runtime": runtime} if runtime else {}
    return JobSpec(image=image, command=command, backend={"name": "docker", "options": options}, **fields)


def _run(backend: DockerBackend, spec: JobSpec, tmp_path, timeout: float = 30):
    handle = backend.create(f"j{_uid()}", spec)
    backend.start(handle)
    deadline = time.monotonic() + timeout
    while not (status := backend.inspect(handle)).finished:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    backend.save_logs(handle, {"stdout": tmp_path / "stdout", "stderr": tmp_path / "stderr"})
    return handle, status, (tmp_path / "stdout").read_bytes()


PROBE = ["sh", "-c", "dmesg 2>&1 | head -n 1; uname -r"]


def test_a_job_with_runtime_runsc_runs_in_gvisor(backend, docker_client, test_image, runsc_runtime, tmp_path):
    """The runtime option reaches the engine (HostConfig.Runtime) and the job really is in
    gVisor's sandbox: its kernel log is gVisor's and its kernel is gVisor's, not the host's."""
    handle, status, out = _run(backend, _spec(test_image, PROBE, runsc_runtime), tmp_path)
    assert status.exit_code == 0
    assert docker_client.api.inspect_container(handle)["HostConfig"]["Runtime"] == "runsc"
    banner, kernel = out.decode().splitlines()
    assert "Starting gVisor" in banner
    host_kernel = docker_client.info()["KernelVersion"]
    assert kernel != host_kernel

    (tmp_path / "plain").mkdir()
    handle, status, out = _run(backend, _spec(test_image, PROBE, None), tmp_path / "plain")
    assert docker_client.api.inspect_container(handle)["HostConfig"]["Runtime"] == "runc"
    assert out.decode().splitlines()[-1] == host_kernel


def test_under_gvisor_exit_codes_memory_limit_and_no_network(backend, test_image, runsc_runtime, tmp_path):
    """What jobs rely on holds in the sandbox: the exit code, stderr apart, the memory limit
    (an OOM kill is reported as such), and `network: none` leaves only loopback."""
    spec = _spec(test_image, ["sh", "-c", "echo out; echo err >&2; ip -o link | cut -d: -f2; exit 3"],
                 runsc_runtime, network="none")
    _, status, out = _run(backend, spec, tmp_path)
    assert status.exit_code == 3
    assert out.split() == [b"out", b"lo"]
    assert (tmp_path / "stderr").read_bytes() == b"err\n"

    (tmp_path / "oom").mkdir()
    spec = _spec(test_image, ["sh", "-c", "x=a; while true; do x=$x$x; done"], runsc_runtime,
                 resources={"memory": "32m", "memory_swap": "32m"})
    _, status, _ = _run(backend, spec, tmp_path / "oom")
    assert (status.exit_code, status.oom_killed) == (137, True)


def test_pause_and_stop_under_gvisor(backend, test_image, runsc_runtime):
    """Suspend/resume and stop work in the sandbox; TERM reaches the job's PID 1 (sleep,
    which would ignore it as PID 1 under runc, ends with 143)."""
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["sleep", "60"], runsc_runtime))
    backend.start(handle)
    backend.pause(handle)
    assert backend.inspect(handle).status == "paused"
    backend.unpause(handle)
    assert backend.inspect(handle).status == "running"
    backend.stop(handle, grace=10)
    assert backend.inspect(handle).exit_code == 143


def test_an_unknown_runtime_is_a_clear_error_and_leaves_no_container(backend, docker_client, test_image):
    """A runtime the engine does not know is refused in words that say where the runtimes are
    listed, on the field the user wrote, and no container is left."""
    runtime = f"nosuch{_uid()}"
    with pytest.raises(InvalidSpec) as caught:
        backend.create(f"j{_uid()}", _spec(test_image, ["true"], runtime))
    (field, value, hint), = caught.value.problems
    assert (field, value) == ("backend.options.runtime", runtime)
    assert "conveyor machine" in hint and runtime in hint
    label = {"label": f"{LABEL_EXECUTOR}={backend.executor_id}"}
    assert docker_client.api.containers(all=True, filters=label) == []
