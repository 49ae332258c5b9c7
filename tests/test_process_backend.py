"""The process backend, driven directly (no Executor): a job as a host process group under the
shim, with cgroup limits, logs, recovery and events. Needs root (cgroups, mount namespaces,
user switching), as the agent does to run such jobs."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from conveyor.backends.base import ContainerNotFound, EngineConflict, EngineError, EngineUnavailable, NotSupported
from conveyor.backends.process import ProcessBackend
from conveyor.backends.process.runs import same_process
from conveyor.backends.process.shim import proc_start_time
from conveyor.errors import InvalidSpec
from conveyor.logtimes import read_times, times_path
from conveyor.spec import JobSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the process backend's jobs need root here")

PY = sys.executable


@pytest.fixture
def backend(tmp_path):
    b = ProcessBackend("exec-test", tmp_path / "process")
    yield b
    for status in b.list():
        b.remove(status.id)


def job(*command: str, **fields) -> JobSpec:
    return JobSpec(command=list(command), backend=fields.pop("backend", "process"), **fields)


def run(b: ProcessBackend, spec: JobSpec, timeout: float = 20):
    handle = b.create(new_id(), spec)
    b.start(handle)
    return handle, wait_end(b, handle, timeout)


def new_id() -> str:
    return secrets.token_hex(6)


def wait_end(b: ProcessBackend, handle: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = b.inspect(handle)
        if status.finished:
            return status
        time.sleep(0.02)
    raise AssertionError(f"{handle} still {b.inspect(handle).status} after {timeout} s")


def wait_for(predicate, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def saved(b, handle, tmp_path) -> dict[str, bytes]:
    paths = {s: tmp_path / s for s in ("stdout", "stderr")}
    b.save_logs(handle, paths)
    return {s: p.read_bytes() for s, p in paths.items()}


# ----------------------------------------------------------------------------- lifecycle


def test_lifecycle_and_exit_code(backend):
    """A job is created (not running), started, and its exit code is the job's own."""
    handle = backend.create(new_id(), job("sh", "-c", "exit 7"))
    assert backend.inspect(handle).status == "created"
    backend.start(handle)
    status = wait_end(backend, handle)
    assert (status.status, status.exit_code, status.oom_killed) == ("exited", 7, False)
    assert status.started_at <= status.finished_at
    assert status.labels["conveyor.executor"] == "exec-test"
    backend.remove(handle)
    assert backend.inspect(handle) is None


def test_create_twice_conflicts_and_find_adopts(backend):
    """A second create for the same job conflicts (the launcher then adopts the first)."""
    job_id = new_id()
    handle = backend.create(job_id, job("true"))
    with pytest.raises(EngineConflict):
        backend.create(job_id, job("true"))
    assert backend.find(job_id).id == handle


def test_missing_program_fails_start_with_reason(backend):
    handle = backend.create(new_id(), job("/no/such/program"))
    with pytest.raises(EngineError, match="no/such/program"):
        backend.start(handle)
    assert backend.inspect(handle).exit_code == 127


def test_logs_byte_exact_and_apart(backend, tmp_path):
    """stdout and stderr are kept apart, byte for byte: binary, no trailing newline."""
    script = "import sys; sys.stdout.buffer.write(bytes(range(256)) + b'\\r\\nend'); sys.stderr.buffer.write(b'\\x00err')"
    handle, status = run(backend, job(PY, "-c", script))
    assert status.exit_code == 0
    logs = saved(backend, handle, tmp_path)
    assert logs == {"stdout": bytes(range(256)) + b"\r\nend", "stderr": b"\x00err"}


def test_save_logs_writes_times_index(backend, tmp_path):
    """The times index covers every byte, and its times are when the lines were written."""
    before = time.time_ns()
    handle, _ = run(backend, job("sh", "-c", "echo one; sleep 0.3; echo two"))
    logs = saved(backend, handle, tmp_path)
    assert logs["stdout"] == b"one\ntwo\n"
    times = read_times(times_path(tmp_path / "stdout"))
    assert [offset for offset, _ in times] == [0, 4]
    assert before <= times[0][1] and times[1][1] - times[0][1] >= 250_000_000


