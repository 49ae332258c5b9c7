"""The kill-point walk (issue 20): the agent SIGKILLed at every durable step of every path.

``conveyor.faults.Point`` lists every durable step. For each one this file has a scenario that
puts jobs of the kind that reach it in flight, arms the point (``CONVEYOR_FAULT``), waits for
the agent (``conveyor serve``, a separate process as in production) to stop there, SIGKILLs
it, starts it again and checks what a user relies on:

- every job reaches its true final state, once (its history goes Running once per attempt);
- no claimed job runs twice: each job appends a line to a bind-mounted file per run;
- exit codes and every byte of stdout and stderr are what the job wrote;
- outputs are captured with the digest of what the job wrote;
- no container is left without its job, and ``conveyor fsck`` finds nothing to repair.

The scenarios run concurrently, each in its own state directory, so the whole walk stays
within CI's time. A point added to the list without a scenario here, or one the walk does not
reach, fails :func:`test_every_fault_point_has_a_scenario` or the walk itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import docker.errors
import pytest

from conveyor import Client, Executor, JobState, Substate
from conveyor.backends.base import LABEL_EXECUTOR
from conveyor.cas import BlobStore
from conveyor.faults import Point, armed
from conveyor.home import Home
from helpers import SupervisorProcess, eventually, sh

WAIT = 60
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.load, as tests/test_bench.py does
INPUT = b"input bytes\n"
WALKERS = 7  # scenarios at once: each is mostly waiting on its agent's start and its jobs


@dataclass
class World:
    """One scenario's state directory, agent, observing executor and job fixtures."""

    root: Path
    image: str
    docker: object
    sup: SupervisorProcess = field(init=False)
    ex: Executor = field(init=False)
    runs: Path = field(init=False)
    ctl: Path = field(init=False)
    data: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        for d in ("home", "runs", "ctl", "data", "logs"):
            (self.root / d).mkdir(parents=True)
        self.runs, self.ctl, self.data = self.root / "runs", self.root / "ctl", self.root / "data"
        (self.data / "a.txt").write_bytes(INPUT)
        (self.home / "config.toml").write_text("[defaults]\ncpus = 0\n")
        self.sup = SupervisorProcess(self.home, self.root / "logs")
        self.cut_requests: list[str] = []
        self.ex = Executor(self.home, supervise=False)

    # ---------------------------------------------------------------- jobs

    def job(self, name: str, script: str, **kw):
        """A job that notes each run of it in runs/<name>, then runs ``script``."""
        mounts = [f"{self.runs}:/runs", f"{self.ctl}:/ctl:ro"]
        return sh(self.image, f"echo run >> /runs/{name}; {script}", mounts=mounts, network="none", **kw)

    def full(self, name: str = "full"):
        """Inputs staged, outputs captured, both streams, a non-zero exit: every launch and
        finish step of a plain job."""
        return self.job(name, "cat /in/a.txt; echo err-out >&2; mkdir -p /out; cp /in/a.txt /out/r; exit 3",
                        inputs=[f"{self.data}:/in"], outputs=["/out"])

    def running(self, spec) -> str:
        """Submit ``spec`` and return its id once it runs: this Executor does not supervise, so
        its start() returns at once, and the agent may not have launched the job yet."""
        job_id = self.ex.start(spec)
        assert self.ex.wait_started(job_id, timeout=WAIT).state is JobState.RUNNING
        return job_id

    def gated(self, name: str):
        """Runs until ctl/go exists, then exits 0."""
        return self.job(name, "echo up; while [ ! -e /ctl/go ]; do sleep 0.2; done; echo end")

    def run_count(self, name: str) -> int:
        path = self.runs / name
        return len(path.read_text().splitlines()) if path.exists() else 0

    def client(self) -> Client:
        return Client(self.home, timeout=WAIT)

    def in_background(self, call: Callable[[Client], object]) -> threading.Thread:
        """A request the armed agent stops in the middle of: it fails when the agent dies."""

        def go() -> None:
            client = self.client()
            try:
                call(client)
            except Exception as exc:  # noqa: BLE001 - cut by the kill, as a user's request would be
                self.cut_requests.append(f"{type(exc).__name__}: {exc}")  # named if the point is never reached
            finally:
                client.close()

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        return thread

    def start(self, point: Point | None = None) -> None:
        """Start the agent (armed at ``point``); ready once its API answers."""
        self.sup.start(fault=point.value if point else None)
        client = self.client()
        eventually("the agent's API answers", lambda: _answers(client), every=0.2)
        client.close()

    def crash_at(self, point: Point, subject: str) -> None:
        try:
            self.sup.wait_fault(point.value, subject)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; requests cut: {self.cut_requests}") from None
        self.sup.kill()
        self.start()

    # ---------------------------------------------------------------- invariants

    def check_full(self, job_id: str, name: str = "full") -> None:
        job = self.ex.wait(job_id, timeout=WAIT)
        assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.EXITED, 3), job.message
        assert (job.stdout_bytes, job.stderr) == (INPUT, "err-out\n")
        files = {f["path"]: f for f in self.ex.outputs(job_id)}
        assert files["/out/r"]["digest"] == "sha256:" + hashlib.sha256(INPUT).hexdigest(), files
        assert self.ex.read_output(job_id, "/out/r") == INPUT
        assert self.run_count(name) == 1
        assert self.attempts(job_id) == 1

    def attempts(self, job_id: str) -> int:
        """How many times the job was claimed to run (a resume is not a new attempt)."""
        return self.ex.store.get(job_id).attempt

    def check_clean(self) -> None:
        """Every job final, every container of this executor belongs to a job, fsck clean."""
        for job in self.ex.list():
            assert job.state.is_final, (job.id, job.state)
        report = self.client().fsck()
        assert report["problems"] == [], report

    def close(self) -> None:
        self.sup.stop()
        self.ex.close()
        executor_id = Home(self.home).executor_id()
        for c in self.docker.containers.list(all=True, filters={"label": f"{LABEL_EXECUTOR}={executor_id}"}):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass


