"""JobSpec -> a Swarm service, and a service's tasks -> Conveyor: pure mappings, no I/O.

`check()` refuses what a Swarm service (Engine API 1.41) cannot carry; `service_args()` is the
keyword arguments of the docker SDK's ``APIClient.create_service``; `service_status()` reads a
service and its tasks back as a ContainerStatus. All of it is unit-testable without an engine.
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import InvalidSpec
from ...spec import JobSpec
from ..base import ContainerStatus
from ..docker.mapping import JOB_LOG_CONFIG, _engine_time, conveyor_labels

# The service's own labels say where in its life Conveyor put it (a service update is the only
# way to act on a job, and it re-runs a job service, so the phase is told by labels, not tasks).
LABEL_PHASE = "conveyor.swarm.phase"  # created | started | stopping | stopped
LABEL_FINAL = "conveyor.swarm.final"  # JSON: the end a stop saw (its task is gone afterwards)

PHASE_CREATED, PHASE_STARTED, PHASE_STOPPING, PHASE_STOPPED = "created", "started", "stopping", "stopped"

# Task states before the container runs: the job waits for a node, the image, its start.
WAITING = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting")
GONE = ("shutdown", "orphaned", "remove")


# The generic resource a Swarm node advertises for each GPU vendor's GPUs (dockerd
# --node-generic-resource NVIDIA-GPU=<uuid>; nvidia-container-runtime's ``swarm-resource``
# setting then gives the task the GPU whose id Swarm put in DOCKER_RESOURCE_NVIDIA-GPU).
GPU_RESOURCES = {"nvidia": "NVIDIA-GPU", "amd": "AMD-GPU", "intel": "INTEL-GPU"}


SHARED_DIR_HINT = ("a job on a swarm reaches its data through a directory every node mounts at the same path: "
                   "set [engine] shared_dir in config.toml (README: Running on a cluster)")


def service_name(job_id: str) -> str:
    """A job's service is named after it: a second create conflicts instead of making a twin."""
    return f"conveyor-{job_id}"


