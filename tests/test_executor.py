"""End-to-end behaviour of ``conveyor.Executor`` against the real Docker engine.

Every test runs real containers from the BusyBox test image and asserts on what the
engine and the job actually did: exit codes, saved logs, files on the host, the
container's state in ``docker inspect``. Several tests pin down the failure modes listed
in PITFALLS.md (lost first lines, logs missing on failure paths, 137 taken for OOM,
timeouts that leave the container running, root-owned bind-mount sources, ...).
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid

import docker.errors
import pytest

from conveyor import (
    Executor,
    ImageNotFound,
    InvalidSpec,
    InvalidState,
    JobNotFound,
    JobSpec,
    JobState,
    Mount,
    Substate,
    WaitTimeout,
)
from conveyor.backends.base import LABEL_EXECUTOR
from helpers import eventually, sh

# Generous upper bound for any single short job: a hang fails the test instead of the run.
WAIT = 30


# ----------------------------------------------------------------------------- helpers


def read_logs(ex: Executor, job_id: str, stream: str = "stdout", **kw) -> str:
    return b"".join(chunk for _, chunk in ex.logs(job_id, stream, **kw)).decode()


def wait_for_output(ex: Executor, job_id: str, text: str, timeout: float = 15) -> str:
    """Poll a running job's stdout until ``text`` shows up (e.g. a 'ready' marker)."""
    deadline = time.monotonic() + timeout
    while True:
        out = read_logs(ex, job_id)
        if text in out:
            return out
        job = ex.info(job_id)
        assert not job.state.is_final, f"job ended ({job.state}/{job.substate}) before printing {text!r}: {out!r}"
        assert time.monotonic() < deadline, f"{text!r} not in stdout after {timeout}s: {out!r}"
        time.sleep(0.05)


def own_containers(docker_client, ex: Executor) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL_EXECUTOR}={ex.executor_id}"})


def inspect_state(docker_client, container_id: str) -> dict:
    return docker_client.api.inspect_container(container_id)["State"]


# ----------------------------------------------------------------------------- exit codes and output


def test_exit_zero_is_done(ex, test_image):
    job = ex.run(JobSpec(image=test_image, command=["echo", "hello"]), timeout=WAIT)
    assert (job.state, job.substate, job.exit_code) == (JobState.DONE, Substate.EXITED, 0)
    assert job.stdout == "hello\n"
    assert job.stderr == ""


def test_exit_code_and_streams_kept_apart(ex, test_image):
    job = ex.run(
        sh(test_image, "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 3"),
        timeout=WAIT,
    )
    assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.EXITED, 3)
    assert job.stdout == "out1\nout2\n"
    assert job.stderr == "err1\nerr2\n"
    # The same, read back through logs() after the end.
    assert read_logs(ex, job.id, "stdout") == "out1\nout2\n"
    assert read_logs(ex, job.id, "stderr") == "err1\nerr2\n"
    assert read_logs(ex, job.id, "stdout", tail=1) == "out2\n"
    assert read_logs(ex, job.id, "stderr", tail=1) == "err2\n"
    assert read_logs(ex, job.id, "stdout", tail=5) == "out1\nout2\n"
    pairs = list(ex.logs(job.id))  # "all": every chunk tagged with its own stream
    assert b"".join(c for s, c in pairs if s == "stdout") == b"out1\nout2\n"
    assert b"".join(c for s, c in pairs if s == "stderr") == b"err1\nerr2\n"


def test_one_line_job_never_loses_its_line(ex, test_image):
    # PITFALL: attaching after start loses the first lines of a job that exits at once.
    ids = [ex.start(JobSpec(image=test_image, command=["echo", f"line-{i}"])) for i in range(10)]
    for i, job_id in enumerate(ids):
        job = ex.wait(job_id, timeout=WAIT)
        assert job.state is JobState.DONE, (job.state, job.message)
        assert job.stdout == f"line-{i}\n"
        # The engine may stamp StartedAt after FinishedAt for a job this quick.
        assert job.created_at <= job.started_at <= job.finished_at, (job.started_at, job.finished_at)