def _answers(client: Client) -> bool:
    try:
        client.api.call("GET", "/ping")
        return True
    except Exception:  # noqa: BLE001 - not listening yet
        return False


# ----------------------------------------------------------------------------- the scenarios


def launch_or_finish_step(point: Point) -> Callable[[World], None]:
    """Points on the launch and finish path of one plain job: crash there, then the job's true
    result, once."""

    def scenario(w: World) -> None:
        w.start(point)
        job_id = w.ex.submit(w.full())
        w.crash_at(point, job_id)
        w.check_full(job_id)

    return scenario


def submitted(w: World) -> None:
    """The agent dies after recording a submit, before answering: the client's retry with its
    idempotency key finds that job; it runs once."""
    w.start(Point.SUBMITTED)
    w.in_background(lambda c: c.submit(w.full(), idempotency_key="once"))
    eventually("the job recorded", lambda: w.ex.list())
    (job,) = w.ex.list()
    w.crash_at(Point.SUBMITTED, job.id)
    assert w.client().submit(w.full(), idempotency_key="once") == job.id
    w.check_full(job.id)
    assert len(w.ex.list()) == 1


def array_submitted(w: World) -> None:
    w.start(Point.ARRAY_SUBMITTED)
    spec = w.job("task-$CONVEYOR_TASK_ID", "echo task $CONVEYOR_TASK_ID")
    w.in_background(lambda c: c.submit_array(spec, 0, 2))
    eventually("the array recorded", lambda: w.ex.store.query("SELECT id FROM arrays"))
    ((array_id,),) = w.ex.store.query("SELECT id FROM arrays")
    w.crash_at(Point.ARRAY_SUBMITTED, array_id)
    tasks = w.ex.list()
    tasks = [w.ex.store.get(t.id) for t in tasks]
    assert sorted(t.array_index for t in tasks) == [0, 1, 2]
    for t in tasks:
        job = w.ex.wait(t.id, timeout=WAIT)
        assert (job.state, job.stdout) == (JobState.DONE, f"task {t.array_index}\n")
        assert w.run_count(f"task-{t.array_index}") == 1 and w.attempts(t.id) == 1


