"""The `conveyor` command line, shaped like docker's.

Exit codes follow `docker run`: the job's own exit code, or 125 when Conveyor itself
could not do what was asked (bad input, engine down, image missing).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from .errors import ConveyorError, ImageNotFound, InvalidSpec

if TYPE_CHECKING:
    from .spec import JobSpec

CONVEYOR_ERROR = 125


# rich and pydantic (through the spec) cost ~0.25 s of imports: only the commands that use
# them load them, so `conveyor --help` and the quick verbs start fast.
class _LazyConsole:
    def __init__(self, **options: Any):
        self._options, self._console = options, None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


def Console(**options: Any):  # noqa: N802 - stands in for rich's class
    from rich.console import Console as RichConsole

    return RichConsole(**options)


def Table(*args: Any, **kwargs: Any):  # noqa: N802 - stands in for rich's class
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


err_console = _LazyConsole(stderr=True, highlight=False)

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
    "ulimits": "--ulimit",
    "restart": "--restart",
    "auto_remove": "--rm",
    "timeout": "--timeout",
    "stop_grace": "--stop-timeout",
    "pull": "--pull",
    "entrypoint": "--entrypoint",
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
    "array": "--array",
    "max_parallel": "--max-parallel",
}


def _flag_for(field: str) -> str | None:
    for key, flag in FLAG_FOR_FIELD.items():
        if field == key or field.startswith(key + ".") or field.startswith(key + "["):
            return flag
    return None


def fail(message: str, code: int = CONVEYOR_ERROR) -> None:
    # escape(): messages quote user input ("[..." in a YAML error is no style tag)
    err_console.print(f"[bold red]conveyor:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def report_error(exc: ConveyorError) -> None:
    if isinstance(exc, InvalidSpec):
        lines = []
        for field, value, hint in exc.problems:
            flag = _flag_for(field)
            where = f"{field} ({flag})" if flag else field
            hint = " ".join(str(hint).split())  # one line per field, even for YAML parser errors
            lines.append(f"  {where}: {value!r} is not valid; {hint}")
        fail("invalid job spec:\n" + "\n".join(lines))
    if isinstance(exc, ImageNotFound):
        fail(f"{exc} (IMAGE, --pull)")
    fail(str(exc))


class ConveyorGroup(click.Group):
    """Turns Conveyor's errors into one red line and exit code 125, like docker."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            fail("aborted", 130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(CONVEYOR_ERROR if exc.exit_code == 2 else exc.exit_code)
        except ConveyorError as exc:
            report_error(exc)


@click.group(cls=ConveyorGroup, context_settings={"help_option_names": ["--help"]})
@click.option(
    "--home",
    envvar="CONVEYOR_HOME",
    type=click.Path(file_okay=False),
    help="State directory (default ~/.local/share/conveyor, or $CONVEYOR_HOME).",
)
@click.version_option(package_name="conveyor")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """Conveyor: run batch jobs in containers and keep them under control."""
    ctx.obj = {"home": home}


def _executor(ctx: click.Context, supervise: bool = False):
    """The agent's Client when an agent answers (its socket in the state directory, or
    $CONVEYOR_HOST), else an Executor of our own. Both offer the same methods."""
    from .agent import agent_answers  # stdlib only: cheap enough for every call

    if os.environ.get("CONVEYOR_HOST") or agent_answers(ctx.obj["home"]):
        from .client import Client

        return Client(ctx.obj["home"])
    from .executor import Executor  # imported late: `conveyor --help` stays fast

    return Executor(ctx.obj["home"], supervise=supervise)


# ----------------------------------------------------------------------------- job options