def test_follow_logs_tail_and_follow(backend):
    """follow_logs gives the last lines, then what comes, and ends with the job."""
    handle = backend.create(new_id(), job("sh", "-c", "printf 'a\\nb\\nc\\n'; sleep 0.5; printf 'd\\n' >&2; printf e"))
    backend.start(handle)
    time.sleep(0.2)
    got = list(backend.follow_logs(handle, ("stdout", "stderr"), tail=1, follow=True))
    out = b"".join(c for s, c in got if s == "stdout")
    err = b"".join(c for s, c in got if s == "stderr")
    assert (out, err) == (b"c\ne", b"d\n")
    stamped = list(backend.follow_logs(handle, ("stdout",), tail=None, follow=False, timestamps=True))
    assert [c.split(b" ", 1)[1] for _, c in stamped] == [b"a\n", b"b\n", b"c\n", b"e"]
    assert stamped[0][1][:2] == b"20" and stamped[0][1][29:31] == b"Z "


# ----------------------------------------------------------------------------- signals


def test_stop_runs_term_handler_within_grace(backend, tmp_path):
    """SIGTERM first: the job's handler runs and its exit code is its own."""
    script = "trap 'echo bye; exit 5' TERM; echo up; while :; do sleep 0.05; done"
    handle = backend.create(new_id(), job("sh", "-c", script))
    backend.start(handle)
    wait_for(lambda: b"up" in (backend.runs / handle / "stdout").read_bytes())
    backend.stop(handle, grace=5)
    status = backend.inspect(handle)
    assert status.exit_code == 5
    assert saved(backend, handle, tmp_path)["stdout"] == b"up\nbye\n"


def test_stop_kills_after_grace(backend):
    """A job that ignores SIGTERM is killed at the end of the grace period: 137."""
    handle = backend.create(new_id(), job("sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.05; done"))
    backend.start(handle)
    wait_for(lambda: b"up" in (backend.runs / handle / "stdout").read_bytes())
    began = time.monotonic()
    backend.stop(handle, grace=0.5)
    took = time.monotonic() - began
    status = backend.inspect(handle)
    assert (status.exit_code, status.oom_killed) == (137, False)
    assert 0.4 < took < 5


def test_signal_exit_code_is_128_plus(backend):
    handle = backend.create(new_id(), job("sleep", "30"))
    backend.start(handle)
    backend.signal(handle, "TERM")
    assert wait_end(backend, handle).exit_code == 143
    with pytest.raises(EngineConflict):
        backend.signal(handle, "KILL")


def test_pause_and_unpause_visible(backend):
    """A paused job is stopped (it writes nothing) and says paused, in inspect and as events."""
    events = backend.events(None)
    handle = backend.create(new_id(), job("sh", "-c", "while :; do echo x; sleep 0.02; done"))
    backend.start(handle)
    out = backend.runs / handle / "stdout"
    wait_for(lambda: out.stat().st_size > 0)
    backend.pause(handle)
    assert backend.inspect(handle).status == "paused"
    size = out.stat().st_size
    time.sleep(0.3)
    assert out.stat().st_size == size
    with pytest.raises(EngineConflict):
        backend.pause(handle)
    backend.unpause(handle)
    assert backend.inspect(handle).status == "running"
    wait_for(lambda: out.stat().st_size > size)
    backend.signal(handle, "KILL")
    wait_end(backend, handle)
    actions = []
    for ev in events:
        assert ev.job_id == handle and ev.container_id == handle
        actions.append(ev.action)
        if ev.action == "die":
            break
    assert actions == ["start", "pause", "unpause", "die"]


def test_events_since_replays_what_was_missed(backend):
    """A subscriber that reconnects with ``since`` gets the events it missed, and only those."""
    first, _ = run(backend, job("true"))
    # its die event is written just after its exit status: since is after both
    wait_for(lambda: f'"a": "die", "h": "{first}"' in backend.events_log.read_text())
    since = time.time()
    handle, _ = run(backend, job("true"))
    events = backend.events(since)
    got = [next(events) for _ in range(2)]
    assert [(e.action, e.container_id) for e in got] == [("start", handle), ("die", handle)]
    backend.close_events()


def test_events_close_ends_iteration(backend):
    events = backend.events(None)
    threading.Timer(0.3, backend.close_events).start()
    with pytest.raises(EngineUnavailable):
        next(events)


# ----------------------------------------------------------------------------- cgroups


def test_oom_killed_vs_plain_sigkill(backend):
    """OOM comes from the cgroup's counter: a job over its memory limit is oom_killed; a job
    killed with SIGKILL has the same 137 but is not."""
    hog = job(PY, "-c", "x = bytearray(400 << 20); print(len(x))", resources={"memory": "64m"})
    _, status = run(backend, hog)
    assert (status.exit_code, status.oom_killed) == (137, True)
    handle = backend.create(new_id(), job("sleep", "30", resources={"memory": "64m"}))
    backend.start(handle)
    backend.signal(handle, "SIGKILL")
    status = wait_end(backend, handle)
    assert (status.exit_code, status.oom_killed) == (137, False)


