"""The stand-in's commands: how one is declared, found and run, and docker's error shapes.

A :class:`Command` is docker's usage line, its flags and a handler ``(session, values, args)
-> exit code``. :func:`main` reads docker's global flags, finds the command (``docker image
ls`` and ``docker images`` are one), parses its flags the docker way and turns every failure
into docker's words and exit code:

- a flag problem: pflag's message, the usage line, exit 125;
- too few or too many arguments: ``docker: 'docker X' requires ...``, exit 1;
- a refusal or an engine error: ``Error response from daemon: ...``, exit 1 (``docker run``
  says it with ``docker:`` in front and exits 125, as docker does).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..cli.format import Fields, Template, TemplateError
from ..errors import EXIT_CONVEYOR_ERROR, AgentUnreachable, ConveyorError
from .flags import BOOL, LIST, VALUE, Flag, FlagProblem, FlagSet

if TYPE_CHECKING:
    from ..client.api import AgentAPI

EXIT_FAILED = 1  # docker's exit code for a verb that failed (run's own failures are 125)
FORMAT = Flag("format", "f", VALUE, help="Format output using a custom template ('json', or a Go template)")


class DockerError(Exception):
    """A failure to report in docker's shape: ``message`` on stderr, then exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    name: str  # "run", or "image ls" for a management command's verb
    usage: str  # after "docker ": "run [OPTIONS] IMAGE [COMMAND] [ARG...]"
    summary: str
    flags: tuple[Flag, ...]
    handler: Callable[["Session", dict, list[str]], int]
    min_args: int = 0
    max_args: int | None = None
    interspersed: bool = True  # False: the first argument ends the flags (docker run)
    aliases: tuple[str, ...] = ()
    flagset: FlagSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "flagset", FlagSet((*self.flags, Flag("help", kind=BOOL))))


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, summary: str, flags: tuple[Flag, ...] = (), *, aliases: tuple[str, ...] = (),
            min_args: int = 0, max_args: int | None = None, interspersed: bool = True):
    """Register a handler as the docker command ``name`` (and its ``aliases``)."""

    def register(handler: Callable[["Session", dict, list[str]], int]) -> Callable:
        cmd = Command(name, usage, summary, flags, handler, min_args, max_args, interspersed, aliases)
        for key in (name, *aliases):
            COMMANDS[key] = cmd
        return handler

    return register


