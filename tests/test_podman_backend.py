"""The podman backend (the Docker driver on podman's Docker-compatible API) against the real
service from scripts/ensure-podman: what a job needs from an engine works there the same way,
and what differs from Docker is handled in backends/docker/podman.py.

Each test builds a PodmanBackend with a fresh executor id; everything labelled with that id is
removed at the end. Under CI=true a missing podman service fails these tests.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import threading
import time
import uuid

import docker
import pytest

from conveyor import JobSpec
from conveyor.backends.base import LABEL_EXECUTOR, LABEL_JOB, Capabilities, EngineUnavailable, ExecResult, collect
from conveyor.backends.docker.podman import PodmanBackend
from conveyor.errors import InvalidSpec
from conveyor.spec import ExecSpec


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def podman_api(podman_url):
    return docker.APIClient(base_url=podman_url, version="auto", timeout=60)


@pytest.fixture
def backend(podman_url, podman_api):
    """A podman driver with its own executor id; its containers go afterwards."""
    driver = PodmanBackend(f"test-podman-{_uid()}", base_url=podman_url)
    try:
        yield driver
    finally:
        driver.close_events()
        label = {"label": f"{LABEL_EXECUTOR}={driver.executor_id}"}
        for c in podman_api.containers(all=True, filters=label):
            podman_api.remove_container(c["Id"], force=True, v=True)
        driver.cleanup()
        assert podman_api.containers(all=True, filters=label) == []


IMAGE = "conveyor/busybox:latest"  # the short name, as on Docker (podman keeps it as localhost/...)


def _spec(command: list[str], **fields) -> JobSpec:
    return JobSpec(image=IMAGE, command=command, **fields)


def _run(backend: PodmanBackend, command: list[str], **fields) -> tuple[str, str]:
    job_id = f"j{_uid()}"
    handle = backend.create(job_id, _spec(command, **fields))
    backend.start(handle)
    return job_id, handle


def _wait_finished(backend: PodmanBackend, handle: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        status = backend.inspect(handle)
        if status is not None and status.finished:
            return status
        assert time.monotonic() < deadline, f"container did not finish: {status}"
        time.sleep(0.05)


def _wait_status(backend: PodmanBackend, handle: str, want: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while (status := backend.inspect(handle)).status != want:
        assert time.monotonic() < deadline, f"container is {status.status}, not {want}"
        time.sleep(0.05)
    return status


class _Collector:
    """Events of a backend's subscription, read in a thread until closed."""

    def __init__(self, backend: PodmanBackend, since: float | None = None):
        self.backend, self.events = backend, []
        stream = backend.events(since)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        try:
            for ev in stream:
                self.events.append(ev)
        except EngineUnavailable:
            pass  # closed under the reader

    def wait_for(self, job_id: str, action: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.job_id == job_id and e.action == action for e in self.events):
            assert time.monotonic() < deadline, f"no {action} event for {job_id}: {self.actions(job_id)}"
            time.sleep(0.05)

    def actions(self, job_id: str) -> list[str]:
        return [e.action for e in self.events if e.job_id == job_id]

    def close(self) -> None:
        self.backend.close_events()
        self._thread.join(5)


# --------------------------------------------------------------------------- the engine


def _exec(backend, handle: str, command: list[str], **options) -> ExecResult:
    """A command run to its end through the driver's one exec call."""
    return collect(backend.open_exec(handle, ExecSpec(command=command, **options)))


def test_version_capabilities_and_unreachable(backend, podman_api):
    """`conveyor machine` names podman and its version; what podman cannot do here (publish
    ports to the host from its own network namespace, GPUs) is declared, not discovered by a
    failing job; a missing service says how to start it."""
    assert backend.version() == {"name": "podman", "version": podman_api.version()["Version"], "api_version": "1.41"}
    assert backend.capabilities == Capabilities(
        pause=True, exec=True, gpus=frozenset(), ports=False, stdin=True, recover=True, files=True,
        image_load=True, images=True, stats=True, usage=True, top=True, tty=True, signals=True, oom=True,
    )
    with pytest.raises(EngineUnavailable, match="scripts/ensure-podman"):
        PodmanBackend("x", base_url="unix:///nonexistent/podman.sock")


