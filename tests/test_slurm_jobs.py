"""Jobs on the two-node Slurm cluster through the whole stack (issue 16): a job without an image
as a process on its node, Slurm's reason for a waiting job, suspend and resume, cancelling from Conveyor and from
Slurm (no container left running on the node), a node that dies mid-job, the cluster's nodes
in `machine` and `ps`, and what the backend refuses. The conformance suite
(test_conformance.py, kind slurm) covers the rest: states, exit codes, logs, grace, timeout,
OOM, data, arrays, dependencies, recovery after SIGKILL at every fault point, cleanup."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from conveyor import Executor, JobSpec, JobState, Substate
from conveyor.errors import ConveyorError, InvalidSpec, InvalidState, WaitTimeout
from helpers import Cli, eventually, most_at_once

from conftest import TEST_IMAGE

WAIT = 90


def _slurm_home(slurm, home: Path, shared: Path | None) -> Path:
    home.mkdir()
    extra = f'shared_dir = "{shared}"\n' if shared else ""
    (home / "config.toml").write_text(f'[defaults]\ncpus = 0\n[engine]\nname = "slurm"\nurl = "{slurm.conf}"\n{extra}')
    return home


@pytest.fixture
def ex(slurm, tmp_path):
    with Executor(_slurm_home(slurm, tmp_path / "home", tmp_path / "shared")) as executor:
        yield executor
        executor.cleanup()


def _containers(ex: Executor, job_id: str) -> list:
    """The containers a node's engine holds for the job (the test nodes share this dockerd)."""
    return docker.from_env().containers.list(all=True, filters={"label": f"conveyor.job={job_id}"})


def _slurm_id(ex: Executor, job_id: str) -> str:
    return ex.store.get(job_id).container_id.split("-")[0]


def test_a_job_without_an_image_runs_as_a_process_on_its_node(slurm, ex):
    job = ex.run(JobSpec(command=["sh", "-c", "echo $SLURMD_NODENAME $SLURM_JOB_NAME; printf 'no newline' >&2; exit 6"],
                         backend="slurm"))
    node, name = job.stdout.split()
    assert (job.state, job.exit_code, job.stderr, name) == (JobState.FAILED, 6, "no newline", f"conveyor-{job.id}")
    assert node in ("n1", "n2") and job.node == node


def test_a_job_is_an_sbatch_submission_with_its_resources_and_its_tag(slurm, ex):
    job_id = ex.submit(JobSpec(image=TEST_IMAGE, command=["sh", "-c", "echo up; sleep 30"],
                               resources={"cpus": 2, "memory": "300m"},
                               backend={"name": "slurm", "options": {"partition": "conveyor", "nice": 10}}))
    eventually("job up", lambda: b"up" in b"".join(c for _, c in ex.logs(job_id, "stdout")), timeout=WAIT)
    ex.wait_started(job_id, timeout=WAIT)  # Running in Conveyor's terms too (the poll sees it a moment later)
    record = slurm.run("scontrol", "show", "job", "-o", _slurm_id(ex, job_id))
    for field in (f"JobName=conveyor-{job_id}", f"Comment=conveyor:{ex.executor_id}:{job_id}", "Partition=conveyor",
                  "Nice=10", "NumCPUs=2", "mem=300M", "Requeue=0"):
        assert field in record, (field, record)
    ex.cancel(job_id, grace=0)


