"""The `conveyor` command group and what its commands share: how errors end a command, the
agent every command talks to, and the small parsers of job references and durations.

Exit codes follow `docker run`: the job's own exit code, or 125 when Conveyor itself could not
do what was asked (bad input, engine down, image missing).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

import click

from ..errors import EXIT_CONVEYOR_ERROR, ConveyorError
from .flagtable import HOME, click_options
from .render import error_line, fail, print_jobs, report_error  # noqa: F401 - the commands import fail, report_error from here

if TYPE_CHECKING:
    from ..client.api import AgentAPI

CONVEYOR_ERROR = EXIT_CONVEYOR_ERROR

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
IDS = click.argument("jobs", nargs=-1, required=True, metavar="JOB...")


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
@click_options((HOME,))
@click.version_option(package_name="conveyor")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """Conveyor: run batch jobs in containers and keep them under control."""
    ctx.obj = {"home": home}


def connect(ctx: click.Context) -> "AgentAPI":
    """The CLI's one path: the state directory's agent (client.api.command_line_agent)."""
    if ctx.obj.get("api") is None:
        from ..client.api import command_line_agent

        ctx.obj["api"] = command_line_agent(ctx.obj["home"])
    return ctx.obj["api"]


def job_id(api: "AgentAPI", ref: str) -> str:
    """A full id, a unique id prefix or a job name -> the job id (JobNotFound says which)."""
    return job_info(api, ref)["id"]


def job_info(api: "AgentAPI", ref: str) -> dict:
    """The job a full id, a unique id prefix or a job name names (JobNotFound says which)."""
    if not ref.strip():
        raise click.UsageError("an empty job id was given; use a job id, a unique prefix of one, or a job name")
    return api.info(ref)


def each_job(api: "AgentAPI", refs: tuple[str, ...], action: Callable[[str], dict], as_json: bool) -> None:
    """Apply ``action(job_id) -> job`` to every job named, like docker's multi-id verbs: an
    error for one job is printed and the others are still done; exit 125 if any failed."""
    done, failed = [], False
    for ref in refs:
        try:
            done.append(action(job_id(api, ref)))
        except ConveyorError as exc:
            failed = True
            error_line(str(exc))
    print_jobs(done, as_json)
    if failed:
        sys.exit(CONVEYOR_ERROR)


def seconds(value: str | None, flag: str) -> float | None:
    """A duration option (30s, 5m, 1h30m, or plain seconds)."""
    from ..units import DURATION_HINT, parse_duration

    if value is None:
        return None
    try:
        result = parse_duration(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not valid; {DURATION_HINT}", param_hint=flag) from None
    if result < 0:
        raise click.BadParameter(f"{value!r} is not valid; it must not be negative", param_hint=flag)
    return result
