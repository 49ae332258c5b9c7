"""`conveyor exec`: a command in a running job, as `docker exec` runs one.

Through the agent's exec WebSocket (client/streams.py): the command's stdout and stderr to
ours, apart; with -i our stdin to it (EOF closes its stdin); with -t a terminal of our size
that follows our resizes, our terminal in raw mode (keys, Ctrl-C included, go to the command)
and restored on every exit. The exit code is the command's own; 126 when it cannot be run,
127 when there is no such program (as docker's); 125 when Conveyor could not do it (the job
is not running, the token's policy refuses it).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import click

from .app import cli, connect
from .jobspec import env_pairs
from .terminal import RawTerminal, terminal_size, write_all


@cli.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open: our input goes to the command.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal (our terminal's size, following resizes).")
@click.option("-e", "--env", multiple=True, help="KEY=VALUE, or KEY to pass this shell's value.")
@click.option("-u", "--user", help="Run as UID[:GID] or NAME[:GROUP].")
@click.option("-w", "--workdir", help="Run in this directory inside the container (absolute).")
@click.argument("job")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_command(ctx: click.Context, job: str, command: tuple[str, ...], interactive: bool, tty: bool,
                 env: tuple[str, ...], user: str | None, workdir: str | None) -> None:
    """Run a command in a running job, as docker exec does; exit with its exit code.

    \b
    conveyor exec JOB ls -l /work
    conveyor exec -it JOB sh
    echo data | conveyor exec -i -e MODE=check -w /work JOB sh -c 'cat > input'
    """
    request = {"command": list(command), "stdin": interactive, "tty": tty, "env": env_pairs(env), "user": user,
               "workdir": workdir, "console_size": terminal_size() if tty else None}
    session = connect(ctx).open_exec(job, {k: v for k, v in request.items() if v not in (None, False, {})})
    sys.exit(_follow(session, interactive, tty))


def _follow(session, interactive: bool, tty: bool) -> int:
    """Relay until the command ends; its exit code."""
    out = {"stdout": sys.stdout.fileno(), "stderr": sys.stderr.fileno()}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _leave)  # through the finally blocks: the terminal is restored
    if tty:
        signal.signal(signal.SIGWINCH, lambda signum, frame: _resize(session))
    try:
        with RawTerminal(tty and interactive):
            if interactive:
                threading.Thread(target=_send_stdin, args=(session,), daemon=True, name="conveyor-stdin").start()
            while (item := session.read()) is not None:
                write_all(out[item[0]], item[1])
    finally:
        session.close()
    return session.exit_code


def _send_stdin(session) -> None:
    # os.read, not sys.stdin: a thread blocked in a buffered read holds its lock, and the
    # interpreter then dies at exit ("could not acquire lock for <stdin>").
    try:
        while data := os.read(0, 65536):
            session.write(data)
    except OSError:
        pass
    session.close_stdin()


def _resize(session) -> None:
    size = terminal_size()
    if size is not None:  # sent by a thread: the handler interrupts the main thread's read
        threading.Thread(target=session.resize, args=size, daemon=True).start()


def _leave(signum, frame) -> None:
    raise SystemExit(128 + signum)
