"""Running jobs: `run` in the foreground (streaming its output, exiting with its exit code,
cancelling it on Ctrl-C) and `submit` to the background."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import click

from ..errors import ConveyorError, InvalidSpec
from ..state import LIVE_STATES
from .app import CONVEYOR_ERROR, JSON_OPTION, cli, need_supervisor, open_executor
from .jobspec import build_spec, job_options
from .render import error_line

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
    with open_executor(ctx, supervise=True) as ex:
        stdin = sys.stdin.buffer if spec.stdin_open else None
        # Pull first, while Ctrl-C still simply aborts (nothing exists yet); from here on a
        # signal must cancel the job, also one that arrives while it is being created.
        ex.ensure_image(spec)
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
        supervised_here = ex.supervising
    if supervised_here:
        _hand_over(ctx)
    if job.substate not in ("exited", None) or job.exit_code is None:
        error_line(f"job {job.id} {job.state.value}/{job.substate}: {job.message}")
    sys.exit(job.exit_code if job.exit_code is not None else CONVEYOR_ERROR)


def _hand_over(ctx: click.Context) -> None:
    """`run` supervised the state directory itself, so a `submit` meanwhile found a
    supervisor and started none. Now that ours is gone (lock released first), start one in
    the background if any job is still live. A submit that queues after this look starts
    its own, since it looks for a supervisor only after queueing."""
    from ..executor import Executor

    with Executor(ctx.obj["home"], supervise=False) as view:
        live = view.count(states=LIVE_STATES)
    if live:
        need_supervisor(ctx)


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
    ex = open_executor(ctx)
    if array_range is not None or max_parallel is not None:
        _submit_array(ctx, ex, spec, array_range, max_parallel, hold, as_json, idempotency_key or digest_key)
        return
    job_id = ex.submit(spec, hold=hold, idempotency_key="digest" if digest_key else idempotency_key)
    need_supervisor(ctx)
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
    array_id = ex.submit_array(spec, begin, end, step, max_parallel, hold=hold)
    need_supervisor(ctx)
    if as_json:
        click.echo(json.dumps({"array_id": array_id, "tasks": len(range(begin, end + 1, step))}))
    else:
        click.echo(array_id)
