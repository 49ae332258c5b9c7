"""The hot verbs without click: `conveyor run` and `conveyor ps`, which a workflow engine or a
shell loop calls over and over, start without loading click or the other commands (click and
the command modules were ~100 ms of a 0.15 s start).

Nothing here is a second definition: the flags are the commands' own tables (jobspec.JOB_FLAGS,
psview.PS_FLAGS, flagtable.HOME), read by the docker stand-in's parser in strict mode, and the
bodies are the ones click's commands call (foreground.run_in_foreground, psview.ps_command).
Whatever this path does not read exactly as click would (--help, --version, a bad value, an
unknown flag, a flag spelling only pflag takes, a usage error) it leaves alone: :func:`main`
returns and click answers the whole command line, so every message and exit code stays
click's. Errors met while running end as under click (ConveyorGroup.main): one red line, 125.
"""

from __future__ import annotations

import errno
import os
import sys

from ..dockercli.flags import FlagProblem, FlagSet
from ..errors import ConveyorError
from .flagtable import HOME, parse


def main(argv: list[str]) -> None:
    """Run ``conveyor ARGV`` here when it is a hot verb this path reads as click would; return
    without doing anything otherwise (click takes it)."""
    if any(name.startswith("_CONVEYOR_COMPLETE") for name in os.environ):
        return  # shell completion is click's
    try:
        group, rest = parse(FlagSet((HOME,)), argv, interspersed=False)
    except FlagProblem:
        return
    if not rest or rest[0] not in _VERBS:
        return
    command = _VERBS[rest[0]](group["home"], rest[1:])
    if command is not None:
        _as_click_would(command)
        sys.exit(0)


def _run(home: str | None, argv: list[str]):
    from .jobspec import JOB_FLAGS, FlagError, build_spec

    try:
        options, positional = parse(FlagSet(JOB_FLAGS), argv, interspersed=False)
        spec = build_spec(positional[0] if positional else None, tuple(positional[1:]), options)
    except (FlagProblem, FlagError, ConveyorError):
        return None  # click says what is wrong, in its words (a bad spec file: as ConveyorGroup does)
    from .foreground import run_in_foreground

    return lambda: run_in_foreground(lambda: _agent(home), spec)


def _ps(home: str | None, argv: list[str]):
    from .psview import PS_FLAGS, ps_command

    try:
        options, positional = parse(FlagSet(PS_FLAGS), argv)
    except FlagProblem:
        return None
    if positional:
        return None  # click: "Got unexpected extra argument"
    return lambda: ps_command(lambda: _agent(home), **options)


_VERBS = {"run": _run, "ps": _ps}


def _agent(home: str | None):
    from ..client.api import command_line_agent

    return command_line_agent(home)


def _as_click_would(command) -> None:
    """Run ``command`` with the endings click.Command.main and ConveyorGroup.main give it."""
    from .render import fail, report_error

    try:
        command()
    except ConveyorError as exc:
        report_error(exc)
    except (EOFError, KeyboardInterrupt):
        sys.stderr.write("\n")  # click echoes a newline, then aborts
        sys.stderr.flush()
        fail("aborted", 130)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        from click.utils import PacifyFlushWrapper  # as click: no second error when the closed pipe is flushed at exit

        sys.stdout = PacifyFlushWrapper(sys.stdout)
        sys.stderr = PacifyFlushWrapper(sys.stderr)
        sys.exit(1)