def test_cgroup_limits_applied(backend):
    """CPU, memory and pids limits are written to the job's cgroup, and the job is in it."""
    spec = job("sh", "-c", "cat /proc/self/cgroup", resources={"cpus": 1.5, "memory": "128m", "pids_limit": 20})
    handle, status = run(backend, spec)
    group = backend.group(handle)
    if group.version == 1:
        assert group.read("cpu.cfs_quota_us") == "150000" and group.read("cpu.cfs_period_us") == "100000"
        assert group.read("memory.limit_in_bytes") == str(128 << 20)
    else:
        assert group.read("cpu.max") == "150000 100000" and group.read("memory.max") == str(128 << 20)
    assert group.read("pids.max") == "20"
    assert f"conveyor.process/exec-test.{handle}" in (backend.runs / handle / "stdout").read_text()


def test_pids_limit_enforced(backend):
    spec = job("sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait", resources={"pids_limit": 4})
    handle, status = run(backend, spec)
    assert b"fork" in (backend.runs / handle / "stderr").read_bytes().lower() or status.exit_code != 0


# ----------------------------------------------------------------------------- the process


def test_user_env_workdir_rlimits(backend, tmp_path):
    """The job runs as the user asked, with the spec's env (not the agent's), in its workdir,
    with its rlimits, and the default workdir is a per-job directory it can write."""
    os.environ["CONVEYOR_AGENT_SECRET"] = "leak"
    try:
        script = "id -u; id -g; echo $GREETING; echo ${CONVEYOR_AGENT_SECRET:-none}; pwd; ulimit -n; touch mine && echo wrote"
        handle, status = run(backend, job("sh", "-c", script, user="65534:65534", env={"GREETING": "hi"},
                                          ulimits=["nofile=123:456"]))
    finally:
        del os.environ["CONVEYOR_AGENT_SECRET"]
    out = (backend.runs / handle / "stdout").read_text().split("\n")
    assert status.exit_code == 0, (backend.runs / handle / "stderr").read_text()
    assert out[:4] == ["65534", "65534", "hi", "none"]
    assert out[4] == str(backend.runs / handle / "work") and out[5:7] == ["123", "wrote"]
    handle, _ = run(backend, job("pwd", workdir="/tmp"))
    assert (backend.runs / handle / "stdout").read_text() == "/tmp\n"


