"""Running jobs: `run` in the foreground and `submit` to the background.

`run` follows the job as `docker run` follows a container (foreground.py: output as it is
written, the job's exit code at the end, Ctrl-C and a killed CLI cancel it, -i and -t as with
docker). One thing differs from docker, for tools that use `conveyor run` as their docker
(cwltool's --user-space-docker-cmd, udocker's convention): when the CLI's stdin is a regular
file (a ``< file`` redirect), the job reads that file as its stdin without -i. A pipe or a
terminal still needs -i, as with docker, so a job never eats input it was not given.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import InvalidSpec
from . import progress
from .app import JSON_OPTION, cli, connect
from .foreground import run_in_foreground
from .jobspec import FlagError, build_spec, job_options


def _spec(image: str | None, command: tuple[str, ...], options: dict[str, Any]) -> dict:
    try:
        return build_spec(image, command, options)
    except FlagError as exc:
        raise click.UsageError(str(exc)) from None


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
    conveyor run IMAGE sort < names.txt     # a redirected file is the job's stdin
    conveyor run -f job.yaml
    """
    run_in_foreground(lambda: connect(ctx), _spec(image, command, options))  # also fast.py's, without click


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
    spec = _spec(image, command, options)
    api = connect(ctx)
    shown = progress.wanted(as_json)
    if shown:
        progress.pull_first(api, spec)
    # Host inputs are copied into the content store by the submit: a spinner while it does.
    with progress.spinner(f"staging {len(spec.get('inputs') or [])} input(s)", shown and bool(spec.get("inputs"))):
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
