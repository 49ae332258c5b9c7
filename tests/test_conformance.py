"""The backend conformance suite (issue 14): one set of end-to-end tests that every backend must
pass, run over docker, docker with the gVisor runtime (runsc), podman and process.

Each test drives the real engine (or the host, for process) through the public Executor, the same
way whatever the backend: lifecycle and exit codes, hold/release, suspend/resume, cancel with a
grace period, timeouts, OOM told apart from a plain SIGKILL, stdout and stderr byte-exact and
apart and kept after the job is gone, inputs and outputs, arrays and dependencies, recovery after
the supervisor is SIGKILLed at the named fault points, and cleanup leaving nothing. What a backend
cannot do it declares in its capabilities, and the suite checks that asking for it fails with a
clear error rather than skipping. In CI (CI=true) a backend whose engine is missing fails.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor import Executor, JobSpec, JobState, Substate
from conveyor.backends import backend_class
from conveyor.backends.base import Capabilities
from conveyor.errors import ConveyorError, InvalidSpec, NotSupported
from helpers import SupervisorProcess, eventually

from conftest import PODMAN_URL, TEST_IMAGE, _fail_or_skip, _probe_docker, _probe_podman

SWARM_MANAGER = "unix:///run/conveyor-swarm/n1.sock"
SWARM_NODES = [f"unix:///run/conveyor-swarm/n{k}.sock" for k in (1, 2, 3)]
SLURM_CONF = "/etc/conveyor/slurm/slurm.conf"  # scripts/slurm-cluster's
WAIT = 60


@dataclass
class Kind:
    """One backend as the suite runs it: the node's engine and how a job names it."""

    id: str
    engine: str  # the node's container engine: docker, podman (the process backend needs none)
    backend: dict | None  # the job's ``backend`` field
    image: str | None

    @property
    def name(self) -> str:
        return (self.backend or {}).get("name") or self.engine

    @property
    def capabilities(self) -> Capabilities:
        return backend_class(self.name).capabilities

    def config(self, tmp: Path) -> str:
        """The state directory's config.toml; ``tmp``: a directory for the test's own files
        (a swarm's shared directory: the test nodes share this machine's filesystem)."""
        url = {"podman": f'url = "{PODMAN_URL}"\n',
               "swarm": f'url = "{SWARM_MANAGER}"\nnodes = {SWARM_NODES}\nshared_dir = "{tmp / "shared"}"\n',
               "slurm": f'url = "{SLURM_CONF}"\nshared_dir = "{tmp / "shared"}"\n'}.get(self.engine, "")
        return f'[defaults]\ncpus = 0\n[engine]\nname = "{self.engine}"\n{url}'

    def spec(self, script: str, **fields) -> JobSpec:
        """A job that runs ``script`` with sh -c on this backend."""
        if self.backend is not None:
            fields.setdefault("backend", self.backend)
        return JobSpec(image=self.image, command=["sh", "-c", script], **fields)


KINDS = {
    "docker": Kind("docker", "docker", None, TEST_IMAGE),
    "docker+runsc": Kind("docker+runsc", "docker", {"options": {"runtime": "runsc"}}, TEST_IMAGE),
    "podman": Kind("podman", "podman", None, TEST_IMAGE),
    "process": Kind("process", "docker", {"name": "process"}, None),
    "swarm": Kind("swarm", "swarm", None, TEST_IMAGE),  # the three-node cluster of scripts/swarm-cluster
    "slurm": Kind("slurm", "slurm", None, TEST_IMAGE),  # the two-node cluster of scripts/slurm-cluster
}


def _engine_ready(kind: Kind) -> str | None:
    """Why this backend cannot run here, or None when it can."""
    if kind.name == "process":
        return None if os.geteuid() == 0 else "the process backend's tests run as root (cgroups, user switching)"
    if kind.engine in ("swarm", "slurm"):
        return None  # the kind fixture brings the cluster up (its fixture), failing in CI if it cannot
    if kind.engine == "podman":
        error = _probe_podman()
        return error and f"podman service not usable at {PODMAN_URL} ({error}); start it with scripts/ensure-podman"
    client, error = _probe_docker()
    if client is None:
        return f"Docker engine not reachable ({error}); start it with scripts/ensure-docker"
    runtimes = client.info().get("Runtimes") or {}
    if kind.id == "docker+runsc" and "runsc" not in runtimes:
        return f"dockerd has no runsc runtime (it has {sorted(runtimes)}); scripts/ensure-docker registers it"
    return None


