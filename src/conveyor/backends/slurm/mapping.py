"""JobSpec -> an ``sbatch`` command line, and what Slurm and the job's step say -> Conveyor: pure
mappings, no I/O, unit-testable without a cluster."""

from __future__ import annotations

import math
import re
import shlex
import sys
import time
from datetime import datetime
from typing import Any

from ...errors import InvalidSpec
from ...spec import JobSpec
from ...spec.backend import SlurmOptions
from ..base import LABEL_AFTER, LABEL_EXECUTOR, LABEL_JOB, LABEL_MANAGED, LABEL_NAME, ContainerStatus

# Slurm job states in which the job has ended (``scontrol show job``'s JobState, the
# job-completion record's JobState); the rest (PENDING, RUNNING, SUSPENDED, ...) are alive.
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED"})
# Ends in which the node, not the job, failed: there is no exit code to tell.
LOST = frozenset({"NODE_FAIL", "BOOT_FAIL"})

# Why a released job still waits, in Slurm's words (squeue's REASON) -> what a user reads.
REASONS = {
    "Resources": "waits for resources: no node has the CPUs, memory or GPUs it asks for free now",
    "Priority": "waits behind jobs of higher priority",
    "JobArrayTaskLimit": "waits: its array runs as many tasks as its max-parallel allows",
    "Dependency": "waits for a job it depends on",
    "DependencyNeverSatisfied": "a job it depends on failed: it will never run (Conveyor ends it)",
    "ReqNodeNotAvail": "waits: the nodes it may run on are not available (down, drained or reserved)",
    "PartitionNodeLimit": "waits: its partition has too few nodes for it",
    "QOSMaxJobsPerUserLimit": "waits: its QOS limits how many jobs a user runs",
    "BeginTime": "waits for its begin time",
    "None": "waits for Slurm's scheduler",
}

SHARED_DIR_HINT = ("a Slurm job's files (its step, logs, inputs and outputs) live on a directory every node mounts "
                   "at the same path: set [engine] shared_dir in config.toml (README: Running under Slurm)")


def job_name(job_id: str) -> str:
    """A job's Slurm name: finds it again after a crash (``squeue --name``)."""
    return f"conveyor-{job_id}"


def step_script(job_dir: str) -> str:
    """The batch script: Conveyor's step (step.py) for the job directory ``job_dir``, a shell
    word already quoted (an array's gives ``.../tasks/"$SLURM_ARRAY_TASK_ID"``)."""
    return ("#!/bin/sh\n# Conveyor's step: see conveyor/backends/slurm/step.py\n"
            f"exec {shlex.quote(sys.executable)} -m conveyor.backends.slurm.step {job_dir}\n")


def array_name(array_id: str) -> str:
    """An array's Slurm job array name (every element has it)."""
    return f"conveyor-array-{array_id}"


def array_expression(env: dict[str, str], max_parallel: int) -> str:
    """``--array`` for a task's array, from the range in its environment: ``0-99:1%4``."""
    text = f"{env['CONVEYOR_TASK_FIRST']}-{env['CONVEYOR_TASK_LAST']}:{env['CONVEYOR_TASK_STEP']}"
    return f"{text}%{max_parallel}" if max_parallel else text


def element_ids(record: dict[str, str]) -> list[str]:
    """The ``ARRAYID_INDEX`` ids a ``scontrol show job`` record stands for: one element that
    runs (or ran), or the pending rest of an array ("4-10:2%2", "3,5-6")."""
    array_id, tasks = record.get("ArrayJobId"), record.get("ArrayTaskId")
    if not array_id or not tasks:
        return []
    out = []
    for part in tasks.split("%")[0].split(","):
        first, _, rest = part.partition("-")
        last, _, step = rest.partition(":")
        if first.isdigit() and (not last or last.isdigit()) and (not step or step.isdigit()):
            out.extend(f"{array_id}_{i}" for i in range(int(first), int(last or first) + 1, int(step or 1)))
    return out


