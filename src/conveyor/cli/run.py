"""Running jobs: `run` in the foreground and `submit` to the background.

`run` is one exchange with the agent (POST /v1/run): the job's output comes back on that
connection as it is written and its exit code at the end, which is the CLI's exit code. The job
belongs to the run: Ctrl-C, SIGTERM or a closed pipe cancel it (SIGTERM, then SIGKILL after its
grace; a second signal kills at once), and a killed CLI's job is cancelled by the agent, which
sees the connection go. With -i the CLI's stdin streams to the job; with -t the job gets a
terminal of the caller's size that follows every resize, and the caller's terminal is in raw
mode (keys, Ctrl-C included, go to the job) and restored on every exit. If the agent goes away
meanwhile, the CLI picks the job up again from the next agent (started if need be).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

import click

from ..errors import AgentUnreachable, ConveyorError, InvalidSpec
from ..operations import CANCEL, DISCARD_CONTAINER, RESIZE
from .app import CONVEYOR_ERROR, JSON_OPTION, cli, connect
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
    conveyor run -it IMAGE sh
    conveyor run -f job.yaml
    """
    spec = build_spec(image, command, options)
    foreground = Foreground(connect(ctx), spec)
    sys.exit(foreground.run())


class Foreground:
    """One foreground job: its stream, its signals, its stdin and its terminal."""

    def __init__(self, api, spec: dict):
        self.api, self.spec = api, spec
        self.tty = bool(spec.get("tty"))
        self.interactive = bool(spec.get("stdin_open"))
        self.job: str | None = None
        self.sent = {"stdout": 0, "stderr": 0}  # output bytes written out: where to resume
        self.signals = 0
        self.cancelled = False
        self.closed = False  # our stdout or stderr reader went away
        self.out = {"stdout": sys.stdout.fileno(), "stderr": sys.stderr.fileno()}

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        size = _terminal_size() if self.tty else None
        if size is not None:
            signal.signal(signal.SIGWINCH, self._on_resize)
        with _RawTerminal(self.tty and self.interactive):
            end = self._follow(self.api.run(self.spec, console_size=size))
        if self.cancelled and end.get("container_id"):
            _quietly(self.api.perform, DISCARD_CONTAINER, end["id"], {})  # interrupted: leave nothing behind
        if end["substate"] not in ("exited", None) or end["exit_code"] is None:
            error_line(f"job {end['id']} {end['state']}/{end['substate']}: {end['message']}")
        return end["exit_code"] if end["exit_code"] is not None else CONVEYOR_ERROR

    def _follow(self, frames) -> dict:
        """The frames of the run (or, after the agent went away, of an attach) to the end."""
        while True:
            try:
                for frame in frames:
                    if "job" in frame:
                        self._started(frame["job"]["id"])
                    elif "data" in frame:
                        self._write(frame["stream"], frame["data"])
                    elif "end" in frame:
                        return frame["end"]
            except AgentUnreachable:
                if self.job is None:
                    raise
                # The agent went away (stopped, restarted, killed); the job goes on in the
                # engine. The next agent has it: follow it from where the output broke off.
                frames = self.api.patiently(lambda: self.api.attach(self.job, self.sent))

    def _started(self, job: str) -> None:
        self.job = job
        if self.interactive:
            threading.Thread(target=self._send_stdin, daemon=True, name="conveyor-stdin").start()

    def _write(self, stream: str, data: bytes) -> None:
        self.sent[stream] += len(data)
        if self.closed:
            return
        try:
            _write_all(self.out[stream], data)
        except BrokenPipeError:  # nobody reads our output any more: the job has no one either
            self.closed = True
            self.signals += 1
            self._cancel()

    def _send_stdin(self) -> None:
        def chunks():
            # os.read, not sys.stdin: a thread blocked in a buffered read holds its lock, and
            # the interpreter then dies at exit ("could not acquire lock for <stdin>").
            while data := os.read(0, 65536):
                yield data

        try:
            self.api.send_stdin(self.job, chunks())
        except (ConveyorError, OSError):
            pass  # the job ended first

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1
        if self.job is None:
            # Nothing to cancel yet (the image is being pulled, say): stop here; the agent
            # sees the connection go and cancels the job if it was made meanwhile.
            raise KeyboardInterrupt
        self._cancel()

    def _cancel(self) -> None:
        self.cancelled = True
        grace = 0 if self.signals > 1 else None  # a second signal: kill now
        threading.Thread(target=_quietly, args=(self.api.perform, CANCEL, self.job, {"grace": grace}), daemon=True).start()

    def _on_resize(self, signum, frame) -> None:
        size = _terminal_size()
        if self.job is not None and size is not None:
            threading.Thread(target=_quietly, daemon=True,
                             args=(self.api.perform, RESIZE, self.job, {"height": size[0], "width": size[1]})).start()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _quietly(action, *args) -> None:
    try:
        action(*args)
    except ConveyorError:
        pass  # it ended on its own meanwhile


def _terminal_size() -> tuple[int, int] | None:
    """(rows, columns) of the terminal the CLI writes to, if it writes to one."""
    for fd in (1, 0, 2):
        try:
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
        except OSError:
            continue
    return None


class _RawTerminal:
    """The caller's terminal in raw mode for `-it` (every key goes to the job), restored on
    every exit."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and os.isatty(0)
        self.saved = None

    def __enter__(self):
        if self.enabled:
            import termios
            import tty

            self.saved = termios.tcgetattr(0)
            tty.setraw(0, termios.TCSANOW)  # keep what was typed ahead: it is for the job
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)


# ----------------------------------------------------------------------------- submit

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
    api = connect(ctx)
    if array_range is not None or max_parallel is not None:
        _submit_array(api, spec, array_range, max_parallel, hold, as_json, idempotency_key or digest_key)
        return
    job = api.submit(spec, hold=hold, idempotency_key="digest" if digest_key else idempotency_key)
    click.echo(json.dumps({"id": job["id"]}) if as_json else job["id"])


def _submit_array(api, spec: dict, text: str | None, max_parallel: int | None, hold: bool, as_json: bool, keyed) -> None:
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
    array = api.submit_array(spec, begin, end, step, max_parallel, hold=hold)
    if as_json:
        click.echo(json.dumps({"array_id": array["id"], "tasks": array["tasks"]}))
    else:
        click.echo(array["id"])
