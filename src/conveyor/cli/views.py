"""Looking at jobs and the node: ps, inspect, logs, events, queue, machine."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

import click

from ..errors import InvalidState
from .app import cli, connect, fail, job_id, job_info
from .flagtable import click_options
from .humanize import human_duration  # noqa: F401 - tests import it from here
from .leases import lease_rows
from .psview import PS_FLAGS, ps_command
from .render import Console, Table, columns, escape, size, timestamp


@cli.command("ps")
@click_options(PS_FLAGS)
@click.pass_context
def ps(ctx: click.Context, **options) -> None:
    """List jobs, the most recently created first (running and waiting ones; -a for all)."""
    ps_command(lambda: connect(ctx), **options)  # also fast.py's, without click


@cli.command("inspect")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the output is always JSON.")
@click.argument("job")
@click.pass_context
def inspect_cmd(ctx: click.Context, as_json: bool, job: str) -> None:
    """Show everything about a job as JSON, where and how it ran (its provenance) included."""
    api = connect(ctx)
    found = job_info(api, job)  # an empty reference is a usage error, not a lookup
    try:
        found["provenance"] = api.provenance(found["id"])
    except InvalidState:
        found["provenance"] = None  # its container was never made: nothing ran yet
    click.echo(json.dumps(found, indent=2))


@cli.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N lines of each stream.")
@click.option("--stdout", "only", flag_value="stdout", help="Only stdout.")
@click.option("--stderr", "only", flag_value="stderr", help="Only stderr.")
@click.option("-t", "--timestamps", is_flag=True, help="Start each line with the time it was written (RFC3339Nano, as docker).")
@click.argument("job")
@click.pass_context
def logs_cmd(ctx: click.Context, follow: bool, tail: int | None, only: str | None, timestamps: bool, job: str) -> None:
    """Print a job's output: its stdout to stdout and its stderr to stderr."""
    api = connect(ctx)
    for name, chunk in api.logs(job_id(api, job), only or "all", tail=tail, follow=follow, timestamps=timestamps):
        out = sys.stdout.buffer if name == "stdout" else sys.stderr.buffer
        out.write(chunk)
        out.flush()


def point_in_time(value: str | None, flag: str = "--since") -> float | None:
    """docker's --since: a Unix timestamp, a date-time, or a duration back from now."""
    if value is None:
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return stamp.timestamp()  # a naive time is local time, as docker reads it
    except ValueError:
        pass
    from ..units import parse_duration

    try:
        return time.time() - parse_duration(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not valid; use a duration back from now (10m, 1h30m), "
            "a date-time (2026-01-02T15:04:05) or a Unix timestamp",
            param_hint=flag,
        ) from None


