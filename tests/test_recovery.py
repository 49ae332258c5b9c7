"""Crash safety, end to end, with the real engine (issue 3).

The supervisor runs as a separate process (``python -m conveyor --home DIR serve``), exactly as
in production, and is SIGKILLed: while jobs run, inside a launch (after the container was made,
after the job was claimed), and after a job exited but before its result was recorded. Fault
points (``CONVEYOR_FAULT``, see ``conveyor/faults.py``) stop the supervisor at an exact step so
the kill lands there every time. After a restart every job must reach its true final state with
its exit code, OOM flag and byte-exact logs; no container may be made twice or removed before its
result is stored; a stranger's container with our label is reported and left alone.

The engine-restart test starts a private dockerd (own data root, exec root, socket and
containerd): the shared engine other people's tests use is never restarted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import docker.errors
import pytest

from conveyor import Executor, JobState, Substate, WaitTimeout
from conveyor.backends.base import LABEL_EXECUTOR, LABEL_JOB, LABEL_MANAGED
from conveyor.home import Home
from helpers import SupervisorProcess, eventually, sh

WAIT = 60


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def supervisor(state_dir, tmp_path, docker_client, test_image):
    # Jobs without a CPU request take no CPU share here: these tests hold up to 20 sleeping
    # jobs at once on 2 cores, and are about crash safety, not admission.
    (state_dir / "config.toml").write_text("[defaults]\ncpus = 0\n")
    sup = SupervisorProcess(state_dir, tmp_path)
    try:
        yield sup
    finally:
        sup.stop()
        # Remove only the containers this test's executor made.
        executor_id = Home(state_dir).executor_id()
        for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_EXECUTOR}={executor_id}"}):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass  # removed meanwhile


@pytest.fixture
def client(state_dir):
    """A client Executor: writes the store and pokes the supervisor, never supervises."""
    ex = Executor(state_dir, supervise=False)
    try:
        yield ex
    finally:
        ex.close()


def containers_of(docker_client, job_id: str) -> list:
    # sparse: one list call, no per-container inspect (that 404s on a container being removed)
    return docker_client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL_JOB}={job_id}"})


def runs_of(ex: Executor, job_id: str) -> int:
    """How many times the store says the job went Running (a relaunch would add one)."""
    return sum(1 for t in ex.store.transitions(job_id) if t.to_state is JobState.RUNNING)


def engine_state(docker_client, container_id: str) -> dict:
    return docker_client.api.inspect_container(container_id)["State"]


# ----------------------------------------------------------------------------- SIGKILL while jobs run


def test_sigkill_while_jobs_run_reattaches_them(supervisor, client, test_image, docker_client, tmp_path):
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    n = 20
    specs = [
        sh(
            test_image,
            f"echo start-{i}; echo warn-{i} >&2; while [ ! -e /ctl/go ]; do sleep 0.5; done; echo end-{i}; exit {i % 4}",
            mounts=[f"{ctl}:/ctl:ro"],
            network="none",
            auto_remove=i % 2 == 0,
        )
        for i in range(n)
    ]
    supervisor.start()
    ids = [client.submit(s) for s in specs]
    for job_id in ids:
        assert client.wait_started(job_id, timeout=WAIT).state is JobState.RUNNING
    before = {job_id: client.info(job_id).container_id for job_id in ids}
    threads_before = supervisor.threads

    supervisor.kill()
    for cid in before.values():  # the jobs do not notice
        assert engine_state(docker_client, cid)["Status"] == "running"

    supervisor.start()
    assert f"{n} live jobs re-attached" in supervisor.log()
    # Supervision is one event stream and a few pools, not a thread per job.
    assert supervisor.threads < 30, supervisor.threads
    assert threads_before < 30, threads_before

    (ctl / "go").touch()
    for i, job_id in enumerate(ids):
        job = client.wait(job_id, timeout=WAIT)
        code = i % 4
        assert (job.state, job.substate, job.exit_code) == (
            JobState.DONE if code == 0 else JobState.FAILED, Substate.EXITED, code
        ), job.message
        assert job.stdout == f"start-{i}\nend-{i}\n"
        assert job.stderr == f"warn-{i}\n"
        assert job.container_id == before[job_id]
        assert runs_of(client, job_id) == 1  # re-attached, never launched again
        if specs[i].auto_remove:  # removed right after the result was recorded
            eventually("auto-remove container removed", lambda: containers_of(docker_client, job_id) == [])
        else:
            assert [c.id for c in containers_of(docker_client, job_id)] == [before[job_id]]


# ----------------------------------------------------------------------------- exits while nobody supervises


def test_jobs_that_exit_while_unsupervised_get_their_true_result(supervisor, client, test_image, docker_client, tmp_path):
    """Jobs that end while no supervisor runs get, once one is back, their true exit code,
    OOM flag, logs and end time (the engine's, not the moment the supervisor noticed)."""
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    gate = "while [ ! -e /ctl/go ]; do sleep 0.2; done; "
    common = dict(mounts=[f"{ctl}:/ctl:ro"], network="none")
    lines = "".join(f"line {i} of many\n" for i in range(5000))
    jobs = {
        "ok": sh(test_image, gate + "echo fine", **common),
        "code": sh(test_image, gate + "echo out; echo err >&2; exit 5", **common),
        "oom": sh(
            test_image,
            gate + "echo before-oom; dd if=/dev/zero of=/dev/null bs=100M count=1",
            resources={"memory": "32m", "memory_swap": "32m"},
            **common,
        ),
        "kill9": sh(test_image, gate + 'echo killed; sh -c "kill -9 \\$\\$"; exit $?', **common),
        "many": sh(test_image, gate + "i=0; while [ $i -lt 5000 ]; do echo \"line $i of many\"; i=$((i+1)); done",
                   auto_remove=True, **common),
    }
    supervisor.start()
    ids = {name: client.submit(spec) for name, spec in jobs.items()}
    cids = {name: client.wait_started(job_id, timeout=WAIT).container_id for name, job_id in ids.items()}
    supervisor.kill()

    (ctl / "go").touch()  # every job ends now, with nothing watching
    for name, cid in cids.items():
        eventually(f"{name} exited", lambda: engine_state(docker_client, cid)["Status"] == "exited")
    for name, job_id in ids.items():
        assert client.info(job_id).state is JobState.RUNNING  # nobody recorded anything
    assert engine_state(docker_client, cids["many"])["Status"] == "exited"  # and nobody removed it

    restarted_at = time.time()
    supervisor.start()
    results = {name: client.wait(job_id, timeout=WAIT) for name, job_id in ids.items()}
    ok, code, oom, kill9, many = (results[k] for k in ("ok", "code", "oom", "kill9", "many"))
    assert (ok.state, ok.exit_code, ok.stdout) == (JobState.DONE, 0, "fine\n")
    assert (code.state, code.substate, code.exit_code, code.stdout, code.stderr) == (
        JobState.FAILED, Substate.EXITED, 5, "out\n", "err\n"
    )
    assert (oom.state, oom.substate, oom.exit_code, oom.stdout) == (
        JobState.FAILED, Substate.OOM_KILLED, 137, "before-oom\n"
    ), oom.message
    assert engine_state(docker_client, cids["oom"])["OOMKilled"] is True
    # 137 without the engine's OOM flag is a kill, not an OOM.
    assert (kill9.state, kill9.substate, kill9.exit_code, kill9.stdout) == (
        JobState.FAILED, Substate.EXITED, 137, "killed\n"
    )
    assert many.state is JobState.DONE and many.stdout_bytes == lines.encode()
    # The true times come from the engine: every job ended before the supervisor came back,
    # so an end time taken from when the restarted supervisor noticed would be after that.
    for name, job in results.items():
        assert job.started_at <= job.finished_at < restarted_at, (name, job.started_at, job.finished_at, restarted_at)
    # removed, right after its results were stored
    eventually("auto-remove container removed", lambda: containers_of(docker_client, ids["many"]) == [])
    for name in ("ok", "code", "oom", "kill9"):
        assert [c.id for c in containers_of(docker_client, ids[name])] == [cids[name]]


# ----------------------------------------------------------------------------- SIGKILL inside a launch


def test_sigkill_after_create_and_after_claim_makes_no_second_container(supervisor, client, test_image, docker_client):
    supervisor.start(fault="after-create")
    job_id = client.submit(sh(test_image, "echo ran; exit 4", network="none"))
    supervisor.wait_fault("after-create", job_id)
    supervisor.kill()
    made = containers_of(docker_client, job_id)
    assert [c.status for c in made] == ["created"]
    rec = client.store.get(job_id)
    assert (rec.state, rec.container_id) == (JobState.QUEUED, None)  # the crash came before recording it

    # The next supervisor adopts that container, claims the job, and is killed before starting it.
    supervisor.start(fault="after-claim")
    supervisor.wait_fault("after-claim", job_id)
    supervisor.kill()
    rec = client.store.get(job_id)
    assert (rec.state, rec.container_id) == (JobState.RUNNING, made[0].id)
    assert engine_state(docker_client, made[0].id)["Status"] == "created"

    # The third starts the claimed job's container: once, the same container.
    supervisor.start()
    job = client.wait(job_id, timeout=WAIT)
    assert (job.state, job.substate, job.exit_code, job.stdout) == (JobState.FAILED, Substate.EXITED, 4, "ran\n")
    assert [c.id for c in containers_of(docker_client, job_id)] == [made[0].id]
    assert runs_of(client, job_id) == 1


# ----------------------------------------------------------------------------- SIGKILL while finishing


def test_sigkill_between_logs_record_and_remove_loses_nothing(supervisor, client, test_image, docker_client):
    supervisor.start(fault="after-logs")
    job_id = client.submit(sh(test_image, "echo result; echo detail >&2; exit 2", auto_remove=True, network="none"))
    supervisor.wait_fault("after-logs", job_id)
    supervisor.kill()
    cid = client.store.get(job_id).container_id
    assert client.info(job_id).state is JobState.RUNNING  # not recorded yet...
    assert engine_state(docker_client, cid)["Status"] == "exited"  # ...so the container is still there

    supervisor.start(fault="after-record")
    supervisor.wait_fault("after-record", job_id)
    supervisor.kill()
    job = client.info(job_id)
    assert (job.state, job.exit_code, job.stdout, job.stderr) == (JobState.FAILED, 2, "result\n", "detail\n")
    assert engine_state(docker_client, cid)["Status"] == "exited"  # recorded, not yet removed

    supervisor.start()  # the result is in: now (and only now) the container goes
    eventually("auto-remove container removed", lambda: containers_of(docker_client, job_id) == [])
    job = client.info(job_id)
    assert (job.state, job.exit_code, job.stdout, job.stderr) == (JobState.FAILED, 2, "result\n", "detail\n")
    assert [t.to_state for t in client.store.transitions(job_id)] == [JobState.QUEUED, JobState.RUNNING, JobState.FAILED]


# ----------------------------------------------------------------------------- orphans


def test_unknown_container_with_our_label_is_reported_never_adopted(supervisor, client, test_image, docker_client):
    """A container that carries this executor's label but no job of its store (another
    copy of the state directory, a hand-made one) is reported, never adopted into the store
    and never removed: not at start, not when it ends, not after a restart."""
    stranger_job = "0rphan" + os.urandom(3).hex()
    stranger = docker_client.containers.run(
        test_image, ["sleep", "120"], detach=True, network_mode="none",
        labels={LABEL_MANAGED: "true", LABEL_EXECUTOR: client.executor_id, LABEL_JOB: stranger_job},
    )
    supervisor.start()
    assert f"orphan container {stranger.id[:12]}" in supervisor.log()
    assert "1 orphan containers" in supervisor.log()
    assert client.orphans == [stranger.id]
    # The supervisor keeps working, and keeps its hands off the stranger.
    done = client.wait(client.submit(sh(test_image, "echo normal", network="none")), timeout=WAIT)
    assert done.state is JobState.DONE
    stranger.kill()  # its end is an event the supervisor receives: it must not act on it
    eventually("stranger exited", lambda: engine_state(docker_client, stranger.id)["Status"] == "exited")
    # Events are read in order: once a job submitted after the stranger's end is recorded,
    # the supervisor has had the stranger's "die" event too, and a second more to act on it.
    after = client.wait(client.submit(sh(test_image, "sleep 1; echo after", network="none")), timeout=WAIT)
    assert after.state is JobState.DONE
    stranger_left = lambda: [(c.id, c.status) for c in containers_of(docker_client, stranger_job)]  # noqa: E731
    assert stranger_left() == [(stranger.id, "exited")], "the stranger's container was removed when it ended"
    supervisor.kill()
    supervisor.start()
    assert stranger_left() == [(stranger.id, "exited")], "the stranger's container was removed at restart"
    assert client.orphans == [stranger.id]
    assert sorted(j.id for j in client.list()) == sorted([done.id, after.id])  # not adopted into the store


# ----------------------------------------------------------------------------- 100 MB of output


def _big_output(lines: int) -> tuple[bytes, bytes]:
    pad = "x" * 1014
    out = "".join(f"{i:08d} {pad}\n" for i in range(lines)).encode()
    err = "".join(f"err {i:08d}\n" for i in range(0, lines, 1024)).encode()
    return out, err


def test_100_mb_of_output_is_kept_byte_exact(state_dir, test_image):
    lines = 102400  # x 1024 bytes = 100 MiB on stdout, plus a line on stderr every 1024
    want_out, want_err = _big_output(lines)
    assert len(want_out) == 100 * 2**20
    script = (
        "sleep 1; awk 'BEGIN { pad = sprintf(\"%1014s\", \"\"); gsub(/ /, \"x\", pad); "
        f"for (i = 0; i < {lines}; i++) {{ printf \"%08d %s\\n\", i, pad; "
        "if (i % 1024 == 0) printf \"err %08d\\n\", i > \"/dev/stderr\" } }'"
    )
    with Executor(state_dir) as ex:
        job_id = ex.start(sh(test_image, script, network="none"))
        assert ex.info(job_id).state is JobState.RUNNING
        digests = {"stdout": hashlib.sha256(), "stderr": hashlib.sha256()}
        sizes = dict.fromkeys(digests, 0)
        for stream, chunk in ex.logs(job_id, follow=True):  # live, from the start
            digests[stream].update(chunk)
            sizes[stream] += len(chunk)
        assert sizes == {"stdout": len(want_out), "stderr": len(want_err)}
        assert digests["stdout"].hexdigest() == hashlib.sha256(want_out).hexdigest()
        assert digests["stderr"].hexdigest() == hashlib.sha256(want_err).hexdigest()

        job = ex.wait(job_id, timeout=WAIT)
        assert job.state is JobState.DONE, job.message
        stored = job.logs_dir / "stdout"
        assert stored.stat().st_size == len(want_out)
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(want_out).hexdigest()
        assert job.stderr_bytes == want_err
        ex.cleanup()


# ----------------------------------------------------------------------------- waiting and identity


def test_wait_any_and_wait_started(supervisor, client, test_image):
    supervisor.start()
    slow = client.submit(sh(test_image, "sleep 8", network="none"))
    fast = client.submit(sh(test_image, "sleep 1; exit 1", network="none"))
    middle = client.submit(sh(test_image, "sleep 4", network="none"))
    first = client.wait_any([slow, fast, middle], timeout=WAIT)
    assert (first.id, first.state, first.exit_code) == (fast, JobState.FAILED, 1)
    with pytest.raises(WaitTimeout):
        client.wait_any([slow, middle], timeout=0.5)
    second = client.wait_any([slow, middle], timeout=WAIT)
    assert (second.id, second.state) == (middle, JobState.DONE)
    assert not client.info(slow).state.is_final  # wait_any did not wait for the last one

    held = client.submit(sh(test_image, "sleep 5", network="none"), hold=True)
    with pytest.raises(WaitTimeout):
        client.wait_started(held, timeout=1)
    assert client.info(held).state is JobState.QUEUED_HELD
    client.release(held)
    started = client.wait_started(held, timeout=WAIT)
    assert started.state is JobState.RUNNING and started.container_id
    assert client.wait(held, timeout=WAIT).state is JobState.DONE


_SUBMIT_SCRIPT = """
import sys, threading, json
from conveyor import Executor, JobSpec
home, image, key, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
spec = JobSpec(image=image, command=["sh", "-c", "echo one run"], network="none")
barrier, out = threading.Barrier(n), []
def go():
    with Executor(home, supervise=False) as ex:
        barrier.wait()
        out.append(ex.submit(spec, idempotency_key=key))
threads = [threading.Thread(target=go) for _ in range(n)]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(out))
"""


def test_idempotency_keys_across_threads_and_processes(supervisor, client, test_image, docker_client, state_dir):
    supervisor.start()
    spec = sh(test_image, "echo hi", network="none")
    first = client.submit(spec, idempotency_key="nightly-2026-11-23")
    assert client.submit(spec, idempotency_key="nightly-2026-11-23") == first
    by_digest = client.submit(spec, idempotency_key="digest")
    assert client.submit(sh(test_image, "echo hi", network="none"), idempotency_key="digest") == by_digest
    assert by_digest not in (first,) and len(first) <= 16 and len(by_digest) <= 16

    # Two processes with four threads each submit the same key at the same moment.
    procs = [
        subprocess.Popen([sys.executable, "-c", _SUBMIT_SCRIPT, str(state_dir), test_image, "race", "4"],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    ids = set()
    for p in procs:
        out, _ = p.communicate(timeout=WAIT)
        assert p.returncode == 0
        ids.update(json.loads(out))
    assert len(ids) == 1
    (raced,) = ids
    job = client.wait(raced, timeout=WAIT)
    assert (job.state, job.stdout) == (JobState.DONE, "one run\n")
    assert len(containers_of(docker_client, raced)) == 1
    assert len([j for j in client.list() if j.id == raced]) == 1
    assert len(client.list()) == 3  # first, by_digest, raced: nothing else was made
    for job_id in (first, by_digest):
        assert client.wait(job_id, timeout=WAIT).state is JobState.DONE


# ----------------------------------------------------------------------------- a dockerd restart


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class PrivateDockerd:
    """A second dockerd with its own data root, exec root, socket and containerd, in its own
    network namespace, without bridge or iptables: restarting it cannot disturb the shared
    engine or anyone's containers. The namespace matters: a dockerd started with --bridge=none
    deletes the host's docker0, which the shared engine's bridge network needs."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="cvd-", dir="/tmp"))  # short: socket paths are limited
        (self.base / "daemon.json").write_text("{}")  # not the host's /etc/docker/daemon.json
        self.url = f"unix://{self.base}/docker.sock"
        self.proc: subprocess.Popen | None = None
        # One network namespace for every start: containerd shims listen on abstract sockets,
        # which belong to a namespace, and a restarted dockerd must reach the old shims.
        self.netns = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"])
        host_ns = os.readlink("/proc/self/ns/net")
        eventually("own network namespace", lambda: os.readlink(f"/proc/{self.netns.pid}/ns/net") != host_ns)

    def start(self, live_restore: bool) -> docker.APIClient:
        args = [
            "nsenter", f"--net=/proc/{self.netns.pid}/ns/net", "--", "dockerd", "--config-file", f"{self.base}/daemon.json", "--data-root", f"{self.base}/root",
            "--exec-root", f"{self.base}/exec", "--pidfile", f"{self.base}/dockerd.pid", "-H", self.url,
            "--bridge=none", "--iptables=false", "--ip-masq=false", "--storage-driver=vfs",
        ] + (["--live-restore"] if live_restore else [])
        with open(self.base / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        api = docker.APIClient(base_url=self.url, version="1.41", timeout=60)  # "auto" would connect at once

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"private dockerd exited:\n{(self.base / 'dockerd.log').read_text()[-3000:]}")
            try:
                return api.ping()
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        eventually("private dockerd answers", up, timeout=60, every=0.2)
        return api

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def kill(self) -> None:
        """SIGKILL to dockerd and its containerd (the process group it leads): the engine dies
        without a word, as on an OOM kill of the daemon; the containers' shims live on."""
        if self.proc is not None and self.proc.poll() is None:
            pidfile = self.base / "exec" / "containerd" / "containerd.pid"
            containerd = int(pidfile.read_text()) if pidfile.exists() else None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)
            if containerd is not None:
                # It dies with dockerd, and stays a zombie until init reaps it; a dockerd started
                # before then takes it for alive ("containerd is still running") and waits on a
                # socket nobody serves.
                eventually("containerd gone", lambda: not _alive(containerd), timeout=60)

    def destroy(self) -> None:
        try:
            if self.proc is None or self.proc.poll() is not None:
                self.start(live_restore=False)
            api = docker.APIClient(base_url=self.url, version="1.41", timeout=60)  # "auto" would connect at once
            for c in api.containers(all=True):  # everything in this engine is this test's
                api.remove_container(c["Id"], force=True)
        finally:
            self.stop()
            self.netns.kill()
            self.netns.wait()
            # dockerd bind-mounts its data root onto itself and leaves that mount behind.
            mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
            for target in sorted((m for m in mounts if m.startswith(f"{self.base}/")), reverse=True):
                subprocess.run(["umount", "-l", target], check=False)
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def private_dockerd(docker_client, test_image):
    if os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("unshare"):
        pytest.skip("a private dockerd needs root, dockerd and unshare")
    had_docker0 = os.path.exists("/sys/class/net/docker0")
    engine = PrivateDockerd()
    try:
        api = engine.start(live_restore=True)
        image = docker_client.api.get_image(test_image)  # docker save | docker load
        api.load_image(b"".join(image))
        yield engine
    finally:
        engine.destroy()
        # The shared engine's bridge is still there.
        assert os.path.exists("/sys/class/net/docker0") == had_docker0


def _jobs_outlive_the_engine(ex, engine, test_image, go_down) -> None:
    """With live-restore the jobs outlive the engine (stopped or killed by ``go_down``): one
    ends while it is down, and both get their own exit code and output once it is back."""
    survivor = ex.start(sh(test_image, "echo a; sleep 15; echo b; exit 3", network="none"))
    ends_meanwhile = ex.start(sh(test_image, "echo q; sleep 1; exit 4", network="none", auto_remove=True))
    # ex.start returns at the claim, which comes before the engine's start: this part is
    # about processes that outlive the engine, so both must have begun by the engine's word.
    api = docker.APIClient(base_url=engine.url, version="1.41", timeout=60)
    for job_id in (survivor, ends_meanwhile):
        cid = ex.info(job_id).container_id
        eventually("started in the engine", lambda: not api.inspect_container(cid)["State"]["StartedAt"].startswith("0001"))
    go_down()
    time.sleep(3)  # `ends_meanwhile` exits now, unseen by the engine's API
    for job_id in (survivor, ends_meanwhile):
        assert ex.info(job_id).state is JobState.RUNNING  # nothing concluded from a lost stream
    api = engine.start(live_restore=True)
    assert api.inspect_container(ex.info(survivor).container_id)["State"]["Status"] == "running"
    quick = ex.wait(ends_meanwhile, timeout=WAIT)
    assert (quick.state, quick.substate, quick.exit_code, quick.stdout) == (JobState.FAILED, Substate.EXITED, 4, "q\n")
    job = ex.wait(survivor, timeout=WAIT)
    assert (job.state, job.substate, job.exit_code, job.stdout) == (JobState.FAILED, Substate.EXITED, 3, "a\nb\n")


def _the_engine_ends_a_job(ex, engine, test_image, go_down, script: str):
    """Without live-restore: a job that printed "up" when the engine went down (``go_down``),
    as the executor recorded it once the engine is back, and the engine's own State of it;
    then a job runs on the restarted engine as ever."""
    engine.stop()
    api = engine.start(live_restore=False)
    job_id = ex.start(sh(test_image, script, network="none"))
    eventually("the job printed up", lambda: b"up" in api.logs(ex.info(job_id).container_id))
    go_down()
    api = engine.start(live_restore=False)
    ended = ex.wait(job_id, timeout=WAIT)
    after = ex.run(sh(test_image, "echo again", network="none"), timeout=WAIT)
    assert (after.state, after.stdout) == (JobState.DONE, "again\n")
    return ended, api.inspect_container(ended.container_id)["State"]


def test_dockerd_restart_while_jobs_run(private_dockerd, state_dir, test_image):
    """An engine restart never makes the executor conclude anything from its lost event
    stream: jobs that outlive the engine are followed on, and jobs the engine stopped get
    the exit code and output the engine says, never a made-up result."""
    engine = private_dockerd
    with Executor(state_dir, docker_url=engine.url) as ex:
        _jobs_outlive_the_engine(ex, engine, test_image, engine.stop)

        # Without live-restore the engine stops its containers when it goes down: the state
        # recorded is what the engine says happened, never a made-up success. Whether the
        # executor saw the job's end before its stream broke or only reconciles it now, a
        # final state is never revised: what it holds is what it concluded.
        killed, engine_says = _the_engine_ends_a_job(
            ex, engine, test_image, engine.stop, "trap 'echo term; exit 143' TERM; echo up; sleep 60 & wait")
        assert engine_says["Status"] == "exited" and engine_says["ExitCode"] == 143
        assert (killed.state, killed.substate, killed.exit_code, killed.stdout) == (
            JobState.FAILED, Substate.EXITED, 143, "up\nterm\n"
        )


def test_dockerd_sigkilled_mid_run(private_dockerd, state_dir, test_image):
    """The engine SIGKILLed (no shutdown, no last events) while jobs run: with live-restore the
    jobs run on and one that ends while the engine is dead gets its true exit code and output
    once it is back; without, the engine ends them as it restarts and each job gets the end the
    engine records for it, never a made-up one."""
    engine = private_dockerd
    with Executor(state_dir, docker_url=engine.url) as ex:
        _jobs_outlive_the_engine(ex, engine, test_image, engine.kill)

        ended, engine_says = _the_engine_ends_a_job(ex, engine, test_image, engine.kill, "echo up; sleep 60")
        assert engine_says["Status"] == "exited" and not engine_says["Running"]
        assert (ended.state, ended.exit_code, ended.stdout) == (JobState.FAILED, engine_says["ExitCode"], "up\n"), engine_says