def test_inputs_and_outputs_through_mounts(backend, tmp_path):
    """A read-only bind at a path missing on the host is readable and not writable; an output
    path is written by the job and read back with read_archive; the host is not touched."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("input\n")
    target, out = f"/conveyor-test-in-{new_id()}", f"/conveyor-test-out-{new_id()}/deep"
    script = f"cat {target}/in.txt; touch {target}/x 2>/dev/null && echo writable; echo result > {out}/r.txt"
    spec = job("sh", "-c", script, mounts=[f"{data}:{target}:ro"], outputs=[out])
    handle, status = run(backend, spec)
    assert status.exit_code == 0, (backend.runs / handle / "stderr").read_text()
    assert (backend.runs / handle / "stdout").read_text() == "input\n"
    assert not os.path.exists(target) and not os.path.exists(os.path.dirname(out))
    with tarfile.open(fileobj=backend.read_archive(handle, out)) as tar:
        assert sorted(tar.getnames()) == ["deep", "deep/r.txt"]
        assert tar.extractfile("deep/r.txt").read() == b"result\n"
    assert backend.read_archive(handle, out + "/absent") is None


# ----------------------------------------------------------------------------- recovery


def test_second_instance_finds_live_run_and_its_exit(backend, tmp_path):
    """After an agent restart, a new backend on the same root sees the running job, can
    control it, and sees its end, with events."""
    handle = backend.create(new_id(), job("sh", "-c", "read x < /dev/zero; sleep 30"))
    backend.start(handle)
    again = ProcessBackend("exec-test", backend.root)
    assert [s.id for s in again.list()] == [handle]
    assert again.inspect(handle).status == "running"
    events = again.events(None)
    again.stop(handle, grace=2)
    assert again.inspect(handle).exit_code == 143
    assert next(events).action == "die"


def test_agent_killed_job_survives(tmp_path):
    """A job started by an agent that is then SIGKILLed goes on running under its shim."""
    root = tmp_path / "process"
    code = (f"from conveyor.backends.process import ProcessBackend; from conveyor.spec import JobSpec; "
            f"b = ProcessBackend('exec-test', {str(root)!r}); "
            f"h = b.create('survivor1', JobSpec(command=['sleep', '30'], backend='process')); b.start(h); "
            f"print('started', flush=True); import time; time.sleep(60)")
    agent = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE)
    assert agent.stdout.readline() == b"started\n"
    agent.kill()
    agent.wait()
    b = ProcessBackend("exec-test", root)
    assert b.inspect("survivor1").status == "running"
    b.remove("survivor1")
    assert b.inspect("survivor1") is None


def test_killed_shim_leaves_dead_status(backend):
    """A shim killed with SIGKILL leaves a run that says dead, exit code unknown, not a hang;
    the unsupervised job is killed."""
    handle = backend.create(new_id(), job("sleep", "30"))
    backend.start(handle)
    shim = json.loads((backend.runs / handle / "shim.json").read_text())
    os.kill(shim["shim_pid"], signal.SIGKILL)
    status = wait_end(backend, handle, timeout=5)
    assert (status.status, status.exit_code) == ("dead", None)
    assert "shim" in status.error
    wait_for(lambda: proc_start_time(shim["pid"]) is None or _zombie_or_gone(shim["pid"]))


def _zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def test_reused_pid_is_not_adopted(backend):
    """A recorded shim pid that is alive but started at another time (a reused pid) is not
    the shim: the run is dead, not running."""
    handle = backend.create(new_id(), job("true"))
    rundir = backend.runs / handle
    (rundir / "started").touch()
    me = os.getpid()  # alive, but not the shim
    (rundir / "shim.json").write_text(json.dumps({
        "shim_pid": me, "shim_start": proc_start_time(me) + 1, "pid": me, "pid_start": proc_start_time(me) + 1,
        "started_at": time.time(),
    }))
    status = backend.inspect(handle)
    assert status.status == "dead" and status.exit_code is None


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("fields, field, words", [
    ({"ports": ["8080:80"]}, "ports", "host's network"),
    ({"network": "bridge"}, "network", "use host"),
    ({"privileged": True}, "privileged", "drop privileged"),
    ({"hostname": "box"}, "hostname", "drop hostname"),
    ({"pid_mode": "container:abcdefabcdef"}, "pid_mode", "use host"),
    ({"tty": True}, "tty", "drop tty"),
    ({"mounts": [{"type": "tmpfs", "target": "/scratch"}]}, "mounts[0].type", "bind mount"),
    ({"restart": "always"}, "restart", "does not restart"),
    ({"resources": {"gpus": "all"}}, "resources.gpus", "no GPUs"),
    ({"user": "no-such-user-here"}, "user", "no user"),
])
def test_check_refuses_what_it_cannot_do(backend, fields, field, words):
    with pytest.raises(InvalidSpec) as err:
        backend.check(job("true", **fields))
    assert err.value.field == field and words in str(err.value)


def test_limits_refused_without_cgroups(backend):
    """Where no cgroup is writable, a job with limits is refused; so is any job that
    requires cgroups; a job without limits runs."""
    backend.cgroup_version = None
    with pytest.raises(InvalidSpec, match="no writable cgroup"):
        backend.check(job("true", resources={"memory": "64m"}))
    with pytest.raises(InvalidSpec, match="no writable cgroup"):
        backend.check(job("true", backend={"name": "process", "options": {"cgroup": "required"}}))
    backend.check(job("true"))
    with pytest.raises(InvalidSpec, match="cgroup=off"):
        ProcessBackend("x", backend.root).check(job("true", resources={"cpus": 1},
                                                    backend={"name": "process", "options": {"cgroup": "off"}}))


def test_no_images_and_version(backend):
    assert backend.version()["name"] == "process" and backend.version()["version"] == os.uname().release
    with pytest.raises(NotSupported, match="no images"):
        backend.images()
    with pytest.raises(ContainerNotFound):
        backend.save_logs("nope", {})


# ----------------------------------------------------------------------------- stdin


class Endless(io.RawIOBase):
    """A source that never ends; remembers the thread that reads it."""

    def __init__(self):
        self.reader = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.reader = threading.current_thread()
        buffer[:] = b"y" * len(buffer)
        return len(buffer)


def test_stdin_fed_byte_exact(backend, tmp_path):
    """What is attached reaches the job byte for byte (binary, no trailing newline, more than a
    pipe holds), and the job sees EOF after it."""
    data = bytes(range(256)) * 4096 + b"\r\n\x00end"
    handle = backend.create(new_id(), job("sh", "-c", "cat; echo eof >&2", stdin_open=True))
    backend.start(handle)
    backend.attach_stdin(handle, io.BytesIO(data))
    assert wait_end(backend, handle).exit_code == 0
    assert saved(backend, handle, tmp_path) == {"stdout": data, "stderr": b"eof\n"}


def test_stdin_streams_and_takes_one_attach(backend, tmp_path):
    """Input reaches the job as it comes, not at EOF; a second attach, or one to a job without
    stdin_open or no longer running, is refused."""
    handle = backend.create(new_id(), job("cat", stdin_open=True))
    backend.start(handle)
    r, w = os.pipe()
    backend.attach_stdin(handle, os.fdopen(r, "rb", buffering=0))
    with pytest.raises(EngineConflict, match="attached already"):
        backend.attach_stdin(handle, io.BytesIO(b"second"))
    os.write(w, b"line one\n")
    wait_for(lambda: (backend.runs / handle / "stdout").read_bytes() == b"line one\n")
    assert backend.inspect(handle).status == "running"
    os.close(w)
    assert wait_end(backend, handle).exit_code == 0
    with pytest.raises(EngineConflict):
        backend.attach_stdin(handle, io.BytesIO(b"late"))
    plain = backend.create(new_id(), job("sleep", "30"))
    backend.start(plain)
    with pytest.raises(EngineConflict, match="stdin_open"):
        backend.attach_stdin(plain, io.BytesIO(b"x"))


def test_stdin_open_waits_until_attached(backend):
    """Nobody attaches: the job's stdin stays open and empty, so cat waits, as under docker run -i."""
    handle = backend.create(new_id(), job("cat", stdin_open=True))
    backend.start(handle)
    time.sleep(1)
    assert backend.inspect(handle).status == "running"
    backend.stop(handle, grace=5)
    assert backend.inspect(handle).exit_code == 128 + signal.SIGTERM
    assert not (backend.runs / handle / "stdin.sock").exists()