def comment(executor_id: str, job_id: str) -> str:
    """The Slurm job's comment: whose job it is, for people and for recovery."""
    return f"conveyor:{executor_id}:{job_id}"


def handle_of(slurm_id: str, job_id: str) -> str:
    """A job's handle: the Slurm job id first (what ``squeue`` shows), then Conveyor's."""
    return f"{slurm_id}-{job_id}"


def parse_handle(handle: str) -> tuple[str, str]:
    """(slurm job id, Conveyor job id) of a handle."""
    slurm_id, dash, job_id = handle.partition("-")
    if not dash or not re.fullmatch(r"\d+(_\d+)?", slurm_id) or not job_id:
        raise ValueError(f"not a slurm job handle: {handle!r}")
    return slurm_id, job_id


# ----------------------------------------------------------------------------- check


def check(spec: JobSpec, shared: bool) -> None:
    """Refuse what a Slurm job cannot carry, naming the field and what to do instead. A job runs
    on a node Slurm picks, through that node's container engine, under Slurm's allocation."""
    problems: list[tuple[str, object, str]] = []
    if not shared:
        problems.append(("backend", "slurm", SHARED_DIR_HINT))
    if spec.tty:
        problems.append(("tty", True, "the slurm backend gives no terminal (the job runs on a node Slurm picks, later)"))
    if spec.stdin_open:
        problems.append(("stdin_open", True, "the slurm backend cannot feed stdin to a batch job; stage the data as an input"))
    if spec.ports:
        problems.append(("ports", [p.container_port for p in spec.ports],
                         "the slurm backend publishes no ports (the node is Slurm's choice); reach the job over a network"))
    gpus = spec.resources.gpus
    if gpus is not None and gpus.count is None:
        problems.append(("resources.gpus", "all" if gpus.all else f"device={','.join(gpus.device_ids)}",
                         "under Slurm, ask for a number of GPUs (e.g. --gpus 1): Slurm picks the node and its GPUs (--gres)"))
    if spec.restart.name != "no":
        problems.append(("restart", spec.restart.name, "a Slurm job never restarts in place; use retries (Conveyor runs it again)"))
    if problems:
        raise InvalidSpec(problems)


# ----------------------------------------------------------------------------- JobSpec -> sbatch


def sbatch_args(spec: JobSpec, options: SlurmOptions, executor_id: str, job_id: str, job_dir: str,
                array: tuple[str, str] | None = None) -> list[str]:
    """The arguments of ``sbatch`` for the job (its batch script last, added by the driver).
    Submitted held (``--hold``): ``start`` releases it, so a job exists in Slurm from create on
    and runs only when Conveyor's scheduler admitted it. ``--no-requeue``: a job whose node
    fails ends NODE_FAIL instead of running again behind Conveyor's back (its retries decide).
    The step's own messages (and Slurm's) go to slurm.out/slurm.err; the job's output is
    written apart by the step, byte for byte.

    ``array``: (array id, ``--array`` expression) to submit the task's whole array as one
    Slurm job array, every element held; ``job_dir`` is then the array's directory, in which
    ``tasks/<index>`` leads to each task's own directory."""
    if array is None:
        name, tag, out = job_name(job_id), comment(executor_id, job_id), job_dir
        args = ["--parsable", "--hold", "--no-requeue", f"--chdir={job_dir}"]
    else:
        name, tag, out = array_name(array[0]), comment(executor_id, f"array:{array[0]}"), f"{job_dir}/tasks/%a"
        args = ["--parsable", "--hold", "--no-requeue", f"--chdir={job_dir}", f"--array={array[1]}"]
    args += [f"--job-name={name}", f"--comment={tag}", f"--output={out}/slurm.out", f"--error={out}/slurm.err",
             "--ntasks=1",
            f"--cpus-per-task={max(1, math.ceil(spec.resources.cpus or 1))}"]
    if spec.resources.memory is not None:
        args.append(f"--mem={math.ceil(spec.resources.memory / (1 << 20))}M")
    if spec.resources.gpus is not None and spec.resources.gpus.count:
        args.append(f"--gres=gpu:{spec.resources.gpus.count}")
    if spec.timeout is not None:
        # Conveyor's own timer ends the job at its timeout; Slurm's limit (whole minutes) is
        # the backstop for when no agent is watching.
        args.append(f"--time={math.ceil((spec.timeout + spec.stop_grace) / 60) + 1}")
    for flag, value in (("partition", options.partition), ("account", options.account), ("qos", options.qos),
                        ("constraint", options.constraint), ("reservation", options.reservation)):
        if value:
            args.append(f"--{flag}={value}")
    if options.nice:
        args.append(f"--nice={options.nice}")
    if spec.labels.get(LABEL_AFTER):
        args.append(f"--dependency={dependency(spec.labels[LABEL_AFTER])}")
    return args


