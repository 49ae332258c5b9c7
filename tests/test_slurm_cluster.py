"""The two-node Slurm of scripts/slurm-cluster is real (issue 16): two slurmd nodes, jobs placed
on a named node, stdout and stderr apart, exit codes from slurmctld and the job-completion file,
an array held to its max-parallel, a grace signal before the kill, and a node that dies mid-job
ending its job NODE_FAIL. The Slurm backend is built on exactly these behaviours."""

from __future__ import annotations

import json
import time
from pathlib import Path

from helpers import eventually


def _job(slurm, job_id: str) -> dict[str, str]:
    """`scontrol show job -o` as a dict (one line of KEY=VALUE; values without spaces here)."""
    line = slurm.run("scontrol", "show", "job", "-o", job_id).strip()
    return dict(field.split("=", 1) for field in line.split() if "=" in field)


def _sbatch(slurm, tmp_path: Path, script: str, *flags: str) -> str:
    return slurm.run("sbatch", "--parsable", "-o", f"{tmp_path}/%j.out", "-e", f"{tmp_path}/%j.err",
                     *flags, "--wrap", script).strip()


def _ended(slurm, job_id: str, timeout: float = 60) -> dict[str, str]:
    return eventually(f"job {job_id} ends", lambda: (j := _job(slurm, job_id))["JobState"] not in
                      ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED") and j, timeout=timeout)


def test_two_nodes_are_up(slurm):
    assert slurm.node_states() == {"n1": "idle", "n2": "idle"} or set(slurm.node_states()) == {"n1", "n2"}
    data = json.loads(slurm.run("squeue", "--json"))
    assert "jobs" in data  # the JSON the backend reads


def test_a_job_runs_on_the_node_it_names_with_stdout_and_stderr_apart_and_its_exit_code(slurm, tmp_path):
    job_id = _sbatch(slurm, tmp_path, "echo out on $SLURMD_NODENAME; echo err >&2; exit 3", "-w", "n2")
    job = _ended(slurm, job_id)
    assert (job["JobState"], job["ExitCode"], job["NodeList"]) == ("FAILED", "3:0", "n2")
    assert (tmp_path / f"{job_id}.out").read_text() == "out on n2\n"
    assert (tmp_path / f"{job_id}.err").read_text() == "err\n"
    comp = Path("/var/log/conveyor-slurm-jobcomp.log").read_text()
    assert f"JobId={job_id} " in comp  # the record kept after scontrol forgets the job


def test_an_array_runs_no_more_tasks_at_once_than_its_limit(slurm, tmp_path):
    array_id = slurm.run("sbatch", "--parsable", "--array", "1-4%1", "-o", f"{tmp_path}/%A_%a.out",
                         "--wrap", "echo task $SLURM_ARRAY_TASK_ID; sleep 1").strip()
    reasons = set()

    def done() -> bool:
        out = slurm.run("squeue", "-h", "-j", array_id, "-o", "%T %r")
        running = [line for line in out.splitlines() if line.startswith("RUNNING")]
        assert len(running) <= 1, out
        reasons.update(line.split()[1] for line in out.splitlines() if line.startswith("PENDING"))
        return not out.strip()

    eventually("the array ends", done, timeout=60)
    assert "JobArrayTaskLimit" in reasons
    assert sorted((tmp_path / f"{array_id}_{i}.out").read_text() for i in range(1, 5)) == [f"task {i}\n" for i in range(1, 5)]


def test_a_grace_signal_reaches_the_job_before_it_is_cancelled(slurm, tmp_path):
    job_id = _sbatch(slurm, tmp_path, "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done")
    eventually("ready", lambda: (tmp_path / f"{job_id}.out").exists() and "ready" in (tmp_path / f"{job_id}.out").read_text())
    slurm.run("scancel", "--batch", "--signal", "TERM", job_id)
    job = _ended(slurm, job_id)
    assert job["ExitCode"] == "7:0", job
    assert (tmp_path / f"{job_id}.out").read_text() == "ready\ngot TERM\n"


def test_a_node_that_dies_mid_job_ends_it_node_fail_and_comes_back(slurm, tmp_path):
    # --no-requeue: Slurm's own requeue would hide the failure (Conveyor's retries decide)
    job_id = _sbatch(slurm, tmp_path, "echo up; sleep 300", "-w", "n2", "--no-requeue")
    eventually("running", lambda: _job(slurm, job_id)["JobState"] == "RUNNING")
    began = time.monotonic()
    slurm.stop_node("n2")
    try:
        job = _ended(slurm, job_id, timeout=90)
        assert job["JobState"] == "NODE_FAIL", job
        assert time.monotonic() - began < 60
    finally:
        slurm.start_node("n2")
        slurm.run("scancel", job_id, check=False)
    assert slurm.node_states()["n2"] in ("idle", "mixed", "allocated")