@pytest.fixture(params=list(KINDS), scope="module")
def kind(request) -> Kind:
    kind = KINDS[request.param]
    if kind.engine in ("swarm", "slurm"):
        request.getfixturevalue(kind.engine)
    reason = _engine_ready(kind)
    if reason:
        _fail_or_skip(f"backend {kind.id}: {reason}")
    return kind


@pytest.fixture
def home(tmp_path, kind) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    (path / "config.toml").write_text(kind.config(tmp_path))
    return path


@pytest.fixture
def ex(home):
    with Executor(home) as executor:
        yield executor
        leftovers = [s for s in executor.backend.list() if s.alive]
        for status in executor.backend.list():
            executor.backend.remove(status.id)
    assert not leftovers, f"jobs still alive after the test: {leftovers}"


def _moves(ex: Executor, job_id: str) -> list[JobState]:
    """The job's states in order. On an engine with a queue of its own (capability queues) a
    launched job is Queued in that queue first (-> Queued, engine_queued): left out here, and
    checked to happen on such engines only."""
    moves: list[JobState] = []
    for t in ex.store.transitions(job_id):
        if t.substate == Substate.ENGINE_QUEUED:
            assert t.to_state is JobState.QUEUED and ex.backend.for_job(ex.info(job_id).spec).capabilities.queues, t
            continue
        moves.append(t.to_state)
    return moves


def _made(ex: Executor, job_id: str):
    """What the backend holds for the job (container or process run), if anything."""
    return ex.backend.find(job_id)


# ----------------------------------------------------------------------------- lifecycle


def test_the_job_runs_where_its_backend_says(ex, kind):
    import socket

    job = ex.run(kind.spec("hostname; cat /proc/version; echo $$"))
    hostname, version, pid = job.stdout.splitlines()
    if kind.id == "process":  # on the host, not as the PID 1 of a container
        assert (hostname, version) == (socket.gethostname(), Path("/proc/version").read_text().strip())
        assert pid != "1"
    elif kind.id == "docker+runsc":  # gVisor's own kernel answers
        assert version != Path("/proc/version").read_text().strip() and "4.4.0" in version
        assert hostname != socket.gethostname() and pid == "1"
    else:
        assert hostname != socket.gethostname() and pid == "1"
        assert version == Path("/proc/version").read_text().strip()  # runc: the host's kernel
    assert ex.backend.for_job(kind.spec("true")).name == kind.name


def test_exit_codes_and_final_states(ex, kind):
    ok = ex.run(kind.spec("echo fine"))
    assert (ok.state, ok.substate, ok.exit_code, ok.stdout) == (JobState.DONE, Substate.EXITED, 0, "fine\n")
    bad = ex.run(kind.spec("echo failing >&2; exit 3"))
    assert (bad.state, bad.substate, bad.exit_code, bad.stderr) == (JobState.FAILED, Substate.EXITED, 3, "failing\n")
    assert bad.started_at is not None and bad.finished_at >= bad.started_at


def test_stdout_and_stderr_are_byte_exact_apart_and_kept_after_the_job_is_gone(ex, kind):
    script = r"printf 'out\000\001\377 no newline'; printf 'err line 1\nerr line 2' >&2; printf '\nmore out\n'"
    job = ex.run(kind.spec(script, auto_remove=True))
    assert job.state is JobState.DONE
    assert job.stdout_bytes == b"out\x00\x01\xff no newline\nmore out\n"
    assert job.stderr_bytes == b"err line 1\nerr line 2"
    eventually("the job's container or process is removed", lambda: _made(ex, job.id) is None)
    again = ex.info(job.id)
    assert (again.stdout_bytes, again.stderr_bytes) == (job.stdout_bytes, job.stderr_bytes)
    assert b"".join(chunk for _, chunk in ex.logs(job.id, "stderr")) == b"err line 1\nerr line 2"


def test_wait_started_wait_any_and_timeouts(ex, kind):
    slow = ex.submit(kind.spec("sleep 30"))
    quick = ex.submit(kind.spec("exit 0"))
    assert ex.wait_started(slow, timeout=WAIT).state is JobState.RUNNING
    assert ex.wait_any([slow, quick], timeout=WAIT).id == quick
    with pytest.raises(ConveyorError):  # WaitTimeout
        ex.wait(slow, timeout=0.5)
    ex.cancel(slow, grace=0)