def dependency(after: str) -> str:
    """``--dependency`` from Conveyor's "ok:<handle> any:<handle>": ``afterok:812_3:90,afterany:91``
    (Slurm's afterok: ended with exit code 0, as a Conveyor job is Done)."""
    by_kind: dict[str, list[str]] = {}
    for item in after.split():
        condition, _, handle = item.partition(":")
        by_kind.setdefault("afterok" if condition == "ok" else "afterany", []).append(parse_handle(handle)[0])
    return ",".join(f"{kind}:{':'.join(ids)}" for kind, ids in by_kind.items())


# ----------------------------------------------------------------------------- Slurm -> Conveyor

_PAIR = re.compile(r"(\S+?)=(.*?)(?= \S+?=|$)")


def parse_record(line: str) -> dict[str, str]:
    """One ``scontrol show job -o`` (or job-completion) line as a dict. Values may hold spaces
    (a node's OS); a key is the word before ``=``."""
    return {k: v.strip() for k, v in _PAIR.findall(line.strip())}


def slurm_time(text: str | None) -> float | None:
    """Slurm's times are local, to the second, without a zone ("2026-12-02T22:08:24")."""
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def exit_code(text: str | None) -> int | None:
    """Slurm's ExitCode ``CODE:SIGNAL`` as a shell would say it (a signal N is 128+N)."""
    code, _, sig = (text or "").partition(":")
    if not code.isdigit():
        return None
    return 128 + int(sig) if sig.isdigit() and int(sig) else int(code)


def labels(executor_id: str, job_id: str, name: str | None) -> dict[str, str]:
    out = {LABEL_MANAGED: "true", LABEL_EXECUTOR: executor_id, LABEL_JOB: job_id}
    if name:
        out[LABEL_NAME] = name
    return out


def job_status(handle: str, record: dict[str, str] | None, phase: str | None, started: dict | None,
               result: dict | None, labels: dict[str, str], frozen: bool = False) -> ContainerStatus:
    """A job's status from what its step wrote (``started``, ``result``: the container's own
    start and end) and what Slurm says (``record``: ``scontrol show job`` or the job-completion
    record; None when Slurm knows nothing of it). ``phase``: "started" once ``start`` released it;
    ``frozen``: the step froze the job (a suspend), whether or not Slurm shows it SUSPENDED.

    - the step's result -> exited with the container's exit code (and its OOM flag);
    - held and never released -> created;
    - pending after release, or running before the step started the container -> running with
      no start time and the wait's reason in ``error`` (the job is not finalized, not started again);
    - running with the container started -> running;
    - ended in Slurm without the step's result (killed at its time limit, cancelled, its node
      failed) -> exited with Slurm's exit code, or dead with no code when the node failed.
    """
    node = (started or {}).get("node") or _node(record)
    started_at = (started or {}).get("started_at")
    if result is not None:
        return ContainerStatus(handle, "exited", result.get("exit_code"), bool(result.get("oom_killed")),
                               result.get("started_at") or started_at, result.get("finished_at"), result.get("error"),
                               labels, start_failed=bool(result.get("start_failed")), node=result.get("node") or node)
    if record is None:
        return ContainerStatus(handle, "dead", None, False, started_at, _now(),
                               "Slurm no longer knows the job, and its step left no result", labels, node=node)
    state = record.get("JobState", "").split()[0] if record.get("JobState") else ""
    reason = record.get("Reason", "None")
    if state in ENDED:  # (COMPLETING is not: the job's processes are still being stopped)
        return _ended(handle, record, state, started_at, labels, node, phase)
    if state == "PENDING":
        if phase != "started":
            return ContainerStatus(handle, "created", None, False, None, None, None, labels)
        return ContainerStatus(handle, "running", None, False, None, None,
                               f"pending in Slurm ({reason}): {REASONS.get(reason, reason)}", labels)
    if started_at is None:  # RUNNING (or SUSPENDED by an admin) before the step started the container
        return ContainerStatus(handle, "running", None, False, None, None,
                               f"starting on {node or 'its node'} (pulling the image, making the container)", labels, node=node)
    return ContainerStatus(handle, "paused" if state == "SUSPENDED" or frozen else "running", None, False, started_at,
                           None, None, labels, node=node)


