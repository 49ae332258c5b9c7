"""The docker-like flags that describe a job, and their translation into one validated
JobSpec (over an optional spec file). Errors name the flag the user typed."""

from __future__ import annotations

import os
from typing import Any

from ..dockercli.flags import BOOL, LIST, VALUE, Flag
from ..errors import InvalidSpec


class FlagError(ValueError):
    """Flags that cannot make a job whatever the agent says (no image at all, say). Each
    front end reports it its own way: `conveyor` as a usage error, the docker stand-in as
    docker does."""

# Where a spec field came from on the command line, so errors name the flag the user typed.
FLAG_FOR_FIELD = {
    "file": "-f/--file",
    "image": "IMAGE",
    "env": "-e/--env",
    "workdir": "-w/--workdir",
    "user": "-u/--user",
    "hostname": "--hostname",
    "name": "--name",
    "labels": "-l/--label",
    "mounts": "-v/--volume, --mount or --tmpfs",
    "inputs": "--input",
    "outputs": "--output",
    "network": "--network",
    "ports": "-p/--publish",
    "ipc_mode": "--ipc",
    "uts_mode": "--uts",
    "pid_mode": "--pid",
    "shm_size": "--shm-size",
    "read_only": "--read-only",
    "init": "--init",
    "ulimits": "--ulimit",
    "restart": "--restart",
    "auto_remove": "--rm",
    "timeout": "--timeout",
    "stop_grace": "--stop-timeout",
    "pull": "--pull",
    "entrypoint": "--entrypoint",
    "backend.options.runtime": "--runtime",
    "backend.options.security_opt": "--security-opt",
    "backend.options.cgroup_parent": "--cgroup-parent",
    "backend.options": "--backend-opt",
    "backend": "--backend",
    "resources.cpus": "--cpus",
    "resources.memory": "-m/--memory",
    "resources.memory_swap": "--memory-swap",
    "resources.pids_limit": "--pids-limit",
    "resources.gpus": "--gpus",
    "priority": "--priority",
    "after": "--after",
    "start_deadline": "--start-deadline",
    "retries": "--retries",
    "retry_backoff": "--retry-backoff",
    "lease": "--lease",
    "array": "--array",
    "max_parallel": "--max-parallel",
}


def flag_for(field: str) -> str | None:
    for key, flag in FLAG_FOR_FIELD.items():
        if field == key or field.startswith(key + ".") or field.startswith(key + "["):
            return flag
    return None