LOG_PATHS = {
    "failure": dict(script="echo before-failure; echo err-failure >&2; exit 2", substate=Substate.EXITED),
    "oom": dict(
        script="echo before-oom; exec dd if=/dev/zero of=/dev/null bs=100M count=1",
        substate=Substate.OOM_KILLED,
        resources={"memory": "32m", "memory_swap": "32m"},
    ),
    "cancel": dict(script="echo before-cancel; echo err-cancel >&2; sleep 30", substate=Substate.CANCELLED),
    "timeout": dict(
        script="echo before-timeout; echo err-timeout >&2; sleep 30",
        substate=Substate.TIMEOUT,
        timeout=1,
        stop_grace=0.5,
    ),
}


@pytest.mark.parametrize("path", list(LOG_PATHS))
def test_logs_saved_on_every_failure_path(ex, test_image, path):
    # PITFALL: stdout/stderr empty exactly when the job failed.
    case = dict(LOG_PATHS[path])
    script, substate = case.pop("script"), case.pop("substate")
    job_id = ex.start(sh(test_image, script, **case))
    if path == "cancel":
        wait_for_output(ex, job_id, "before-cancel")
        job = ex.cancel(job_id, grace=0)
    else:
        job = ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.substate) == (JobState.FAILED, substate), job.message
    assert job.stdout == f"before-{path}\n"
    if path != "oom":
        assert job.stderr == f"err-{path}\n"
    assert read_logs(ex, job_id, "stdout") == f"before-{path}\n"


# ----------------------------------------------------------------------------- process settings


def test_env_workdir_user_hostname(ex, test_image):
    job = ex.run(
        sh(
            test_image,
            'echo "$GREETING"; echo "$EMPTY_VAR|"; pwd; id -u; id -g; hostname',
            env={"GREETING": "hello world", "EMPTY_VAR": ""},
            workdir="/tmp/work-dir",
            user="1000",
            hostname="job-host",
        ),
        timeout=WAIT,
    )
    assert job.state is JobState.DONE, (job.message, job.stderr)
    assert job.stdout.splitlines() == ["hello world", "|", "/tmp/work-dir", "1000", "1000", "job-host"]


def test_user_by_name(ex, test_image):
    job = ex.run(sh(test_image, "id -u; id -un", user="nobody"), timeout=WAIT)
    assert job.stdout.splitlines() == ["65534", "nobody"]


# ----------------------------------------------------------------------------- mounts


def test_bind_mounts_read_only_and_read_write(ex, test_image, tmp_path):
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "file.txt").write_text("original\n")
    job = ex.run(
        sh(
            test_image,
            "echo changed > /ro/file.txt && echo ro-write-ok || echo ro-write-denied; "
            "touch /ro/new && echo ro-create-ok || echo ro-create-denied; "
            "cat /ro/file.txt; "
            "echo from-job > /rw/out.txt && echo rw-write-ok",
            mounts=[
                Mount(type="bind", source=str(ro), target="/ro", read_only=True),
                f"{rw}:/rw",
            ],
        ),
        timeout=WAIT,
    )
    assert job.state is JobState.DONE, (job.message, job.stderr)
    assert job.stdout.splitlines() == ["ro-write-denied", "ro-create-denied", "original", "rw-write-ok"]
    assert "Read-only file system" in job.stderr
    # the host side: read-only untouched, read-write carries the job's file
    assert (ro / "file.txt").read_text() == "original\n"
    assert sorted(os.listdir(ro)) == ["file.txt"]
    assert (rw / "out.txt").read_text() == "from-job\n"