def job_options(fn):
    """The docker-like flags that describe a job, shared by `run` (and later `submit`)."""
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
        # scheduling (README: Scheduling)
        click.option("--priority", type=int, help="Higher starts first (-1000..1000, default 0)."),
        click.option("--after", multiple=True, metavar="ID[:ok|:any]", help="Start after this job or array ended (ok: successfully, the default; any: at all)."),
        click.option("--retries", type=int, help="Run a failed job again up to N times."),
        click.option("--retry-backoff", help="Wait before a retry (30s, 5m); doubles each time."),
        click.option("--start-deadline", help="Fail the job if it has not started this long after submission (10m)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def build_spec(image: str | None, command: tuple[str, ...], o: dict[str, Any]) -> JobSpec:
    """CLI flags (over an optional spec file) -> a validated JobSpec."""
    from .spec import JobSpec
    data: dict[str, Any] = {}
    if o["spec_file"]:
        data = JobSpec.from_file(o["spec_file"]).model_dump(exclude_defaults=True)
    if image:
        data["image"] = image
    if command:
        data["command"] = list(command)
        data.pop("args", None)
    elif "image" not in data:
        raise click.UsageError("an IMAGE (or -f FILE with an image) is required")
    if o["env"]:
        data["env"] = {**data.get("env", {}), **_env_pairs(o["env"])}
    if o["label"]:
        data["labels"] = {**data.get("labels", {}), **dict(_split_pair(x, "--label") for x in o["label"])}
    mounts = [*map(_absolutise, o["volume"]), *o["mount_long"], *map(_tmpfs_mount, o["tmpfs"])]
    if mounts:
        data["mounts"] = [*data.get("mounts", []), *mounts]
    if o.get("inputs"):
        data["inputs"] = [*data.get("inputs", []), *map(_absolutise_input, o["inputs"])]
    if o.get("outputs"):
        data["outputs"] = [*data.get("outputs", []), *o["outputs"]]
    if o["publish"]:
        data["ports"] = [*data.get("ports", []), *o["publish"]]
    if o["ulimit"]:
        data["ulimits"] = [*data.get("ulimits", []), *o["ulimit"]]
    if o["entrypoint"] is not None:
        data["entrypoint"] = [] if o["entrypoint"] == "" else [o["entrypoint"]]
    simple = {
        "workdir": "workdir", "user": "user", "hostname": "hostname", "name": "name", "network": "network",
        "ipc": "ipc_mode", "uts": "uts_mode", "pid": "pid_mode", "privileged": "privileged",
        "shm_size": "shm_size", "restart": "restart", "auto_remove": "auto_remove", "timeout": "timeout",
        "stop_grace": "stop_grace", "pull": "pull", "tty": "tty", "interactive": "stdin_open",
        "priority": "priority", "retries": "retries", "retry_backoff": "retry_backoff",
        "start_deadline": "start_deadline",
    }
    if o["after"]:
        data["after"] = [*data.get("after", []), *o["after"]]
    for flag, field in simple.items():
        if o[flag] is not None:
            data[field] = o[flag]
    resources = dict(data.get("resources", {}))
    for flag in ("cpus", "memory", "memory_swap", "pids_limit"):
        if o[flag] is not None:
            resources[flag] = o[flag]
    if o["gpus"] is not None or o["gpu_vendor"] is not None:
        from .spec import GpuRequest

        if o["gpus"] is None:
            raise click.UsageError("--gpu-vendor needs --gpus")
        try:
            resources["gpus"] = GpuRequest.parse(o["gpus"], vendor=o["gpu_vendor"])
        except ValueError as exc:
            raise InvalidSpec.single("resources.gpus", o["gpus"], str(exc).split("; ")[-1]) from None
    if resources:
        data["resources"] = resources
    return _freeze_here(JobSpec.model_validate(data))


def _freeze_here(spec: JobSpec) -> JobSpec:
    """Host-path inputs are frozen into this state directory's content store by the CLI
    itself (it reads the files as the user who named them); the agent or executor then
    gets digests only. With CONVEYOR_HOST (a remote agent) the paths are the agent's."""
    if not any(not i.frozen for i in spec.inputs) or os.environ.get("CONVEYOR_HOST"):
        return spec
    from .cas import BlobStore, freeze_inputs
    from .home import Home

    ctx = click.get_current_context(silent=True)
    home = Home(ctx.find_root().obj["home"] if ctx and ctx.find_root().obj else None)
    return freeze_inputs(spec, BlobStore(home.cas))


def _env_pairs(items: tuple[str, ...]) -> dict[str, str]:
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


# ----------------------------------------------------------------------------- run

@cli.command(context_settings={"allow_interspersed_args": False})
@job_options
@click.argument("image", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, image: str | None, command: tuple[str, ...], **options: Any) -> None:
    """Run a job in the foreground: stream its output, exit with its exit code.

    \b
    conveyor run conveyor/busybox:latest echo hello
    conveyor run --memory 512m --cpus 1.5 -v /data:/data:ro IMAGE CMD ARGS...
    conveyor run -f job.yaml
    """
    spec = build_spec(image, command, options)
    with _executor(ctx, supervise=True) as ex:
        stdin = sys.stdin.buffer if spec.stdin_open else None
        # Pull first, while Ctrl-C still simply aborts (nothing exists yet); from here on a
        # signal must cancel the job, also one that arrives while it is being created.
        ex.backend.ensure_image(spec)
        cancelled = _cancel_on_signals(ex)
        job_id = ex.start(spec, stdin=stdin, image_ready=True)
        cancelled.started(job_id)
        with _raw_terminal(spec.tty and spec.stdin_open):
            for name, chunk in ex.logs(job_id, follow=True):
                out = sys.stdout.buffer if name == "stdout" else sys.stderr.buffer
                out.write(chunk)
                out.flush()
        job = ex.wait(job_id)
        if cancelled.is_set() and job.container_id:
            ex.discard_container(job_id)  # interrupted: leave nothing behind
        supervised_here = not _is_client(ex) and ex.supervising
    if supervised_here:
        _hand_over(ctx)
    if job.substate not in ("exited", None) or job.exit_code is None:
        err_console.print(f"[bold red]conveyor:[/] job {job.id} {job.state.value}/{job.substate}: {escape(str(job.message))}", soft_wrap=True)
    sys.exit(job.exit_code if job.exit_code is not None else CONVEYOR_ERROR)


def _is_client(ex) -> bool:
    """True for the agent's Client (whose module is only loaded when one was made)."""
    client = sys.modules.get("conveyor.client")
    return client is not None and isinstance(ex, client.Client)


def _hand_over(ctx: click.Context) -> None:
    """`run` supervised the state directory itself, so a `submit` meanwhile found a
    supervisor and started none. Now that ours is gone (lock released first), start one in
    the background if any job is still live. A submit that queues after this look starts
    its own, since it looks for a supervisor only after queueing."""
    from .executor import Executor
    from .state import FINAL_STATES, JobState

    live = [s.value for s in JobState if s not in FINAL_STATES]
    with Executor(ctx.obj["home"], supervise=False) as view:
        rows = view.store.query(f"SELECT 1 FROM jobs WHERE state IN ({','.join('?' * len(live))}) LIMIT 1", live)
    if rows:
        _need_supervisor(ctx)


class _cancel_on_signals:
    """Ctrl-C / SIGTERM cancel the job (grace from its spec); a second one kills it now.
    Installed before the job is started: a signal that arrives meanwhile is remembered and
    cancels the job as soon as it exists, so no container is ever left without its client."""

    def __init__(self, ex):
        self.ex = ex
        self.job_id: str | None = None
        self.count = 0
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handler)

    def is_set(self) -> bool:
        return self.count > 0

    def started(self, job_id: str) -> None:
        self.job_id = job_id
        if self.count:
            self._cancel()

    def _handler(self, signum, frame) -> None:
        self.count += 1
        if self.job_id is not None:
            self._cancel()

    def _cancel(self) -> None:
        grace = 0 if self.count > 1 else None
        threading.Thread(target=_quiet_cancel, args=(self.ex, self.job_id, grace), daemon=True).start()