def test_a_job_waiting_in_slurm_is_queued_with_slurms_reason_and_runs_once_the_nodes_are_free(slurm, ex, tmp_path):
    # Another user's work fills both nodes (all their memory): Conveyor's jobs wait in Slurm.
    blockers = [slurm.run("sbatch", "--parsable", "--mem=1000M", f"--output={tmp_path}/blocker-%j", "--wrap", "sleep 60").strip()
                for _ in range(2)]
    try:
        eventually("both blockers run", lambda: all("JobState=RUNNING" in slurm.run("scontrol", "show", "job", "-o", b)
                                                    for b in blockers), timeout=WAIT)
        job_id = ex.submit(JobSpec(image=TEST_IMAGE, command=["echo", "ran"], resources={"memory": "100m"}))
        other = ex.submit(JobSpec(image=TEST_IMAGE, command=["echo", "never"], resources={"memory": "100m"}))
        # Slurm says Resources for the first in its queue, Priority for the one behind it.
        reasons = ("pending in Slurm (Resources)", "pending in Slurm (Priority)")
        eventually("Slurm's reason as the job's", lambda: (ex.info(job_id).message or "").startswith(reasons), timeout=WAIT)
        waiting = ex.info(job_id)
        # Handed to Slurm, not running: Queued in Slurm's queue, as DRMAA2 says, not Running.
        assert (waiting.state, waiting.substate, waiting.started_at) == (JobState.QUEUED, Substate.ENGINE_QUEUED, None)
        assert f"conveyor-{job_id}" in slurm.run("squeue", "-h", "-o", "%j %T")
        with pytest.raises(WaitTimeout):
            ex.wait_started(job_id, timeout=1)
        waits = {j["id"]: j for j in ex.queue()["jobs"]}
        assert waits[job_id]["waits_for"] == "engine" and waits[job_id]["reason"].startswith(tuple("engine: " + r for r in reasons)), waits
        # Cancelling a job Slurm queues takes it out of Slurm's queue too.
        eventually("the other waits in Slurm", lambda: ex.info(other).substate == Substate.ENGINE_QUEUED, timeout=WAIT)
        cancelled = ex.cancel(other, grace=0)
        assert (cancelled.state, cancelled.substate) == (JobState.FAILED, Substate.CANCELLED)
        assert f"conveyor-{other}" not in slurm.run("squeue", "-h", "-o", "%j")
        # Hold takes it back out of Slurm's queue (scontrol hold); release hands it over again.
        held = ex.hold(job_id)
        assert (held.state, held.substate) == (JobState.QUEUED_HELD, Substate.HELD)
        assert "JobHeldUser" in slurm.run("scontrol", "show", "job", "-o", _slurm_id(ex, job_id))
        assert ex.release(job_id).state is JobState.QUEUED
        eventually("handed to Slurm again", lambda: ex.info(job_id).substate == Substate.ENGINE_QUEUED, timeout=WAIT)
        assert "JobHeldUser" not in slurm.run("scontrol", "show", "job", "-o", _slurm_id(ex, job_id))
    finally:
        slurm.run("scancel", *blockers)
    started = ex.wait_started(job_id, timeout=WAIT)
    assert started.started_at is not None
    job = ex.wait(job_id, timeout=WAIT)
    assert (job.state, job.stdout) == (JobState.DONE, "ran\n")
    moves = [(t.to_state, t.substate) for t in ex.store.transitions(job_id)]
    assert moves == [(JobState.QUEUED, None), (JobState.QUEUED, Substate.ENGINE_QUEUED), (JobState.QUEUED_HELD, Substate.HELD),
                     (JobState.QUEUED, None), (JobState.QUEUED, Substate.ENGINE_QUEUED), (JobState.RUNNING, None),
                     (JobState.DONE, Substate.EXITED)], moves
    assert [a["attempt"] for a in ex.attempts(job_id)] == [1]  # handed over twice, ran once
    assert [t.to_state for t in ex.store.transitions(other)][-1] is JobState.FAILED
    assert JobState.RUNNING not in [t.to_state for t in ex.store.transitions(other)]  # it never ran


class _NoStatus:
    error = ""


def test_cancel_stops_the_container_on_the_node_and_keeps_its_log(slurm, ex):
    job_id = ex.submit(JobSpec(image=TEST_IMAGE, command=["sh", "-c", "trap 'echo bye; exit 3' TERM; echo up; "
                                                                       "while :; do sleep 0.1; done"]))
    eventually("job up", lambda: b"up" in b"".join(c for _, c in ex.logs(job_id, "stdout")), timeout=WAIT)
    ex.wait_started(job_id, timeout=WAIT)  # Running in Conveyor's terms too (the poll sees it a moment later)
    assert len(_containers(ex, job_id)) == 1
    job = ex.cancel(job_id, grace=5)
    assert (job.state, job.substate, job.exit_code, job.stdout) == (JobState.FAILED, Substate.CANCELLED, 3, "up\nbye\n")
    eventually("no container left on the node", lambda: _containers(ex, job_id) == [])