def _ended(handle: str, record: dict[str, str], state: str, started_at: float | None, labels: dict[str, str],
           node: str | None, phase: str | None) -> ContainerStatus:
    finished = slurm_time(record.get("EndTime")) or _now()
    if state in LOST:
        return ContainerStatus(handle, "dead", None, False, started_at, finished,
                               f"{state}: its node {node or ''} failed while it ran (Slurm: {record.get('Reason', '')})".replace("  ", " "),
                               labels, node=node)
    if state == "CANCELLED" and started_at is None:
        why = "cancelled in Slurm before it started" if phase == "started" else "stopped before it started"
        return ContainerStatus(handle, "exited", None, False, None, finished, why, labels, node=node)
    code = exit_code(record.get("ExitCode"))
    notes = {
        "TIMEOUT": "TIMEOUT: Slurm ended it at its time limit",
        "OUT_OF_MEMORY": "OUT_OF_MEMORY: Slurm killed it at its memory limit",
        "CANCELLED": "CANCELLED in Slurm (scancel) before its step recorded an end",
        "PREEMPTED": "PREEMPTED by Slurm",
        "DEADLINE": "DEADLINE: Slurm ended it at its deadline",
    }
    error = notes.get(state, f"{state}: its step ended without recording the job's end")
    return ContainerStatus(handle, "exited", code, state == "OUT_OF_MEMORY", started_at, finished, error,
                           labels, node=node, timed_out=state in ("TIMEOUT", "DEADLINE"))


def _node(record: dict[str, str] | None) -> str | None:
    nodes = (record or {}).get("BatchHost") or (record or {}).get("NodeList")
    return nodes if nodes and nodes != "(null)" else None


def _now() -> float:
    return time.time()


def node_info(record: dict[str, str], running: int) -> dict[str, Any]:
    """A ``scontrol show node -o`` record as Conveyor's node row (see Backend.nodes)."""
    state = record.get("State", "UNKNOWN")
    words = set(state.replace("+", " ").split())
    down = bool(words & {"DOWN", "DOWN*", "FAIL", "NOT_RESPONDING", "UNKNOWN", "FUTURE", "POWERED_DOWN"}) or "*" in state
    drained = bool(words & {"DRAIN", "DRAINED", "DRAINING", "MAINT", "RESERVED"})
    gpus = 0
    for gres in (record.get("Gres") or "").split(","):
        parts = gres.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            gpus += int(parts[-1])
    return {
        "name": record.get("NodeName"), "id": record.get("NodeName"), "role": "worker",
        "state": "down" if down else "ready", "availability": "drain" if drained else "active",
        "address": record.get("NodeAddr"), "labels": {"partitions": record.get("Partitions", ""),
                                                      "features": record.get("ActiveFeatures", "")},
        "cpus": float(record.get("CPUTot") or 0), "memory": int(record.get("RealMemory") or 0) << 20,
        # Slurm's gres names no vendor: GPUs under Slurm are counted as nvidia's (CUDA_VISIBLE_DEVICES)
        "gpus": {"nvidia": [str(i) for i in range(gpus)]} if gpus else {},
        "running": running, "slurm_state": state,
    }