# The docker-like flags that describe a job, shared by `run` and `submit`: click options
# there (flagtable.click_options), and the fast path's parser for `run` (fast.py).
JOB_FLAGS: tuple[Flag, ...] = (
    Flag("file", "f", VALUE, dest="spec_file", path="file", help="Job spec in YAML or JSON; flags override it."),
    Flag("env", "e", LIST, help="KEY=VALUE, or KEY to pass this shell's value."),
    Flag("workdir", "w", VALUE, help="Working directory inside the container."),
    Flag("user", "u", VALUE, help="UID[:GID] or NAME[:GROUP]."),
    Flag("hostname", kind=VALUE, help="Container host name."),
    Flag("name", kind=VALUE, help="Job name."),
    Flag("label", "l", LIST, help="KEY=VALUE label."),
    Flag("volume", "v", LIST, help="SRC:DST[:ro] bind mount or named volume."),
    Flag("mount", kind=LIST, dest="mount_long", help="type=bind|volume|tmpfs,source=..,target=..[,readonly]."),
    Flag("tmpfs", kind=LIST, help="DST[:size=64m] tmpfs mount."),
    Flag("input", kind=LIST, dest="inputs", metavar="SRC:DST", help="Stage data in read-only: HOST_PATH:CONTAINER_PATH (copied at submit) or sha256:FILESET:CONTAINER_PATH."),
    Flag("output", kind=LIST, dest="outputs", metavar="PATH", help="Capture this container directory or file into the content store when the job ends."),
    Flag("network", kind=VALUE, aliases=("net",), help="bridge, none, host, container:ID or a network name."),
    Flag("publish", "p", LIST, help="[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]."),
    Flag("ipc", kind=VALUE, help="IPC namespace: private, shareable, host, none, container:ID."),
    Flag("uts", kind=VALUE, help="UTS namespace: host."),
    Flag("pid", kind=VALUE, help="PID namespace: host or container:ID."),
    Flag("privileged", kind=BOOL, default=None, help="Give the job extended privileges."),
    Flag("shm-size", kind=VALUE, help="Size of /dev/shm, e.g. 64m."),
    Flag("read-only", kind=BOOL, default=None, help="Mount the container's root filesystem read-only."),
    Flag("init", kind=BOOL, default=None, help="Run an init inside the container that forwards signals and reaps processes."),
    Flag("ulimit", kind=LIST, help="NAME=SOFT[:HARD], e.g. nofile=1024:2048."),
    Flag("restart", kind=VALUE, help="no, on-failure[:N], always, unless-stopped."),
    Flag("rm", kind=BOOL, dest="auto_remove", default=None, help="Remove the container once results are saved."),
    Flag("timeout", kind=VALUE, help="Terminate the job after this long (30s, 5m, 2h)."),
    Flag("stop-timeout", kind=VALUE, dest="stop_grace", help="Seconds between SIGTERM and SIGKILL (default 10)."),
    Flag("pull", kind=VALUE, choices=("never", "missing", "if-missing", "always"), help="Image pull policy."),
    Flag("tty", "t", BOOL, default=None, help="Allocate a pseudo-TTY (output is still logged)."),
    Flag("interactive", "i", BOOL, default=None, help="Keep stdin open and feed it to the job."),
    Flag("cpus", kind=VALUE, help="Number of CPUs, fractional allowed."),
    Flag("memory", "m", VALUE, help="Memory limit, e.g. 512m, 2g, 1.5Gi."),
    Flag("memory-swap", kind=VALUE, help="Memory plus swap limit; -1 for unlimited swap."),
    Flag("pids-limit", kind=VALUE, type=int, help="Maximum number of processes."),
    Flag("gpus", kind=VALUE, help="all, a count, or device=ID[,ID]."),
    Flag("gpu-vendor", kind=VALUE, choices=("nvidia", "amd", "intel"), help="GPU vendor (default nvidia)."),
    Flag("entrypoint", kind=VALUE, help="Override the image's entrypoint ('' clears it)."),
    # the backend (README: Backends)
    Flag("backend", kind=VALUE, help="docker, podman or process (a host process: no IMAGE, the command follows); default: the node's engine."),
    Flag("backend-opt", kind=LIST, metavar="KEY=VALUE", help="An option of the job's backend ('conveyor backends' lists them)."),
    Flag("runtime", kind=VALUE, help="OCI runtime for the container, e.g. runsc (gVisor); 'conveyor machine' lists the engine's."),
    Flag("security-opt", kind=LIST, help="Security option for the container, e.g. no-new-privileges."),
    Flag("cgroup-parent", kind=VALUE, help="Parent cgroup for the container."),
    # scheduling (README: Scheduling)
    Flag("priority", kind=VALUE, type=int, help="Higher starts first (-1000..1000, default 0)."),
    Flag("after", kind=LIST, metavar="ID[:ok|:any]", help="Start after this job or array ended (ok: successfully, the default; any: at all)."),
    Flag("retries", kind=VALUE, type=int, help="Run a failed job again up to N times."),
    Flag("retry-backoff", kind=VALUE, help="Wait before a retry (30s, 5m); doubles each time."),
    Flag("start-deadline", kind=VALUE, help="Fail the job if it has not started this long after submission (10m)."),
    Flag("lease", kind=VALUE, help="Run in this lease's share of the node (README: Leases)."),
)


def job_options(fn):
    """The job flags (JOB_FLAGS) as click options."""
    from .flagtable import click_options  # here, not at the top: the docker stand-in uses build_spec without click

    return click_options(JOB_FLAGS)(fn)