def test_missing_bind_source_created_owned_by_job_user(ex, test_image, tmp_path):
    # PITFALL: directories the engine creates for bind mounts are root-owned and unwritable
    # for --user jobs.
    source = tmp_path / "not-there" / "nested"
    assert not source.exists()
    job = ex.run(
        sh(test_image, "echo data > /data/out.txt && stat -c '%u:%g' /data /data/out.txt", user="1000:1000", mounts=[f"{source}:/data"]),
        timeout=WAIT,
    )
    assert job.state is JobState.DONE, (job.message, job.stderr)
    assert job.stdout.splitlines() == ["1000:1000", "1000:1000"]
    st = os.stat(source)
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert (source / "out.txt").read_text() == "data\n"


# ----------------------------------------------------------------------------- networks


def _interfaces(proc_net_dev: str) -> list[str]:
    return sorted(line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:] if ":" in line)


def test_network_none_has_only_loopback(ex, test_image):
    bridge = ex.run(
        sh(
            test_image,
            "cat /proc/net/dev; echo ===; ip route | awk '/default/ {print $3}'",
        ),
        timeout=WAIT,
    )
    assert bridge.state is JobState.DONE, bridge.stderr
    dev, _, gateway = bridge.stdout.partition("===\n")
    gateway = gateway.strip()
    assert "eth0" in _interfaces(dev)
    assert gateway.count(".") == 3, bridge.stdout

    probe = f"ping -c 1 -W 1 {gateway} >/dev/null 2>&1 && echo reached || echo unreachable"
    reach = ex.run(sh(test_image, probe), timeout=WAIT)
    assert reach.stdout == "reached\n"  # the probe works where there is a network

    none = ex.run(sh(test_image, f"cat /proc/net/dev; echo ===; {probe}", network="none"), timeout=WAIT)
    assert none.state is JobState.DONE, none.stderr
    dev, _, result = none.stdout.partition("===\n")
    assert _interfaces(dev) == ["lo"]
    assert result == "unreachable\n"


# ----------------------------------------------------------------------------- OOM and kills


def test_oom_kill_detected_from_engine_flag(ex, test_image, docker_client):
    job = ex.run(
        JobSpec(
            image=test_image,
            command=["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"],
            resources={"memory": "32m", "memory_swap": "32m"},
        ),
        timeout=WAIT,
    )
    assert (job.state, job.substate) == (JobState.FAILED, Substate.OOM_KILLED), job.message
    assert job.exit_code == 137
    assert inspect_state(docker_client, job.container_id)["OOMKilled"] is True


def test_sigkill_without_oom_is_not_oom(ex, test_image, docker_client):
    # PITFALL: exit code 137 alone is any SIGKILL, not out-of-memory.
    limits = {"memory": "32m", "memory_swap": "32m"}
    # The shell as PID 1 cannot SIGKILL itself (a namespace's init ignores it), so a child
    # shell kills itself and the main process passes the 137 on.
    inner = ex.run(sh(test_image, 'sh -c "kill -9 \\$\\$"; exit $?', resources=limits), timeout=WAIT)
    assert (inner.state, inner.substate, inner.exit_code) == (JobState.FAILED, Substate.EXITED, 137), inner.message
    assert inspect_state(docker_client, inner.container_id)["OOMKilled"] is False

    # A real SIGKILL of the main process, from outside Conveyor.
    job_id = ex.start(sh(test_image, "echo up; sleep 30", resources=limits))
    wait_for_output(ex, job_id, "up")
    docker_client.api.kill(ex.info(job_id).container_id, signal="SIGKILL")
    job = ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.EXITED, 137), job.message
    assert inspect_state(docker_client, job.container_id)["OOMKilled"] is False
    assert job.stdout == "up\n"


# ----------------------------------------------------------------------------- timeout and cancel


def test_timeout_stops_the_container(ex, test_image, docker_client):
    # PITFALL: a timeout that stops the API call but leaves the container running.
    t0 = time.monotonic()
    job_id = ex.start(JobSpec(image=test_image, command=["sleep", "30"], timeout=1, stop_grace=1))
    job = ex.wait(job_id, timeout=WAIT)
    elapsed = time.monotonic() - t0
    assert (job.state, job.substate) == (JobState.FAILED, Substate.TIMEOUT), job.message
    assert 0.9 <= elapsed < 6, elapsed
    state = inspect_state(docker_client, job.container_id)
    assert state["Running"] is False
    assert state["Status"] == "exited"
    # sleep as PID 1 has no TERM handler: it took the SIGKILL after the grace period
    assert job.exit_code == 137


