"""Job control commands: one per verb of the operations table (`conveyor hold JOB...`), one per
array form (`conveyor array hold ARRAY`), and `wait`.

The verb commands are made from their :class:`~conveyor.operations.Verb`: its name, summary
(the help), parameters (the options) and whether it needs the supervising process. Like
docker's multi-id verbs, each takes several jobs; an error for one is printed and the others
are still done.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..operations import ARRAY_VERBS, OPERATIONS, VERBS, Param, Verb
from .app import CONVEYOR_ERROR, IDS, JSON_OPTION, cli, each_job, fail, job_id, need_supervisor, open_executor, seconds
from .render import print_array, state_label


def _option(param: Param):
    if param.kind is bool:
        return click.option(*param.cli_flags, param.name, is_flag=True, help=param.help)
    return click.option(*param.cli_flags, param.name, help=param.help)


def _values(verb: Verb, given: dict[str, Any]) -> dict[str, Any]:
    """The verb's parameters from the command line (durations parsed)."""
    values = {}
    for p in verb.params:
        value = given[p.name]
        if p.duration:
            value = seconds(value, p.cli_flags[-1])
        values[p.name] = value
    return values


def _job_command(verb: Verb) -> click.Command:
    def command(ctx: click.Context, as_json: bool, jobs: tuple[str, ...], **given: Any) -> None:
        values = _values(verb, given)
        ex = open_executor(ctx)
        if verb.needs_supervisor(values):
            need_supervisor(ctx)

        def act(job_id: str):
            if verb.ends_job:
                getattr(ex, verb.name)(job_id, **values, wait=False)
                # Bounded by the grace period, with room for saving logs and outputs.
                return ex.wait(job_id, timeout=(values.get("grace") or 10) + 120)
            if not verb.returns_job:  # the job is gone afterwards: print it as it was
                before = ex.info(job_id)
                getattr(ex, verb.name)(job_id, **values)
                return before
            return getattr(ex, verb.name)(job_id, **values)

        each_job(ex, jobs, act, as_json)

    command.__name__ = f"{verb.name}_cmd"
    for param in reversed(verb.params):
        command = _option(param)(command)
    return click.command(verb.cli_name, help=verb.summary)(click.pass_context(JSON_OPTION(IDS(command))))


for _verb in VERBS:
    if _verb.cli_name:
        cli.add_command(_job_command(_verb))


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

    limit = seconds(timeout, "--timeout")
    ex = open_executor(ctx)
    ids = list(dict.fromkeys(job_id(ex, ref) for ref in jobs))
    if any(not ex.info(i).state.is_final for i in ids):
        need_supervisor(ctx)
    futures = {ex.future(i): i for i in ids}
    code, ended = None, []
    try:
        for fut in as_completed(futures, timeout=limit):
            job = fut.result()
            ended.append(job.id)
            exit_code = job.exit_code if job.exit_code is not None else CONVEYOR_ERROR
            if code is None and not job.ok:
                code = exit_code
            if as_json:
                click.echo(json.dumps({"id": job.id, "state": job.state.value, "substate": job.substate, "exit_code": job.exit_code}))
            else:
                click.echo(f"{job.id}  {exit_code}  {state_label(job)}")
    except FutureTimeout:
        left = [i for i in ids if i not in ended]
        fail(f"job(s) {', '.join(left)} not finished within {timeout} (--timeout)")
    sys.exit(code or 0)


# ----------------------------------------------------------------------------- arrays

@cli.group("array")
def array_group() -> None:
    """Look at and control a job array as a whole (ids from `conveyor submit --array`)."""


@array_group.command("show", help=OPERATIONS["array"].summary)
@click.argument("array_id", metavar="ARRAY")
@JSON_OPTION
@click.pass_context
def array_show(ctx: click.Context, array_id: str, as_json: bool) -> None:
    print_array(open_executor(ctx).array(array_id), as_json)


def _array_command(verb: Verb) -> click.Command:
    def command(ctx: click.Context, array_id: str, as_json: bool, **given: Any) -> None:
        values = _values(verb, given)
        if verb.needs_supervisor(values):
            need_supervisor(ctx)  # released tasks must be launched, cancelled ones recorded
        print_array(getattr(open_executor(ctx), f"{verb.name}_array")(array_id, **values), as_json)

    command.__name__ = f"{verb.name}_array_cmd"
    for param in reversed(verb.params):
        command = _option(param)(command)
    command = JSON_OPTION(command)
    command = click.argument("array_id", metavar="ARRAY")(command)
    return click.command(verb.name, help=verb.array_summary)(click.pass_context(command))


for _verb in ARRAY_VERBS:
    array_group.add_command(_array_command(_verb))