def _batch(w: World) -> list:
    return [w.full(f"batch-{i}") for i in range(3)]


def batch_writing(w: World) -> None:
    """A batch submit cut inside its transaction: none of its jobs exists; sent again, each
    runs once."""
    w.start(Point.BATCH_WRITING)
    w.in_background(lambda c: c.submit_many(_batch(w)))
    first = _fault_subject(w)
    w.crash_at(Point.BATCH_WRITING, first)
    assert w.ex.list() == [] and w.ex.store.query("SELECT COUNT(*) FROM transitions") == [(0,)]
    for job_id, i in zip(w.client().submit_many(_batch(w)), range(3)):
        w.check_full(job_id, f"batch-{i}")


def batch_submitted(w: World) -> None:
    """A batch submit cut after its commit, before it woke the scheduler: every job of it runs, once."""
    w.start(Point.BATCH_SUBMITTED)
    w.in_background(lambda c: c.submit_many(_batch(w)))
    first = _fault_subject(w)
    w.crash_at(Point.BATCH_SUBMITTED, first)
    jobs = w.ex.list()
    assert len(jobs) == 3 and jobs[0].id == first
    for job, i in zip(jobs, range(3)):
        w.check_full(job.id, f"batch-{i}")


def _fault_subject(w: World) -> str:
    eventually("the fault point reached", lambda: w.sup.fault_file.exists() and w.sup.fault_file.read_text())
    return w.sup.fault_file.read_text().split()[1]


def pruned_at(point: Point) -> Callable[[World], None]:
    """prune cut with two ended jobs (containers, saved logs, outputs) doomed and one kept: each
    doomed job is there whole (its record, logs, outputs and container) or gone whole, never
    half, and the restarted agent leaves nothing of a forgotten one behind."""

    def scenario(w: World) -> None:
        w.start(point)
        old = [w.ex.submit(w.full(f"old-{i}")) for i in range(2)]
        kept = w.ex.submit(w.full("kept"))
        for i, job_id in enumerate(old):
            w.check_full(job_id, f"old-{i}")
        w.check_full(kept, "kept")
        containers = {j: w.ex.store.get(j).container_id for j in old}
        with sqlite3.connect(Home(w.home).db) as db:  # ended long ago (prune never takes a job that ended just now)
            for days, job_id in zip((2, 1), old):
                db.execute("UPDATE jobs SET finished_at = finished_at - ? WHERE id = ?", (days * 86400, job_id))
        w.in_background(lambda c: c.api.prune(until=time.time() - 3600))
        w.crash_at(point, old[0])
        whole = point is Point.PRUNE_DECIDED  # the records went at PRUNE_FORGOTTEN: the rest follows them
        for i, job_id in enumerate(old):
            assert _pruned_parts(w, job_id, containers[job_id]) == ({"record", "logs", "container"} if whole else set())
            if whole:
                w.check_full(job_id, f"old-{i}")
        if whole:
            assert w.client().api.prune(until=time.time() - 3600)["jobs"] == 2
            assert [_pruned_parts(w, j, containers[j]) for j in old] == [set(), set()]
        assert not list((Home(w.home).root / "pruning").glob("*"))
        w.check_full(kept, "kept")

    return scenario


def _pruned_parts(w: World, job_id: str, container_id: str) -> set[str]:
    """Which parts of a job are still there."""
    parts = set()
    if w.ex.store.missing([job_id]) == []:
        parts.add("record")
    if w.ex.home.job_logs(job_id).exists():
        parts.add("logs")
    try:
        w.docker.containers.get(container_id)
        parts.add("container")
    except docker.errors.NotFound:
        pass
    return parts


def retired(w: World) -> None:
    """A job with a retry: its first attempt fails, the crash comes while the next is set up."""
    w.start(Point.RETIRED)
    job_id = w.ex.submit(w.job("retry", 'echo "attempt $CONVEYOR_ATTEMPT"; [ "$CONVEYOR_ATTEMPT" = 2 ]', retries=1))
    w.crash_at(Point.RETIRED, job_id)
    job = w.ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.exit_code, job.stdout) == (JobState.DONE, 0, "attempt 2\n")
    assert w.run_count("retry") == 2 and w.attempts(job_id) == 2
    assert (job.logs_dir / "attempt-1" / "stdout").read_text() == "attempt 1\n"


