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
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ConveyorError, ImageNotFound, InvalidSpec
from .spec import JobSpec

CONVEYOR_ERROR = 125
err_console = Console(stderr=True, highlight=False)

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
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def build_spec(image: str | None, command: tuple[str, ...], o: dict[str, Any]) -> JobSpec:
    """CLI flags (over an optional spec file) -> a validated JobSpec."""
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
    }
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
    return JobSpec.model_validate(data)


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
    if job.substate not in ("exited", None) or job.exit_code is None:
        err_console.print(f"[bold red]conveyor:[/] job {job.id} {job.state.value}/{job.substate}: {escape(str(job.message))}", soft_wrap=True)
    sys.exit(job.exit_code if job.exit_code is not None else CONVEYOR_ERROR)


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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def ps(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List jobs (running and waiting ones; -a for all)."""
    from .state import FINAL_STATES, JobState

    ex = _executor(ctx)
    states = None if show_all else [s for s in JobState if s not in FINAL_STATES]
    jobs = ex.list(states=states)
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in jobs], indent=2))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("JOB ID", "NAME", "IMAGE", "COMMAND", "STATE", "EXIT", "CREATED"):
        table.add_column(col)
    for j in jobs:
        state = j.state.value + (f"/{j.substate}" if j.substate and j.substate != "exited" else "")
        cmd = " ".join(j.command or [])[:30]
        exit_code = "" if j.exit_code is None else str(j.exit_code)
        table.add_row(*map(escape, (j.id, j.name or "", j.image, cmd, state, exit_code, _ts(j.created_at))))
    Console(highlight=False).print(table)


@cli.command("inspect")
@click.argument("job")
@click.pass_context
def inspect_cmd(ctx: click.Context, job: str) -> None:
    """Show everything about a job as JSON."""
    click.echo(json.dumps(_executor(ctx).info(job).to_dict(), indent=2))


@cli.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--tail", type=int, help="Only the last N lines of each stream.")
@click.option("--stdout", "only", flag_value="stdout", help="Only stdout.")
@click.option("--stderr", "only", flag_value="stderr", help="Only stderr.")
@click.argument("job")
@click.pass_context
def logs_cmd(ctx: click.Context, follow: bool, tail: int | None, only: str | None, job: str) -> None:
    """Print a job's output: its stdout to stdout and its stderr to stderr."""
    ex = _executor(ctx)
    for name, chunk in ex.logs(job, only or "all", tail=tail, follow=follow):
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


# ----------------------------------------------------------------------------- supervisor

@cli.command("serve")
@click.option("--status", is_flag=True, help="Say whether a supervisor runs for this state directory (exit 0 if so, 3 if not).")
@click.option("--stop", is_flag=True, help="Stop the running supervisor; its jobs keep running.")
@click.pass_context
def serve(ctx: click.Context, status: bool, stop: bool) -> None:
    """Supervise this state directory in the foreground until SIGTERM or Ctrl-C.

    Queued jobs are launched, running ones watched, finished ones recorded. Stopping the
    supervisor leaves running jobs running; the next one re-attaches them. `conveyor submit`
    starts one in the background when none runs.
    """
    from .daemon import SupervisorLock, stop_supervisor
    from .home import Home

    home = Home(ctx.obj["home"])
    if status or stop:
        pid = SupervisorLock(home).holder()
        if not pid:
            click.echo(f"no supervisor runs for {home.root}")
            sys.exit(3 if status else 0)
        if status:
            click.echo(f"supervisor pid {pid} runs for {home.root}")
            return
        stop_supervisor(home)
        click.echo(f"stopped supervisor pid {pid}; running jobs keep running")
        return
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.set())
    ex = _executor(ctx, supervise=True)
    if not ex.supervising:
        holder = SupervisorLock(home).holder()
        ex.close()
        fail(f"process {holder} already supervises {home.root}; stop it with 'conveyor serve --stop'")
    err_console.print(f"conveyor: supervising {home.root} (pid {os.getpid()})")
    try:
        while not stopping.wait(3600):
            pass
    finally:
        ex.close()
    err_console.print("conveyor: supervisor stopped; running jobs keep running")


def main() -> None:
    cli(prog_name="conveyor")


if __name__ == "__main__":
    main()
