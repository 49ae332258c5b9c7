"""From a JobSpec to what the shim applies (``plan.json``), and what this backend refuses.

Everything that needs a lookup (user names, rlimit numbers, host paths for mounts and outputs)
is resolved here, in the agent, so the shim stays a few stdlib calls between fork and exec.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
from pathlib import Path

from ...spec import JobSpec
from ...spec.backend import ProcessOptions
from ..base import InvalidSpec
from ..hostfiles import under

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def options(spec: JobSpec) -> ProcessOptions:
    if spec.backend is not None and spec.backend.name == "process":
        return spec.backend.options_for("process")
    return ProcessOptions()


def has_limits(spec: JobSpec) -> bool:
    r = spec.resources
    return any(v is not None for v in (r.cpus, r.memory, r.memory_swap, r.pids_limit))


def check(spec: JobSpec, cgroup_version: int | None) -> None:
    """Raise InvalidSpec for the first field this backend cannot honour, naming the fix."""
    for field, value, hint in _refusals(spec, cgroup_version):
        raise InvalidSpec.single(field, value, hint)
    resolve_user(spec.user)


def _refusals(spec: JobSpec, cgroup_version: int | None):
    host = "the process backend runs the job on the host"
    if spec.image is not None:
        yield "image", spec.image, f"{host}, not in an image: leave the image out, or choose a container backend"
    if not command(spec):
        yield "command", None, "give the command to run on the host"
    if spec.ports:
        yield "ports", [p.container_port for p in spec.ports], f"{host}, in the host's network: drop the ports (the job's own listening ports are the host's)"
    if spec.network not in (None, "host"):
        yield "network", spec.network, f"{host}, in the host's network: leave network out or use host"
    if spec.privileged:
        yield "privileged", True, f"{host} as its user; drop privileged (set user instead)"
    if spec.hostname:
        yield "hostname", spec.hostname, f"{host}, which keeps the host's name: drop hostname"
    for field in ("ipc_mode", "uts_mode", "pid_mode"):
        if getattr(spec, field) not in (None, "", "host"):
            yield field, getattr(spec, field), f"{host}, in the host's namespaces: leave {field} out or use host"
    if spec.resources.gpus is not None:
        yield "resources.gpus", str(spec.resources.gpus), "the process backend gives no GPUs; use a container backend"
    if spec.tty:
        yield "tty", True, "the process backend gives no terminal; drop tty (-t)"
    if spec.read_only:
        yield "read_only", True, "a host process has no root filesystem of its own to make read-only; drop read_only"
    if spec.init:
        yield "init", True, "the process backend's shim already ends the whole process group; drop init"
    if spec.shm_size is not None:
        yield "shm_size", spec.shm_size, "a host process shares the host's /dev/shm; drop shm_size"
    if spec.restart.name != "no":
        yield "restart", spec.restart.name, "the process backend does not restart jobs; use restart no (retries re-run a failed job)"
    for i, m in enumerate(spec.mounts):
        if m.type != "bind":
            yield f"mounts[{i}].type", m.type, "the process backend bind-mounts host paths only; use a bind mount (/host/dir:/path)"
    if os.geteuid() != 0:
        if spec.mounts or spec.outputs or spec.inputs:
            yield "mounts", [m.target for m in spec.mounts] + spec.outputs, "mounts, inputs and outputs need a private mount namespace, which needs the agent to run as root"
        if spec.user is not None:
            yield "user", spec.user, "switching user needs the agent to run as root; drop user"
    opts = options(spec)
    if has_limits(spec):
        if opts.cgroup == "off":
            yield "resources", _limits(spec), "limits need cgroups, which backend option cgroup=off turns off; drop the limits or use cgroup auto"
        elif cgroup_version is None:
            yield "resources", _limits(spec), "no writable cgroup (v1 or v2) on this node to enforce the limits; drop them, or run the agent as root on a node with cgroups"
    elif opts.cgroup == "required" and cgroup_version is None:
        yield "backend.options.cgroup", "required", "no writable cgroup (v1 or v2) on this node; use cgroup auto, or run the agent as root on a node with cgroups"


def _limits(spec: JobSpec) -> dict:
    return spec.resources.model_dump(exclude_none=True, exclude_defaults=True)


def command(spec: JobSpec) -> list[str]:
    return [*(spec.entrypoint or []), *(spec.full_command or [])]


def resolve_user(user: str | None) -> dict | None:
    """``uid[:gid]`` or ``name[:group]`` -> {"uid", "gid", "groups", "home"}; None: the agent's."""
    if user is None:
        return None
    name, _, group = user.partition(":")
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        if not name.isdigit():
            raise InvalidSpec.single("user", user, f"no user {name!r} on this host; use a user name it knows or a numeric uid") from None
        pw = None
    uid = int(name) if name.isdigit() else pw.pw_uid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise InvalidSpec.single("user", user, f"no group {group!r} on this host; use a group name it knows or a numeric gid") from None
    else:
        gid = pw.pw_gid if pw else 0
    groups = sorted(set(os.getgrouplist(pw.pw_name, gid))) if pw and not group else [gid]
    return {"uid": uid, "gid": gid, "groups": groups, "home": pw.pw_dir if pw else "/"}


def rlimits(spec: JobSpec) -> list[list[int]]:
    return [[getattr(resource, f"RLIMIT_{u.name.upper()}"), u.soft, u.hard] for u in spec.ulimits]


def environment(spec: JobSpec, user: dict | None) -> dict[str, str]:
    """The job's environment: PATH and HOME, then the spec's (never the agent's own)."""
    home = user["home"] if user else (pwd.getpwuid(os.getuid()).pw_dir if os.getuid() == 0 else os.environ.get("HOME", "/"))
    return {"PATH": DEFAULT_PATH, "HOME": home, **spec.env}


def chown(path: Path, user: dict | None) -> None:
    if user is not None:
        os.chown(path, user["uid"], user["gid"])


def mounts_and_cwd(spec: JobSpec, rundir: Path, user: dict | None) -> tuple[list[dict], str]:
    """The bind mounts the job's namespace gets (spec mounts, one fresh directory per output,
    the work directory when the spec names one that is not on the host) and its cwd."""
    mounts = []
    for m in spec.mounts:
        if not os.path.exists(m.source):
            os.makedirs(m.source, exist_ok=True)  # as docker does for a missing bind source
            chown(Path(m.source), user)
        mounts.append({"source": m.source, "target": m.target.rstrip("/") or "/", "read_only": m.read_only})
    for n, target in enumerate(spec.outputs):
        source = rundir / "outputs" / str(n)
        source.mkdir(parents=True)
        chown(source, user)
        mounts.append({"source": str(source), "target": target, "read_only": False})
    work = rundir / "work"
    work.mkdir()
    chown(work, user)
    cwd = spec.workdir or str(work)
    targets = [m["target"] for m in mounts]
    if spec.workdir and not os.path.isdir(spec.workdir) and not any(under(spec.workdir, t) for t in targets):
        mounts.append({"source": str(work), "target": spec.workdir, "read_only": False})
    return mounts, cwd