def dependency_failed(w: World) -> None:
    w.start(Point.DEPENDENCY_FAILED)
    first = w.ex.submit(w.job("first", "exit 1"))
    after = w.ex.submit(w.job("after", "echo never", after=[first]))
    w.crash_at(Point.DEPENDENCY_FAILED, after)
    job = w.ex.wait(after, timeout=WAIT)
    assert (job.state, job.substate) == (JobState.FAILED, Substate.DEPENDENCY_FAILED)
    assert w.run_count("after") == 0 and w.ex.wait(first, timeout=WAIT).exit_code == 1


def paused(w: World) -> None:
    """Frozen by the engine, not yet recorded: after the restart the store says Suspended,
    as the engine does, and the job resumes and ends once."""
    w.start(Point.PAUSED)
    job_id = w.running(w.gated("paused"))
    w.in_background(lambda c: c.suspend(job_id))
    w.crash_at(Point.PAUSED, job_id)
    eventually("recorded Suspended", lambda: w.ex.info(job_id).state is JobState.SUSPENDED)
    w.client().resume(job_id)
    (w.ctl / "go").touch()
    job = w.ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.stdout) == (JobState.DONE, "up\nend\n")
    assert w.run_count("paused") == 1 and w.attempts(job_id) == 1


def unpaused(w: World) -> None:
    w.start(Point.UNPAUSED)
    job_id = w.running(w.gated("unpaused"))
    w.client().suspend(job_id)
    w.in_background(lambda c: c.resume(job_id))
    w.crash_at(Point.UNPAUSED, job_id)
    eventually("recorded Running", lambda: w.ex.info(job_id).state is JobState.RUNNING)
    (w.ctl / "go").touch()
    job = w.ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.stdout) == (JobState.DONE, "up\nend\n")
    assert w.run_count("unpaused") == 1


def signalled(w: World) -> None:
    w.start(Point.SIGNALLED)
    job_id = w.running(w.gated("signalled"))
    w.in_background(lambda c: c.signal(job_id, "KILL"))
    w.crash_at(Point.SIGNALLED, job_id)
    job = w.ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.substate, job.exit_code, job.stdout) == (JobState.FAILED, Substate.EXITED, 137, "up\n")
    assert w.run_count("signalled") == 1


def stop_requested(w: World) -> None:
    """A cancel recorded but never sent: the restarted agent sends it, rather than letting
    the job run on and later recording it as cancelled."""
    w.start(Point.STOP_REQUESTED)
    job_id = w.running(w.gated("stopped"))
    w.in_background(lambda c: c.cancel(job_id, grace=1))
    w.crash_at(Point.STOP_REQUESTED, job_id)
    job = w.ex.wait(job_id, timeout=WAIT)  # ctl/go never comes: only the cancel ends it
    assert (job.state, job.substate, job.stdout) == (JobState.FAILED, Substate.CANCELLED, "up\n")


def container_removed(w: World) -> None:
    """rm cut after the container went: the record and logs are still there, and rm again
    finishes the job."""
    w.start(Point.CONTAINER_REMOVED)
    job_id = w.ex.start(w.job("rm", "echo bye"))
    assert w.ex.wait(job_id, timeout=WAIT).stdout == "bye\n"
    w.in_background(lambda c: c.remove(job_id))
    w.crash_at(Point.CONTAINER_REMOVED, job_id)
    assert w.ex.info(job_id).stdout == "bye\n"
    w.client().remove(job_id)
    assert w.ex.list() == [] and not w.ex.home.job_logs(job_id).exists()


