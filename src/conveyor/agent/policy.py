"""Operator policy for jobs that named tokens submit through the agent's API.

The owner of the state directory (the token in ``agent.token``) is not checked by any policy
(:class:`Unrestricted`): it has the engine's full power, as the embedded Executor does. Every
other token is bound to a policy (:class:`TokenRules`): a file of its own, or the node's
``policy.yaml`` (or ``.yml``/``.json``) in the state directory:

    mounts:
      allowed_host_paths: [/srv/data]   # bind-mount sources must lie under one of these
      volumes: true                     # named and anonymous volumes
    privileged: false
    host_network: false                 # network: host
    host_pid: false                     # pid: host
    host_ipc: false                     # ipc: host
    host_uts: false                     # uts: host
    container_namespaces: false         # network/ipc/pid container:<id>
    images:
      allowed: ["conveyor/*"]           # fnmatch patterns; absent = any image
      registries: [docker.io]           # absent = any registry
    max_resources: {cpus: 4, memory: 8g, pids_limit: 4096, gpus: 1, shm_size: 1g, timeout: 24h}
    exec: false                         # run commands inside running jobs (conveyor exec)
    port_forward: false                 # reach running jobs' TCP ports (conveyor port-forward)
    read_only: false                    # true: list, inspect, follow; never submit nor control
    others_jobs: see                    # see | read | control: what it may do to jobs it did not submit

Without a file every default applies: bind mounts only inside the jobs area
(``<state dir>/jobs``), no privileged containers, no host namespaces, any image, no
resource ceiling, no way into running jobs (``exec``, ``port_forward``: a shell in a job reads
what the job can, and a job of the owner's may hold more than the token's own could), and of
the jobs it did not submit only their state (``others_jobs``, :data:`REACH`). A token
allowed in reaches only jobs its own policy would admit. A job that breaks a rule is refused with :class:`PolicyRefused` naming the
rule, the token and its policy; nothing is created. A file is re-read when it changes; a
broken file refuses every job of the tokens bound to it (fail closed) until it is fixed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import PolicyRefused
from ..spec import Bytes, JobSpec, Seconds
from . import JOBS_AREA, POLICY_NAMES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MountRules(_Strict):
    allowed_host_paths: list[str] = Field(default_factory=list)
    volumes: bool = True

    @field_validator("allowed_host_paths")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.startswith("/"):
                raise ValueError(f"{p!r}: allowed host paths must be absolute")
        return v


class ImageRules(_Strict):
    allowed: list[str] | None = None
    registries: list[str] | None = None


class BackendRules(_Strict):
    # A process job runs its command on the host, as the agent's user: never by default.
    allowed: list[str] = Field(default_factory=lambda: ["docker", "podman"], description="backends a job may use")
    runtimes: list[str] | None = Field(default=None, description="OCI runtimes a job may name; None: any the engine has")
    sandbox: str | None = Field(default=None, description="every container job must run under this runtime, e.g. runsc")


class MaxResources(_Strict):
    cpus: float | None = Field(default=None, gt=0)
    memory: Bytes | None = None
    pids_limit: int | None = Field(default=None, gt=0)
    gpus: int | None = Field(default=None, ge=0)
    shm_size: Bytes | None = None
    timeout: Seconds | None = None


class Policy(_Strict):
    mounts: MountRules = Field(default_factory=MountRules)
    privileged: bool = False
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    host_uts: bool = False
    container_namespaces: bool = False
    images: ImageRules = Field(default_factory=ImageRules)
    backends: BackendRules = Field(default_factory=BackendRules)
    max_resources: MaxResources = Field(default_factory=MaxResources)
    exec: bool = Field(default=False, description="run commands inside running jobs (conveyor exec)")
    port_forward: bool = Field(default=False, description="reach running jobs' TCP ports (conveyor port-forward)")
    read_only: bool = Field(default=False, description="the token reads (list, inspect, logs, events) and changes nothing")
    others_jobs: Literal["see", "read", "control"] = Field(
        default="see", description="what the token may do to jobs it did not submit (the owner's, another token's): "
        "see (list, inspect, wait, events), read (also logs, outputs, attach), control (also hold, cancel, signal, rm, "
        "stdin, exec, port-forward, cleanup, prune, gc)")

    def check_others(self, level: str, action: str, whose: str) -> None:
        """Raise PolicyRefused unless ``action`` (of ``level``, one of REACH) may be done to
        ``whose`` jobs, ones the token did not submit."""
        if REACH.index(level) > REACH.index(self.others_jobs):
            raise PolicyRefused("others_jobs", None, f"{action} {whose}: this policy lets its tokens {REACH_MEANS[self.others_jobs]} "
                                                     f"jobs they did not submit (the policy's 'others_jobs: {level}' allows it)")

    def check_write(self, action: str) -> None:
        """Raise PolicyRefused when the policy lets its tokens only read."""
        if self.read_only:
            raise PolicyRefused("read_only", None, f"{action} changes the node, and this policy lets its tokens only read "
                                                   "(the policy's 'read_only: false' allows it)")

    # ------------------------------------------------------------------ checking

    def check_inside(self, rule: str, spec: JobSpec, jobs_area: Path) -> None:
        """Raise PolicyRefused unless a running job of ``spec`` may be reached by way of
        ``rule`` (one of INSIDE): the rule allows it, and the job is one this policy admits
        (else a shell in it, or its ports, would give what the policy withholds)."""
        if not getattr(self, rule):
            raise PolicyRefused(rule, None, f"{INSIDE[rule]} is not allowed (the policy's '{rule}: true' allows it)")
        try:
            self.check(spec, jobs_area)
        except PolicyRefused as exc:
            raise PolicyRefused(exc.rule, exc.field, f"only a job this policy admits may be reached ({INSIDE[rule]}), and "
                                                     f"this job breaks it: {exc.reason}") from None

    def check(self, spec: JobSpec, jobs_area: Path) -> None:
        """Raise PolicyRefused for the first rule ``spec`` breaks."""
        self._check_backend(spec)
        if spec.image is not None:
            self.check_image(spec.image)
        roots = [jobs_area, *map(Path, self.mounts.allowed_host_paths)]
        real_roots = [Path(os.path.realpath(r)) for r in roots]
        for i, m in enumerate(spec.mounts):
            if m.type == "bind":
                src = Path(os.path.realpath(m.source or "/"))
                if not any(src == r or src.is_relative_to(r) for r in real_roots):
                    raise PolicyRefused(
                        "mounts.allowed_host_paths",
                        f"mounts[{i}].source",
                        f"host path {m.source!r} is outside the allowed paths {[str(r) for r in roots]}",
                    )
            elif m.type == "volume" and not self.mounts.volumes:
                raise PolicyRefused("mounts.volumes", f"mounts[{i}]", "volumes are not allowed on this node")
        for i, item in enumerate(spec.inputs):
            if not item.frozen:  # the agent would read this host path for the job
                src = Path(os.path.realpath(item.source))
                if not any(src == r or src.is_relative_to(r) for r in real_roots):
                    raise PolicyRefused(
                        "mounts.allowed_host_paths",
                        f"inputs[{i}].source",
                        f"host path {item.source!r} is outside the allowed paths {[str(r) for r in roots]}",
                    )
        if spec.privileged and not self.privileged:
            raise PolicyRefused("privileged", "privileged", "privileged jobs are not allowed on this node")
        for field, value, rule in (
            ("network", spec.network, "host_network"),
            ("pid_mode", spec.pid_mode, "host_pid"),
            ("ipc_mode", spec.ipc_mode, "host_ipc"),
            ("uts_mode", spec.uts_mode, "host_uts"),
        ):
            if value == "host" and not getattr(self, rule):
                raise PolicyRefused(rule, field, f"{field}=host is not allowed on this node")
            if value and value.startswith("container:") and not self.container_namespaces:
                raise PolicyRefused("container_namespaces", field, f"joining another container's namespace ({value}) is not allowed")
        self._check_resources(spec)

    def _check_backend(self, spec: JobSpec) -> None:
        rules = self.backends
        name = spec.backend_name
        if name is None:  # the node's container engine, whichever it is
            if not set(rules.allowed) & {"docker", "podman"}:
                raise PolicyRefused("backends.allowed", "backend", f"container jobs are not allowed; allowed backends: {rules.allowed}")
        elif name not in rules.allowed:
            raise PolicyRefused("backends.allowed", "backend.name", f"the {name} backend is not allowed; allowed backends: {rules.allowed}")
        if name == "process":
            return
        runtime = spec.backend.options.get("runtime") if spec.backend is not None else None
        if rules.sandbox is not None and runtime != rules.sandbox:
            raise PolicyRefused("backends.sandbox", "backend.options.runtime",
                                f"container jobs must run under the {rules.sandbox} runtime here; set backend options runtime={rules.sandbox}")
        if runtime is not None and rules.runtimes is not None and runtime not in rules.runtimes:
            raise PolicyRefused("backends.runtimes", "backend.options.runtime",
                                f"runtime {runtime!r} is not in the allowed runtimes {rules.runtimes}")

    def check_image(self, image: str) -> None:
        rules = self.images
        if rules.registries is not None:
            registry = image_registry(image)
            if registry not in rules.registries:
                raise PolicyRefused("images.registries", "image", f"registry {registry!r} is not in the allowed registries {rules.registries}")
        if rules.allowed is not None:
            names = image_names(image)
            if not any(fnmatch.fnmatchcase(n, pat) for pat in rules.allowed for n in names):
                raise PolicyRefused("images.allowed", "image", f"image {image!r} matches none of the allowed images {rules.allowed}")

    def _check_resources(self, spec: JobSpec) -> None:
        cap, res = self.max_resources, spec.resources

        def over(rule: str, field: str, value: Any, limit: Any, unlimited: bool) -> None:
            if unlimited:
                raise PolicyRefused(f"max_resources.{rule}", field, f"{field} is unlimited; this node allows at most {limit}: set it")
            raise PolicyRefused(f"max_resources.{rule}", field, f"{field}={value} exceeds this node's maximum {limit}")

        if cap.cpus is not None and (res.cpus is None or res.cpus > cap.cpus):
            over("cpus", "resources.cpus", res.cpus, cap.cpus, res.cpus is None)
        if cap.memory is not None and (res.memory is None or res.memory < 0 or res.memory > cap.memory):
            over("memory", "resources.memory", res.memory, cap.memory, res.memory is None or res.memory < 0)
        if cap.pids_limit is not None and (res.pids_limit is None or res.pids_limit < 0 or res.pids_limit > cap.pids_limit):
            over("pids_limit", "resources.pids_limit", res.pids_limit, cap.pids_limit, res.pids_limit in (None, -1))
        if cap.gpus is not None and res.gpus is not None:
            wanted = res.gpus.count or len(res.gpus.device_ids) or None  # None: all of them
            if wanted is None or wanted > cap.gpus:
                over("gpus", "resources.gpus", wanted or "all", cap.gpus, False)
        if cap.shm_size is not None and spec.shm_size is not None and spec.shm_size > cap.shm_size:
            over("shm_size", "shm_size", spec.shm_size, cap.shm_size, False)
        if cap.timeout is not None and (spec.timeout is None or spec.timeout > cap.timeout):
            over("timeout", "timeout", spec.timeout, cap.timeout, spec.timeout is None)


def image_registry(image: str) -> str:
    """docker's rule: the first path component is a registry if it has a '.' or ':' or is localhost."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def image_names(image: str) -> list[str]:
    """The spellings a pattern may match: as given, with the default tag, fully qualified."""
    names = [image]
    last = image.rsplit("/", 1)[-1]
    tagged = image if (":" in last or "@" in image) else image + ":latest"
    names.append(tagged)
    if image_registry(image) == "docker.io" and not image.startswith("docker.io/"):
        path = tagged if "/" in tagged else "library/" + tagged
        names.append("docker.io/" + path)
    return names


