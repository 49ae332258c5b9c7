"""JobSpec -> Engine API, and Engine API -> Conveyor: pure mappings, no I/O.

`container_config()` and `host_config()` are the keyword arguments of the docker SDK's
``create_container`` and ``create_host_config``; `container_status()` reads an inspect answer
back as a ContainerStatus. All of it is unit-testable without an engine.
"""

from __future__ import annotations

import glob
import grp
import os
import re
from datetime import datetime, timezone
from typing import Any

from docker.types import DeviceRequest
from docker.types import Mount as DockerMount
from docker.types import Ulimit as DockerUlimit

from ...errors import InvalidSpec
from ...spec import GpuRequest, GpuVendor, JobSpec
from ..base import LABEL_EXECUTOR, LABEL_JOB, LABEL_MANAGED, LABEL_NAME, ContainerStatus
from ...usage import UNLIMITED, sample

# ----------------------------------------------------------------------------- JobSpec -> engine


def conveyor_labels(executor_id: str, job_id: str | None = None, name: str | None = None) -> dict[str, str]:
    labels = {LABEL_MANAGED: "true", LABEL_EXECUTOR: executor_id}
    if job_id:
        labels[LABEL_JOB] = job_id
    if name:
        labels[LABEL_NAME] = name
    return labels


def container_config(spec: JobSpec, labels: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_container`` (without host_config)."""
    entrypoint = spec.entrypoint
    if entrypoint == []:
        entrypoint = [""]  # the Engine API's way of saying "clear the image's entrypoint"
    return {
        "image": spec.image,
        "command": spec.full_command,
        "entrypoint": entrypoint,
        "environment": [f"{k}={v}" for k, v in spec.env.items()],
        "working_dir": spec.workdir,
        "user": spec.user or "",
        "hostname": spec.hostname,
        "labels": {**spec.labels, **labels},
        "tty": spec.tty,
        "stdin_open": spec.stdin_open,
        "ports": [(p.container_port, p.protocol) for p in spec.ports] or None,
    }


# The engine keeps each job's output with the `local` driver: it stores the bytes as written,
# where json-file stores JSON strings and turns bytes that are not UTF-8 into U+FFFD (a job
# writing gzip to stdout would get its output back corrupted). One file that in practice never
# rotates, as json-file's default: Conveyor saves the whole output when the job ends. (max-size
# 0 is no "unlimited" here: the driver then rotates at every write and keeps the last lines.)
JOB_LOG_CONFIG = {"type": "local", "config": {"max-size": "1000g", "max-file": "1", "compress": "false"}}


def host_config(spec: JobSpec) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_host_config``. Never sets auto_remove:
    Conveyor removes containers itself, after their results are stored."""
    res = spec.resources
    cfg: dict[str, Any] = {
        "mounts": [_mount(m) for m in spec.mounts],
        "port_bindings": _port_bindings(spec),
        "network_mode": spec.network or "bridge",
        "ipc_mode": spec.ipc_mode or None,
        "uts_mode": spec.uts_mode or None,
        "pid_mode": spec.pid_mode or None,
        "privileged": spec.privileged,
        "read_only": spec.read_only or None,
        "init": spec.init or None,
        "shm_size": spec.shm_size,
        "ulimits": [DockerUlimit(name=u.name, soft=u.soft, hard=u.hard) for u in spec.ulimits] or None,
        "restart_policy": (
            {"Name": spec.restart.name, "MaximumRetryCount": spec.restart.max_retries}
            if spec.restart.name != "no"
            else None
        ),
        "nano_cpus": int(res.cpus * 1e9) if res.cpus else None,
        "mem_limit": res.memory,
        "memswap_limit": res.memory_swap,
        "pids_limit": res.pids_limit,
        "log_config": JOB_LOG_CONFIG,
    }
    if res.gpus is not None:
        cfg.update(gpu_host_config(res.gpus))
    cfg.update(backend_host_config(spec))
    return {k: v for k, v in cfg.items() if v not in (None, [], {})}


def backend_host_config(spec: JobSpec) -> dict[str, Any]:
    """The container backends' own options (``backend: {name: docker, options: {...}}``,
    spec/backend.py ContainerOptions) as host config: the OCI runtime (e.g. runsc for gVisor),
    the parent cgroup and security options."""
    if spec.backend is None:
        return {}
    opts = spec.backend.options_for("docker")  # ContainerOptions: docker's and podman's
    return {"runtime": opts.runtime, "cgroup_parent": opts.cgroup_parent, "security_opt": opts.security_opt or None}


def _mount(m) -> DockerMount:
    if m.type == "tmpfs":
        return DockerMount(target=m.target, source=None, type="tmpfs", read_only=m.read_only, tmpfs_size=m.size)
    return DockerMount(target=m.target, source=m.source, type=m.type, read_only=m.read_only)


def _port_bindings(spec: JobSpec) -> dict[str, Any]:
    bindings: dict[str, Any] = {}
    for p in spec.ports:
        host = (p.host_ip, p.host_port) if p.host_ip else p.host_port
        bindings.setdefault(f"{p.container_port}/{p.protocol}", []).append(host)
    return bindings


def gpu_host_config(gpus: GpuRequest, dri_root: str = "/dev/dri") -> dict[str, Any]:
    """GPUs by vendor: NVIDIA through device requests (the NVIDIA container toolkit does the
    rest); AMD and Intel by passing device nodes, as their container guides prescribe."""
    if gpus.vendor is GpuVendor.NVIDIA:
        request = DeviceRequest(
            driver="nvidia",
            count=-1 if gpus.all else (gpus.count or 0),
            device_ids=gpus.device_ids or None,
            capabilities=[["gpu"]],
        )
        return {"device_requests": [request]}
    if gpus.all:
        nodes = [dri_root]
    elif gpus.device_ids:
        nodes = [_render_node(d, dri_root) for d in gpus.device_ids]
    else:
        present = sorted(glob.glob(os.path.join(dri_root, "renderD*")))
        if len(present) < (gpus.count or 0):
            raise InvalidSpec.single(
                "resources.gpus.count",
                gpus.count,
                f"this host has {len(present)} {gpus.vendor.value} GPU render node(s) in {dri_root}; "
                "ask for fewer, or for 'all'",
            )
        nodes = present[: gpus.count]
    if gpus.vendor is GpuVendor.AMD:
        # ROCm needs the compute interface /dev/kfd next to the render nodes, and the
        # job's user in the group owning them.
        return {
            "devices": ["/dev/kfd:/dev/kfd:rwm", *(f"{n}:{n}:rwm" for n in nodes)],
            "group_add": _host_groups("video", "render"),
        }
    return {"devices": [f"{n}:{n}:rwm" for n in nodes]}


def _render_node(device_id: str, dri_root: str) -> str:
    if device_id.startswith("/dev/"):
        return device_id
    if device_id.isdigit():
        return os.path.join(dri_root, f"renderD{128 + int(device_id)}")
    raise InvalidSpec.single(
        "resources.gpus.device_ids", device_id, "for AMD/Intel use a GPU index (0, 1, ...) or a /dev/dri/renderD* path"
    )


def _host_groups(*names: str) -> list[str]:
    """Numeric ids of the host groups that own GPU device nodes (the image may not know the
    names); 'video' by name when the host has no such group."""
    out = []
    for name in names:
        try:
            out.append(str(grp.getgrnam(name).gr_gid))
        except KeyError:
            if name == "video":
                out.append("video")
    return out


def split_reference(image: str) -> tuple[str, str | None]:
    """``host:5000/name:tag`` -> (``host:5000/name``, ``tag``); digests stay whole."""
    if "@" in image:
        return image, None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


# docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest]; an
# image id or its prefix fits it too.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?",
    re.ASCII,
)