# --------------------------------------------------------------------------- lifecycle and logs


def test_short_image_name_exit_code_and_logs_apart_byte_exact(backend, tmp_path):
    """A job names its image as on Docker (podman stores it as localhost/...); its exit code
    comes back, and stdout and stderr are saved apart with the job's exact bytes (k8s-file
    log driver: podman refuses docker's `local`), also bytes that are not UTF-8 and a last
    line without a newline."""
    script = r"printf 'out\n\000\377\376 raw\r\nlast'; printf 'err 1\nerr 2\n' >&2; exit 3"
    _, handle = _run(backend, ["sh", "-c", script])
    status = _wait_finished(backend, handle)
    assert (status.status, status.exit_code, status.oom_killed) == ("exited", 3, False)
    assert status.started_at and status.finished_at >= status.started_at
    saved = backend.save_logs(handle, {"stdout": tmp_path / "stdout", "stderr": tmp_path / "stderr"})
    want_out, want_err = b"out\n\x00\xff\xfe raw\r\nlast", b"err 1\nerr 2\n"
    assert (tmp_path / "stdout").read_bytes() == want_out
    assert (tmp_path / "stderr").read_bytes() == want_err
    assert saved == {"stdout": len(want_out), "stderr": len(want_err)}
    assert (tmp_path / "stdout.times").exists()
    followed = list(backend.follow_logs(handle, ("stdout", "stderr"), None, False))
    assert b"".join(c for s, c in followed if s == "stdout") == want_out
    assert b"".join(c for s, c in followed if s == "stderr") == want_err


def test_a_large_binary_output_is_kept_exactly(backend, tmp_path):
    """A job writing binary data (here 3 MB from /dev/urandom through gzip) gets it back byte
    for byte from the engine's log."""
    _, handle = _run(backend, ["sh", "-c", "head -c 3000000 /dev/urandom | tee /tmp/data | md5sum >&2; cat /tmp/data"])
    assert _wait_finished(backend, handle).exit_code == 0
    backend.save_logs(handle, {"stdout": tmp_path / "stdout", "stderr": tmp_path / "stderr"})
    import hashlib

    data = (tmp_path / "stdout").read_bytes()
    assert len(data) == 3000000
    assert hashlib.md5(data).hexdigest() == (tmp_path / "stderr").read_text().split()[0]


def test_pause_unpause_and_their_events(backend):
    """Suspend/resume works on podman under cgroup v1 (the freezer), and the event stream,
    filtered by the executor's label, tells the watcher: start, pause, unpause, die, and
    destroy (podman says remove)."""
    events = _Collector(backend)
    try:
        job_id, handle = _run(backend, ["sleep", "60"])
        backend.pause(handle)
        assert backend.inspect(handle).status == "paused"
        events.wait_for(job_id, "pause")
        backend.unpause(handle)
        assert backend.inspect(handle).status == "running"
        events.wait_for(job_id, "unpause")
        backend.signal(handle, "KILL")
        events.wait_for(job_id, "die")
        # die comes after the exit is recorded: the watcher's inspect sees it final
        assert _wait_finished(backend, handle, timeout=1).exit_code == 137
        backend.remove(handle)
        events.wait_for(job_id, "destroy")
        actions = events.actions(job_id)
        assert actions.index("start") < actions.index("pause") < actions.index("unpause") < actions.index("die")
        assert all(e.job_id == job_id for e in events.events), "the label filter let others' events through"
    finally:
        events.close()


def test_events_since_replay_what_happened_before_the_subscription(backend):
    """After an agent restart the watcher subscribes with `since`: what happened meanwhile
    comes back first."""
    before = time.time()
    job_id, handle = _run(backend, ["true"])
    _wait_finished(backend, handle)
    events = _Collector(backend, since=before - 1)
    try:
        events.wait_for(job_id, "die")
        assert events.actions(job_id)[:2] == ["create", "init"] or "start" in events.actions(job_id)
    finally:
        events.close()