# What a token may do to the jobs it did not submit, each level with what the one before allows.
REACH = ("see", "read", "control")
REACH_MEANS = {"see": "only see (list, inspect, wait for)", "read": "only see and read (logs, outputs)",
               "control": "control"}
# The ways into a running job a policy rule allows, by rule: what a refusal calls them.
INSIDE = {"exec": "running commands inside jobs", "port_forward": "forwarding ports of jobs"}

MAX_POLICY_BYTES = 1 << 20


def policy_file(root: Path) -> Path | None:
    for name in POLICY_NAMES:
        if (root / name).exists():
            return root / name
    return None


def read_policy_text(path: Path) -> str:
    """A policy file's text. Only a regular file of at most 1 MiB: a FIFO or a device named by
    mistake would block or never end (O_NONBLOCK keeps even the open from waiting)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path}: not a regular file")
        data = f.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        raise ValueError(f"{path}: larger than {MAX_POLICY_BYTES} bytes; a policy is a short file")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None


def load_policy(path: Path | None) -> Policy:
    """Parse a policy file; ValueError with a readable message when it is broken."""
    if path is None:
        return Policy()
    return parse_policy(read_policy_text(path), str(path), as_json=path.suffix == ".json")


def parse_policy(text: str, origin: str, as_json: bool = False) -> Policy:
    """Parse a policy's text (YAML, or JSON); ValueError naming ``origin`` when it is broken."""
    try:
        if as_json:
            data = json.loads(text) if text.strip() else {}
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:  # noqa: BLE001 - any parse error is a broken policy
        raise ValueError(f"{origin}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{origin}: the policy must be a mapping of rules")
    try:
        return Policy.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{origin}: {problems}") from None