def blob_deleted(w: World) -> None:
    """gc cut after one removal: blobs a job uses are intact, and gc again removes the rest."""
    w.start(Point.BLOB_DELETED)
    kept = w.ex.start(w.full())
    w.check_full(kept)
    blobs = BlobStore(Home(w.home).cas)
    garbage = {blobs.put_bytes(f"garbage {i}\n".encode()) for i in range(3)}
    w.in_background(lambda c: c.gc(grace=0))
    eventually("a blob removed", lambda: (w.sup.fault_file.exists() and w.sup.fault_file.read_text()))
    removed = w.sup.fault_file.read_text().split()[1]
    assert removed in garbage
    w.crash_at(Point.BLOB_DELETED, removed)
    assert w.client().gc(grace=0)["removed"] == 2
    assert w.ex.verify()["bad"] == [] and w.ex.read_output(kept, "/out/r") == INPUT


POLICY = "mounts: {allowed_host_paths: [/tmp]}\n"


def token_policy_written(w: World) -> None:
    w.start(Point.TOKEN_POLICY_WRITTEN)
    w.in_background(lambda c: c.api.call("POST", "/tokens", body={"name": "ci", "policy": POLICY}))
    w.crash_at(Point.TOKEN_POLICY_WRITTEN, "ci")
    client = w.client()
    assert client.api.call("GET", "/tokens")["tokens"] == []  # no token without its record
    made = client.api.call("POST", "/tokens", body={"name": "ci", "policy": POLICY})
    assert Client(w.home, token=made["token"]).list() == []  # and it works


def token_revoked(w: World) -> None:
    w.start(Point.TOKEN_REVOKED)
    made = w.client().api.call("POST", "/tokens", body={"name": "ci", "policy": POLICY})
    w.in_background(lambda c: c.api.call("DELETE", "/tokens/ci"))
    w.crash_at(Point.TOKEN_REVOKED, "ci")
    with pytest.raises(Exception, match="401|token"):
        Client(w.home, token=made["token"]).list()
    assert w.client().api.call("GET", "/tokens")["tokens"] == []


SCENARIOS: dict[Point, Callable[[World], None]] = {
    Point.SUBMITTED: submitted,
    Point.ARRAY_SUBMITTED: array_submitted,
    Point.BATCH_WRITING: batch_writing,
    Point.BATCH_SUBMITTED: batch_submitted,
    Point.PRUNE_DECIDED: pruned_at(Point.PRUNE_DECIDED),
    Point.PRUNE_FORGOTTEN: pruned_at(Point.PRUNE_FORGOTTEN),
    **{p: launch_or_finish_step(p) for p in (
        Point.IMAGE_READY, Point.INPUTS_STAGED, Point.AFTER_CREATE, Point.PROVENANCE_RECORDED, Point.AFTER_CLAIM,
        Point.AFTER_START, Point.AFTER_LOGS, Point.AFTER_OUTPUTS, Point.AFTER_RECORD)},
    Point.RETIRED: retired,
    Point.DEPENDENCY_FAILED: dependency_failed,
    Point.PAUSED: paused,
    Point.UNPAUSED: unpaused,
    Point.SIGNALLED: signalled,
    Point.STOP_REQUESTED: stop_requested,
    Point.CONTAINER_REMOVED: container_removed,
    Point.BLOB_DELETED: blob_deleted,
    Point.TOKEN_POLICY_WRITTEN: token_policy_written,
    Point.TOKEN_REVOKED: token_revoked,
}


# ----------------------------------------------------------------------------- the tests


def test_every_fault_point_has_a_scenario(monkeypatch):
    """A durable step added to the list without a way to crash there (or a typo in a point's
    name, which would silently disable the crash it meant to cause) fails here."""
    assert set(SCENARIOS) == set(Point)
    monkeypatch.setenv("CONVEYOR_FAULT", "after-claim,afterr-record")
    with pytest.raises(ValueError, match="afterr-record"):
        armed()
    with pytest.raises(TypeError):
        from conveyor import faults

        faults.reached("after-claim", "job")  # a name, not a Point