def _quiet_cancel(ex, job_id: str, grace: float | None) -> None:
    try:
        ex.cancel(job_id, grace=grace, wait=False)
    except ConveyorError:
        pass  # it finished on its own meanwhile


class _raw_terminal:
    """Put a real terminal in raw mode for `-it`, and always restore it."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stdin.isatty()
        self.saved = None

    def __enter__(self):
        if self.enabled:
            import termios
            import tty

            self.saved = termios.tcgetattr(sys.stdin.fileno())
            tty.setraw(sys.stdin.fileno())
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self.saved)


# ----------------------------------------------------------------------------- inspecting

def _ts(value: float | None) -> str:
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@cli.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="Include finished jobs.")
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable; any case), e.g. --state running.")
@click.option("-l", "--label", "labels", multiple=True, help="Only jobs with this KEY=VALUE label (repeatable: all must match).")
@click.option("-q", "--quiet", is_flag=True, help="Only job ids.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def ps(ctx: click.Context, show_all: bool, states: tuple[str, ...], labels: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """List jobs (running and waiting ones; -a for all)."""
    from .state import FINAL_STATES, JobState

    by_name = {s.value.lower(): s for s in JobState}
    wanted = None if show_all else [s for s in JobState if s not in FINAL_STATES]
    if states:
        bad = [s for s in states if s.lower() not in by_name]
        if bad:
            raise click.BadParameter(
                f"{bad[0]!r} is not a job state; use one of {', '.join(s.value for s in JobState)}", param_hint="--state"
            )
        wanted = list(dict.fromkeys(by_name[s.lower()] for s in states))
    pairs = {}
    for item in labels:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r} is not valid; use KEY=VALUE", param_hint="-l/--label")
        pairs[key] = value
    jobs = _executor(ctx).list(states=wanted, labels=pairs or None)
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in jobs], indent=2))
        return
    if quiet:
        for j in jobs:
            click.echo(j.id)
        return
    rows = [("JOB ID", "NAME", "IMAGE", "COMMAND", "STATE", "EXIT", "CREATED")]
    for j in jobs:
        cmd = " ".join(j.command or [])[:30]
        exit_code = "" if j.exit_code is None else str(j.exit_code)
        rows.append((j.id, j.name or "", j.image, cmd, _state_label(j), exit_code, _ts(j.created_at)))
    # Plain aligned columns, as `docker ps` prints: rich's table layout took ~7 ms a row
    # (20 s for 3,000 jobs), and a pipe into grep/awk wants whole values, not wrapped cells.
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    click.echo("\n".join(out))


@cli.command("inspect")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the output is always JSON.")
@click.argument("job")
@click.pass_context
def inspect_cmd(ctx: click.Context, as_json: bool, job: str) -> None:
    """Show everything about a job as JSON."""
    ex = _executor(ctx)
    click.echo(json.dumps(ex.info(_job_id(ex, job)).to_dict(), indent=2))


@cli.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N lines of each stream.")
@click.option("--stdout", "only", flag_value="stdout", help="Only stdout.")
@click.option("--stderr", "only", flag_value="stderr", help="Only stderr.")
@click.option("-t", "--timestamps", is_flag=True, help="Start each line with the time it was written (RFC3339Nano, as docker).")
@click.argument("job")
@click.pass_context
def logs_cmd(ctx: click.Context, follow: bool, tail: int | None, only: str | None, timestamps: bool, job: str) -> None:
    """Print a job's output: its stdout to stdout and its stderr to stderr."""
    import inspect

    ex = _executor(ctx)
    job_id = _job_id(ex, job)
    options: dict[str, Any] = {"tail": tail, "follow": follow}
    if timestamps:
        options["timestamps"] = True
        if "timestamps" not in inspect.signature(ex.logs).parameters:
            # The agent's API has no times yet; the state directory here has them.
            if os.environ.get("CONVEYOR_HOST"):
                fail("--timestamps is not available through a remote agent (CONVEYOR_HOST); run 'conveyor logs' on its node")
            from .executor import Executor

            ex = Executor(ctx.obj["home"], supervise=False)
    for name, chunk in ex.logs(job_id, only or "all", **options):
        out = sys.stdout.buffer if name == "stdout" else sys.stderr.buffer
        out.write(chunk)
        out.flush()


