"""Usage: `conveyor stats` (live, like docker stats) and `conveyor top` (like docker top)."""

from __future__ import annotations

import json
import sys
import time

import click

from ..state import FINAL_STATES, JobState
from .app import cli, connect, fail, job_id
from .render import columns

CLEAR = "\033[2J\033[H"  # what docker stats writes before each refresh on a terminal


@cli.command("stats")
@click.option("--no-stream", is_flag=True, help="Print one sample and exit.")
@click.option("-a", "--all", "show_all", is_flag=True, help="Every job, not only running ones.")
@click.option("--format", "template", help="A Go template, as docker stats's: 'table {{.Name}}\\t{{.MemPeak}}', json, ...")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: one snapshot (now, totals, series) and exit.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.argument("jobs", nargs=-1)
@click.pass_context
def stats_cmd(ctx: click.Context, no_stream: bool, show_all: bool, template: str | None, as_json: bool,
              interval: float, jobs: tuple[str, ...]) -> None:
    """Resource usage of jobs (default: every running one), refreshed live: CPU, CPU time,
    memory and its peak, network and block IO, processes. A finished job shows its totals."""
    from .format import Fields, Template, TemplateError
    from .usageview import CONVEYOR_TABLE, STATS_FIELDS, stats_row

    if as_json and template:
        fail("--json and --format: use one (--format json prints a JSON object a line, as docker's)")
    api = connect(ctx)
    refs = list(jobs)
    ids = [job_id(api, ref) for ref in refs] if refs else None
    if show_all and ids is None:
        from ..client.api import list_query

        ids = [j["id"] for j in api.list_all(list_query(newest_first=True))]
        refs = ids
    if as_json:
        click.echo(json.dumps(api.usage(ids, series=True), indent=2))
        return
    try:
        fmt = Template(template if template and template != "table" else CONVEYOR_TABLE)
    except TemplateError as exc:
        fail(f"--format: {exc}")
    headers = {name: header for name, (header, _) in STATS_FIELDS.items()}
    getters = {name: get for name, (_, get) in STATS_FIELDS.items()}
    live = sys.stdout.isatty() and not no_stream
    while True:
        entries = api.usage(ids)
        rows = [Fields(stats_row(ref, e), getters) for ref, e in zip(refs or [e["job"] for e in entries], entries)]
        try:
            text = fmt.render(rows, headers)
        except TemplateError as exc:
            fail(f"--format: {exc}")
        click.echo((CLEAR if live else "") + text, nl=False)
        if no_stream or (ids and all(JobState(e["state"]) in FINAL_STATES for e in entries)):
            return
        time.sleep(interval)


@cli.command("top")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("job")
@click.pass_context
def top_cmd(ctx: click.Context, as_json: bool, job: str) -> None:
    """The processes running in a job, as docker top lists them."""
    api = connect(ctx)
    found = api.top(job_id(api, job))
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(columns([tuple(found["titles"])] + [tuple(p) for p in found["processes"]]))
