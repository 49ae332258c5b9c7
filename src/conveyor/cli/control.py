"""Job control commands: one per verb of the operations table (`conveyor hold JOB...`), one per
array form (`conveyor array hold ARRAY`), and `wait`.

The verb commands are made from their :class:`~conveyor.operations.Verb`: its name, summary
(the help) and parameters (the options). Like docker's multi-id verbs, each takes several
jobs; an error for one is printed and the others are still done.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

import click

from ..errors import JobNotFound, WaitTimeout
from ..operations import ARRAY_VERBS, OPERATIONS, VERBS, Param, Verb
from . import progress
from .app import CONVEYOR_ERROR, IDS, JSON_OPTION, cli, connect, each_job, fail, job_id, seconds
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
        api = connect(ctx)

        def act(job_id: str) -> dict:
            if not verb.returns_job:  # the job is gone afterwards: print it as it was
                before = api.info(job_id)
                api.perform(verb, job_id, values)
                return before
            job = api.perform(verb, job_id, values)
            if verb.ends_job:
                # Bounded by the grace period, with room for saving logs and outputs.
                job = api.wait(job_id, timeout=(values.get("grace") or 10) + 120)
            return job

        each_job(api, jobs, act, as_json)

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
    """Wait for jobs (or every task of an array) to end; print each one's exit code as it ends.

    Exits with the job's exit code, or with the first failure's (125 when a job failed
    without one: cancelled before it started, image missing)."""
    limit = seconds(timeout, "--timeout")
    api = connect(ctx)
    named = [(ref, *_job_ids(api, ref)) for ref in jobs]
    left = list(dict.fromkeys(i for _, ids, _ in named for i in ids))
    deadline = None if limit is None else time.monotonic() + limit
    meter = None
    if progress.wanted(as_json) and len(left) > 1:  # a terminal: done/running/queued as they change
        arrays = [ref for ref, _, is_array in named if is_array]
        meter = progress.WaitMeter(api, arrays, [i for _, ids, is_array in named if not is_array for i in ids], len(left))
    code = None
    with meter or contextlib.nullcontext():
        while left:
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                step = remaining if meter is None else min(remaining or meter.TICK, meter.TICK)
                job = api.wait_any(left, timeout=step)  # the first of them to end
            except WaitTimeout:
                if meter is not None and (deadline is None or time.monotonic() < deadline):
                    meter.refresh()
                    continue
                fail(f"job(s) {', '.join(left)} not finished within {timeout} (--timeout)")
            left.remove(job["id"])
            exit_code = job["exit_code"] if job["exit_code"] is not None else CONVEYOR_ERROR
            if code is None and job["state"] != "Done":
                code = exit_code
            line = (json.dumps({k: job[k] for k in ("id", "state", "substate", "exit_code")}) if as_json
                    else f"{job['id']}  {exit_code}  {state_label(job)}")
            if meter is not None:
                meter.ended(line)
            else:
                click.echo(line)
    sys.exit(code or 0)


def _job_ids(api, ref: str) -> tuple[list[str], bool]:
    """A job reference, or an array id meaning every one of its tasks; and whether it was an array."""
    try:
        return [job_id(api, ref)], False
    except JobNotFound:
        try:
            return [task["id"] for task in api.array_tasks(ref)], True
        except JobNotFound:
            raise JobNotFound(ref, "no job or array has this id or name") from None


# ----------------------------------------------------------------------------- arrays

@cli.group("array")
def array_group() -> None:
    """Look at and control a job array as a whole (ids from `conveyor submit --array`)."""


@array_group.command("show", help=OPERATIONS["array"].summary)
@click.argument("array_id", metavar="ARRAY")
@JSON_OPTION
@click.pass_context
def array_show(ctx: click.Context, array_id: str, as_json: bool) -> None:
    print_array(connect(ctx).array(array_id), as_json)


def _array_command(verb: Verb) -> click.Command:
    def command(ctx: click.Context, array_id: str, as_json: bool, **given: Any) -> None:
        print_array(connect(ctx).perform_array(verb, array_id, _values(verb, given)), as_json)

    command.__name__ = f"{verb.name}_array_cmd"
    for param in reversed(verb.params):
        command = _option(param)(command)
    command = JSON_OPTION(command)
    command = click.argument("array_id", metavar="ARRAY")(command)
    return click.command(verb.name, help=verb.array_summary)(click.pass_context(command))


for _verb in ARRAY_VERBS:
    array_group.add_command(_array_command(_verb))