@cli.command("cleanup")
@click.pass_context
def cleanup(ctx: click.Context) -> None:
    """Remove every container, volume and network this executor made, and nothing else."""
    with _executor(ctx, supervise=True) as ex:
        counts = ex.cleanup()
    click.echo(", ".join(f"{n} {kind}" for kind, n in counts.items()) + " removed")


# ----------------------------------------------------------------------------- job control

def _need_supervisor(ctx: click.Context) -> None:
    """Start `conveyor serve` in the background unless one runs: queued jobs need it to be
    launched, and running ones to be recorded once this command has exited."""
    if os.environ.get("CONVEYOR_HOST"):
        return  # a remote agent supervises its own node
    from .daemon import ensure_supervisor
    from .home import Home

    ensure_supervisor(Home(ctx.obj["home"]))


def _job_id(ex, ref: str) -> str:
    """A full id, a unique id prefix or a job name -> the job id (JobNotFound says which)."""
    if not ref.strip():
        raise click.UsageError("an empty job id was given; use a job id, a unique prefix of one, or a job name")
    return ex.info(ref).id


def _state_label(job) -> str:
    return job.state.value + (f"/{job.substate}" if job.substate and job.substate != "exited" else "")


def _print_jobs(jobs: list, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in jobs], indent=2))
        return
    for j in jobs:
        click.echo(f"{j.id}  {_state_label(j)}")


def _each_job(ex, refs: tuple[str, ...], action, as_json: bool) -> None:
    """Apply ``action(job_id) -> Job`` to every job named, like docker's multi-id verbs: an
    error for one job is printed and the others are still done; exit 125 if any failed."""
    done, failed = [], False
    for ref in refs:
        try:
            done.append(action(_job_id(ex, ref)))
        except ConveyorError as exc:
            failed = True
            err_console.print(f"[bold red]conveyor:[/] {escape(str(exc))}", soft_wrap=True)
    _print_jobs(done, as_json)
    if failed:
        sys.exit(CONVEYOR_ERROR)


def _seconds(value: str | None, flag: str) -> float | None:
    from .spec import DURATION_HINT, parse_duration

    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not valid; {DURATION_HINT}", param_hint=flag) from None
    if seconds < 0:
        raise click.BadParameter(f"{value!r} is not valid; it must not be negative", param_hint=flag)
    return seconds


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
IDS = click.argument("jobs", nargs=-1, required=True, metavar="JOB...")