def test_cancel_runs_term_handler_within_grace(ex, test_image):
    job_id = ex.start(
        sh(test_image, 'trap "echo cleanup; exit 0" TERM; echo ready; while true; do sleep 0.1; done')
    )
    wait_for_output(ex, job_id, "ready")
    t0 = time.monotonic()
    job = ex.cancel(job_id, grace=10)
    elapsed = time.monotonic() - t0
    assert (job.state, job.substate) == (JobState.FAILED, Substate.CANCELLED), job.message
    assert job.stdout == "ready\ncleanup\n"
    assert job.exit_code == 0  # the handler's exit, not a SIGKILL
    assert elapsed < 5, elapsed


def test_cancel_kills_after_grace_when_term_ignored(ex, test_image):
    job_id = ex.start(sh(test_image, 'trap "" TERM; echo ready; while true; do sleep 0.1; done'))
    wait_for_output(ex, job_id, "ready")
    t0 = time.monotonic()
    job = ex.cancel(job_id, grace=1)
    elapsed = time.monotonic() - t0
    assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.CANCELLED, 137), job.message
    assert 0.9 <= elapsed < 6, elapsed
    assert job.stdout == "ready\n"


# ----------------------------------------------------------------------------- suspend / resume


def test_suspend_and_resume(ex, test_image, docker_client):
    job_id = ex.start(sh(test_image, "i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo $i; sleep 0.05; done"))
    wait_for_output(ex, job_id, "2\n")

    job = ex.suspend(job_id)
    assert job.state is JobState.SUSPENDED
    assert ex.info(job_id).state is JobState.SUSPENDED
    state = inspect_state(docker_client, job.container_id)
    assert state["Paused"] is True and state["Status"] == "paused"

    time.sleep(0.3)  # let the engine's log copier catch up with what was written before the freeze
    frozen = read_logs(ex, job_id)
    time.sleep(0.7)
    assert read_logs(ex, job_id) == frozen, "the job made progress while suspended"
    assert not frozen.endswith("20\n")

    with pytest.raises(InvalidState, match="Suspended"):
        ex.suspend(job_id)

    job = ex.resume(job_id)
    assert job.state is JobState.RUNNING
    assert inspect_state(docker_client, job.container_id)["Paused"] is False
    with pytest.raises(InvalidState, match="Running"):
        ex.resume(job_id)

    job = ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.exit_code) == (JobState.DONE, 0), job.message
    assert job.stdout == "".join(f"{i}\n" for i in range(1, 21))

    with pytest.raises(InvalidState, match="Done"):
        ex.cancel(job_id)
    with pytest.raises(InvalidState):
        ex.suspend(job_id)


# ----------------------------------------------------------------------------- waiting