def _walk_one(point: Point, root: Path, image: str, docker_client) -> str | None:
    w = World(root, image, docker_client)
    try:
        SCENARIOS[point](w)
        w.check_clean()
        reached = w.sup.fault_file.read_text().split() if w.sup.fault_file.exists() else []
        assert point.value in reached, f"{point.value} was never reached"
        return None
    except BaseException as exc:  # noqa: BLE001 - gathered and reported for every point at once
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted((root / "logs").glob("serve-*.log")))
        return f"{point.value}: {type(exc).__name__}: {exc}\n{logs}"
    finally:
        w.close()


def test_kill_at_every_fault_point_loses_nothing(tmp_path, test_image, docker_client):
    """The user-visible failures this prevents: a job lost, run twice or recorded with a
    made-up result; a truncated log; an output with the wrong bytes; a container left behind;
    a token that outlives its revoke; all after an agent dies at any durable step."""
    with ThreadPoolExecutor(max_workers=WALKERS) as pool:
        futures = {p: pool.submit(_walk_one, p, tmp_path / p.value, test_image, docker_client) for p in Point}
        failures = [f.result() for f in futures.values() if f.result() is not None]
    assert not failures, f"{len(failures)} of {len(Point)} fault points broke an invariant:\n" + "\n\n".join(failures)


# ----------------------------------------------------------------------------- load


def test_concurrent_clients_lose_no_request(tmp_path, test_image):
    """Many clients at once on the unix socket and TCP, submitting, waiting, following logs,
    cancelling and inspecting: no request may be lost or answered 5xx, and the agent's threads
    and memory must come back down (a leak per request would show at 1,000 clients; the full
    run is `python -m bench.load`, README: Faults on purpose)."""
    from bench.load import run

    (tmp_path / "home").mkdir()
    result = run(tmp_path / "home", clients=60, duration=8)
    assert (result["lost"], result["server_errors"]) == ({}, {}), result["examples"]
    ops = result["by_operation"]
    assert all(ops.get(name, 0) > 0 for name in ("submit", "wait", "logs", "follow", "cancel", "inspect", "list")), ops
    agent = result["agent"]
    # Blocking calls run on one bounded pool (256 threads, agent/app.py) plus the supervisor's
    # few: a thread leaked per request (over a thousand requests here) would pass that.
    assert result["requests"] > 300 and agent["threads_peak"] <= 256 + 30, (result["requests"], agent)
    assert agent["rss_mb_after"] <= agent["rss_mb_idle"] + 150, agent