@cli.command("events")
@click.option("--since", help="Only transitions after this: 10m, 2026-01-02T15:04:05 or a Unix timestamp.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing transitions as they happen (Ctrl-C ends).")
@click.option("--job", help="Only this job's transitions.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.pass_context
def events_cmd(ctx: click.Context, since: str | None, follow: bool, job: str | None, as_json: bool) -> None:
    """Print job state transitions: time, job, from -> to, substate, reason.

    Without -f: the recorded history (since --since). With -f: the transitions since
    --since (or from now), then each new one as it is committed."""
    after = point_in_time(since)
    api = connect(ctx)
    only = job_id(api, job) if job is not None else None
    # --since: the agent finds the first transition at that time in an index (a long history
    # is not sent to be filtered here); the clock may have stepped back, so still compare.
    start = 0 if (after is None and not follow) else None
    try:
        for t in api.events(only, since=start, follow=follow, since_time=after):
            if after is not None and t["at"] < after:
                continue
            if as_json:
                click.echo(json.dumps(t))
            else:
                when = datetime.fromtimestamp(t["at"]).isoformat(timespec="milliseconds")
                line = f"{when}  {t['job_id']}  {t['from_state'] or '-'} -> {t['to_state']}  {t['substate'] or '-'}  {t['reason'] or ''}"
                click.echo(line.rstrip())
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a follower ends


@cli.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def backends_cmd(ctx: click.Context, as_json: bool) -> None:
    """The backends: which this node runs, what each can do, the options a job may give it."""
    found = connect(ctx).backends()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    table = Table("BACKEND", "STATUS", "CAN", "OPTIONS")
    for b in found:
        status = ("available" + (" (default)" if b["default"] else "")) if b["available"] else f"not here: {b['error']}"
        can = ", ".join(k if v is True else f"{k}={','.join(v)}" for k, v in b["capabilities"].items() if v)
        table.add_row(b["name"], status, can, ", ".join(b["options"]))
    Console().print(table)


@cli.command("metrics")
@click.pass_context
def metrics_cmd(ctx: click.Context) -> None:
    """The agent's metrics in the Prometheus text format (what GET /v1/metrics serves)."""
    click.echo(connect(ctx).metrics(), nl=False)


@cli.command("machine")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def machine_cmd(ctx: click.Context, as_json: bool) -> None:
    """This node: host, OS, CPUs, memory, GPUs, load, engine, and the capacity in use."""
    m = connect(ctx).machine()
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    cap, used = m["capacity"], m["in_use"]
    gpus = ", ".join(f"{v}: {','.join(ids)}" for v, ids in m["gpus"].items()) or "none"
    cap_gpus = ", ".join(f"{v}: {','.join(ids)}" for v, ids in cap["gpus"].items()) or "none"
    rows = [
        ("host", f"{m['hostname']} ({m['os']}, {m['arch']})"),
        ("cpus", f"{m['cpus']:g}"),
        ("memory", size(m["memory"])),
        ("gpus", gpus),
        ("load", " ".join(f"{x:.2f}" for x in m["load"])),
        ("engine", f"{m['engine']['name']} {m['engine']['version'] or '(not reachable)'}"
                   if m["engine"]["name"] != "none" else "none (process jobs only)"),
        ("runtimes", ", ".join(sorted(m["engine"].get("runtimes") or {})) or "-"),
        ("backends", ", ".join(m.get("backends") or [])),
        ("capacity", f"{cap['cpus']:g} CPUs, {size(cap['memory'])}, GPUs {cap_gpus} "
                     f"(reserve {cap['reserve']['cpus']:g} CPUs, {size(cap['reserve']['memory'])})"),
        ("in use", f"{used['cpus']:g} CPUs, {size(used['memory'])}, GPUs {', '.join(used['gpus']) or 'none'} "
                   f"by {used['jobs']} job(s)"
                   + (f" of max_running {cap['max_running']}" if cap.get("max_running") else "")
                   + (f" and {used['leases']} lease(s)" if used.get("leases") else "")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    if m.get("leases"):
        click.echo("")
        click.echo(lease_rows(m["leases"]))
    if m.get("nodes"):  # an engine over several machines (swarm)
        click.echo("")
        click.echo(columns([("NODE", "ROLE", "STATE", "AVAILABILITY", "ADDRESS", "CPUS", "MEMORY", "GPUS", "RUNNING", "LABELS")] + [
            (n["name"] or n["id"][:12], n["role"] or "", n["state"] or "", n["availability"] or "", n["address"] or "",
             f"{n['cpus']:g}", size(n["memory"]),
             ", ".join(f"{v}:{len(ids)}" for v, ids in sorted((n.get("gpus") or {}).items())) or "-", str(n["running"]),
             ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())) or "-")
            for n in m["nodes"]
        ]))


@cli.command("queue")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-n", "--limit", type=int, default=50, show_default=True, help="Waiting jobs to list (0: all).")
@click.pass_context
def queue_cmd(ctx: click.Context, as_json: bool, limit: int) -> None:
    """Running and waiting jobs per priority, and what each waiting job waits for
    (resources, dependency, hold, cap, backoff, backfill), in the order they will start."""
    q = connect(ctx).queue(limit=limit or None)
    if as_json:
        click.echo(json.dumps(q, indent=2))
        return
    used, cap = q["in_use"], q["capacity"]
    click.echo(f"in use: {used.get('cpus', 0):g} of {cap['cpus']:g} CPUs, {size(used.get('memory', 0))} of "
               f"{size(cap['memory'])}, {used.get('jobs', 0)} job(s) running")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("PRIORITY", "RUNNING", "QUEUED", "HELD"):
        table.add_column(col, justify="right")
    for prio, counts in q["priorities"].items():
        table.add_row(prio, str(counts["running"]), str(counts["queued"]), str(counts["held"]))
    console = Console(highlight=False)
    console.print(table)
    if q.get("leases"):
        click.echo(lease_rows(q["leases"]))
    if not q["jobs"]:
        click.echo("no waiting jobs")
        return
    jobs = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("JOB ID", "NAME", "PRIO", "STATE", "REQUEST", "WAITS FOR"):
        jobs.add_column(col)
    for j in q["jobs"]:
        name = j["name"] or (f"[{j['array_index']}]" if j["array_id"] else "")
        jobs.add_row(*map(escape, (j["id"], name, str(j["priority"]), j["state"], j["request"], j["reason"])))
    console.print(jobs)
    if q["waiting"] > len(q["jobs"]):
        click.echo(f"... and {q['waiting'] - len(q['jobs'])} more (-n 0 lists all)")
