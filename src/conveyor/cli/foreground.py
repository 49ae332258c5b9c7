"""A job run in the foreground, as `docker run` runs a container: shared by `conveyor run`
and the docker stand-in (dockercli), so both follow a job the same way. Stdlib only: the
docker stand-in starts without click.

It is one exchange with the agent (POST /v1/run): the job's output comes back on that
connection as it is written and its end (state, exit code) last. The job belongs to the run:
Ctrl-C, SIGTERM or a closed pipe cancel it (SIGTERM, then SIGKILL after its grace; a second
signal kills at once), and a killed client's job is cancelled by the agent, which sees the
connection go. With -i the caller's stdin streams to the job; with -t the job gets a terminal
of the caller's size that follows every resize, and the caller's terminal is in raw mode (keys,
Ctrl-C included, go to the job) and restored on every exit. If the agent goes away meanwhile,
the run picks the job up again from the next agent (started if need be).
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from typing import Callable

from ..errors import EXIT_CONVEYOR_ERROR, AgentUnreachable, ConveyorError
from ..operations import CANCEL, DISCARD_CONTAINER, RESIZE
from .terminal import RawTerminal, terminal_size, write_all


ABORT_AFTER = 2.0  # seconds a signal waits for the job's id before the client stops without it


class Foreground:
    """One foreground job: its stream, its signals, its stdin and its terminal."""

    def __init__(self, api, spec: dict, *, on_started: Callable[[str], None] | None = None, stdin_from_offset: int | None = None):
        """``on_started(job_id)`` is called once the job exists (the docker stand-in writes
        its --cidfile then). With ``stdin_from_offset`` the job's stdin is the caller's stdin,
        a regular file, read from that offset with pread: the caller's file offset does not
        move, so a shell loop reading the same file is not robbed of its lines."""
        self.api, self.spec = api, spec
        self.tty = bool(spec.get("tty"))
        self.interactive = bool(spec.get("stdin_open"))
        self.on_started = on_started
        self.stdin_from_offset = stdin_from_offset
        self.job: str | None = None
        self.sent = {"stdout": 0, "stderr": 0}  # output bytes written out: where to resume
        self.signals = 0
        self._abort: threading.Timer | None = None  # started by a signal that came before the job's id
        self.cancelled = False
        self.closed = False  # our stdout or stderr reader went away
        self.out = {"stdout": sys.stdout.fileno(), "stderr": sys.stderr.fileno()}

    def run(self) -> dict:
        """Follow the job to its end; the end as the agent reports it (id, state, substate,
        exit_code, message)."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        size = terminal_size() if self.tty else None
        if size is not None:
            signal.signal(signal.SIGWINCH, self._on_resize)
        with RawTerminal(self.tty and self.interactive):
            end = self._follow(self.api.run(self.spec, console_size=size))
        if self.cancelled and end.get("container_id"):
            _quietly(self.api.perform, DISCARD_CONTAINER, end["id"], {})  # interrupted: leave nothing behind
        return end

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
        if self.on_started is not None:
            self.on_started(job)
        if self._abort is not None:  # interrupted before we knew the job
            self._abort.cancel()
            self._cancel()
        if self.interactive:
            threading.Thread(target=self._send_stdin, daemon=True, name="conveyor-stdin").start()

    def _write(self, stream: str, data: bytes) -> None:
        self.sent[stream] += len(data)
        if self.closed:
            return
        try:
            write_all(self.out[stream], data)
        except BrokenPipeError:  # nobody reads our output any more: the job has no one either
            self.closed = True
            self.signals += 1
            self._cancel()

    def _send_stdin(self) -> None:
        def chunks():
            # os.read, not sys.stdin: a thread blocked in a buffered read holds its lock, and
            # the interpreter then dies at exit ("could not acquire lock for <stdin>").
            if self.stdin_from_offset is None:
                while data := os.read(0, 65536):
                    yield data
                return
            offset = self.stdin_from_offset
            while data := os.pread(0, 65536, offset):
                offset += len(data)
                yield data

        try:
            self.api.send_stdin(self.job, chunks())
        except (ConveyorError, OSError):
            pass  # the job ended first

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1
        if self.job is None:
            # The job's id is the agent's first answer: it is usually here already, unread.
            # Cancel the job when it is read, as for any signal (so the client returns once
            # the job and its container are gone); with no answer in a moment, or on a
            # second signal, stop here: the agent sees the connection go and cancels the job.
            if self.signals > 1:
                raise KeyboardInterrupt
            self._abort = threading.Timer(ABORT_AFTER, _thread.interrupt_main)
            self._abort.daemon = True
            self._abort.start()
            return
        self._cancel()

    def _cancel(self) -> None:
        self.cancelled = True
        grace = 0 if self.signals > 1 else None  # a second signal: kill now
        threading.Thread(target=_quietly, args=(self.api.perform, CANCEL, self.job, {"grace": grace}), daemon=True).start()

    def _on_resize(self, signum, frame) -> None:
        size = terminal_size()
        if self.job is not None and size is not None:
            threading.Thread(target=_quietly, daemon=True,
                             args=(self.api.perform, RESIZE, self.job, {"height": size[0], "width": size[1]})).start()


def _quietly(action, *args) -> None:
    try:
        action(*args)
    except ConveyorError:
        pass  # it ended on its own meanwhile


def run_in_foreground(connect: Callable[[], object], spec: dict) -> None:
    """`conveyor run` once its flags made ``spec`` (click's command and the fast path alike):
    the job followed to its end, the CLI's exit code the job's."""
    from . import progress
    from .render import error_line

    offset = None
    if not spec.get("stdin_open") and not spec.get("tty"):
        offset = stdin_file_offset()
        if offset is not None:
            spec["stdin_open"] = True
    api = connect()
    if progress.wanted():
        progress.pull_first(api, spec)
    end = Foreground(api, spec, stdin_from_offset=offset).run()
    if ended_badly(end):
        error_line(f"job {end['id']} {end['state']}/{end['substate']}: {end['message']}")
    sys.exit(exit_code(end))


def ended_badly(end: dict) -> bool:
    """The job did not run to an exit of its own (it failed to start, was cancelled, lost)."""
    return end["substate"] not in ("exited", None) or end["exit_code"] is None


def exit_code(end: dict) -> int:
    """docker run's: the job's exit code, else 125 (Conveyor could not run it)."""
    return end["exit_code"] if end["exit_code"] is not None else EXIT_CONVEYOR_ERROR


def stdin_file_offset() -> int | None:
    """Where the caller's stdin stands, when it is a regular file (a ``< file`` redirect);
    None for a terminal, a pipe, /dev/null or a closed stdin."""
    import stat

    try:
        if stat.S_ISREG(os.fstat(0).st_mode):
            return os.lseek(0, 0, os.SEEK_CUR)
    except OSError:
        pass
    return None
