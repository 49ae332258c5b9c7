"""Ways into a running job. Commands, as ``docker exec`` runs them: ``open_exec`` hands one over
as it runs (stdin, stdout and stderr apart or a terminal, resizes, the exit code); ``exec``
runs one to its end. Every one is written into the job's event log when it ends (who, what,
how long, the exit code); the agent's exec WebSocket drives these same sessions. And its TCP
ports: ``open_port`` connects to one (`conveyor port-forward` through the agent)."""

from __future__ import annotations

import functools
import socket
import threading
import time

from ..agent import OWNER
from ..arguments import job_ref, tcp_port
from ..backends.base import ExecProcess, ExecResult, collect
from ..errors import ConveyorError, EngineConflict, InvalidState
from ..spec import ExecSpec
from ..state import FINAL_STATES, WAITING_STATES, JobState, Substate
from ..store import JobRecord
from .base import ExecutorBase

EXEC_ACTION = "run a command in"
PORT_ACTION = "forward a port of"


class ExecSession(ExecProcess):
    """A command running in a job, for its caller; recorded in the job's events once it ends
    (or once its caller lets go of it first)."""

    def __init__(self, record, process: ExecProcess, spec: ExecSpec, who: str):
        self._record, self.process, self.spec, self.who = record, process, spec, who
        self.started = time.monotonic()
        self.exit_code: int | None = None
        self.recorded = False
        self._once = threading.Lock()  # its end and its caller letting go may race

    def read(self) -> tuple[str, bytes] | None:
        return None if self.recorded else self.process.read()

    def write(self, data: bytes) -> None:
        self.process.write(data)

    def close_stdin(self) -> None:
        self.process.close_stdin()

    def resize(self, height: int, width: int) -> None:
        self.process.resize(height, width)

    def wait(self) -> int:
        if self.exit_code is None:
            self.exit_code = self.process.wait()
            self._done()
        return self.exit_code

    def close(self) -> None:
        self.process.close()
        self._done()

    def _done(self) -> None:
        with self._once:
            if self.recorded:
                return
            self.recorded = True
        self._record(self.who, self.spec.command, self.exit_code, time.monotonic() - self.started)

    def __enter__(self) -> "ExecSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ExecMixin(ExecutorBase):
    def open_exec(self, ref: str, command: list[str], *, stdin: bool = False, tty: bool = False,
                  env: dict[str, str] | None = None, user: str | None = None, workdir: str | None = None,
                  console_size: tuple[int, int] | None = None) -> ExecSession:
        """Start ``command`` in a running job and hand it over as it runs (``read`` its output,
        ``write`` its stdin with ``stdin``, ``resize`` its terminal with ``tty``, ``wait`` for its
        exit code); InvalidState, saying why, when the job is not running."""
        job_ref("open_exec", ref)
        spec = ExecSpec(command=command, stdin=stdin, tty=tty, env=env or {}, user=user, workdir=workdir,
                        console_size=console_size)
        return self.start_exec(ref, spec, OWNER)

    def exec(self, ref: str, command: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None,
             user: str | None = None, workdir: str | None = None) -> ExecResult:
        """Run ``command`` in a running job to its end (``stdin``: bytes it reads, then EOF):
        its exit code, stdout and stderr."""
        job_ref("exec", ref)
        session = self.open_exec(ref, command, stdin=stdin is not None, env=env, user=user, workdir=workdir)
        return collect(session, stdin)

    def start_exec(self, ref: str, spec: ExecSpec, who: str) -> ExecSession:
        """``open_exec`` for a caller named ``who`` (the agent's: the token's name)."""
        rec = self._record(ref)
        self.backend.require(rec.spec, "exec", "run a command inside a job")
        self._require_running(rec, EXEC_ACTION)
        try:
            process = self.backend.open_exec(rec.container_id, spec)
        except EngineConflict as exc:  # it ended (or was frozen) since the store said Running
            raise InvalidState(rec.id, f"{not_running(self.store.get(rec.id))} ({exc})", EXEC_ACTION) from None
        return ExecSession(functools.partial(self.store.record_exec, rec.id), process, spec, who)

    def open_port(self, ref: str, port: int) -> socket.socket:
        """A TCP connection to ``port`` of a running job, made from this machine to the job's
        address on its network. Refused, saying why, for a job that is not running or has no
        network (``network: none``)."""
        job_ref("open_port", ref)
        tcp_port(port)
        rec = self._record(ref)
        self._require_running(rec, PORT_ACTION)
        if rec.spec.network == "none":
            raise ConveyorError(
                f"cannot {PORT_ACTION} job {rec.id}: it runs with network none, so no connection can reach it "
                "(Conveyor does not open a way into a job that asked for no network); run it on a network (the "
                f"default), or relay through a command in it: conveyor exec -i {rec.id} nc 127.0.0.1 {port}"
            )
        try:
            return self.backend.open_port(rec.container_id, port)
        except EngineConflict as exc:
            raise InvalidState(rec.id, f"{not_running(self.store.get(rec.id))} ({exc})", PORT_ACTION) from None

    @staticmethod
    def _require_running(rec: JobRecord, action: str) -> None:
        if rec.state is not JobState.RUNNING or rec.substate == Substate.ENGINE_QUEUED or rec.container_id is None:
            raise InvalidState(rec.id, not_running(rec), action)


def not_running(rec: JobRecord) -> str:
    """A job's state, and why it cannot be reached: InvalidState's "it is ..." part."""
    if rec.state in WAITING_STATES or rec.substate == Substate.ENGINE_QUEUED:
        why = "it has not started, so it has no container yet"
    elif rec.state is JobState.SUSPENDED:
        why = "its processes are frozen; 'conveyor resume' it first"
    elif rec.state in FINAL_STATES:
        code = f", exit code {rec.exit_code}" if rec.exit_code is not None else ""
        why = f"{rec.substate or 'ended'}{code}; its container has stopped, and only a Running job can be reached"
    elif rec.state is JobState.UNDETERMINED:
        why = "Conveyor lost track of its container; only a Running job can be reached"
    else:
        why = "its container is not running (it is ending)"
    return f"{rec.state.value} ({why})"