def is_reference(name: str) -> bool:
    """True when ``name`` is an image reference by docker's grammar. A name that goes into an
    engine URL's path must be one: ``../containers/x`` would reach another endpoint."""
    return len(name) <= 512 and _REFERENCE.fullmatch(name) is not None


def numeric_user(user: str | None) -> tuple[int | None, int | None]:
    if not user:
        return None, None
    uid, _, gid = user.partition(":")
    return (int(uid) if uid.isdigit() else None, int(gid) if gid.isdigit() else None)


# ----------------------------------------------------------------------------- engine -> Conveyor


def _engine_time(text: str | None) -> float | None:
    if not text or text.startswith("0001-01-01"):
        return None
    # Engine times carry nanoseconds; Python parses up to microseconds.
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


def container_status(attrs: dict) -> ContainerStatus:
    """An inspect answer in engine-neutral terms."""
    state = attrs.get("State") or {}
    status = state.get("Status", "unknown")
    finished = _engine_time(state.get("FinishedAt"))
    return ContainerStatus(
        id=attrs["Id"],
        status=status,
        # A container that failed to start stays "created" but carries 126/127 like a shell.
        exit_code=state.get("ExitCode") if status in ("exited", "dead") or state.get("ExitCode") else None,
        oom_killed=bool(state.get("OOMKilled")),
        started_at=_engine_time(state.get("StartedAt")),
        finished_at=finished if status in ("exited", "dead") else None,
        error=state.get("Error") or None,
        labels=(attrs.get("Config") or {}).get("Labels") or {},
        image_id=attrs.get("Image"),
        runtime=(attrs.get("HostConfig") or {}).get("Runtime"),
    )


def usage_from_stats(raw: dict) -> dict:
    """The engine-neutral usage sample (backends/usage.py) from a docker stats document, for an
    engine whose cgroup files this process cannot read. The peak is the engine's where cgroup v1
    keeps one; v2's document has none (the sampler then keeps the highest sample)."""
    memory = raw.get("memory_stats") or {}
    mem_stats = memory.get("stats") or {}
    used = memory.get("usage", 0) - mem_stats.get("inactive_file", mem_stats.get("total_inactive_file", 0))
    networks = (raw.get("networks") or {}).values()
    blk = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    limit = memory.get("limit")
    return sample(
        cpu_ns=((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage"),
        memory=max(used, 0), memory_peak=memory.get("max_usage"),
        memory_limit=limit if limit and limit < UNLIMITED else None,
        block_read=sum(e.get("value", 0) for e in blk if e.get("op", "").lower() == "read"),
        block_write=sum(e.get("value", 0) for e in blk if e.get("op", "").lower() == "write"),
        net_rx=sum(n.get("rx_bytes", 0) for n in networks), net_tx=sum(n.get("tx_bytes", 0) for n in networks),
        pids=(raw.get("pids_stats") or {}).get("current"),
    )
