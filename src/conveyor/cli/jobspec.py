"""The docker-like flags that describe a job, and their translation into one validated
JobSpec (over an optional spec file). Errors name the flag the user typed."""

from __future__ import annotations

import os
from typing import Any

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


def job_options(fn):
    """The docker-like flags that describe a job, shared by `run` and `submit`."""
    import click  # here, not at the top: the docker stand-in uses build_spec without click

    options = [
        click.option("-f", "--file", "spec_file", type=click.Path(dir_okay=False), help="Job spec in YAML or JSON; flags override it."),
        click.option("-e", "--env", multiple=True, help="KEY=VALUE, or KEY to pass this shell's value."),
        click.option("-w", "--workdir", help="Working directory inside the container."),
        click.option("-u", "--user", help="UID[:GID] or NAME[:GROUP]."),
        click.option("--hostname", help="Container host name."),
        click.option("--name", help="Job name."),
        click.option("-l", "--label", multiple=True, help="KEY=VALUE label."),
        click.option("-v", "--volume", multiple=True, help="SRC:DST[:ro] bind mount or named volume."),
        click.option("--mount", "mount_long", multiple=True, help="type=bind|volume|tmpfs,source=..,target=..[,readonly]."),
        click.option("--tmpfs", multiple=True, help="DST[:size=64m] tmpfs mount."),
        click.option("--input", "inputs", multiple=True, metavar="SRC:DST", help="Stage data in read-only: HOST_PATH:CONTAINER_PATH (copied at submit) or sha256:FILESET:CONTAINER_PATH."),
        click.option("--output", "outputs", multiple=True, metavar="PATH", help="Capture this container directory or file into the content store when the job ends."),
        click.option("--network", "--net", "network", help="bridge, none, host, container:ID or a network name."),
        click.option("-p", "--publish", multiple=True, help="[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]."),
        click.option("--ipc", help="IPC namespace: private, shareable, host, none, container:ID."),
        click.option("--uts", help="UTS namespace: host."),
        click.option("--pid", help="PID namespace: host or container:ID."),
        click.option("--privileged", is_flag=True, default=None, help="Give the job extended privileges."),
        click.option("--shm-size", help="Size of /dev/shm, e.g. 64m."),
        click.option("--read-only", is_flag=True, default=None, help="Mount the container's root filesystem read-only."),
        click.option("--init", is_flag=True, default=None, help="Run an init inside the container that forwards signals and reaps processes."),
        click.option("--ulimit", multiple=True, help="NAME=SOFT[:HARD], e.g. nofile=1024:2048."),
        click.option("--restart", help="no, on-failure[:N], always, unless-stopped."),
        click.option("--rm", "auto_remove", is_flag=True, default=None, help="Remove the container once results are saved."),
        click.option("--timeout", help="Terminate the job after this long (30s, 5m, 2h)."),
        click.option("--stop-timeout", "stop_grace", help="Seconds between SIGTERM and SIGKILL (default 10)."),
        click.option("--pull", type=click.Choice(["never", "missing", "if-missing", "always"]), help="Image pull policy."),
        click.option("-t", "--tty", is_flag=True, default=None, help="Allocate a pseudo-TTY (output is still logged)."),
        click.option("-i", "--interactive", is_flag=True, default=None, help="Keep stdin open and feed it to the job."),
        click.option("--cpus", help="Number of CPUs, fractional allowed."),
        click.option("-m", "--memory", help="Memory limit, e.g. 512m, 2g, 1.5Gi."),
        click.option("--memory-swap", help="Memory plus swap limit; -1 for unlimited swap."),
        click.option("--pids-limit", type=int, help="Maximum number of processes."),
        click.option("--gpus", help="all, a count, or device=ID[,ID]."),
        click.option("--gpu-vendor", type=click.Choice(["nvidia", "amd", "intel"]), help="GPU vendor (default nvidia)."),
        click.option("--entrypoint", help="Override the image's entrypoint ('' clears it)."),
        # the backend (README: Backends)
        click.option("--backend", help="docker, podman or process (a host process: no IMAGE, the command follows); default: the node's engine."),
        click.option("--backend-opt", "backend_opt", multiple=True, metavar="KEY=VALUE", help="An option of the job's backend ('conveyor backends' lists them)."),
        click.option("--runtime", help="OCI runtime for the container, e.g. runsc (gVisor); 'conveyor machine' lists the engine's."),
        click.option("--security-opt", "security_opt", multiple=True, help="Security option for the container, e.g. no-new-privileges."),
        click.option("--cgroup-parent", "cgroup_parent", help="Parent cgroup for the container."),
        # scheduling (README: Scheduling)
        click.option("--priority", type=int, help="Higher starts first (-1000..1000, default 0)."),
        click.option("--after", multiple=True, metavar="ID[:ok|:any]", help="Start after this job or array ended (ok: successfully, the default; any: at all)."),
        click.option("--retries", type=int, help="Run a failed job again up to N times."),
        click.option("--retry-backoff", help="Wait before a retry (30s, 5m); doubles each time."),
        click.option("--start-deadline", help="Fail the job if it has not started this long after submission (10m)."),
        click.option("--lease", help="Run in this lease's share of the node (README: Leases)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


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