# ----------------------------------------------------------------------------- the disk fills


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs for the state directory: logs, content store and store database."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_job_that_hit_it_and_nothing_else(small_disk, test_image):
    """A job whose logs do not fit on the state directory's disk is recorded Failed with a
    message saying so (not left Running for ever, not recorded Done with logs missing); the
    store stays consistent, the other jobs and the executor keep working, the engine keeps the
    logs until there is room, and the space comes back when the job is removed."""
    home = small_disk / "home"
    with Executor(home) as ex:
        filler = small_disk / "filler"  # the disk is nearly full before the job ends
        filler.write_bytes(b"\0" * (16 << 20))
        big = ex.submit(sh(test_image, "head -c 12000000 /dev/zero | tr '\\0' x; exit 0", network="none", auto_remove=True))
        job = ex.wait(big, timeout=WAIT)
        assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.STORAGE_FULL, 0), job.message
        assert "disk is full" in job.message and str(home) in job.message
        assert ex.backend.inspect(job.container_id) is not None  # the only copy of its logs stays
        assert list(ex.home.job_logs(big).glob("*.tmp*")) == []  # no half-written file holds the space

        small = ex.run(sh(test_image, "echo still works", network="none"), timeout=WAIT)
        assert (small.state, small.stdout) == (JobState.DONE, "still works\n")
        assert ex.store.query("PRAGMA integrity_check") == [("ok",)]
        report = ex.fsck()
        assert [(p["kind"], p["subject"]) for p in report["problems"]] == [("logs-short", big), ("container-not-removed", big)]

        filler.unlink()  # space comes back: fsck --repair saves the logs, then removes the container
        repaired = ex.fsck(repair=True)
        assert all(p["repaired"] for p in repaired["problems"]), repaired
        assert ex.info(big).stdout_bytes == b"x" * 12000000
        assert ex.fsck()["problems"] == []
        before = shutil.disk_usage(small_disk).used
        ex.remove(big)
        assert shutil.disk_usage(small_disk).used <= before - 11_000_000


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def _fill(path: Path) -> None:
    """Write ``path`` until its disk has no room left."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 1 << 12):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


@pytest.fixture
def mounts(tmp_path):
    """Small tmpfs mounts a test makes (``_mount_tmpfs``), unmounted afterwards, innermost first."""
    made: list[Path] = []
    yield lambda path, size: (_mount_tmpfs(path, size), made.append(path))
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_store_database_refuses_submits_by_name_and_records_every_end_once_there_is_room(tmp_path, mounts, test_image,
                                                                                               docker_client):
    """The store's database on a full disk (its logs elsewhere, the disk full of blobs no job
    uses any more): a submit is refused 507 saying the disk is full and creates nothing; the
    agent keeps answering; a job that ended meanwhile is not left Running for ever: once `gc`
    gives the space back its true end is recorded, submits work again and fsck is clean."""
    from conveyor.errors import StateDirUnusable
    from helpers import AgentProcess

    home = tmp_path / "small"
    mounts(home, "16m")
    mounts(home / "logs", "64m")  # the logs have room: this is about the database
    blobs = BlobStore(Home(home).cas)
    garbage = [blobs.put_bytes(os.urandom(1 << 20)) for _ in range(4)]  # outputs of jobs long removed, say
    agent = AgentProcess(home).start()
    client = Client(home, timeout=WAIT)
    try:
        (tmp_path / "ctl").mkdir()
        running = client.submit(sh(test_image, "echo before; while [ ! -e /ctl/go ]; do sleep 0.2; done; echo after; exit 5",
                                   network="none", mounts=[f"{tmp_path / 'ctl'}:/ctl:ro"]))
        client.wait_started(running, timeout=WAIT)
        _fill(tmp_path / "small" / "filler")
        big = {"E": "x" * (100 << 10)}  # each submit grows the database (its write-ahead log) by this
        refused = None
        for i in range(200):
            before = len(client.list())
            try:
                client.submit(sh(test_image, "true", network="none", env=big), hold=True)
            except StateDirUnusable as exc:
                refused = exc
                break
        assert refused is not None, "the database never filled"
        assert "full" in str(refused) and str(home) in str(refused), refused
        assert len(client.list()) == before  # the refused submit left nothing
        t = time.monotonic()
        assert client.ping() and client.info(running).id == running
        assert time.monotonic() - t < 5
        (tmp_path / "ctl" / "go").touch()  # the job ends while the disk is full: its end cannot be recorded yet
        container = docker_client.containers.get(client.info(running).container_id)
        eventually("the job's container exited", lambda: container.reload() or container.status == "exited")
        time.sleep(2)  # the finisher tried, and could not
        assert client.info(running).state is JobState.RUNNING

        freed = client.gc(grace=0)
        assert set(garbage) <= set(freed["digests"]) and freed["bytes"] >= 4 << 20, freed
        job = client.wait(running, timeout=WAIT)  # recorded once there is room, from the engine's word
        assert (job.state, job.exit_code, job.stdout) == (JobState.FAILED, 5, "before\nafter\n")
        done = client.run(sh(test_image, "echo room again", network="none"), timeout=WAIT)
        assert (done.state, done.stdout) == (JobState.DONE, "room again\n")
        report = client.fsck()
        assert report["problems"] == [], report
        with Executor(home, supervise=False) as ex:
            assert ex.store.query("PRAGMA integrity_check") == [("ok",)]
            assert [t.to_state for t in ex.store.transitions(running)].count(JobState.FAILED) == 1
    finally:
        agent.stop()
        with Executor(home) as ex:
            ex.cleanup()


def test_a_full_content_store_fails_the_job_whose_outputs_do_not_fit(tmp_path, mounts, test_image):
    """The content store on a full disk: the job whose outputs do not fit is recorded Failed,
    storage_full, with a message saying the disk is full (not Done with its outputs missing);
    no half-written blob stays; other jobs and the agent keep working; fsck is clean; and
    after `rm` of an older job and `gc` the space is back and the same job captures its outputs."""
    from helpers import AgentProcess

    home = tmp_path / "home"
    home.mkdir()
    mounts(home / "cas", "8m")
    agent = AgentProcess(home).start()
    client = Client(home, timeout=WAIT)
    writer = sh(test_image, "mkdir -p /out; head -c 5000000 /dev/urandom > /out/f; sha256sum /out/f",
                network="none", outputs=["/out"])
    try:
        first = client.run(writer, timeout=WAIT)
        assert first.state is JobState.DONE, first.message
        job = client.run(writer, timeout=WAIT)
        assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, Substate.STORAGE_FULL, 0), job.message
        assert "disk is full" in job.message and str(home / "cas") in job.message, job.message
        assert client.outputs(job.id) == []
        assert os.listdir(home / "cas" / "tmp") == []  # no half-written blob holds the space
        other = client.run(sh(test_image, "echo fine", network="none"), timeout=WAIT)
        assert (other.state, other.stdout) == (JobState.DONE, "fine\n")
        assert client.fsck()["problems"] == []

        before = shutil.disk_usage(home / "cas").used
        client.remove(first.id)
        freed = client.gc(grace=0)
        assert freed["bytes"] >= 5_000_000 and shutil.disk_usage(home / "cas").used <= before - 5_000_000, freed
        again = client.run(writer, timeout=WAIT)
        assert again.state is JobState.DONE, again.message
        (out,) = client.outputs(again.id)
        assert out["digest"] == "sha256:" + again.stdout.split()[0] and client.fsck()["problems"] == []
    finally:
        agent.stop()
        with Executor(home) as ex:
            ex.cleanup()


# ----------------------------------------------------------------------------- the engine misbehaves


class SocketProxy:
    """A unix-socket proxy in front of the engine's socket that a test can cut (every open
    connection closed, the engine untouched) or stall (bytes held, connections left open)."""

    def __init__(self, path: Path, target: str):
        import socket

        self.path, self.target, self.socket = path, target, socket
        self.conns: list = []
        self.flowing = threading.Event()
        self.flowing.set()
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = self.socket.socket(self.socket.AF_UNIX)
            upstream.connect(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(self.socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(self.socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.flowing.set()
        self.server.close()
        self.cut()


def test_event_stream_cut_and_a_hanging_engine_conclude_nothing(tmp_path, state_dir, test_image, docker_client):
    """The engine's event stream cut without the engine dying, then every engine call hanging:
    a job that ends meanwhile is recorded from the engine's word once it answers again (its
    exit code and output, not a guess), and the executor answers its callers all along."""
    proxy = SocketProxy(tmp_path / "engine.sock", "/var/run/docker.sock")
    try:
        with Executor(state_dir, docker_url=f"unix://{tmp_path / 'engine.sock'}") as ex:
            job_id = ex.start(sh(test_image, "echo before; sleep 2; echo after; exit 6", network="none"))
            proxy.cut()  # the stream (and every other connection) breaks; the job ends after it
            job = ex.wait(job_id, timeout=WAIT)
            assert (job.state, job.exit_code, job.stdout) == (JobState.FAILED, 6, "before\nafter\n")

            slow = ex.start(sh(test_image, "echo x; sleep 1; exit 2", network="none"))
            proxy.flowing.clear()  # every engine call hangs from here
            time.sleep(3)  # it ends in the engine meanwhile
            t = time.monotonic()
            assert ex.info(slow).state is JobState.RUNNING and [j.id for j in ex.list()] == [job_id, slow]
            assert time.monotonic() - t < 2  # the store answers; nothing waits on the engine
            proxy.flowing.set()
            job = ex.wait(slow, timeout=WAIT)
            assert (job.state, job.exit_code, job.stdout) == (JobState.FAILED, 2, "x\n")
            assert ex.fsck()["problems"] == []
            ex.cleanup()
    finally:
        proxy.close()