def test_wait_timeout_future_and_run(ex, test_image):
    slow = ex.start(JobSpec(image=test_image, command=["sleep", "30"]))
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout):
        ex.wait(slow, timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 3
    assert ex.info(slow).state is JobState.RUNNING
    ex.cancel(slow, grace=0)

    fut = ex.future(ex.start(JobSpec(image=test_image, command=["echo", "from-future"])))
    job = fut.result(timeout=WAIT)
    assert job.state is JobState.DONE
    assert job.stdout == "from-future\n"

    job = ex.run(JobSpec(image=test_image, command=["echo", "ran"]), timeout=WAIT)
    assert job.state is JobState.DONE and job.stdout == "ran\n"
    assert job.started_at is not None and job.finished_at is not None
    assert job.created_at <= job.started_at <= job.finished_at

    # a future asked for after the end resolves at once
    assert ex.future(job.id).result(timeout=1).id == job.id


def test_follow_logs_streams_until_the_end(ex, test_image):
    job_id = ex.start(
        sh(test_image, "i=1; while [ $i -le 200 ]; do echo $i; [ $((i % 20)) -eq 0 ] && sleep 0.1; i=$((i+1)); done")
    )
    chunks = []
    state_at_first_chunk = None
    for stream, chunk in ex.logs(job_id, "stdout", follow=True):
        assert stream == "stdout"
        if state_at_first_chunk is None:
            state_at_first_chunk = ex.info(job_id).state
        chunks.append(chunk)
    assert state_at_first_chunk is JobState.RUNNING  # streamed live, not read after the end
    assert ex.info(job_id).state is JobState.DONE  # the stream ended with the job
    assert b"".join(chunks).decode() == "".join(f"{i}\n" for i in range(1, 201))
    assert len(chunks) > 1


# ----------------------------------------------------------------------------- removal


def test_auto_remove_keeps_results(ex, test_image, docker_client):
    job = ex.run(JobSpec(image=test_image, command=["echo", "bye"], auto_remove=True), timeout=WAIT)
    assert job.state is JobState.DONE
    assert job.container_id

    def removed() -> bool:  # right after the result is recorded: a waiter does not wait for it
        try:
            docker_client.containers.get(job.container_id)
        except docker.errors.NotFound:
            return True
        return False

    eventually("the container removed", removed)
    info = ex.info(job.id)
    assert info.stdout == "bye\n" and info.exit_code == 0

    kept = ex.run(JobSpec(image=test_image, command=["echo", "kept"]), timeout=WAIT)
    assert docker_client.containers.get(kept.container_id).status == "exited"


def test_remove_and_discard_container(ex, test_image, docker_client):
    done = ex.run(JobSpec(image=test_image, command=["echo", "x"]), timeout=WAIT)
    ex.remove(done.id)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(done.container_id)
    with pytest.raises(JobNotFound):
        ex.info(done.id)
    assert not done.logs_dir.exists()

    live = ex.start(JobSpec(image=test_image, command=["sleep", "30"]))
    with pytest.raises(InvalidState, match="Running"):
        ex.remove(live)
    with pytest.raises(InvalidState):
        ex.discard_container(live)
    live_cid = ex.info(live).container_id
    assert docker_client.containers.get(live_cid).status == "running"  # untouched by the refusals
    ex.remove(live, force=True)
    with pytest.raises(JobNotFound):
        ex.info(live)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(live_cid)

    kept = ex.run(sh(test_image, "echo keep; exit 4"), timeout=WAIT)
    ex.discard_container(kept.id)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(kept.container_id)
    info = ex.info(kept.id)
    assert (info.state, info.exit_code, info.stdout) == (JobState.FAILED, 4, "keep\n")


def test_cleanup_removes_only_this_executors_things(ex, test_image, docker_client, tmp_path):
    suffix = uuid.uuid4().hex[:10]
    volume, network = f"cv-test-vol-{suffix}", f"cv-test-net-{suffix}"
    other = Executor(tmp_path / "other-home")
    plain = None
    try:
        assert other.executor_id != ex.executor_id
        other_job = other.run(JobSpec(image=test_image, command=["true"]), timeout=WAIT)
        plain = docker_client.containers.create(test_image, "sleep 30")

        vol_job = ex.run(sh(test_image, "echo v > /data/f && cat /data/f", mounts=[f"{volume}:/data"]), timeout=WAIT)
        assert vol_job.stdout == "v\n", vol_job.stderr
        net_job = ex.run(JobSpec(image=test_image, command=["true"], network=network), timeout=WAIT)
        assert net_job.state is JobState.DONE, net_job.message
        live = ex.start(sh(test_image, "echo live; sleep 30"))
        wait_for_output(ex, live, "live")
        assert docker_client.volumes.get(volume).name == volume
        assert docker_client.networks.get(network).name == network
        assert len(own_containers(docker_client, ex)) == 3

        assert ex.cleanup() == {"containers": 3, "volumes": 1, "networks": 1, "cgroups": 0}  # cgroups: the process backend's

        assert own_containers(docker_client, ex) == []
        with pytest.raises(docker.errors.NotFound):
            docker_client.volumes.get(volume)
        with pytest.raises(docker.errors.NotFound):
            docker_client.networks.get(network)
        # the live job was cancelled, its logs kept
        live_job = ex.info(live)
        assert (live_job.state, live_job.substate) == (JobState.FAILED, Substate.CANCELLED)
        assert live_job.stdout == "live\n"
        # nothing of anyone else's was touched
        assert docker_client.containers.get(other_job.container_id).status == "exited"
        plain.reload()
        assert plain.status == "created"
    finally:
        try:
            other.cleanup()
        finally:
            other.close()
        if plain is not None:
            plain.remove(force=True)
        for remove in (lambda: docker_client.volumes.get(volume).remove(force=True),
                       lambda: docker_client.networks.get(network).remove()):
            try:
                remove()
            except docker.errors.NotFound:
                pass


# ----------------------------------------------------------------------------- images


def test_missing_image_with_pull_never(ex, test_image, docker_client):
    with pytest.raises(ImageNotFound, match="never"):
        ex.start(JobSpec(image="conveyor/not-here:never", command=["true"], pull="never"))
    assert ex.list() == []
    assert own_containers(docker_client, ex) == []


def test_nonexistent_image_pull_fails(ex, registry, docker_client):
    with pytest.raises(ImageNotFound, match="pull failed"):
        ex.start(JobSpec(image=f"{registry}/conveyor-no-such-image:1", command=["true"]))
    assert ex.list() == []
    assert own_containers(docker_client, ex) == []


def test_pull_from_local_registry(ex, test_image, registry, docker_client):
    repo = f"{registry}/conveyor-pull"
    ref = f"{repo}:1"
    assert docker_client.images.get(test_image).tag(repo, tag="1")
    try:
        for line in docker_client.images.push(repo, tag="1", stream=True, decode=True):
            assert "error" not in line, line
        docker_client.images.remove(ref)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(ref)

        job = ex.run(JobSpec(image=ref, command=["echo", "pulled"]), timeout=WAIT)
        assert (job.state, job.stdout) == (JobState.DONE, "pulled\n"), job.message
        assert ref in docker_client.images.get(ref).tags  # it was pulled (if-missing)

        again = ex.run(JobSpec(image=ref, command=["echo", "pulled"], pull="always"), timeout=WAIT)
        assert (again.state, again.stdout) == (JobState.DONE, "pulled\n"), again.message
    finally:
        ex.cleanup()  # containers first, so the tag can go
        try:
            docker_client.images.remove(ref)
        except docker.errors.NotFound:
            pass


def test_image_removed_after_it_was_seen_is_pulled_again(ex, test_image, registry, docker_client):
    """The executor remembers for a while that an image is present; an image removed in that
    while is still pulled (pull policy 'missing') rather than failing its job, and with
    'never' it is refused as missing, as it would be without the memory."""
    repo = f"{registry}/conveyor-repull"
    ref = f"{repo}:1"
    assert docker_client.images.get(test_image).tag(repo, tag="1")
    try:
        for line in docker_client.images.push(repo, tag="1", stream=True, decode=True):
            assert "error" not in line, line
        first = ex.run(JobSpec(image=ref, command=["echo", "one"]), timeout=WAIT)
        assert (first.state, first.stdout) == (JobState.DONE, "one\n"), first.message
        ex.cleanup()
        docker_client.images.remove(ref)

        again = ex.run(JobSpec(image=ref, command=["echo", "two"]), timeout=WAIT)
        assert (again.state, again.stdout) == (JobState.DONE, "two\n"), again.message
        ex.cleanup()
        docker_client.images.remove(ref)

        with pytest.raises(ImageNotFound, match="never"):
            ex.start(JobSpec(image=ref, command=["true"], pull="never"))
        assert own_containers(docker_client, ex) == []
    finally:
        ex.cleanup()
        try:
            docker_client.images.remove(ref)
        except docker.errors.NotFound:
            pass


# ----------------------------------------------------------------------------- start failures and bad specs


def test_start_failure_leaves_nothing(ex, test_image, docker_client):
    job_id = ex.start(JobSpec(image=test_image, command=["nosuchcmd"]))
    job = ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.START_FAILED, 127)
    assert "nosuchcmd" in job.message
    assert own_containers(docker_client, ex) == []