class Session:
    """One invocation: where to write, and the agent, reached on first use (started if need
    be, as every Conveyor command does)."""

    def __init__(self, home: str | None):
        self.home = home
        self._api: AgentAPI | None = None

    @property
    def api(self) -> "AgentAPI":
        if self._api is None:
            from ..client.api import command_line_agent

            self._api = command_line_agent(self.home)
        return self._api

    @staticmethod
    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    @staticmethod
    def err(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()


# docker's global options (before the command). Those that point the CLI at another daemon
# are refused: the stand-in's daemon is its state directory's agent.
GLOBAL_FLAGS = FlagSet((
    Flag("config", kind=VALUE),
    Flag("debug", "D", BOOL),
    Flag("log-level", "l", VALUE),
    Flag("host", "H", LIST, unsupported="the stand-in talks to its state directory's agent; set CONVEYOR_HOST for a remote one"),
    Flag("context", "c", VALUE, unsupported="the stand-in has no contexts; set CONVEYOR_HOME or CONVEYOR_HOST"),
    Flag("tls", kind=BOOL, unsupported="the agent is reached by its unix socket or CONVEYOR_HOST"),
    Flag("tlsverify", kind=BOOL, unsupported="the agent is reached by its unix socket or CONVEYOR_HOST"),
    Flag("tlscacert", kind=VALUE, unsupported="the agent is reached by its unix socket or CONVEYOR_HOST"),
    Flag("tlscert", kind=VALUE, unsupported="the agent is reached by its unix socket or CONVEYOR_HOST"),
    Flag("tlskey", kind=VALUE, unsupported="the agent is reached by its unix socket or CONVEYOR_HOST"),
    Flag("version", "v", BOOL),
    Flag("help", kind=BOOL),
))

MANAGEMENT = {"image", "container", "system"}  # `docker image ls`, `docker container rm`, `docker system info`


def main(argv: list[str]) -> int:
    """Run ``docker ARGV...``; the exit code. The verb modules must be imported (they
    register their commands): the package's main does that."""
    session = Session(os.environ.get("CONVEYOR_HOME"))
    try:
        values, rest, given = GLOBAL_FLAGS.parse(argv, interspersed=False)
    except FlagProblem as exc:
        session.err(f"{exc}\n\nUsage:  docker [OPTIONS] COMMAND\n\nRun 'docker --help' for more information\n")
        return EXIT_CONVEYOR_ERROR
    for flag in given:
        if flag.unsupported:
            session.err(f"docker: {_unsupported(flag)}\n\nRun 'docker --help' for more information\n")
            return EXIT_CONVEYOR_ERROR
    if values["version"]:
        rest = ["version", "--format", "Docker version {{.Server.Version}}, build conveyor-{{.Client.Version}}"]
    if not rest or values["help"] or rest[0] == "help":
        session.out(_overview())
        return 0
    name, args = rest[0], rest[1:]
    if name in MANAGEMENT:
        if not args or args[0] in ("--help", "help"):
            session.out(_overview(prefix=name + " "))
            return 0
        name, args = f"{name} {args[0]}", args[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        session.err(f"docker: unknown command: docker {name}\n\nRun 'docker --help' for more information\n")
        return EXIT_FAILED
    return run_command(session, cmd, args)


def run_command(session: Session, cmd: Command, args: list[str]) -> int:
    where = f"\n\nUsage:  docker {cmd.usage}\n\nRun 'docker {cmd.name} --help' for more information\n"
    try:
        values, positional, given = cmd.flagset.parse(args, cmd.interspersed)
    except FlagProblem as exc:
        session.err(f"{exc}{where}")
        return EXIT_CONVEYOR_ERROR
    if values.pop("help"):
        session.out(_help(cmd))
        return 0
    for flag in given:
        if flag.unsupported:
            session.err(f"docker: {_unsupported(flag)}{where}")
            return EXIT_CONVEYOR_ERROR
    count = _count_problem(cmd, len(positional))
    if count:
        problem, verb = count
        session.err(f"docker: 'docker {cmd.name}' {problem}\n\nUsage:  docker {cmd.usage}\n\n"
                    f"{verb} 'docker {cmd.name} --help' for more information\n")
        return EXIT_FAILED
    try:
        return cmd.handler(session, values, positional)
    except DockerError as exc:
        session.err(f"{exc}\n")
        return exc.code
    except AgentUnreachable as exc:
        session.err(f"Cannot connect to the Conveyor agent: {exc}\n")
        return EXIT_FAILED
    except ConveyorError as exc:
        session.err(f"Error response from daemon: {one_line(exc)}\n")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED
    except KeyboardInterrupt:  # interrupted before a job existed (a run cancels its own job)
        return 130
    except OSError as exc:  # a file the user named (load -i, --env-file read later, ...)
        session.err(f"docker: {exc}\n")
        return EXIT_FAILED
    finally:
        if session._api is not None:
            session._api.close()


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _unsupported(flag: Flag) -> str:
    return f"--{flag.long} is not supported by Conveyor's docker stand-in ({flag.unsupported})"


def _count_problem(cmd: Command, n: int) -> tuple[str, str] | None:
    """docker's words for a wrong number of arguments, and the verb of its last line: each of
    docker's argument checks words it its own way ("SRun" is docker 28's, byte for byte)."""
    exact = cmd.min_args == cmd.max_args

    def plural(k: int) -> str:
        return "argument" if k == 1 else "arguments"

    if n < cmd.min_args:
        if exact:
            return f"requires {cmd.min_args} {plural(cmd.min_args)}", "Run"
        return f"requires at least {cmd.min_args} {plural(cmd.min_args)}", "See"
    if cmd.max_args is not None and n > cmd.max_args:
        if cmd.max_args == 0:
            return "accepts no arguments", "Run"
        if exact:
            return f"requires {cmd.max_args} {plural(cmd.max_args)}", "Run"
        return f"requires at most {cmd.max_args} {plural(cmd.max_args)}", "SRun"
    return None


def _overview(prefix: str = "") -> str:
    # one line per name a user can type here: `docker images`, or under `docker image`, `ls`
    names = sorted(k for k in COMMANDS if k.startswith(prefix) and " " not in k[len(prefix):])
    width = max(len(n) - len(prefix) for n in [*names, *MANAGEMENT]) + 2
    lines = [f"\nUsage:  docker {prefix}COMMAND\n",
             "Conveyor's docker stand-in: each container is a supervised Conveyor job.\n"]
    if not prefix:
        lines += ["Management Commands:", *(f"  {group:<{width}}Manage {group}s" for group in sorted(MANAGEMENT)), ""]
    lines.append("Commands:")
    lines += [f"  {name[len(prefix):]:<{width}}{COMMANDS[name].summary}" for name in names]
    lines.append(f"\nRun 'docker {prefix}COMMAND --help' for more information on a command.\n")
    return "\n".join(lines)


def _help(cmd: Command) -> str:
    lines = [f"\nUsage:  docker {cmd.usage}\n", f"{cmd.summary}\n"]
    if cmd.aliases:
        lines.append("Aliases:\n  " + ", ".join(f"docker {a}" for a in (cmd.name, *cmd.aliases)) + "\n")
    supported = [f for f in cmd.flags if not f.unsupported]
    if supported:
        lines.append("Options:")
        for f in supported:
            names = (f"-{f.short}, " if f.short else "    ") + f"--{f.long}"
            lines.append(f"  {names:<24}{f.help}")
    refused = [f"--{f.long}" for f in cmd.flags if f.unsupported]
    if refused:
        lines.append("\nNot supported by the stand-in: " + " ".join(refused))
    return "\n".join(lines) + "\n"


def print_table(session: Session, fmt: str, rows: list[dict], fields: dict[str, tuple[str, Callable]]) -> None:
    """Rows through a --format template (a `table ...` one aligned under its header, docker's
    default); ``fields``: template field -> (header, getter of a row)."""
    getters = {name: (lambda row, get=get: get(row)) for name, (_, get) in fields.items()}
    try:
        template = Template(fmt)
        session.out(template.render([Fields(r, getters) for r in rows], {n: h for n, (h, _) in fields.items()}))
    except TemplateError as exc:
        raise DockerError(f"template parsing error: {exc.problem}") from None


def print_template(session: Session, fmt: str, data: Any) -> None:
    try:
        session.out(Template(fmt).execute(data) + "\n")
    except TemplateError as exc:
        raise DockerError(f"template parsing error: {exc.problem}") from None