def build_spec(image: str | None, command: tuple[str, ...], o: dict[str, Any]) -> dict[str, Any]:
    """CLI flags (over an optional job file) -> the job's fields as plain data. ``o`` has
    the options of :func:`job_options` by name; one left out counts as not given. The agent
    validates them (its errors name the fields, which `report_error` turns into flags):
    the CLI never loads the job model, so it starts fast."""
    data: dict[str, Any] = {}
    if o.get("spec_file"):
        from ..jobfile import read_job_file

        data = read_job_file(o.get("spec_file"))
    backend = _backend(data.get("backend"), o)
    if backend:
        data["backend"] = backend
    if backend.get("name") == "process" and image:
        command = (image, *command)  # a host process has no image: every word is the command
        image = None
    if image:
        data["image"] = image
    if command:
        data["command"] = list(command)
        data.pop("args", None)
    elif "image" not in data and backend.get("name") != "process":
        raise FlagError("an IMAGE (or -f FILE with an image) is required")
    if o.get("env"):
        data["env"] = {**_mapping(data.get("env")), **env_pairs(o.get("env"))}
    if o.get("label"):
        data["labels"] = {**_mapping(data.get("labels")), **dict(_split_pair(x, "--label") for x in o.get("label"))}
    mounts = [*map(_absolutise, o.get("volume") or ()), *(o.get("mount_long") or ()), *map(_tmpfs_mount, o.get("tmpfs") or ())]
    if mounts:
        data["mounts"] = [*data.get("mounts", []), *mounts]
    if o.get("inputs"):
        data["inputs"] = [*data.get("inputs", []), *map(_absolutise_input, o.get("inputs"))]
    if o.get("outputs"):
        data["outputs"] = [*data.get("outputs", []), *o.get("outputs")]
    if o.get("publish"):
        data["ports"] = [*data.get("ports", []), *o.get("publish")]
    if o.get("ulimit"):
        data["ulimits"] = [*data.get("ulimits", []), *o.get("ulimit")]
    if o.get("entrypoint") is not None:
        data["entrypoint"] = [] if o.get("entrypoint") == "" else [o.get("entrypoint")]
    simple = {
        "workdir": "workdir", "user": "user", "hostname": "hostname", "name": "name", "network": "network",
        "ipc": "ipc_mode", "uts": "uts_mode", "pid": "pid_mode", "privileged": "privileged", "read_only": "read_only", "init": "init",
        "shm_size": "shm_size", "restart": "restart", "auto_remove": "auto_remove", "timeout": "timeout",
        "stop_grace": "stop_grace", "pull": "pull", "tty": "tty", "interactive": "stdin_open",
        "priority": "priority", "retries": "retries", "retry_backoff": "retry_backoff",
        "start_deadline": "start_deadline", "lease": "lease",
    }
    if o.get("after"):
        data["after"] = [*data.get("after", []), *o.get("after")]
    for flag, field in simple.items():
        if o.get(flag) is not None:
            data[field] = o.get(flag)
    resources = dict(data.get("resources") or {})
    for flag in ("cpus", "memory", "memory_swap", "pids_limit"):
        if o.get(flag) is not None:
            resources[flag] = o.get(flag)
    if o.get("gpu_vendor") is not None and o.get("gpus") is None:
        raise FlagError("--gpu-vendor needs --gpus")
    if o.get("gpus") is not None:
        resources["gpus"] = f"{o['gpu_vendor']}:{o['gpus']}" if o.get("gpu_vendor") else o.get("gpus")
    if resources:
        data["resources"] = resources
    return data


def _backend(from_file: Any, o: dict[str, Any]) -> dict[str, Any]:
    """The job's ``backend`` from the file's with the flags laid over it."""
    backend = {"name": from_file} if isinstance(from_file, str) else dict(from_file or {})
    if o.get("backend"):
        backend["name"] = o.get("backend")
    options = dict(backend.get("options") or {})
    for pair in o.get("backend_opt") or ():
        key, value = _split_pair(pair, "--backend-opt")
        if key in options:  # given again: a list (constraints=A --backend-opt constraints=B)
            before = options[key]
            options[key] = [*(before if isinstance(before, list) else [before]), value]
        else:
            options[key] = value
    if o.get("runtime"):
        options["runtime"] = o.get("runtime")
    if o.get("security_opt"):
        options["security_opt"] = [*options.get("security_opt", []), *o.get("security_opt")]
    if o.get("cgroup_parent"):
        options["cgroup_parent"] = o.get("cgroup_parent")
    if options:
        backend["options"] = options
    return backend


def _mapping(value: Any) -> dict[str, str]:
    """A job file's env/labels as a mapping (it may list them as KEY=VALUE strings)."""
    if isinstance(value, list):
        return dict(item.partition("=")[::2] for item in map(str, value))
    return dict(value or {})


def env_pairs(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:  # docker: `-e NAME` passes this shell's value, or nothing if unset
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def _split_pair(item: str, flag: str) -> tuple[str, str]:
    key, eq, value = item.partition("=")
    if not eq:
        raise InvalidSpec.single(flag.lstrip("-"), item, "use KEY=VALUE")
    return key, value


def _tmpfs_mount(text: str) -> str:
    """docker's `--tmpfs /dst:size=64m,ro` in the --mount syntax the spec reads."""
    target, _, opts = text.partition(":")
    parts = ["type=tmpfs", f"target={target}"]
    for opt in filter(None, opts.split(",")):
        if opt.startswith("size="):
            parts.append("tmpfs-size=" + opt[5:])
        elif opt == "ro":
            parts.append("readonly")
        elif opt != "rw":
            parts.append(opt)  # the spec's parser names what it does not know
    return ",".join(parts)


def _absolutise_input(text: str) -> str:
    """`--input data:/data` and `--input ./x.csv:/in/x.csv` mean paths here."""
    if text.startswith(("/", "sha256:")):
        return text
    src, sep, target = text.rpartition(":")
    return os.path.abspath(os.path.expanduser(src)) + sep + target if sep and src else text


def _absolutise(volume: str) -> str:
    """`-v ./data:/data` means the directory here, as with docker."""
    src, sep, rest = volume.partition(":")
    if sep and src.startswith((".", "~")):
        return os.path.abspath(os.path.expanduser(src)) + sep + rest
    return volume