def test_invalid_spec_rejected_before_anything(ex, docker_client):
    with pytest.raises(InvalidSpec, match="memory"):
        JobSpec(image="x", resources={"memory": "12x"})
    assert ex.list() == []
    assert own_containers(docker_client, ex) == []


# ----------------------------------------------------------------------------- restart, stdin, tty, idempotency


def test_restart_policy_final_only_after_engine_stops_restarting(ex, test_image, docker_client):
    job = ex.run(sh(test_image, "echo try; exit 1", restart="on-failure:2"), timeout=WAIT)
    assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.EXITED, 1), job.message
    assert job.stdout.count("try") == 3
    attrs = docker_client.api.inspect_container(job.container_id)
    assert attrs["RestartCount"] == 2
    assert attrs["State"]["Status"] == "exited"


def test_stdin_is_fed_to_the_job(ex, test_image):
    job_id = ex.start(JobSpec(image=test_image, stdin_open=True, command=["cat"]), stdin=io.BytesIO(b"hello\n"))
    job = ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.stdout) == (JobState.DONE, "hello\n"), job.message


def test_tty_output_captured(ex, test_image):
    """A job asked for a terminal gets one (its output has the terminal's CRLF line ends)
    and that output is captured."""
    job = ex.run(JobSpec(image=test_image, command=["echo", "tty-ok"], tty=True), timeout=WAIT)
    assert job.state is JobState.DONE, job.message
    assert job.stdout == "tty-ok\r\n"