@pytest.mark.parametrize("script, out", [
    ("head -c 10", b"y" * 10),  # reads a little, then exits
    ("echo out; sleep 0.5; echo more", b"out\nmore\n"),  # never reads; its output is still captured
])
def test_job_ending_while_fed_ends_the_copy(backend, tmp_path, script, out):
    """A job that exits before all its input was delivered: the shim drops the rest and records
    the end; the copy (fed by a source that never ends) stops; attach never blocks."""
    handle = backend.create(new_id(), job("sh", "-c", script, stdin_open=True))
    backend.start(handle)
    source = Endless()
    began = time.monotonic()
    backend.attach_stdin(handle, io.BufferedReader(source))
    assert time.monotonic() - began < 2
    status = wait_end(backend, handle)
    assert (status.status, status.exit_code) == ("exited", 0)
    assert saved(backend, handle, tmp_path)["stdout"] == out
    wait_for(lambda: source.reader is not None and not source.reader.is_alive())
    shim = json.loads((backend.runs / handle / "shim.json").read_text())
    wait_for(lambda: proc_start_time(shim["shim_pid"]) is None)


def test_without_stdin_open_stdin_is_devnull(backend, tmp_path):
    handle, status = run(backend, job("sh", "-c", "cat; echo eof"))
    assert status.exit_code == 0
    assert saved(backend, handle, tmp_path)["stdout"] == b"eof\n"
    assert not (backend.runs / handle / "stdin.sock").exists()


def test_executor_start_feeds_stdin(tmp_path):
    """End to end: Executor.start(spec, stdin=...) feeds the process job, wait gives its output."""
    from conveyor import Executor

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[defaults]\ncpus = 0\n[engine]\nname = "none"\n')  # process jobs only: no engine needed
    data = b"first line\nsecond \xff\x00 no newline"
    with Executor(home) as ex:
        spec = JobSpec(backend="process", command=["sh", "-c", "cat; echo done >&2"], stdin_open=True)
        job_id = ex.start(spec, stdin=io.BytesIO(data))
        result = ex.wait(job_id, timeout=30)
    assert result.exit_code == 0
    assert (result.stdout_bytes, result.stderr) == (data, "done\n")


def test_a_run_being_removed_is_gone_at_once_and_a_cut_short_removal_is_finished(backend):
    """As `docker rm -f`: inspect says the run is gone from the first step of a removal (its
    job is lost, not recorded as a plain exit of the kill), and a removal an agent crash cut
    short is finished by the next backend on the root."""
    handle = backend.create(new_id(), job("sleep", "30"))
    backend.start(handle)
    shim = json.loads((backend.runs / handle / "shim.json").read_text())
    (backend.runs / handle / "removing").touch()  # the first step of remove(), then a crash
    assert backend.inspect(handle) is None and backend.list() == []
    ProcessBackend("exec-test", backend.root)  # the next agent's backend finishes it
    assert not (backend.runs / handle).exists()
    wait_for(lambda: not same_process(shim["pid"], shim["pid_start"]))  # the job was killed