def test_hold_and_release(ex, kind):
    job_id = ex.submit(kind.spec("echo released"), hold=True)
    time.sleep(0.5)
    held = ex.info(job_id)
    assert (held.state, held.substate) == (JobState.QUEUED_HELD, Substate.HELD)
    assert _made(ex, job_id) is None  # nothing made while held
    ex.release(job_id)
    job = ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.stdout) == (JobState.DONE, "released\n")


def test_suspend_and_resume_or_a_clear_refusal(ex, kind):
    # The job counts while it runs: frozen, the count stops.
    job_id = ex.submit(kind.spec("i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo $i; sleep 0.05; done"))
    ex.wait_started(job_id, timeout=WAIT)
    if not kind.capabilities.pause:
        with pytest.raises(NotSupported, match="pause"):
            ex.suspend(job_id)
        ex.cancel(job_id, grace=0)
        return
    time.sleep(0.5)
    suspended = ex.suspend(job_id)
    assert suspended.state is JobState.SUSPENDED
    time.sleep(0.3)  # output in flight before the freeze has landed
    before = len(_live_output(ex, job_id))
    time.sleep(1.0)
    assert len(_live_output(ex, job_id)) == before, "a suspended job kept running"
    assert ex.resume(job_id).state is JobState.RUNNING
    eventually("output grows again after resume", lambda: len(_live_output(ex, job_id)) > before)
    job = ex.cancel(job_id, grace=0)
    assert _moves(ex, job_id)[:4] == [
        JobState.QUEUED, JobState.RUNNING, JobState.SUSPENDED, JobState.RUNNING]
    assert job.substate == Substate.CANCELLED


def _running_with(ex: Executor, job_id: str, text: bytes) -> bool:
    """Running in Conveyor's terms (an engine that queues jobs: out of its queue) and has
    written ``text``."""
    return text in _live_output(ex, job_id) and ex.info(job_id).state is JobState.RUNNING


def _live_output(ex: Executor, job_id: str) -> bytes:
    return b"".join(chunk for _, chunk in ex.logs(job_id, "stdout"))


def test_cancel_runs_the_term_handler_within_grace_then_kills(ex, kind):
    polite = ex.submit(kind.spec("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"))
    eventually("job ready", lambda: _running_with(ex, polite, b"ready"))
    job = ex.cancel(polite, grace=10)
    assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.CANCELLED, 7)
    assert job.stdout == "ready\ngot TERM\n"

    stubborn = ex.submit(kind.spec("trap '' TERM; echo ready; while :; do sleep 0.1; done"))
    eventually("job ready", lambda: _running_with(ex, stubborn, b"ready"))
    began = time.monotonic()
    job = ex.cancel(stubborn, grace=1)
    took = time.monotonic() - began
    assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.CANCELLED, 137)
    assert 0.9 <= took < 15, f"SIGKILL should follow the 1 s grace; cancel took {took:.1f}s"


def test_timeout_ends_the_job_with_its_own_substate(ex, kind):
    job = ex.run(kind.spec("echo start; sleep 30", timeout=1, stop_grace=1))
    assert (job.state, job.substate, job.stdout) == (JobState.FAILED, Substate.TIMEOUT, "start\n")


def test_oom_and_plain_sigkill_are_told_apart(ex, kind):
    caps = kind.capabilities
    swap = {"memory_swap": "32m"} if kind.name != "swarm" else {}  # a swarm service has no swap limit
    oom = ex.run(kind.spec("echo before; exec dd if=/dev/zero of=/dev/null bs=100M count=1",
                           resources={"memory": "32m", **swap}))
    told = Substate.OOM_KILLED if caps.oom else Substate.EXITED  # declared: an OOM kill is a plain 137 then
    assert (oom.state, oom.substate, oom.exit_code) == (JobState.FAILED, told, 137)
    assert oom.stdout == "before\n"
    job_id = ex.submit(kind.spec("echo before; sleep 30"))
    eventually("job running", lambda: _running_with(ex, job_id, b"before"))
    if not caps.signals:
        with pytest.raises(NotSupported, match="signals"):
            ex.signal(job_id, "KILL")
        ex.cancel(job_id, grace=0)
        return
    ex.signal(job_id, "KILL")  # SIGKILL from outside, as `docker kill` sends it
    killed = ex.wait(job_id, timeout=WAIT)
    assert (killed.state, killed.substate, killed.exit_code) == (JobState.FAILED, Substate.EXITED, 137)