def test_idempotency_keys(ex, test_image):
    spec = JobSpec(image=test_image, command=["echo", "once"])
    first = ex.start(spec, idempotency_key="k1")
    assert ex.start(spec, idempotency_key="k1") == first
    by_digest = ex.start(spec, idempotency_key="digest")
    assert ex.start(JobSpec(image=test_image, command=["echo", "once"]), idempotency_key="digest") == by_digest
    assert by_digest != first
    other = ex.start(JobSpec(image=test_image, command=["echo", "twice"]), idempotency_key="digest")
    assert other not in (first, by_digest)
    assert sorted(j.id for j in ex.list()) == sorted({first, by_digest, other})
    for job_id in (first, by_digest, other):
        assert ex.wait(job_id, timeout=WAIT).state is JobState.DONE


# ----------------------------------------------------------------------------- capabilities


def test_a_capability_the_backend_lacks_is_refused_with_its_name(state_dir, test_image):
    """A backend declares what it cannot do (Swarm cannot pause); using it must fail at once
    with an error naming the capability, never pretend to work and leave the job Running
    while the state says Suspended."""
    import dataclasses

    from conveyor.backends.docker import DockerBackend
    from conveyor.errors import NotSupported

    class NoPause(DockerBackend):
        capabilities = dataclasses.replace(DockerBackend.capabilities, pause=False, stdin=False)

    with Executor(state_dir, backend=NoPause(Executor(state_dir, supervise=False).executor_id)) as ex:
        assert ex.capabilities().pause is False
        job_id = ex.start(sh(test_image, "sleep 30", network="none"))
        try:
            with pytest.raises(NotSupported, match="capability 'pause'"):
                ex.suspend(job_id)
            assert ex.info(job_id).state is JobState.RUNNING
            with pytest.raises(NotSupported, match="capability 'stdin'"):
                ex.start(sh(test_image, "cat", stdin_open=True, network="none"), stdin=io.BytesIO(b"x"))
            assert [j.id for j in ex.list()] == [job_id]  # the refused start created nothing
        finally:
            ex.cancel(job_id, grace=0)
            ex.cleanup()