@cli.command(context_settings={"allow_interspersed_args": False})
@job_options
@click.option("--hold", is_flag=True, help="Submit held (QueuedHeld): it starts after 'conveyor release'.")
@click.option("--idempotency-key", metavar="KEY", help="A second submit with the same key returns the first job's id.")
@click.option("--digest-key", is_flag=True, help="Use the spec's content digest as the idempotency key.")
@click.option("--array", "array_range", metavar="BEGIN-END[:STEP]", help="A job array: one task per index (CONVEYOR_TASK_ID, TASK_ID); prints the array id.")
@click.option("--max-parallel", type=int, help="With --array: at most N tasks run at once.")
@JSON_OPTION
@click.argument("image", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def submit(
    ctx: click.Context, image: str | None, command: tuple[str, ...], hold: bool, idempotency_key: str | None,
    digest_key: bool, as_json: bool, array_range: str | None = None, max_parallel: int | None = None, **options: Any,
) -> None:
    """Queue a job to run in the background and print its id (like `docker run -d`).

    \b
    conveyor submit conveyor/busybox:latest sh -c 'sleep 60; echo done'
    conveyor submit --hold --name nightly -f job.yaml
    conveyor submit --digest-key IMAGE CMD...     # the same job twice: one run
    """
    if idempotency_key is not None and digest_key:
        raise click.UsageError("give --idempotency-key KEY or --digest-key, not both")
    if options["interactive"]:
        raise click.UsageError("-i/--interactive needs a client attached to the job; use 'conveyor run -i'")
    spec = build_spec(image, command, options)
    ex = _executor(ctx)
    if array_range is not None or max_parallel is not None:
        _submit_array(ctx, ex, spec, array_range, max_parallel, hold, as_json, idempotency_key or digest_key)
        return
    job_id = ex.submit(spec, hold=hold, idempotency_key="digest" if digest_key else idempotency_key)
    _need_supervisor(ctx)
    click.echo(json.dumps({"id": job_id}) if as_json else job_id)



def _submit_array(ctx, ex, spec, text: str | None, max_parallel: int | None, hold: bool, as_json: bool, keyed) -> None:
    """`submit --array BEGIN-END[:STEP] [--max-parallel N]`: one array id, one task per index."""
    import re

    if text is None:
        raise click.UsageError("--max-parallel needs --array")
    if keyed:
        raise click.UsageError("--array does not take an idempotency key")
    m = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(-?\d+))?\s*(?::\s*(-?\d+))?\s*", text)
    if not m:
        raise InvalidSpec.single("array", text, "use BEGIN-END[:STEP], e.g. 1-100 or 1-100:2")
    begin = int(m[1])
    end = int(m[2]) if m[2] is not None else begin
    step = int(m[3]) if m[3] is not None else 1
    ex = _with(ctx, ex, "submit_array")
    array_id = ex.submit_array(spec, begin, end, step, max_parallel, hold=hold)
    _need_supervisor(ctx)
    if as_json:
        click.echo(json.dumps({"array_id": array_id, "tasks": len(range(begin, end + 1, step))}))
    else:
        click.echo(array_id)


@cli.command("wait")
@click.option("--timeout", help="Give up after this long (30s, 5m); exit 125.")
@JSON_OPTION
@IDS
@click.pass_context
def wait_cmd(ctx: click.Context, timeout: str | None, as_json: bool, jobs: tuple[str, ...]) -> None:
    """Wait for jobs to end; print each one's exit code as it ends.

    Exits with the job's exit code, or with the first failure's (125 when a job failed
    without one: cancelled before it started, image missing)."""
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures import as_completed

    seconds = _seconds(timeout, "--timeout")
    ex = _executor(ctx)
    ids = list(dict.fromkeys(_job_id(ex, ref) for ref in jobs))
    if any(not ex.info(i).state.is_final for i in ids):
        _need_supervisor(ctx)
    futures = {ex.future(i): i for i in ids}
    code, ended = None, []
    try:
        for fut in as_completed(futures, timeout=seconds):
            job = fut.result()
            ended.append(job.id)
            exit_code = job.exit_code if job.exit_code is not None else CONVEYOR_ERROR
            if code is None and not job.ok:
                code = exit_code
            if as_json:
                click.echo(json.dumps({"id": job.id, "state": job.state.value, "substate": job.substate, "exit_code": job.exit_code}))
            else:
                click.echo(f"{job.id}  {exit_code}  {_state_label(job)}")
    except FutureTimeout:
        left = [i for i in ids if i not in ended]
        fail(f"job(s) {', '.join(left)} not finished within {timeout} (--timeout)")
    sys.exit(code or 0)


@cli.command("suspend")
@JSON_OPTION
@IDS
@click.pass_context
def suspend_cmd(ctx: click.Context, as_json: bool, jobs: tuple[str, ...]) -> None:
    """Freeze running jobs (Running -> Suspended; the engine's pause)."""
    ex = _executor(ctx)
    _each_job(ex, jobs, ex.suspend, as_json)


@cli.command("resume")
@JSON_OPTION
@IDS
@click.pass_context
def resume_cmd(ctx: click.Context, as_json: bool, jobs: tuple[str, ...]) -> None:
    """Let suspended jobs run on (Suspended -> Running)."""
    ex = _executor(ctx)
    _each_job(ex, jobs, ex.resume, as_json)


@cli.command("hold")
@JSON_OPTION
@IDS
@click.pass_context
def hold_cmd(ctx: click.Context, as_json: bool, jobs: tuple[str, ...]) -> None:
    """Keep queued jobs from starting (Queued -> QueuedHeld)."""
    ex = _executor(ctx)
    _each_job(ex, jobs, ex.hold, as_json)


@cli.command("release")
@JSON_OPTION
@IDS
@click.pass_context
def release_cmd(ctx: click.Context, as_json: bool, jobs: tuple[str, ...]) -> None:
    """Let held jobs start (QueuedHeld -> Queued)."""
    ex = _executor(ctx)
    _each_job(ex, jobs, ex.release, as_json)
    _need_supervisor(ctx)


@cli.command("cancel")
@click.option("--grace", help="Seconds between SIGTERM and SIGKILL (default: the job's --stop-timeout).")
@JSON_OPTION
@IDS
@click.pass_context
def cancel_cmd(ctx: click.Context, grace: str | None, as_json: bool, jobs: tuple[str, ...]) -> None:
    """Terminate jobs: SIGTERM, then SIGKILL after the grace period; waiting ones end at once."""
    seconds = _seconds(grace, "--grace")
    ex = _executor(ctx)
    _need_supervisor(ctx)  # it records the end (and saves the logs) of running jobs

    def cancel(job_id: str):
        ex.cancel(job_id, grace=seconds, wait=False)
        return ex.wait(job_id, timeout=(seconds or 10) + 120)

    _each_job(ex, jobs, cancel, as_json)


