"""`docker run` as a Conveyor job.

docker's flags are read the docker way and turned into the same options `conveyor run` has,
then into the job by the same code (cli.jobspec.build_spec) and through the same agent, so a
job is accepted or refused by the same rules whichever name it was run by. The job is followed
in the foreground as `conveyor run` follows it (cli.foreground): the job's stdout and stderr
byte for byte on ours, its exit code as ours, cancelled if we are interrupted or killed.

Where docker and Conveyor differ, on purpose:
- ``--log-driver`` json-file, local or none: Conveyor keeps the job's output in its own store
  whatever the driver (that is what it is for); drivers that ship logs elsewhere are refused.
- ``--cidfile`` gets the job id, which every verb of the stand-in takes as a container id.
- ``--rm``: the container goes once the job's result and logs are stored; the job's record
  stays in `conveyor ps -a` until `conveyor rm`.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any

from ..cli.foreground import Foreground, ended_badly, exit_code
from ..cli.jobspec import FlagError, build_spec
from ..errors import EXIT_CONVEYOR_ERROR, ConveyorError, InvalidSpec
from .commands import DockerError, Session, command, one_line
from .flags import BOOL, LIST, VALUE, Flag

LABEL_CLIENT = "conveyor.client"  # the tool that ran `docker` (spec.jobspec.LABEL_CLIENT; not imported: pydantic)


_NET = "container networking beyond --network/-p is not part of the job spec"
_SEC = "privileges beyond --privileged and --user are not part of the job spec"
_CG = "use --cpus, --memory, --memory-swap and --pids-limit"

RUN_FLAGS: tuple[Flag, ...] = (
    # Supported: each lands on an option of `conveyor run` (the keys build_spec reads).
    Flag("env", "e", LIST, help="Set environment variables"),
    Flag("env-file", kind=LIST, help="Read in a file of environment variables"),
    Flag("workdir", "w", VALUE, help="Working directory inside the container"),
    Flag("user", "u", VALUE, help="Username or UID (format: <name|uid>[:<group|gid>])"),
    Flag("hostname", "h", VALUE, help="Container host name"),
    Flag("name", kind=VALUE, help="Assign a name to the container (the job's name)"),
    Flag("label", "l", LIST, help="Set meta data on a container"),
    Flag("label-file", kind=LIST, help="Read in a line delimited file of labels"),
    Flag("volume", "v", LIST, help="Bind mount a volume"),
    Flag("mount", kind=LIST, dest="mount_long", help="Attach a filesystem mount to the container"),
    Flag("tmpfs", kind=LIST, help="Mount a tmpfs directory"),
    Flag("network", kind=VALUE, help="Connect a container to a network"),
    Flag("net", kind=VALUE, dest="network", help="Alias of --network"),
    Flag("publish", "p", LIST, help="Publish a container's port(s) to the host"),
    Flag("ipc", kind=VALUE, help="IPC mode to use"),
    Flag("uts", kind=VALUE, help="UTS namespace to use"),
    Flag("pid", kind=VALUE, help="PID namespace to use"),
    Flag("privileged", kind=BOOL, help="Give extended privileges to this container"),
    Flag("read-only", kind=BOOL, help="Mount the container's root filesystem as read only"),
    Flag("init", kind=BOOL, help="Run an init inside the container that forwards signals and reaps processes"),
    Flag("shm-size", kind=VALUE, help="Size of /dev/shm"),
    Flag("ulimit", kind=LIST, help="Ulimit options"),
    Flag("restart", kind=VALUE, help="Restart policy to apply when a container exits"),
    Flag("rm", kind=BOOL, dest="auto_remove", help="Automatically remove the container when it exits"),
    Flag("stop-timeout", kind=VALUE, dest="stop_grace", help="Timeout (in seconds) to stop a container"),
    Flag("pull", kind=VALUE, help='Pull image before running ("always", "missing", "never")'),
    Flag("tty", "t", BOOL, help="Allocate a pseudo-TTY"),
    Flag("interactive", "i", BOOL, help="Keep STDIN open even if not attached"),
    Flag("cpus", kind=VALUE, help="Number of CPUs"),
    Flag("memory", "m", VALUE, help="Memory limit"),
    Flag("memory-swap", kind=VALUE, help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap"),
    Flag("pids-limit", kind=VALUE, help="Tune container pids limit (set -1 for unlimited)"),
    Flag("gpus", kind=VALUE, help="GPU devices to add to the container ('all' to pass all GPUs)"),
    Flag("entrypoint", kind=VALUE, help="Overwrite the default ENTRYPOINT of the image"),
    Flag("runtime", kind=VALUE, help="Runtime to use for this container (e.g. runsc)"),
    Flag("security-opt", kind=LIST, dest="security_opt", help="Security Options"),
    Flag("cgroup-parent", kind=VALUE, dest="cgroup_parent", help="Optional parent cgroup for the container"),
    # docker-only, handled here
    Flag("cidfile", kind=VALUE, help="Write the container ID (the job id) to the file"),
    Flag("detach", "d", BOOL, help="Run container in background and print container ID"),
    Flag("log-driver", kind=VALUE, help="Logging driver: json-file, local or none (Conveyor keeps the output either way)"),
    Flag("quiet", "q", BOOL, help="Suppress the pull output"),
    Flag("sig-proxy", kind=BOOL, help="Proxy received signals to the process (true: they cancel the job)"),
    Flag("disable-content-trust", kind=BOOL, help="Skip image verification (always skipped)"),
    # docker has these; the stand-in refuses them, saying why
    Flag("attach", "a", LIST, unsupported="the job's stdout and stderr are always attached"),
    Flag("log-opt", kind=LIST, unsupported="Conveyor keeps the job's output in its own store"),
    Flag("add-host", kind=LIST, unsupported=_NET),
    Flag("dns", kind=LIST, unsupported=_NET),
    Flag("dns-option", kind=LIST, unsupported=_NET),
    Flag("dns-search", kind=LIST, unsupported=_NET),
    Flag("domainname", kind=VALUE, unsupported=_NET),
    Flag("expose", kind=LIST, unsupported=_NET),
    Flag("publish-all", "P", BOOL, unsupported="publish each port with -p"),
    Flag("ip", kind=VALUE, unsupported=_NET),
    Flag("ip6", kind=VALUE, unsupported=_NET),
    Flag("link", kind=LIST, unsupported=_NET),
    Flag("link-local-ip", kind=LIST, unsupported=_NET),
    Flag("mac-address", kind=VALUE, unsupported=_NET),
    Flag("network-alias", kind=LIST, unsupported=_NET),
    Flag("cap-add", kind=LIST, unsupported=_SEC),
    Flag("cap-drop", kind=LIST, unsupported=_SEC),
    Flag("group-add", kind=LIST, unsupported=_SEC),
    Flag("userns", kind=VALUE, unsupported=_SEC),
    Flag("cgroupns", kind=VALUE, unsupported=_SEC),
    Flag("sysctl", kind=LIST, unsupported=_SEC),
    Flag("device", kind=LIST, unsupported="GPUs are given with --gpus; other devices are not part of the job spec"),
    Flag("device-cgroup-rule", kind=LIST, unsupported=_SEC),
    Flag("cpu-shares", "c", VALUE, unsupported=_CG),
    Flag("cpu-period", kind=VALUE, unsupported=_CG),
    Flag("cpu-quota", kind=VALUE, unsupported=_CG),
    Flag("cpu-rt-period", kind=VALUE, unsupported=_CG),
    Flag("cpu-rt-runtime", kind=VALUE, unsupported=_CG),
    Flag("cpuset-cpus", kind=VALUE, unsupported=_CG),
    Flag("cpuset-mems", kind=VALUE, unsupported=_CG),
    Flag("memory-reservation", kind=VALUE, unsupported=_CG),
    Flag("memory-swappiness", kind=VALUE, unsupported=_CG),
    Flag("kernel-memory", kind=VALUE, unsupported=_CG),
    Flag("oom-kill-disable", kind=BOOL, unsupported=_CG),
    Flag("oom-score-adj", kind=VALUE, unsupported=_CG),
    Flag("blkio-weight", kind=VALUE, unsupported=_CG),
    Flag("blkio-weight-device", kind=LIST, unsupported=_CG),
    Flag("device-read-bps", kind=LIST, unsupported=_CG),
    Flag("device-read-iops", kind=LIST, unsupported=_CG),
    Flag("device-write-bps", kind=LIST, unsupported=_CG),
    Flag("device-write-iops", kind=LIST, unsupported=_CG),
    Flag("health-cmd", kind=VALUE, unsupported="a batch job has no health check"),
    Flag("health-interval", kind=VALUE, unsupported="a batch job has no health check"),
    Flag("health-retries", kind=VALUE, unsupported="a batch job has no health check"),
    Flag("health-start-period", kind=VALUE, unsupported="a batch job has no health check"),
    Flag("health-start-interval", kind=VALUE, unsupported="a batch job has no health check"),
    Flag("health-timeout", kind=VALUE, unsupported="a batch job has no health check"),
    Flag("no-healthcheck", kind=BOOL, unsupported="a batch job has no health check"),
    Flag("volumes-from", kind=LIST, unsupported="name each mount with -v or --mount"),
    Flag("volume-driver", kind=VALUE, unsupported="volumes use the engine's default driver"),
    Flag("storage-opt", kind=LIST, unsupported="not part of the job spec"),
    Flag("isolation", kind=VALUE, unsupported="not part of the job spec"),
    Flag("platform", kind=VALUE, unsupported="jobs run on the node's own platform"),
    Flag("stop-signal", kind=VALUE, unsupported="a job is stopped with SIGTERM, then SIGKILL after --stop-timeout"),
    Flag("detach-keys", kind=VALUE, unsupported="a foreground job cannot be detached from"),
    Flag("use-api-socket", kind=BOOL, unsupported="a job gets no engine socket"),
)

_LOG_DRIVERS_KEPT = {"json-file", "local", "none"}  # drivers that keep the output on the node, or none


@command("run", "run [OPTIONS] IMAGE [COMMAND] [ARG...]", "Create and run a new container from an image",
         RUN_FLAGS, aliases=("container run",), min_args=1, interspersed=False)
def run(session: Session, values: dict[str, Any], args: list[str]) -> int:
    image, command_args = args[0], args[1:]
    try:
        spec = build_spec(image, tuple(command_args), _conveyor_options(values))
    except (FlagError, InvalidSpec, OSError) as exc:
        return _run_failed(session, _described(exc))
    spec["labels"] = {LABEL_CLIENT: calling_tool(), **spec.get("labels", {})}
    try:
        cidfile = CidFile(values["cidfile"])
    except DockerError as exc:
        return _run_failed(session, str(exc), exc.code)
    try:
        api = session.api
        if values["detach"]:
            job = api.submit(spec)
            cidfile.write(job["id"])
            session.out(job["id"] + "\n")
            return 0
        end = Foreground(api, spec, on_started=cidfile.write).run()
    except ConveyorError as exc:
        return _run_failed(session, _described(exc))
    finally:
        cidfile.close()
    if ended_badly(end) and end["substate"] == "start_failed":
        # the engine could not start the process: docker says so, and exits 126/127 as a shell
        session.err(f"docker: Error response from daemon: {end['message']}\n\nRun 'docker run --help' for more information\n")
    elif ended_badly(end) and end["exit_code"] is None:
        session.err(f"docker: job {end['id']} {end['state']}/{end['substate']}: {end['message']}\n")
    return exit_code(end)


def _run_failed(session: Session, message: str, code: int = EXIT_CONVEYOR_ERROR) -> int:
    session.err(f"docker: {message}\n\nRun 'docker run --help' for more information\n")
    return code


def _described(exc: Exception) -> str:
    if isinstance(exc, InvalidSpec):
        return "invalid job: " + "; ".join(f"{field}: {value!r} is not valid; {' '.join(str(hint).split())}"
                                          for field, value, hint in exc.problems)
    if isinstance(exc, ConveyorError):
        return f"Error response from daemon: {one_line(exc)}"
    return one_line(exc)


def _conveyor_options(v: dict[str, Any]) -> dict[str, Any]:
    """docker run's flags -> the options of `conveyor run` (cli.jobspec.job_options)."""
    driver = v["log_driver"]
    if driver is not None and driver not in _LOG_DRIVERS_KEPT:
        raise FlagError(f"--log-driver {driver} is not supported by Conveyor's docker stand-in: it keeps every "
                        f"job's output in its own store; use json-file, local or none")
    if v["sig_proxy"] is False:
        raise FlagError("--sig-proxy=false is not supported by Conveyor's docker stand-in: a foreground job is "
                        "cancelled when its client is interrupted")
    env = [line for path in v["env_file"] for line in _read_lines(path, "--env-file")] + v["env"]
    labels = [line for path in v["label_file"] for line in _read_lines(path, "--label-file")] + v["label"]
    return {
        "env": tuple(env), "label": tuple(_label_item(x) for x in labels),
        "volume": tuple(v["volume"]), "mount_long": tuple(map(_docker_mount, v["mount_long"])), "tmpfs": tuple(v["tmpfs"]),
        "publish": tuple(v["publish"]), "ulimit": tuple(v["ulimit"]),
        **{key: v[key] for key in ("workdir", "user", "hostname", "name", "network", "ipc", "uts", "pid", "privileged",
                                   "read_only", "init", "shm_size", "restart", "auto_remove", "stop_grace", "pull",
                                   "tty", "interactive", "cpus", "memory", "memory_swap", "gpus", "entrypoint",
                                   "runtime", "cgroup_parent")},
        "security_opt": tuple(v["security_opt"]),
        "pids_limit": _int(v["pids_limit"], "--pids-limit"),
    }