def test_capabilities_are_the_same_through_the_agent(state_dir):
    """Clients decide what to offer from the backend's declared capabilities: the agent must
    report exactly what the embedded executor sees."""
    from conveyor import Client
    from helpers import AgentProcess

    agent = AgentProcess(state_dir).start()
    try:
        with Executor(state_dir, supervise=False) as view:
            assert Client(state_dir).capabilities() == view.capabilities()
        assert Client(state_dir).agent_info()["backend"]["name"] == "docker"
    finally:
        agent.stop()


# ----------------------------------------------------------------------------- waiting


def test_a_supervisors_wait_sees_what_another_process_committed(ex, test_image, state_dir):
    """Transitions another process writes to the store (an observing Executor, a CLI without
    an agent, cancelling a held job) never pass through the supervisor's notify; its waiters
    must still wake (the agent's long-polls rely on it)."""
    job_id = ex.submit(sh(test_image, "true", network="none"), hold=True)
    started = ex.future(job_id, until="started")
    finished = ex.future(job_id)
    with Executor(state_dir, supervise=False) as other:
        assert not other.supervising
        other.cancel(job_id)
    job = finished.result(timeout=10)
    assert (job.state, job.substate) == (JobState.FAILED, Substate.CANCELLED)
    assert started.result(timeout=1).id == job_id  # a cancelled job has left the queue too


def test_wait_started_returns_while_the_job_still_runs(ex, test_image):
    job_id = ex.submit(sh(test_image, "sleep 30", network="none"))
    try:
        job = ex.future(job_id, until="started").result(timeout=WAIT)
        assert job.state is JobState.RUNNING
        assert ex.wait_started(job_id, timeout=WAIT).state is JobState.RUNNING
    finally:
        ex.cancel(job_id, grace=0)


def test_a_die_event_that_comes_before_inspect_shows_the_end_is_looked_at_again(state_dir, test_image):
    """An engine may announce a container's end before its inspect shows it (seen once with
    podman: the job stayed Running after its die event, as no other event came). The finisher
    looks again after a die event instead of concluding from one inspect."""
    import dataclasses

    from conveyor.backends.docker import DockerBackend

    class Lagging(DockerBackend):
        lies_left = 3  # the first inspects after the end still say "running"

        def inspect(self, handle):
            status = super().inspect(handle)
            if status is not None and status.finished and self.lies_left > 0:
                self.lies_left -= 1
                return dataclasses.replace(status, status="running", finished_at=None)
            return status

    backend = Lagging(Executor(state_dir, supervise=False).executor_id)
    with Executor(state_dir, backend=backend) as ex:
        job = ex.run(sh(test_image, "echo done; exit 3", network="none"), timeout=30)
        assert (job.state, job.exit_code, job.stdout) == (JobState.FAILED, 3, "done\n")
        assert backend.lies_left == 0  # it was told "running" after the end, and looked again


def test_cancel_between_claim_and_start_stops_the_job(ex, test_image):
    """A cancel that lands after the launcher claimed a job but before the engine started its
    container found nothing running to signal: the job then ran its full course (a foreground
    `conveyor run` interrupted during start-up hung for the job's whole run). The start is
    held at that exact moment here, on the real engine."""
    claimed, go = threading.Event(), threading.Event()
    start = ex.backend.start

    def start_when_told(handle):
        claimed.set()
        assert go.wait(30)
        return start(handle)

    ex.backend.start = start_when_told
    try:
        job = ex.submit(JobSpec(image=test_image, command=["sleep", "30"], network="none", stop_grace=1))
        assert claimed.wait(30), "the job was never started"
        assert ex.info(job).state is JobState.RUNNING  # claimed: the launcher is about to start it
        ex.cancel(job, wait=False)
        go.set()
        began = time.monotonic()
        done = ex.wait(job, timeout=20)
    finally:
        ex.backend.start = start
        go.set()
    assert (done.state, done.substate) == (JobState.FAILED, Substate.CANCELLED)
    assert time.monotonic() - began < 10, "the cancelled job ran on"
