"""`conveyor provenance JOB` (where and how a job ran) and `conveyor provenance diff A B`."""

from __future__ import annotations

import json
import os
import sys

import click

from ..operations import OPERATIONS
from .app import JSON_OPTION, cli, connect, fail, job_id
from .render import columns, size, timestamp


class _ShowByDefault(click.Group):
    """``provenance JOB`` shows a job's; ``provenance diff A B`` compares two. A first word
    that is no subcommand is a job (a job named "diff": ``provenance show diff``)."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


@cli.group("provenance", cls=_ShowByDefault)
def provenance_group() -> None:
    """Where and how a job ran: `conveyor provenance JOB`, `conveyor provenance diff A B`."""


@provenance_group.command("show", help=OPERATIONS["provenance"].summary + ".")
@click.argument("job")
@click.option("--attempt", type=click.IntRange(min=1), help="The attempt of a job run with retries (default: the last).")
@JSON_OPTION
@click.pass_context
def show(ctx: click.Context, job: str, attempt: int | None, as_json: bool) -> None:
    api = connect(ctx)
    doc = api.provenance(job_id(api, job), attempt)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    host, engine, image = doc["host"], doc["engine"], doc["image"]
    gpus = ", ".join(f"{v}: {','.join(ids)}" for v, ids in host["gpus"].items()) or "none"
    rows = [
        ("job", f"{doc['job']} (attempt {doc['attempt']}, recorded {timestamp(doc['recorded_at'])})"),
        ("host", f"{host['hostname']}" + (f" (node {doc['node']})" if doc.get("node") else "")),
        ("kernel", f"{host['os']} {host['kernel']} ({host['arch']})"),
        ("cpu", f"{host['cpu_model'] or '-'} ({host['cpus']:g} CPUs)"),
        ("memory", size(host["memory"])),
        ("gpus", gpus),
        ("engine", f"{engine['name']} {engine['version'] or '-'}, runtime {engine['runtime'] or '-'}"),
        ("image", image["reference"] or "-"),
        ("image id", image["id"] or "-"),
        ("repo digests", ", ".join(image["repo_digests"]) or "- (not from a registry)"),
        ("spec digest", f"{doc['spec_digest']} (as run; as submitted {doc['submitted_digest']})"),
        ("conveyor", doc["conveyor"]["version"]),
        ("submitted by", doc["submitted_by"]["token"] or "- (an embedded Executor)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@provenance_group.command("diff", help=OPERATIONS["provenance_diff"].summary + """.

A and B are jobs, or files that `conveyor provenance JOB --json` wrote (a run on another node,
or before an upgrade).""")
@click.argument("a")
@click.argument("b")
@click.option("--exit-code", is_flag=True, help="Exit 1 when they differ (0 when they do not), as git diff --exit-code.")
@JSON_OPTION
@click.pass_context
def diff_cmd(ctx: click.Context, a: str, b: str, exit_code: bool, as_json: bool) -> None:
    from ..provenance import diff

    first, second = _document(ctx, a), _document(ctx, b)
    result = {"a": first.get("job"), "b": second.get("job"), "differences": diff(first, second)}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not result["differences"]:
        click.echo("no differences")
    else:
        rows = [("FIELD", str(result["a"]), str(result["b"]))]
        rows += [(d["field"], _shown(d["a"]), _shown(d["b"])) for d in result["differences"]]
        click.echo(columns(rows))
    if exit_code and result["differences"]:
        sys.exit(1)


def _document(ctx: click.Context, ref: str) -> dict:
    """A job's provenance, or one exported to a file."""
    if os.path.isfile(ref):
        try:
            with open(ref) as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            fail(f"{ref}: not a provenance document (conveyor provenance JOB --json): {exc}")
        if not isinstance(doc, dict) or "spec_digest" not in doc:
            fail(f"{ref}: not a provenance document (conveyor provenance JOB --json): it has no spec_digest")
        return doc
    api = connect(ctx)
    return api.provenance(job_id(api, ref))


def _shown(value: object) -> str:
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value)