def test_scancel_from_outside_ends_the_job_with_slurms_word_and_no_container_left(slurm, ex):
    job_id = ex.submit(JobSpec(image=TEST_IMAGE, command=["sh", "-c", "trap 'echo term; exit 143' TERM; echo up; "
                                                                       "while :; do sleep 0.1; done"]))
    eventually("job up", lambda: b"up" in b"".join(c for _, c in ex.logs(job_id, "stdout")), timeout=WAIT)
    ex.wait_started(job_id, timeout=WAIT)  # Running in Conveyor's terms too (the poll sees it a moment later)
    slurm.run("scancel", _slurm_id(ex, job_id))  # an operator cancels it in Slurm
    job = ex.wait(job_id, timeout=WAIT)
    # Slurm's SIGTERM, passed on to the container by the step
    assert (job.state, job.exit_code, job.stdout) == (JobState.FAILED, 143, "up\nterm\n"), job
    eventually("no container left on the node", lambda: _containers(ex, job_id) == [])


def test_a_node_that_dies_mid_job_gives_it_a_true_end_and_a_retry_runs_on_the_other(slurm, ex, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    # the first attempt waits (its node dies under it); the retry ends at once
    script = "if [ -e /marks/first ]; then echo retry; else touch /marks/first; echo first; sleep 120; fi"
    job_id = ex.submit(JobSpec(image=TEST_IMAGE, command=["sh", "-c", script], retries=1, mounts=[f"{marks}:/marks"]))
    eventually("job running on a node", lambda: ex.info(job_id).node is not None, timeout=WAIT)
    first = ex.info(job_id).node
    try:
        slurm.stop_node(first)
        job = ex.wait(job_id, timeout=150)
        moves = [t.to_state for t in ex.store.transitions(job_id)]
        assert JobState.REQUEUED in moves, moves  # the lost attempt counted as a failure to retry
        assert (job.state, job.exit_code, job.stdout) == (JobState.DONE, 0, "retry\n"), job
        assert job.node != first
        lost = ex.attempts(job_id)[0]
        assert lost["substate"] == Substate.CONTAINER_LOST and "NODE_FAIL" in lost["message"], lost
    finally:
        slurm.start_node(first)
        for c in _containers(ex, job_id):  # the dead node's step could not stop its container
            c.remove(force=True)


def test_machine_and_ps_show_the_clusters_nodes(slurm, tmp_path):
    from conveyor.daemon import stop_supervisor
    from conveyor.home import Home

    home = _slurm_home(slurm, tmp_path / "home", tmp_path / "shared")
    cli = Cli(home, None, TEST_IMAGE)
    try:
        cli.ok("run", TEST_IMAGE, "true")
        header, *rows = cli.ok("ps", "-a").splitlines()
        assert header.split()[-1] == "NODE" and rows[0].split()[-1] in ("n1", "n2"), (header, rows)
        machine = json.loads(cli.ok("machine", "--json"))
        assert sorted(n["name"] for n in machine["nodes"]) == ["n1", "n2"]
        assert machine["capacity"]["cpus"] == 4 and machine["capacity"]["memory"] == 2000 << 20
        slurm_backend = next(b for b in json.loads(cli.ok("backends", "--json")) if b["name"] == "slurm")
        assert slurm_backend["available"] and slurm_backend["default"] and slurm_backend["capabilities"]["files"]
    finally:
        stop_supervisor(Home(home))


def test_what_slurm_cannot_carry_is_refused_naming_the_field(slurm, ex):
    for fields, field in ((dict(tty=True), "tty"), (dict(ports=["8080"]), "ports"),
                          (dict(restart="on-failure"), "restart"), (dict(resources={"gpus": "all"}), "resources.gpus")):
        with pytest.raises(InvalidSpec) as err:
            ex.submit(JobSpec(image=TEST_IMAGE, command=["true"], **fields))
        assert err.value.field == field, err.value
    with pytest.raises(InvalidSpec, match="options.partition"):
        ex.submit(JobSpec(image=TEST_IMAGE, command=["true"], backend={"name": "slurm", "options": {"partition": "a b"}}))
    # GPUs no node has (the nodes' Gres, from scontrol show node): refused at submit
    with pytest.raises(InvalidSpec, match="no nvidia GPUs") as err:
        ex.submit(JobSpec(image=TEST_IMAGE, command=["true"], resources={"gpus": 1}))
    assert err.value.field == "resources.gpus"


def test_without_a_shared_directory_the_engine_says_what_to_set(slurm, tmp_path):
    with pytest.raises(ConveyorError, match=r"shared_dir"):
        with Executor(_slurm_home(slurm, tmp_path / "home", None)) as executor:
            executor.run(JobSpec(image=TEST_IMAGE, command=["true"]))


def test_suspend_freezes_the_container_and_suspends_the_slurm_job(slurm, ex):
    job_id = ex.submit(JobSpec(image=TEST_IMAGE, command=["sh", "-c", "echo up; sleep 60"]))
    ex.wait_started(job_id, timeout=WAIT)  # returns once the job runs on its node (start waits for it)
    slurm_id = _slurm_id(ex, job_id)
    assert ex.suspend(job_id).state is JobState.SUSPENDED
    assert "JobState=SUSPENDED" in slurm.run("scontrol", "show", "job", "-o", slurm_id)
    assert [c.status for c in _containers(ex, job_id)] == ["paused"]
    assert ex.resume(job_id).state is JobState.RUNNING
    assert "JobState=RUNNING" in slurm.run("scontrol", "show", "job", "-o", slurm_id)
    assert [c.status for c in _containers(ex, job_id)] == ["running"]
    job = ex.cancel(job_id, grace=0)
    assert (job.state, job.substate, job.stdout) == (JobState.FAILED, Substate.CANCELLED, "up\n")


def test_cancel_of_a_suspended_job_thaws_it_so_its_term_handler_runs(slurm, ex):
    job_id = ex.submit(JobSpec(image=TEST_IMAGE, command=["sh", "-c", "trap 'echo bye; exit 4' TERM; echo up; "
                                                                       "while :; do sleep 0.1; done"]))
    eventually("job up", lambda: b"up" in b"".join(c for _, c in ex.logs(job_id, "stdout")), timeout=WAIT)
    ex.wait_started(job_id, timeout=WAIT)  # Running in Conveyor's terms too (the poll sees it a moment later)
    assert ex.suspend(job_id).state is JobState.SUSPENDED
    job = ex.cancel(job_id, grace=10)
    assert (job.state, job.substate, job.exit_code, job.stdout) == (JobState.FAILED, Substate.CANCELLED, 4, "up\nbye\n")
    eventually("no container left on the node", lambda: _containers(ex, job_id) == [])


def test_an_array_is_one_slurm_job_array_whose_max_parallel_slurm_enforces(slurm, ex, tmp_path):
    once = tmp_path / "failed-once"
    script = (f"if [ $CONVEYOR_TASK_ID = 3 ] && [ ! -e {once} ]; then touch {once}; exit 3; fi; "
              "echo task $CONVEYOR_TASK_ID; sleep 1")
    array_id = ex.submit_array(JobSpec(command=["sh", "-c", script], backend="slurm", retries=1), 1, 6, 1, max_parallel=2)
    ids = [job_id for job_id, _, _ in ex.store.array_tasks(array_id)]
    # Tasks Slurm holds back for the array's limit wait in its queue, with its reason.
    eventually("a task waits for the array's limit in Slurm", lambda: any(
        "JobArrayTaskLimit" in (ex.info(i).message or "") and ex.info(i).substate == Substate.ENGINE_QUEUED for i in ids),
        timeout=WAIT)
    jobs = {ex.store.get(i).array_index: ex.wait(i, timeout=WAIT) for i in ids}
    assert {i: (j.state, j.stdout) for i, j in jobs.items()} == {i: (JobState.DONE, f"task {i}\n") for i in range(1, 7)}
    # One Slurm job array: every task is an element <array job>_<index> of it (the retried
    # task's second attempt is a job of its own), throttled by Slurm's %2.
    handles = {i: ex.store.get(j.id).container_id.split("-")[0] for i, j in jobs.items()}
    array_job = {h.split("_")[0] for i, h in handles.items() if i != 3}
    assert len(array_job) == 1 and all(handles[i] == f"{next(iter(array_job))}_{i}" for i in handles if i != 3), handles
    assert "_" not in handles[3] and len(ex.attempts(jobs[3].id)) == 2
    assert most_at_once([j for j in jobs.values()]) <= 2
    # Every task ended: nothing of the array is left in Slurm or on the shared directory.
    eventually("the array closed", lambda: not (ex.backend.for_job(None).arrays_dir / array_id).exists(), timeout=WAIT)
    assert f"conveyor-array-{array_id}" not in slurm.run("squeue", "-h", "-o", "%j")


def test_cancelling_an_array_leaves_none_of_its_slurm_job_array_behind(slurm, ex):
    # Two CPUs a task: the cluster's four hold two, so the rest are never released in Slurm.
    array_id = ex.submit_array(JobSpec(command=["sleep", "60"], backend="slurm", resources={"cpus": 2}), 0, 5)
    ids = [job_id for job_id, _, _ in ex.store.array_tasks(array_id)]
    eventually("two tasks run", lambda: sum(ex.info(i).state is JobState.RUNNING for i in ids) == 2, timeout=WAIT)
    assert f"conveyor-array-{array_id}" in slurm.run("squeue", "-h", "-o", "%j")
    ex.cancel_array(array_id, grace=0)
    assert {ex.info(i).state for i in ids} == {JobState.FAILED}
    eventually("no element left in Slurm", lambda: f"conveyor-array-{array_id}" not in slurm.run("squeue", "-h", "-o", "%j"),
               timeout=WAIT)


def test_a_dependent_waits_in_slurm_for_its_dependencies_and_ends_when_one_fails(slurm, ex):
    first = ex.submit(JobSpec(command=["sh", "-c", "sleep 3; echo first"], backend="slurm"))
    failing = ex.submit(JobSpec(command=["sh", "-c", "sleep 3; exit 2"], backend="slurm"))
    ok_after = ex.submit(JobSpec(command=["echo", "second"], backend="slurm", after=[first]))
    doomed = ex.submit(JobSpec(command=["echo", "never"], backend="slurm", after=[failing]))
    any_after = ex.submit(JobSpec(command=["echo", "anyway"], backend="slurm", after=[{"job": failing, "condition": "any"}]))
    # Handed to Slurm while what they wait for still runs: Slurm holds them (Dependency).
    for job_id in (ok_after, doomed, any_after):
        eventually("Slurm holds it for its dependency", lambda: "(Dependency)" in (ex.info(job_id).message or ""), timeout=WAIT)
        assert ex.info(job_id).substate == Substate.ENGINE_QUEUED
    record = slurm.run("scontrol", "show", "job", "-o", _slurm_id(ex, ok_after))
    assert f"Dependency=afterok:{_slurm_id(ex, first)}" in record, record
    assert f"afterany:{_slurm_id(ex, failing)}" in slurm.run("scontrol", "show", "job", "-o", _slurm_id(ex, any_after))
    done, second = ex.wait(first, timeout=WAIT), ex.wait(ok_after, timeout=WAIT)
    assert (second.state, second.stdout) == (JobState.DONE, "second\n") and second.started_at >= done.finished_at - 1
    assert (ex.wait(any_after, timeout=WAIT).state, ex.info(any_after).stdout) == (JobState.DONE, "anyway\n")
    # A dependency that fails: Slurm would hold its dependent for ever; Conveyor ends it there.
    never = ex.wait(doomed, timeout=WAIT)
    assert (never.state, never.substate, never.stdout, never.started_at) == (
        JobState.FAILED, Substate.DEPENDENCY_FAILED, "", None), never
    assert f"conveyor-{doomed}" not in slurm.run("squeue", "-h", "-o", "%j")