def job_mode(completions: int) -> dict[str, Any]:
    """A one-task ``replicated-job`` (docker SDK: ``ServiceMode("replicated-job", concurrency=1,
    replicas=completions)``). Zero completions: the service exists and runs nothing yet."""
    return {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": completions}}


# ----------------------------------------------------------------------------- check


def check(spec: JobSpec, shared: bool = False) -> None:
    """Refuse what a Swarm service cannot carry, naming the field and what to do instead.
    Swarm's ContainerSpec (API 1.41) has no privileged mode, no ipc/uts/pid namespaces, no
    devices, shm size, swap limit or restart policy of the container; Conveyor cannot attach a
    terminal or stdin to a task on another node, nor publish its ports without the routing mesh.
    Inputs and outputs travel through a directory every node mounts (``shared``: there is one)."""
    problems: list[tuple[str, object, str]] = []
    other = "use the docker backend for it"
    if spec.privileged:
        problems.append(("privileged", True, f"a Swarm service cannot run privileged; {other}"))
    for field in ("ipc_mode", "uts_mode", "pid_mode"):
        if getattr(spec, field):
            problems.append((field, getattr(spec, field), f"a Swarm service has no {field.replace('_', ' ')}; {other}"))
    if spec.tty:
        problems.append(("tty", True, "the swarm backend gives no terminal (a task may run on another node)"))
    if spec.stdin_open:
        problems.append(("stdin_open", True, "the swarm backend cannot feed stdin to a task on another node"))
    if spec.ports:
        problems.append(("ports", [p.container_port for p in spec.ports],
                         "the swarm backend publishes no ports (no routing mesh here); reach the job over a network instead"))
    gpus = spec.resources.gpus
    if gpus is not None and gpus.count is None:
        problems.append(("resources.gpus", "all" if gpus.all else f"device={','.join(gpus.device_ids)}",
                         "on a swarm, ask for a number of GPUs (e.g. --gpus 1): Swarm picks the node, and the "
                         "GPUs there, from those its nodes advertise as generic resources"))
    if spec.resources.memory_swap is not None:
        problems.append(("resources.memory_swap", spec.resources.memory_swap, "a Swarm service has no swap limit; leave it out"))
    if spec.shm_size is not None:
        problems.append(("shm_size", spec.shm_size, "a Swarm service has no shm size; mount a tmpfs at /dev/shm instead"))
    if spec.restart.name != "no":
        problems.append(("restart", spec.restart.name,
                         "a swarm job never restarts in place; use retries (Conveyor runs it again)"))
    if spec.network == "none" or (spec.network or "").startswith("container:"):
        problems.append(("network", spec.network,
                         "a Swarm service can use the node's bridge (default), host, or a swarm network by name"))
    if spec.entrypoint == [] and not spec.full_command:
        problems.append(("entrypoint", [], "clearing the image's entrypoint needs a command to run instead"))
    for field, paths in (("inputs", [i.target for i in spec.inputs]), ("outputs", spec.outputs)):
        if paths and not shared:
            problems.append((field, paths, SHARED_DIR_HINT))
    if problems:
        raise InvalidSpec(problems)


# ----------------------------------------------------------------------------- JobSpec -> service


def service_args(spec: JobSpec, executor_id: str, job_id: str) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_service``: the job's service, made with zero
    completions (it runs when started, see driver.py). The image is passed as written, never
    resolved against a registry (what ``--no-resolve-image`` keeps the CLI from doing)."""
    labels = conveyor_labels(executor_id, job_id, spec.name)
    return {
        "name": service_name(job_id),
        "labels": {**labels, LABEL_PHASE: PHASE_CREATED},
        "mode": job_mode(0),
        "task_template": task_template(spec, labels),
        "endpoint_spec": {"Mode": "dnsrr"},  # no virtual IP: no IPVS on these kernels
    }


def container_spec(spec: JobSpec, labels: dict[str, str]) -> dict[str, Any]:
    """The task's ContainerSpec. Swarm's Command is the entrypoint and Args the command."""
    if spec.entrypoint == []:
        command, args = spec.full_command, None  # the command replaces the image's entrypoint
    else:
        command, args = spec.entrypoint, spec.full_command
    cs: dict[str, Any] = {
        "Image": spec.image,
        "Labels": {**spec.labels, **labels},
        "Command": command,
        "Args": args,
        "Env": [f"{k}={v}" for k, v in spec.env.items()] or None,
        "Dir": spec.workdir,
        "User": spec.user,
        "Hostname": spec.hostname,
        "Mounts": [_mount(m) for m in spec.mounts] or None,
        "StopGracePeriod": int(spec.stop_grace * 1e9),
        "ReadOnly": spec.read_only or None,
        "Init": spec.init or None,
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in spec.ulimits] or None,
    }
    return {k: v for k, v in cs.items() if v is not None}


def task_template(spec: JobSpec, labels: dict[str, str]) -> dict[str, Any]:
    res = spec.resources
    nano = int(res.cpus * 1e9) if res.cpus else None
    limits = {"NanoCPUs": nano, "MemoryBytes": res.memory, "Pids": res.pids_limit}
    reservations: dict[str, Any] = {"NanoCPUs": nano, "MemoryBytes": res.memory}
    if res.gpus is not None:  # a count, or the ids Conveyor's admission gave it: their number
        wanted = res.gpus.count or len(res.gpus.device_ids)
        reservations["GenericResources"] = [
            {"DiscreteResourceSpec": {"Kind": GPU_RESOURCES[res.gpus.vendor.value], "Value": wanted}}]
    tt: dict[str, Any] = {
        "ContainerSpec": container_spec(spec, labels),
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "LogDriver": {"Name": JOB_LOG_CONFIG["type"], "Options": JOB_LOG_CONFIG["config"]},
        "Resources": {
            "Limits": {k: v for k, v in limits.items() if v},
            "Reservations": {k: v for k, v in reservations.items() if v},
        },
    }
    placement = placement_of(spec)
    if placement:
        tt["Placement"] = placement
    if spec.network and spec.network != "bridge":
        tt["Networks"] = [{"Target": spec.network}]  # host, or a swarm network by name
    return tt


def placement_of(spec: JobSpec) -> dict[str, Any]:
    """Constraints and spread preferences from the job's swarm options."""
    if spec.backend is None:
        return {}
    opts = spec.backend.options_for("swarm")
    constraints = list(opts.constraints)
    preferences = [{"Spread": {"SpreadDescriptor": p.partition("=")[2]}} for p in opts.preferences]
    out: dict[str, Any] = {}
    if constraints:
        out["Constraints"] = constraints
    if preferences:
        out["Preferences"] = preferences
    return out


def _mount(m) -> dict[str, Any]:
    out: dict[str, Any] = {"Type": m.type, "Target": m.target, "ReadOnly": m.read_only}
    if m.type == "tmpfs":
        if m.size:
            out["TmpfsOptions"] = {"SizeBytes": m.size}
    elif m.source:
        out["Source"] = m.source
    return out


def node_gpus(generic: list[dict]) -> dict[str, list[str]]:
    """A node's GPUs by vendor from the generic resources it advertises: named ones by id, a
    discrete count as that many numbered ones."""
    kinds = {kind: vendor for vendor, kind in GPU_RESOURCES.items()}
    gpus: dict[str, list[str]] = {}
    for r in generic:
        if "NamedResourceSpec" in r and r["NamedResourceSpec"].get("Kind") in kinds:
            gpus.setdefault(kinds[r["NamedResourceSpec"]["Kind"]], []).append(str(r["NamedResourceSpec"].get("Value")))
        elif "DiscreteResourceSpec" in r and r["DiscreteResourceSpec"].get("Kind") in kinds:
            spec = r["DiscreteResourceSpec"]
            gpus.setdefault(kinds[spec["Kind"]], []).extend(str(i) for i in range(int(spec.get("Value") or 0)))
    return gpus


# ----------------------------------------------------------------------------- tasks -> Conveyor


def latest_task(tasks: list[dict]) -> dict | None:
    """The task of the job's latest run (one task per iteration; the newest iteration wins)."""
    if not tasks:
        return None
    return max(tasks, key=lambda t: (((t.get("JobIteration") or {}).get("Index") or 0), t.get("CreatedAt") or ""))


def final_label(status: ContainerStatus) -> str:
    return json.dumps({"exit_code": status.exit_code, "started_at": status.started_at,
                       "finished_at": status.finished_at, "error": status.error})


def service_status(service: dict, tasks: list[dict], nodes: dict[str, dict] | None = None,
                   started: dict[str, float] | None = None) -> ContainerStatus:
    """A job's status from its service and tasks. ``nodes``: node id -> node document (names
    the node in errors, and tells a task on a node that is down); ``started``: task id -> when
    it was seen running (a finished task no longer carries its start time).

    ===================================  ==============================================
    phase created                        created
    started, no task yet / task waiting  running, the wait's reason in ``error`` (e.g. "no
    (pending ... starting)               suitable node (...)"): a started job, not finalized,
                                         never started again
    running                              running (started_at: the task's running time)
    running on a node that is down       dead, error naming the node
    complete                             exited, code 0 (or the container's)
    failed                               exited with the container's exit code
    rejected (e.g. no image on the node) exited, exit code None, the node's words
    shutdown/orphaned/remove             dead, error naming the node; after a stop:
                                         exited with the container's code
    stopping, task gone                  dead, exit code None: its end was not seen
    stopped                              what the stop saw (the service's final label)
    ===================================  ==============================================
    Swarm reports no OOM kill: ``oom_killed`` is always False."""
    spec = service.get("Spec") or {}
    labels = dict(spec.get("Labels") or {})
    phase = labels.get(LABEL_PHASE, PHASE_STARTED)
    sid = service["ID"]
    nodes = nodes or {}
    started = started or {}

    placed_on: str | None = None  # the task's node, once it has one

    def status(state: str, code: int | None = None, start: float | None = None, end: float | None = None,
               error: str | None = None, start_failed: bool = False) -> ContainerStatus:
        return ContainerStatus(id=sid, status=state, exit_code=code, oom_killed=False, started_at=start,
                               finished_at=end, error=error, labels=labels, start_failed=start_failed, node=placed_on)

    if phase == PHASE_CREATED:
        return status("created")
    if phase == PHASE_STOPPED and LABEL_FINAL in labels:
        final = json.loads(labels[LABEL_FINAL])
        return status("exited", final.get("exit_code"), final.get("started_at"), final.get("finished_at") or 0.0,
                      final.get("error"))
    task = latest_task(tasks)
    if task is None:
        if phase in (PHASE_STOPPING, PHASE_STOPPED):
            when = _engine_time((service.get("UpdatedAt")))
            return status("dead", None, None, when or 0.0, "stopped, and its task was removed before its end was seen")
        return status("running", error="waiting for the orchestrator to make its task")
    st = task.get("Status") or {}
    state = st.get("State") or "unknown"
    when = _engine_time(st.get("Timestamp"))
    code = (st.get("ContainerStatus") or {}).get("ExitCode")
    node_id = task.get("NodeID") or ""
    node = nodes.get(node_id) or {}
    node_name = ((node.get("Description") or {}).get("Hostname")) or node_id[:12] or "no node"
    placed_on = node_name if node_id else None
    reason = st.get("Err") or st.get("Message")
    start = started.get(task.get("ID", "")) or _engine_time(task.get("CreatedAt"))
    if state in WAITING:
        return status("running", error=f"{state}: {reason}" if reason else state)
    if state == "running":
        start = started.get(task.get("ID", "")) or when
        if (node.get("Status") or {}).get("State") == "down":
            return status("dead", None, start, when, f"node {node_name} is down (its task was running there)")
        return status("running", start=start)
    if state == "complete":
        return status("exited", code or 0, start, when)
    if state == "failed":  # "starting container failed: ...": the container's process never ran
        err = st.get("Err") or ""
        return status("exited", code, start, when, err, start_failed=err.startswith("starting container failed"))
    if state == "rejected":
        return status("exited", None, start, when, f"rejected on node {node_name}: {reason}", start_failed=True)
    if state in GONE and phase in (PHASE_STOPPING, PHASE_STOPPED):
        return status("exited", code if code is not None and code >= 0 else None, start, when)
    if state in GONE:
        return status("dead", None, start, when, f"task {state} on node {node_name}: {reason}")
    return status("dead", None, start, when, f"task in unknown state {state!r} on node {node_name}: {reason}")
