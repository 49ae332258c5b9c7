"""The slurm backend's pure mappings (no cluster): JobSpec -> sbatch arguments, Slurm's records
-> Conveyor's status, nodes -> capacity rows. The end-to-end proof is test_slurm_jobs.py and the
conformance suite's slurm kind, on the real two-node cluster."""

from __future__ import annotations

import pytest

from conveyor import JobSpec, JobState, Substate
from conveyor.runtime.finisher import classify
from conveyor.backends.slurm import mapping
from conveyor.errors import InvalidSpec
from conveyor.spec.backend import SlurmOptions

LABELS = mapping.labels("exec1", "job1", None)


def _args(**fields) -> list[str]:
    spec = JobSpec(image="busybox", command=["true"], **fields)
    options = spec.backend.options_for("slurm") if spec.backend else SlurmOptions()
    return mapping.sbatch_args(spec, options, "exec1", "job1", "/shared/exec1/slurm/job1")


def test_sbatch_arguments_carry_the_jobs_resources_limits_and_tag():
    args = _args(resources={"cpus": 1.5, "memory": "300m", "gpus": 2}, timeout=90, stop_grace=10,
                 backend={"name": "slurm", "options": {"partition": "gpu", "qos": "long", "nice": 5}})
    assert args[:3] == ["--parsable", "--hold", "--no-requeue"]
    for arg in ("--job-name=conveyor-job1", "--comment=conveyor:exec1:job1", "--cpus-per-task=2", "--mem=300M",
                "--gres=gpu:2", "--time=3", "--partition=gpu", "--qos=long", "--nice=5",
                "--output=/shared/exec1/slurm/job1/slurm.out", "--error=/shared/exec1/slurm/job1/slurm.err"):
        assert arg in args, (arg, args)
    assert not any(a.startswith(("--mem=", "--gres", "--time", "--partition")) for a in _args())


def test_what_a_slurm_job_cannot_carry_is_refused_naming_the_field():
    for fields, field in ((dict(tty=True), "tty"), (dict(stdin_open=True), "stdin_open"),
                          (dict(ports=["80"]), "ports"), (dict(restart="always"), "restart")):
        with pytest.raises(InvalidSpec) as err:
            mapping.check(JobSpec(image="busybox", command=["true"], **fields), shared=True)
        assert err.value.field == field
    with pytest.raises(InvalidSpec, match="shared_dir"):
        mapping.check(JobSpec(image="busybox", command=["true"]), shared=False)
    with pytest.raises(InvalidSpec, match="options.partition"):
        JobSpec(image="busybox", backend={"name": "slurm", "options": {"partition": "x; rm -rf /"}})


def test_records_exit_codes_times_and_handles():
    line = ("JobId=7 JobName=conveyor-job1 JobState=FAILED Reason=NonZeroExitCode ExitCode=0:9 "
            "StartTime=2026-12-02T22:08:24 EndTime=Unknown WorkDir=/a dir/with spaces NodeList=n2 BatchHost=n2")
    record = mapping.parse_record(line)
    assert (record["JobState"], record["WorkDir"], record["BatchHost"]) == ("FAILED", "/a dir/with spaces", "n2")
    assert [mapping.exit_code(c) for c in ("0:0", "3:0", "0:9", "0:15", "")] == [0, 3, 137, 143, None]
    assert mapping.slurm_time("Unknown") is None and mapping.slurm_time(record["StartTime"]) > 0
    assert mapping.parse_handle(mapping.handle_of("7", "job1")) == ("7", "job1")
    with pytest.raises(ValueError):
        mapping.parse_handle("abc")


def _status(state: str | None, *, reason: str = "None", phase: str = "started", started: dict | None = None,
            result: dict | None = None, exit_code: str = "0:0"):
    record = None if state is None else {"JobState": state, "Reason": reason, "ExitCode": exit_code,
                                         "EndTime": "2026-12-02T22:08:30", "BatchHost": "n1"}
    return mapping.job_status("7-job1", record, phase, started, result, LABELS)


def test_the_steps_result_is_the_jobs_end_whatever_slurm_says():
    s = _status("COMPLETED", result={"exit_code": 137, "oom_killed": True, "started_at": 1.0, "finished_at": 2.0,
                                     "node": "n2"})
    assert (s.status, s.exit_code, s.oom_killed, s.started_at, s.finished_at, s.node) == ("exited", 137, True, 1.0, 2.0, "n2")
    failed = _status("COMPLETED", result={"exit_code": 127, "start_failed": True, "error": "no such file"})
    assert failed.start_failed and failed.error == "no such file"


def test_waiting_states_are_queued_in_slurm_with_its_reason_and_no_start():
    assert _status("PENDING", reason="JobHeldUser", phase="created").status == "created"
    pending = _status("PENDING", reason="Resources")
    assert (pending.status, pending.started_at, pending.finished, pending.queued) == ("running", None, False, True)
    assert pending.error.startswith("pending in Slurm (Resources): waits for resources")
    assert "JobArrayTaskLimit" in _status("PENDING", reason="JobArrayTaskLimit").error
    starting = _status("RUNNING")
    assert (starting.status, starting.started_at, starting.node) == ("running", None, "n1") and "starting on n1" in starting.error
    running = _status("RUNNING", started={"started_at": 5.0, "node": "n1"})
    assert (running.status, running.started_at, running.error, running.queued) == ("running", 5.0, None, False)
    # COMPLETING: the job's processes are being stopped; the step's result is still to come
    assert not _status("COMPLETING", started={"started_at": 5.0}).finished


