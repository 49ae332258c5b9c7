"""Data (README: Data): outputs, cat, verify, gc, image load."""

from __future__ import annotations

import json
import sys

import click

from ..operations import OPERATIONS

from . import progress
from .app import JSON_OPTION, cli, connect, seconds
from .render import size


@cli.command("outputs")
@click.option("--to", "to_dir", type=click.Path(file_okay=False), help="Restore the outputs under this directory (output /out -> DIR/out).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (includes each output's fileset digest).")
@click.argument("job")
@click.pass_context
def outputs_cmd(ctx: click.Context, to_dir: str | None, as_json: bool, job: str) -> None:
    """List a job's captured output files (path, size, digest), or restore them with --to."""
    api = connect(ctx)
    if to_dir:
        if progress.wanted(as_json):
            files = api.outputs(job)["files"]
            with progress.bar(transfer=True) as shown:
                task = shown.add_task(f"restoring {len(files)} file(s)", total=sum(f["size"] for f in files))
                written = api.restore_outputs(job, to_dir, on_file=lambda f: shown.advance(task, f["size"]))
        else:
            written = api.restore_outputs(job, to_dir)
        click.echo(json.dumps({"restored": written}, indent=2) if as_json else f"restored {len(written)} file(s) under {to_dir}")
        return
    outputs = api.outputs(job)
    if as_json:
        click.echo(json.dumps(outputs, indent=2))
        return
    for f in outputs["files"]:
        click.echo(f"{f['path']}\t{f['size']}\t{f['digest']}")


@cli.command("cat")
@click.argument("job")
@click.argument("path")
@click.pass_context
def cat_cmd(ctx: click.Context, job: str, path: str) -> None:
    """Print one captured output file (its content is verified against its digest)."""
    connect(ctx).read_output(job, path, out=sys.stdout.buffer)
    sys.stdout.buffer.flush()


@cli.command("verify")
@click.option("--all", "verify_all", is_flag=True, help="Every blob in the content store (the default without JOB).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("job", required=False)
@click.pass_context
def verify_cmd(ctx: click.Context, verify_all: bool, as_json: bool, job: str | None) -> None:
    """Re-hash stored blobs; report each corrupt or missing one and the jobs that use it.
    Exits 1 when anything is bad."""
    if job and verify_all:
        raise click.UsageError("give a JOB or --all, not both")
    report = connect(ctx).verify(job)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for b in report["bad"]:
            click.echo(f"{b['problem']}\t{b['digest']}\tjobs: {', '.join(b['jobs']) or '-'}")
        click.echo(f"checked {report['checked']} blob(s), {len(report['bad'])} bad")
    if report["bad"]:
        sys.exit(1)


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--grace", default="10m", show_default=True, help="Keep blobs written more recently than this (a submit in progress).")
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool, grace: str) -> None:
    """Remove blobs that no job references (never those a queued or running job needs)."""
    keep_recent = seconds(grace, "--grace")
    with progress.spinner("collecting garbage: blobs no job references", progress.wanted()):
        result = connect(ctx).gc(dry_run=dry_run, grace=keep_recent or 0.0)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {result['removed']} blob(s), {size(result['bytes'])}; kept {result['kept']}")


@cli.command("prune", help=OPERATIONS["prune"].summary + """.

The rules are config.toml's [retention] (keep_days, keep_last, logs_total_bytes); --until
prunes every ended job that ended before then as well. Then `conveyor gc` frees the blobs
only the pruned jobs referenced.""")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--until", help="Also every ended job that ended before this: 30d (back from now), 2026-01-02T15:04:05 "
              "or a Unix timestamp.")
@JSON_OPTION
@click.pass_context
def prune_cmd(ctx: click.Context, dry_run: bool, until: str | None, as_json: bool) -> None:
    from .views import point_in_time

    result = connect(ctx).prune(dry_run=dry_run, until=point_in_time(until, "--until"))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {result['jobs']} ended job(s)"
               + (f"; {verb} the saved logs of {result['logs_dropped']} more, {size(result['log_bytes'])}"
                  if result["logs_dropped"] else ""))


@cli.command("fsck", help=OPERATIONS["fsck"].summary.replace("repair=true", "--repair") + """.

Exits 1 when a problem is left (one --repair could not fix, or any without --repair).""")
@click.option("--repair", is_flag=True, help="Repair what can be repaired.")
@JSON_OPTION
@click.pass_context
def fsck_cmd(ctx: click.Context, repair: bool, as_json: bool) -> None:
    report = connect(ctx).fsck(repair=repair)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for p in report["problems"]:
            action = ("repaired: " if p["repaired"] else "would repair: ") + p["repair"] if p["repair"] else "cannot repair"
            click.echo(f"{p['kind']}\t{p['subject']}\t{p['detail']}\t({action})")
        checked = report["checked"]
        click.echo(f"checked {checked['jobs']} job(s), {checked['containers']} container(s), {checked['blobs']} blob(s); "
                   f"{len(report['problems'])} problem(s)")
    if any(not p["repaired"] for p in report["problems"]):
        sys.exit(1)


@cli.command("pull", help=OPERATIONS["pull"].summary.split(",")[0] + """.

On a terminal, each layer's download and extraction as it goes; otherwise (and with --json)
only the engine's last words: the digest and the status.""")
@click.argument("image")
@JSON_OPTION
@click.pass_context
def pull_cmd(ctx: click.Context, image: str, as_json: bool) -> None:
    summary = progress.pull(connect(ctx).pull(image), progress.wanted(as_json))
    if as_json:
        click.echo(json.dumps({"image": image, "status": summary}, indent=2))
        return
    for line in summary:
        click.echo(line)


@cli.group("image")
def image_group() -> None:
    """Images shipped as files."""


@image_group.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def image_load_cmd(ctx: click.Context, file: str, as_json: bool) -> None:
    """Load an image tarball (from `docker save`) into the engine and record its digest."""
    result = connect(ctx).load_image(file)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for img in result["images"]:
        click.echo(f"{img['image_id']}\t{', '.join(img['tags']) or '<untagged>'}")
    click.echo(f"file {result['file_digest']}")


def main() -> None:
    cli(prog_name="conveyor")


if __name__ == "__main__":
    main()