def test_retries_requeue_a_failed_job_and_a_dependent_of_a_failure_fails(ex, kind):
    job = ex.run(kind.spec("echo try; exit 9", retries=1))
    assert (job.state, job.exit_code) == (JobState.FAILED, 9), (job, ex.attempts(job.id))
    assert _moves(ex, job.id) == [JobState.QUEUED, JobState.RUNNING, JobState.REQUEUED, JobState.RUNNING, JobState.FAILED]
    dependent = ex.wait(ex.submit(kind.spec("echo never", after=[job.id])), timeout=WAIT)
    assert (dependent.state, dependent.substate, dependent.stdout) == (JobState.FAILED, Substate.DEPENDENCY_FAILED, "")


def test_a_command_that_cannot_start_and_a_run_removed_underneath(ex, kind):
    missing = ex.run(kind.spec("true", entrypoint=["/no/such/program"]))
    assert (missing.state, missing.substate) == (JobState.FAILED, Substate.START_FAILED), missing
    assert missing.exit_code in (None, 127)  # podman's compat API records no exit code for it
    assert "/no/such/program" in missing.message, missing

    job_id = ex.submit(kind.spec("echo alive; sleep 30"))
    eventually("job running", lambda: _running_with(ex, job_id, b"alive"))
    ex.backend.remove(ex.store.get(job_id).container_id)  # someone removes it behind our back
    job = ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.substate) == (JobState.FAILED, Substate.CONTAINER_LOST), job
    assert _made(ex, job_id) is None


def test_stdin_reaches_the_job_byte_exact(ex, kind):
    if not kind.capabilities.stdin:  # declared: then asking for it is refused, naming it
        with pytest.raises((NotSupported, InvalidSpec), match="stdin"):
            ex.start(kind.spec("cat", stdin_open=True), stdin=io.BytesIO(b"x"))
        return
    data = bytes(range(256)) * 64 + b"no newline at the end"
    job_id = ex.start(kind.spec("cat; echo read all >&2", stdin_open=True), stdin=io.BytesIO(data))
    job = ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.stdout_bytes, job.stderr) == (JobState.DONE, data, "read all\n")


# ----------------------------------------------------------------------------- data


def test_inputs_are_staged_and_outputs_captured(ex, kind, tmp_path):
    if not kind.capabilities.files:
        with pytest.raises((NotSupported, InvalidSpec), match="output"):
            ex.submit(kind.spec("true", outputs=["/out"]))
        return
    data = tmp_path / "in.txt"
    data.write_bytes(b"staged\x00bytes\n")
    job = ex.run(kind.spec(
        "mkdir -p /out && cat /in/in.txt > /out/copy && echo made > /out/note && wc -c < /in/in.txt",
        inputs=[f"{data}:/in/in.txt"], outputs=["/out"],
    ))
    assert (job.state, job.stdout.strip()) == (JobState.DONE, "13"), job.stderr
    files = {o["path"]: o for o in ex.outputs(job.id)}
    assert sorted(files) == ["/out/copy", "/out/note"]
    assert ex.read_output(job.id, "/out/copy") == b"staged\x00bytes\n"
    assert files["/out/note"]["size"] == 5


# ----------------------------------------------------------------------------- arrays, dependencies


def test_array_tasks_see_their_index_and_a_dependent_waits_for_them(ex, kind):
    array_id = ex.submit_array(kind.spec("echo task $CONVEYOR_TASK_ID"), 1, 5, 2, max_parallel=2)
    after = ex.submit(kind.spec("echo after", after=[array_id]))
    job = ex.wait(after, timeout=WAIT)
    assert (job.state, job.stdout) == (JobState.DONE, "after\n")
    tasks = [ex.info(task_id) for task_id, _, _ in ex.array_tasks(array_id)]
    assert sorted(t.stdout for t in tasks) == ["task 1\n", "task 3\n", "task 5\n"]
    assert max(t.finished_at for t in tasks) <= job.started_at


# ----------------------------------------------------------------------------- what a backend lacks