class PolicyFile:
    """A policy file, re-read when it changes (fail closed): the node's (``policy.yaml`` in the
    state directory; the built-in defaults without one), or the file ``path`` a token is bound
    to (which must exist)."""

    def __init__(self, root: Path, path: Path | None = None):
        self.root = root
        self.path = path
        self.jobs_area = root / JOBS_AREA
        self.jobs_area.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._stamp: object = object()
        self._policy: Policy | None = None
        self.error: str | None = None  # why the file is broken; None when it is not
        self.reload()

    def located(self) -> Path | None:
        """The file in force; None: the built-in defaults."""
        return self.path if self.path is not None else policy_file(self.root)

    @property
    def label(self) -> str | None:
        """How a refusal names this policy: its file, or None for the built-in defaults."""
        where = self.located()
        return str(where) if where is not None else None

    def _current_stamp(self) -> tuple:
        path = self.located()
        if path is None:
            return (None,)
        st = path.stat()
        return (str(path), st.st_mtime_ns, st.st_ino, st.st_size)

    def reload(self) -> None:
        with self._lock:
            try:
                stamp = self._current_stamp()
            except FileNotFoundError:
                stamp = ("missing",)
            if stamp == self._stamp:
                return
            try:
                self._policy, self.error = load_policy(self.located()), None
            except (OSError, ValueError) as exc:
                self._policy, self.error = None, str(exc)
            self._stamp = stamp

    @property
    def policy(self) -> Policy:
        self.reload()
        if self._policy is None:
            raise PolicyRefused("policy_file", None, f"the policy file is broken, so no job is accepted until it is fixed: {self.error}")
        return self._policy

    def check(self, spec: JobSpec) -> None:
        self.policy.check(spec, self.jobs_area)

    def check_image(self, image: str) -> None:
        self.policy.check_image(image)

    def check_inside(self, rule: str, spec: JobSpec) -> None:
        self.policy.check_inside(rule, spec, self.jobs_area)

    def check_write(self, action: str) -> None:
        self.policy.check_write(action)

    def check_others(self, level: str, action: str, whose: str) -> None:
        self.policy.check_others(level, action, whose)

    def describe(self) -> dict:
        data = self.policy.model_dump(mode="json")
        data["jobs_area"] = str(self.jobs_area)
        return data