def test_oom_kill_and_plain_sigkill_told_apart(backend):
    """A job over its memory limit is reported OOM-killed (needs the conmon wrapper of
    scripts/ensure-podman), one killed with SIGKILL is not: both exit 137."""
    _, oom = _run(backend, ["sh", "-c", "x=a; while true; do x=$x$x; done"],
                  resources={"memory": "32m", "memory_swap": "32m"})
    _, killed = _run(backend, ["sleep", "60"], resources={"memory": "32m"})
    _wait_status(backend, killed, "running")
    backend.signal(killed, "KILL")
    oom_status, killed_status = _wait_finished(backend, oom), _wait_finished(backend, killed)
    assert (oom_status.exit_code, oom_status.oom_killed) == (137, True)
    assert (killed_status.exit_code, killed_status.oom_killed) == (137, False)


def test_stop_with_grace_runs_the_term_handler_then_kills(backend, tmp_path):
    """Cancel with grace: a job that handles TERM ends with its own code at once; one that
    ignores it is killed when the grace runs out."""
    _, polite = _run(backend, ["sh", "-c", "trap 'echo got term; exit 7' TERM; while true; do sleep 0.1; done"])
    _, stubborn = _run(backend, ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
    _wait_status(backend, polite, "running")
    _wait_status(backend, stubborn, "running")
    time.sleep(0.3)  # the traps are set
    began = time.monotonic()
    backend.stop(polite, grace=10)
    assert time.monotonic() - began < 5
    assert backend.inspect(polite).exit_code == 7
    backend.save_logs(polite, {"stdout": tmp_path / "stdout"})
    assert (tmp_path / "stdout").read_bytes() == b"got term\n"
    began = time.monotonic()
    backend.stop(stubborn, grace=1)
    assert 0.9 <= time.monotonic() - began < 8
    assert backend.inspect(stubborn).exit_code == 137


def test_a_command_that_cannot_start_is_an_engine_error(backend):
    """A job whose command does not exist fails to start with the engine's words."""
    handle = backend.create(f"j{_uid()}", _spec(["/no/such/command"]))
    with pytest.raises(Exception, match="no such file|not found"):
        backend.start(handle)


# --------------------------------------------------------------------------- files, exec, stats


def test_read_archive_of_outputs_and_of_a_missing_path(backend):
    """Outputs are captured from the stopped container as a tar (GET /containers/{id}/archive);
    a path the job never made is None."""
    _, handle = _run(backend, ["sh", "-c", "mkdir -p /out/sub && echo one > /out/a && printf '\\377' > /out/sub/b"])
    _wait_finished(backend, handle)
    assert backend.read_archive(handle, f"/no/such/{_uid()}") is None
    stream = backend.read_archive(handle, "/out")
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    finally:
        stream.close()
    assert files == {"out/a": b"one\n", "out/sub/b": b"\xff"}


def test_exec_stats_and_stdin(backend, tmp_path):
    """exec keeps its streams and exit code apart; stats gives a sample; a job's stdin gets
    every byte and is closed at the end."""
    _, handle = _run(backend, ["sleep", "60"])
    result = _exec(backend, handle, ["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert (result.exit_code, result.stdout, result.stderr) == (4, b"out\n", b"err\n")
    result = _exec(backend, handle, ["sh", "-c", 'echo "$FOO $(id -u) $(pwd)"'], user="1000", workdir="/tmp", env={"FOO": "bar"})
    assert (result.exit_code, result.stdout) == (0, b"bar 1000 /tmp\n")
    sample = backend.stats(handle)
    assert sample["memory_stats"]["usage"] > 0 and "cpu_stats" in sample
    backend.stop(handle, grace=0)

    data = b"".join(b"line %d of stdin\n" % i for i in range(5000))
    handle = backend.create(f"j{_uid()}", _spec(["cat"], stdin_open=True))
    backend.attach_stdin(handle, io.BytesIO(data))
    backend.start(handle)
    assert _wait_finished(backend, handle).exit_code == 0
    backend.save_logs(handle, {"stdout": tmp_path / "stdout"})
    assert (tmp_path / "stdout").read_bytes() == data


# --------------------------------------------------------------------------- recovery


def test_a_new_driver_instance_lists_the_executors_containers_by_label(backend, podman_url):
    """After an agent restart, a new driver finds the executor's containers (running and
    exited) by label, with their job ids and states, and by job id."""
    running_id, running = _run(backend, ["sleep", "60"])
    done_id, done = _run(backend, ["sh", "-c", "exit 5"])
    _wait_finished(backend, done)
    _wait_status(backend, running, "running")
    again = PodmanBackend(backend.executor_id, base_url=podman_url)
    found = {c.labels[LABEL_JOB]: c for c in again.list()}
    assert set(found) == {running_id, done_id}
    assert (found[running_id].status, found[done_id].status, found[done_id].exit_code) == ("running", "exited", 5)
    assert again.find(done_id).id == done
    assert PodmanBackend(f"test-podman-{_uid()}", base_url=podman_url).list() == []


# --------------------------------------------------------------------------- images and options


def test_load_image_and_its_short_name(backend, docker_client, test_image):
    """A `docker save` tarball loads into podman; the image keeps its id, and its tags are
    given as jobs name it (without podman's localhost/)."""
    docker_id = docker_client.images.get(test_image).id
    archive = docker_client.api.get_image(test_image)
    assert backend.load_image(archive) == [docker_id]
    assert test_image in backend.image_tags(docker_id)
    assert backend.image_inspect(test_image)["Id"] == docker_id


def test_runtime_option_is_refused_not_ignored(backend, podman_api):
    """podman's compat API ignores HostConfig.Runtime (it would run a gVisor job under runc,
    unsandboxed): the job is refused with a clear error and no container is left."""
    spec = JobSpec(image=IMAGE, command=["true"], backend={"name": "podman", "options": {"runtime": "runsc"}})
    with pytest.raises(InvalidSpec, match="ignores the runtime"):
        backend.create(f"j{_uid()}", spec)
    assert podman_api.containers(all=True, filters={"label": f"{LABEL_EXECUTOR}={backend.executor_id}"}) == []


def test_security_opt_and_cgroup_parent_pass_through(backend, podman_api):
    """The container backends' other options reach podman's host config."""
    spec = JobSpec(image=IMAGE, command=["sh", "-c", "grep NoNewPrivs /proc/self/status"],
                   backend={"name": "podman", "options": {"security_opt": ["no-new-privileges"]}})
    handle = backend.create(f"j{_uid()}", spec)
    backend.start(handle)
    assert _wait_finished(backend, handle).exit_code == 0
    assert podman_api.logs(handle).split() == [b"NoNewPrivs:", b"1"]


def test_conflicts_are_engine_conflicts_as_on_docker(backend):
    """podman answers 500 where dockerd answers 409 (a name in use, a state that does not
    allow the call): the executor still sees EngineConflict, and adopts its own container."""
    from conveyor.backends.base import EngineConflict

    job_id = f"j{_uid()}"
    spec = _spec(["sleep", "60"])
    handle = backend.create(job_id, spec)
    with pytest.raises(EngineConflict):
        backend.create(job_id, spec)
    with pytest.raises(EngineConflict):
        _exec(backend, handle, ["true"])
    backend.start(handle)
    backend.pause(handle)
    with pytest.raises(EngineConflict):
        backend.pause(handle)
    backend.unpause(handle)
    backend.signal(handle, "KILL")
    _wait_finished(backend, handle)
    with pytest.raises(EngineConflict):
        backend.signal(handle, "KILL")


def test_a_tty_job_is_attached_saved_and_followed(backend, tmp_path):
    """A tty job's output comes through attach, is saved raw, and is followed as bytes
    (podman calls a tty log text, the SDK decodes it)."""
    handle = backend.create(f"j{_uid()}", _spec(["sh", "-c", "echo one; tty"], tty=True))
    out = backend.attach_output(handle)
    backend.start(handle)
    attached = b""
    while chunk := out.read(4096):
        attached += chunk
    out.close()
    assert attached == b"one\r\n/dev/pts/0\r\n"
    _wait_finished(backend, handle)
    backend.save_logs(handle, {"stdout": tmp_path / "stdout"})
    assert (tmp_path / "stdout").read_bytes() == attached
    followed = list(backend.follow_logs(handle, ("stdout",), None, False))
    assert all(isinstance(c, bytes) for _, c in followed)
    assert b"".join(c for _, c in followed) == attached