@cli.command("rm")
@click.option("-f", "--force", is_flag=True, help="Cancel a job that has not ended first (SIGKILL).")
@JSON_OPTION
@IDS
@click.pass_context
def rm_cmd(ctx: click.Context, force: bool, as_json: bool, jobs: tuple[str, ...]) -> None:
    """Forget ended jobs: their container, saved logs and record."""
    ex = _executor(ctx)
    if force:
        _need_supervisor(ctx)

    def remove(job_id: str):
        job = ex.info(job_id)
        ex.remove(job_id, force=force)
        return job

    _each_job(ex, jobs, remove, as_json)


def _since(value: str | None) -> float | None:
    """docker's --since: a Unix timestamp, a date-time, or a duration back from now."""
    if value is None:
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return stamp.timestamp()  # a naive time is local time, as docker reads it
    except ValueError:
        pass
    from .spec import parse_duration

    try:
        return time.time() - parse_duration(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not valid; use a duration back from now (10m, 1h30m), "
            "a date-time (2026-01-02T15:04:05) or a Unix timestamp",
            param_hint="--since",
        ) from None


@cli.command("events")
@click.option("--since", help="Only transitions after this: 10m, 2026-01-02T15:04:05 or a Unix timestamp.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing transitions as they happen (Ctrl-C ends).")
@click.option("--job", help="Only this job's transitions.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.pass_context
def events_cmd(ctx: click.Context, since: str | None, follow: bool, job: str | None, as_json: bool) -> None:
    """Print job state transitions: time, job, from -> to, substate, reason.

    Without -f: the recorded history (since --since). With -f: the transitions since
    --since (or from now), then each new one as it is committed."""
    after = _since(since)
    ex = _executor(ctx)
    job_id = _job_id(ex, job) if job is not None else None
    start = 0 if (after is not None or not follow) else None
    try:
        for t in ex.events(job_id, since=start, follow=follow):
            if after is not None and t.at < after:
                continue
            if as_json:
                click.echo(json.dumps({
                    "seq": t.seq, "time": t.at, "job_id": t.job_id,
                    "from_state": t.from_state.value if t.from_state else None,
                    "to_state": t.to_state.value, "substate": t.substate, "reason": t.reason,
                }))
            else:
                when = datetime.fromtimestamp(t.at).isoformat(timespec="milliseconds")
                src = t.from_state.value if t.from_state else "-"
                click.echo(f"{when}  {t.job_id}  {src} -> {t.to_state.value}  {t.substate or '-'}  {t.reason or ''}".rstrip())
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a follower ends


# ----------------------------------------------------------------------------- supervisor

# ----------------------------------------------------------------------------- arrays

@cli.group("array")
def array_group() -> None:
    """Look at and control a job array as a whole (ids from `conveyor submit --array`)."""


def _print_array(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    counts = "  ".join(f"{state}={n}" for state, n in summary["states"].items()) or "no tasks"
    limit = summary.get("max_parallel") or "-"
    affected = f"  ({summary['affected']} affected)" if "affected" in summary else ""
    click.echo(
        f"{summary['id']}  tasks {summary['begin']}-{summary['end']}:{summary['step']}  "
        f"max-parallel {limit}  {counts}{affected}"
    )


def _array_command(name: str, method: str, doc: str, grace: bool = False):
    @click.argument("array_id", metavar="ARRAY")
    @JSON_OPTION
    @click.pass_context
    def command(ctx: click.Context, array_id: str, as_json: bool, grace_text: str | None = None) -> None:
        if method in ("release_array", "cancel_array"):
            _need_supervisor(ctx)  # released tasks must be launched, cancelled ones recorded
        ex = _executor(ctx)
        kwargs = {"grace": _seconds(grace_text, "--grace")} if grace else {}
        _print_array(getattr(ex, method)(array_id, **kwargs), as_json)

    command.__doc__ = doc
    if grace:
        command = click.option("--grace", "grace_text", help="Seconds between SIGTERM and SIGKILL (default: the spec's).")(command)
    array_group.command(name)(command)


_array_command("show", "array", "Summary of an array: its range, max-parallel and task counts per state.")
_array_command("hold", "hold_array", "Hold every task that has not started.")
_array_command("release", "release_array", "Release every held task.")
_array_command("suspend", "suspend_array", "Suspend every running task.")
_array_command("resume", "resume_array", "Resume every suspended task.")
_array_command("cancel", "cancel_array", "Cancel every task that has not ended.", grace=True)


@cli.command("serve")
@click.option("--tcp", metavar="[HOST:]PORT", help="Also serve the API on TCP: PORT is on 127.0.0.1; another HOST must be given explicitly.")
@click.option("--status", is_flag=True, help="Say whether an agent runs for this state directory (exit 0 if so, 3 if not).")
@click.option("--stop", is_flag=True, help="Stop the running agent; its jobs keep running.")
@click.option("--rotate-token", is_flag=True, help="Replace the API token (a running agent takes the new one at once).")
@click.pass_context
def serve(ctx: click.Context, tcp: str | None, status: bool, stop: bool, rotate_token: bool) -> None:
    """Run the agent in the foreground until SIGTERM or Ctrl-C: supervise this state directory
    and serve the API on its unix socket agent.sock (and on --tcp).

    Queued jobs are launched, running ones watched, finished ones recorded. Stopping the
    agent leaves running jobs running; the next one re-attaches them. `conveyor submit`
    starts one in the background when none runs. Requests need the token in agent.token.
    """
    from .daemon import SupervisorLock, stop_supervisor
    from .home import Home

    home = Home(ctx.obj["home"])
    if rotate_token:
        from .agent.auth import token_path, write_token

        write_token(home.root)
        click.echo(f"new token written to {token_path(home.root)}; the old one no longer works")
        return
    if status or stop:
        from .agent.server import read_info

        pid = SupervisorLock(home).holder()
        if not pid:
            click.echo(f"no agent runs for {home.root}")
            sys.exit(3 if status else 0)
        if status:
            info = read_info(home.root) or {}
            where = "".join(f", API on {a}" for a in (info.get("socket") and "unix:" + info["socket"], info.get("url")) if a)
            click.echo(f"agent pid {pid} runs for {home.root}{where}")
            return
        stop_supervisor(home)
        click.echo(f"stopped agent pid {pid}; running jobs keep running")
        return
    import logging

    # The supervisor's log (stderr; supervisor.log when started in the background) is where
    # a user sees reconcile results, orphan containers and engine reconnects.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s conveyor %(levelname)s %(message)s")
    from .agent.server import serve as serve_agent

    serve_agent(home.root, tcp=tcp, announce=lambda text: err_console.print(escape(text), soft_wrap=True))


# ----------------------------------------------------------------------------- machine and queue (scheduling)


def _size(n: int | float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:g} B"


def _with(ctx: click.Context, ex, method: str):
    """``ex`` if it offers ``method``; else, for the local agent, an Executor on the same
    state directory (it reads the store and wakes the supervisor like any submitter)."""
    if hasattr(ex, method):
        return ex
    if os.environ.get("CONVEYOR_HOST"):
        fail(f"the agent this CLI talks to does not offer {method} yet; run it on the agent's node")
    ex.close()
    from .executor import Executor

    return Executor(ctx.obj["home"], supervise=False)


def _local_view(ctx: click.Context, name: str, **kw):
    ex = _with(ctx, _executor(ctx), name)
    try:
        return getattr(ex, name)(**kw)
    finally:
        ex.close()


@cli.command("machine")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def machine_cmd(ctx: click.Context, as_json: bool) -> None:
    """This node: host, OS, CPUs, memory, GPUs, load, engine, and the capacity in use."""
    m = _local_view(ctx, "machine")
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    cap, used = m["capacity"], m["in_use"]
    gpus = ", ".join(f"{v}: {','.join(ids)}" for v, ids in m["gpus"].items()) or "none"
    cap_gpus = ", ".join(f"{v}: {','.join(ids)}" for v, ids in cap["gpus"].items()) or "none"
    rows = [
        ("host", f"{m['hostname']} ({m['os']}, {m['arch']})"),
        ("cpus", f"{m['cpus']:g}"),
        ("memory", _size(m["memory"])),
        ("gpus", gpus),
        ("load", " ".join(f"{x:.2f}" for x in m["load"])),
        ("engine", f"{m['engine']['name']} {m['engine']['version'] or '(not reachable)'}"),
        ("capacity", f"{cap['cpus']:g} CPUs, {_size(cap['memory'])}, GPUs {cap_gpus} "
                     f"(reserve {cap['reserve']['cpus']:g} CPUs, {_size(cap['reserve']['memory'])})"),
        ("in use", f"{used['cpus']:g} CPUs, {_size(used['memory'])}, GPUs {', '.join(used['gpus']) or 'none'} "
                   f"by {used['jobs']} job(s)"
                   + (f" of max_running {cap['max_running']}" if cap.get("max_running") else "")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@cli.command("queue")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-n", "--limit", type=int, default=50, show_default=True, help="Waiting jobs to list (0: all).")
@click.pass_context
def queue_cmd(ctx: click.Context, as_json: bool, limit: int) -> None:
    """Running and waiting jobs per priority, and what each waiting job waits for
    (resources, dependency, hold, cap, backoff, backfill), in the order they will start."""
    q = _local_view(ctx, "queue", limit=limit or None)
    if as_json:
        click.echo(json.dumps(q, indent=2))
        return
    used, cap = q["in_use"], q["capacity"]
    click.echo(f"in use: {used.get('cpus', 0):g} of {cap['cpus']:g} CPUs, {_size(used.get('memory', 0))} of "
               f"{_size(cap['memory'])}, {used.get('jobs', 0)} job(s) running")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("PRIORITY", "RUNNING", "QUEUED", "HELD"):
        table.add_column(col, justify="right")
    for prio, counts in q["priorities"].items():
        table.add_row(prio, str(counts["running"]), str(counts["queued"]), str(counts["held"]))
    console = Console(highlight=False)
    console.print(table)
    if not q["jobs"]:
        click.echo("no waiting jobs")
        return
    jobs = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("JOB ID", "NAME", "PRIO", "STATE", "REQUEST", "WAITS FOR"):
        jobs.add_column(col)
    for j in q["jobs"]:
        name = j["name"] or (f"[{j['array_index']}]" if j["array_id"] else "")
        jobs.add_row(*map(escape, (j["id"], name, str(j["priority"]), j["state"], j["request"], j["reason"])))
    console.print(jobs)
    if q["waiting"] > len(q["jobs"]):
        click.echo(f"... and {q['waiting'] - len(q['jobs'])} more (-n 0 lists all)")


# ----------------------------------------------------------------------------- data (README: Data)


def _data_executor(ctx: click.Context, method: str):
    """Content-store reads are local files: the agent's Client if it offers ``method``, else
    an Executor of our own on the same state directory."""
    return _with(ctx, _executor(ctx), method)


@cli.command("outputs")
@click.option("--to", "to_dir", type=click.Path(file_okay=False), help="Restore the outputs under this directory (output /out -> DIR/out).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (includes each output's fileset digest).")
@click.argument("job")
@click.pass_context
def outputs_cmd(ctx: click.Context, to_dir: str | None, as_json: bool, job: str) -> None:
    """List a job's captured output files (path, size, digest), or restore them with --to."""
    ex = _data_executor(ctx, "restore_outputs" if to_dir else "outputs")
    try:
        if to_dir:
            written = ex.restore_outputs(job, to_dir)
            if as_json:
                click.echo(json.dumps({"restored": written}, indent=2))
            else:
                click.echo(f"restored {len(written)} file(s) under {to_dir}")
            return
        files = ex.outputs(job)
        if as_json:
            click.echo(json.dumps({"filesets": ex.filesets(job), "files": files}, indent=2))
            return
        for f in files:
            click.echo(f"{f['path']}\t{f['size']}\t{f['digest']}")
    finally:
        ex.close()


@cli.command("cat")
@click.argument("job")
@click.argument("path")
@click.pass_context
def cat_cmd(ctx: click.Context, job: str, path: str) -> None:
    """Print one captured output file (its content is verified against its digest)."""
    ex = _data_executor(ctx, "read_output")
    try:
        ex.read_output(job, path, out=sys.stdout.buffer)
        sys.stdout.buffer.flush()
    finally:
        ex.close()


@cli.command("verify")
@click.option("--all", "verify_all", is_flag=True, help="Every blob in the content store (the default without JOB).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("job", required=False)
@click.pass_context
def verify_cmd(ctx: click.Context, verify_all: bool, as_json: bool, job: str | None) -> None:
    """Re-hash stored blobs; report each corrupt or missing one and the jobs that use it.
    Exits 1 when anything is bad."""
    if job and verify_all:
        raise click.UsageError("give a JOB or --all, not both")
    ex = _data_executor(ctx, "verify")
    try:
        report = ex.verify(job)
    finally:
        ex.close()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for b in report["bad"]:
            click.echo(f"{b['problem']}\t{b['digest']}\tjobs: {', '.join(b['jobs']) or '-'}")
        click.echo(f"checked {report['checked']} blob(s), {len(report['bad'])} bad")
    if report["bad"]:
        sys.exit(1)


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--grace", default="10m", show_default=True, help="Keep blobs written more recently than this (a submit in progress).")
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool, grace: str) -> None:
    """Remove blobs that no job references (never those a queued or running job needs)."""
    seconds = _seconds(grace, "--grace")
    ex = _data_executor(ctx, "gc")
    try:
        result = ex.gc(dry_run=dry_run, grace=seconds or 0.0)
    finally:
        ex.close()
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {result['removed']} blob(s), {_size(result['bytes'])}; kept {result['kept']}")


@cli.group("image")
def image_group() -> None:
    """Images shipped as files."""


@image_group.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def image_load_cmd(ctx: click.Context, file: str, as_json: bool) -> None:
    """Load an image tarball (from `docker save`) into the engine and record its digest."""
    ex = _data_executor(ctx, "load_image")
    try:
        result = ex.load_image(file)
    finally:
        ex.close()
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for img in result["images"]:
        click.echo(f"{img['image_id']}\t{', '.join(img['tags']) or '<untagged>'}")
    click.echo(f"file {result['file_digest']}")


def main() -> None:
    cli(prog_name="conveyor")


if __name__ == "__main__":
    main()