def test_what_a_backend_lacks_is_refused_clearly(ex, kind):
    caps = kind.capabilities
    asked = {
        "ports": dict(ports=["8080"]),
        "tty": dict(tty=True),
        "gpus": dict(resources={"gpus": 1}),
    }
    for capability, fields in asked.items():
        have = getattr(caps, capability)
        if have:
            continue
        with pytest.raises(InvalidSpec, match=f"capability '{capability}'") as err:
            ex.submit(kind.spec("true", **fields))
        assert err.value.field == next(iter(fields)) or err.value.field.startswith("resources"), err.value
    if not caps.stdin:
        with pytest.raises((NotSupported, InvalidSpec), match="stdin"):
            ex.start(kind.spec("cat", stdin_open=True), stdin=io.BytesIO(b"x"))
    if not caps.stats:
        job_id = ex.submit(kind.spec("sleep 5"))
        with pytest.raises(NotSupported, match="stats"):
            ex.stats(job_id)
        ex.cancel(job_id, grace=0)
    assert ex.list() == [] or all(j.state.is_final for j in ex.list())


# ----------------------------------------------------------------------------- recovery


@pytest.fixture
def supervisor(home, tmp_path):
    sup = SupervisorProcess(home, tmp_path)
    try:
        yield sup
    finally:
        sup.stop()
        with Executor(home, supervise=False) as ex:
            for status in ex.backend.list():
                ex.backend.remove(status.id)


@pytest.fixture
def client(home):
    with Executor(home, supervise=False) as ex:
        yield ex


def test_recovery_after_sigkill_at_every_named_fault_point(supervisor, client, kind):
    # after-create, then after-claim: one container or process, started once.
    files = kind.capabilities.files  # outputs (and so the after-outputs point) where it can capture them
    supervisor.start(fault="after-create")
    job_id = client.submit(kind.spec("mkdir -p /out && echo kept > /out/result; echo ran; echo err >&2; exit 4",
                                     outputs=["/out"] if files else []))
    supervisor.wait_fault("after-create", job_id)
    supervisor.kill()
    made = client.backend.find(job_id)
    assert made is not None and made.status == "created"
    supervisor.start(fault="after-claim")
    supervisor.wait_fault("after-claim", job_id)
    supervisor.kill()
    assert client.store.get(job_id).container_id == made.id
    supervisor.start(fault="after-logs")
    supervisor.wait_fault("after-logs", job_id)
    supervisor.kill()
    assert client.info(job_id).state is JobState.RUNNING  # logs saved, result not yet recorded
    if files:
        supervisor.start(fault="after-outputs")
        supervisor.wait_fault("after-outputs", job_id)
        supervisor.kill()
        assert client.info(job_id).state is JobState.RUNNING  # outputs captured, result not yet recorded
    supervisor.start(fault="after-record")
    supervisor.wait_fault("after-record", job_id)
    supervisor.kill()
    job = client.info(job_id)
    assert (job.state, job.exit_code, job.stdout, job.stderr) == (JobState.FAILED, 4, "ran\n", "err\n")
    if files:
        assert client.read_output(job_id, "/out/result") == b"kept\n"

    # A job running while the supervisor is killed keeps running, and its end is recorded once.
    supervisor.start()
    live = client.submit(kind.spec("echo start; sleep 2; echo end; exit 5"))
    client.wait_started(live, timeout=WAIT)
    supervisor.kill()
    time.sleep(2.5)  # it ends while no one supervises
    supervisor.start()
    job = client.wait(live, timeout=WAIT)
    assert (job.state, job.exit_code, job.stdout) == (JobState.FAILED, 5, "start\nend\n")
    for ref in (job_id, live):
        runs = [t.to_state for t in client.store.transitions(ref)].count(JobState.RUNNING)
        assert runs == 1, f"job {ref} went Running {runs} times"
    assert client.backend.find(job_id).id == made.id  # the same run, never a second one


def test_cleanup_leaves_nothing(ex, kind):
    done = ex.run(kind.spec("echo done"))
    live = ex.submit(kind.spec("sleep 30"))
    ex.wait_started(live, timeout=WAIT)
    removed = ex.cleanup()
    assert removed["containers"] >= 2
    assert ex.backend.list() == []
    if kind.engine == "swarm":  # Swarm leaves task containers on the nodes: gone too
        import docker

        for url in SWARM_NODES:
            left = docker.APIClient(base_url=url).containers(all=True, filters={"label": f"conveyor.executor={ex.executor_id}"})
            assert left == [], (url, left)
    job = ex.info(live)
    assert (job.state, job.substate) == (JobState.FAILED, Substate.CANCELLED)
    assert ex.info(done.id).stdout == "done\n"  # logs outlive the container