def _read_lines(path: str, flag: str) -> list[str]:
    """docker's env and label files: one KEY=VALUE (or KEY) per line; blank lines and # comments skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise FlagError(f"{flag} {path}: {exc.strerror}") from None
    out = []
    for line in lines:
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key = line.partition("=")[0]
        if re.search(r"\s", key):
            raise FlagError(f"{flag} {path}: variable {key!r} contains whitespaces")
        out.append(line)
    return out


def _label_item(item: str) -> str:
    return item if "=" in item else item + "="  # docker: `--label flag` is the label with an empty value


def _docker_mount(text: str) -> str:
    """docker's --mount: its fields in any order, type=volume when none is given. Conveyor's
    parser wants type first."""
    fields = [f for f in text.split(",") if f]
    kinds = [f for f in fields if f.strip().lower().startswith("type=")]
    rest = [f for f in fields if f not in kinds]
    return ",".join([*(kinds[:1] or ["type=volume"]), *rest])


def _int(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise FlagError(f'invalid argument "{value}" for "{flag}" flag: strconv.ParseInt: parsing "{value}": invalid syntax') from None


class CidFile:
    """docker's --cidfile: made before the job (never over another file), so a bad path fails
    before anything runs; the job id is written once the job exists, and the file goes again
    if no job came to be."""

    def __init__(self, path: str | None):
        self.path, self.fd, self.written = path, None, False
        if path is None:
            return
        if os.path.exists(path):
            raise DockerError(f"container ID file found, make sure the other container isn't running or delete {path}",
                              EXIT_CONVEYOR_ERROR)
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            # docker run's rule for a failure before the start: "no such file" 127, "permission denied" 126
            code = {errno.ENOENT: 127, errno.EACCES: 126}.get(exc.errno, EXIT_CONVEYOR_ERROR)
            raise DockerError(f"failed to create the container ID file: open {path}: {exc.strerror.lower()}", code) from None

    def write(self, job: str) -> None:
        if self.fd is not None and not self.written:
            os.write(self.fd, job.encode())
            self.written = True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            if not self.written:
                os.remove(self.path)


def calling_tool() -> str:
    """The name of the program that ran us: the parent's command, or the script an
    interpreter runs (``python /usr/bin/cwltool ...`` is cwltool). $CONVEYOR_CLIENT wins."""
    named = os.environ.get("CONVEYOR_CLIENT")
    if named:
        return named
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "unknown"
    names = [os.path.basename(a) for a in argv]
    if names and re.fullmatch(r"python[\d.]*|pypy[\d.]*|node|perl|ruby|env", names[0]):
        args = iter(argv[1:])
        for arg in args:
            if arg == "-m":
                return next(args, names[0])
            if arg in ("-c", "-e"):
                return names[0]
            if not arg.startswith("-"):
                return os.path.basename(arg)
    return names[0] if names else "unknown"