def test_ends_slurm_saw_without_the_steps_result():
    lost = _status("NODE_FAIL", started={"started_at": 5.0, "node": "n2"})
    assert (lost.status, lost.exit_code, lost.finished) == ("dead", None, True) and "NODE_FAIL" in lost.error
    timeout = _status("TIMEOUT", started={"started_at": 5.0}, exit_code="0:15")
    assert (timeout.exit_code, timeout.finished, timeout.timed_out) == (143, True, True) and "time limit" in timeout.error
    assert classify(timeout, None)[:2] == (JobState.FAILED, Substate.TIMEOUT)  # Slurm's --time backstop
    oom = _status("OUT_OF_MEMORY", started={"started_at": 5.0}, exit_code="0:9")
    assert (oom.exit_code, oom.oom_killed) == (137, True)
    assert classify(oom, None)[:2] == (JobState.FAILED, Substate.OOM_KILLED)
    never = _status("CANCELLED")
    assert (never.status, never.exit_code, never.error) == ("exited", None, "cancelled in Slurm before it started")
    forgotten = _status(None)
    assert (forgotten.status, forgotten.exit_code) == ("dead", None) and "no longer knows" in forgotten.error


def test_nodes_as_capacity_rows():
    row = mapping.node_info({"NodeName": "n1", "State": "MIXED", "CPUTot": "8", "RealMemory": "1000",
                             "Gres": "gpu:a100:2(S:0)", "NodeAddr": "10.0.0.1", "Partitions": "gpu"}, running=3)
    assert (row["state"], row["availability"], row["cpus"], row["memory"], row["running"]) == ("ready", "active", 8.0, 1000 << 20, 3)
    assert row["gpus"] == {"nvidia": ["0", "1"]}
    assert mapping.node_info({"NodeName": "n2", "State": "DOWN*+DRAIN"}, 0)["state"] == "down"
    assert mapping.node_info({"NodeName": "n2", "State": "IDLE+DRAIN"}, 0)["availability"] == "drain"
    assert mapping.node_info({"NodeName": "n2", "State": "IDLE*"}, 0)["state"] == "down"  # not responding


def test_an_array_is_submitted_as_one_slurm_job_array_and_its_elements_are_found_in_records():
    spec = JobSpec(image="busybox", command=["true"], env={"CONVEYOR_TASK_FIRST": "0", "CONVEYOR_TASK_LAST": "98",
                                                           "CONVEYOR_TASK_STEP": "2"})
    assert mapping.array_expression(spec.env, 4) == "0-98:2%4"
    assert mapping.array_expression(spec.env, 0) == "0-98:2"  # no max-parallel
    args = mapping.sbatch_args(spec, SlurmOptions(), "exec1", "", "/shared/exec1/slurm-arrays/arr1", ("arr1", "0-98:2%4"))
    for arg in ("--array=0-98:2%4", "--hold", "--job-name=conveyor-array-arr1", "--comment=conveyor:exec1:array:arr1",
                "--output=/shared/exec1/slurm-arrays/arr1/tasks/%a/slurm.out"):
        assert arg in args, (arg, args)
    # An element that ran has a record of its own; the pending rest of the array shares one.
    assert mapping.element_ids({"JobId": "813", "ArrayJobId": "812", "ArrayTaskId": "3"}) == ["812_3"]
    assert mapping.element_ids({"JobId": "812", "ArrayJobId": "812", "ArrayTaskId": "4-8:2%2"}) == ["812_4", "812_6", "812_8"]
    assert mapping.element_ids({"JobId": "812", "ArrayJobId": "812", "ArrayTaskId": "1,5-6"}) == ["812_1", "812_5", "812_6"]
    assert mapping.element_ids({"JobId": "9"}) == []
    assert mapping.parse_handle("812_3-job1") == ("812_3", "job1")
    for bad in ("812_-job1", "_3-job1", "812_3"):
        with pytest.raises(ValueError):
            mapping.parse_handle(bad)


def test_dependencies_not_ended_become_slurms_dependency_by_condition():
    after = "ok:812_3-jobA ok:90-jobB any:91-jobC"
    assert mapping.dependency(after) == "afterok:812_3:90,afterany:91"
    # (Conveyor's own label, set by the launcher: a user's spec cannot carry it)
    spec = JobSpec(image="busybox", command=["true"]).model_copy(update={"labels": {"conveyor.after": after}})
    args = mapping.sbatch_args(spec, SlurmOptions(), "exec1", "job1", "/shared/exec1/slurm/job1")
    assert "--dependency=afterok:812_3:90,afterany:91" in args
    assert not any(a.startswith("--dependency") for a in _args())