class Rules(Protocol):
    """What a route checks a job against: the caller's rules (``dependencies.policy``)."""

    def check(self, spec: JobSpec) -> None: ...

    def check_image(self, image: str) -> None: ...

    def check_inside(self, rule: str, spec: JobSpec) -> None:
        """May a running job of ``spec`` be reached by way of ``rule`` (exec, port_forward)?"""

    def check_write(self, action: str) -> None:
        """May the caller change anything (``action`` names the request, for the refusal)?"""

    def check_others(self, level: str, action: str, whose: str) -> None:
        """May the caller do ``action`` (of ``level``, one of REACH) to ``whose`` jobs, ones
        it did not submit?"""


class Unrestricted:
    """The owner's rules: nothing beyond the spec's own validation. The owner of the state
    directory can run the engine directly (and the embedded Executor) anyway, so a policy
    would only make the agent refuse what the same user may do another way."""

    def check(self, spec: JobSpec) -> None:
        return None

    def check_image(self, image: str) -> None:
        return None

    def check_inside(self, rule: str, spec: JobSpec) -> None:
        return None

    def check_write(self, action: str) -> None:
        return None

    def check_others(self, level: str, action: str, whose: str) -> None:
        return None


class ReadOnly:
    """The rules of a caller without a token where the operator opened a read-only view
    ([agent] open_dashboard): it reads, and changes nothing."""

    REASON = "callers without a token may only read ([agent] open_dashboard); log in with a token"

    def check(self, spec: JobSpec) -> None:
        raise PolicyRefused("read_only", None, self.REASON)

    def check_image(self, image: str) -> None:
        raise PolicyRefused("read_only", None, self.REASON)

    def check_inside(self, rule: str, spec: JobSpec) -> None:
        raise PolicyRefused("read_only", None, self.REASON)

    def check_write(self, action: str) -> None:
        raise PolicyRefused("read_only", None, f"{action}: {self.REASON}")

    def check_others(self, level: str, action: str, whose: str) -> None:
        if level == "control":  # the operator opened every job to be read, none to be changed
            raise PolicyRefused("read_only", None, f"{action} {whose}: {self.REASON}")


class TokenRules:
    """A named token's rules: its policy, each refusal naming the token and the policy's file."""

    def __init__(self, token: str, source: PolicyFile):
        self.token, self.source = token, source

    def check(self, spec: JobSpec) -> None:
        self._named(self._check_spec, spec)

    def _check_spec(self, spec: JobSpec) -> None:
        if spec.lease is not None:  # leases are the owner's (routers/leases.py): no share of one for others
            raise PolicyRefused("leases", "spec.lease", "a lease is the owner's: a named token cannot run jobs in one")
        self.source.check(spec)

    def check_image(self, image: str) -> None:
        self._named(self.source.check_image, image)

    def check_inside(self, rule: str, spec: JobSpec) -> None:
        self._named(self.source.check_inside, rule, spec)

    def check_write(self, action: str) -> None:
        self._named(self.source.check_write, action)

    def check_others(self, level: str, action: str, whose: str) -> None:
        self._named(self.source.check_others, level, action, whose)

    def _named(self, check, *values) -> None:
        try:
            check(*values)
        except PolicyRefused as exc:
            raise exc.by(self.token, self.source.label) from None
