"""Looking at jobs and the node: ps, inspect, logs, events, queue, machine."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

import click

from ..state import DOCKER_STATUS, FINAL_STATES, JobState, docker_status
from .app import cli, connect, fail, job_id
from .humanize import ellipsis, go_time, human_duration  # noqa: F401 - human_duration: tests
from .render import Console, Table, columns, escape, size, state_label, timestamp

if TYPE_CHECKING:
    from .format import Template


@cli.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="Include finished jobs.")
@click.option("-n", "--last", type=int, default=-1, help="The N most recently created jobs, in any state.")
@click.option("--latest", is_flag=True, help="The most recently created job, in any state (docker's -l).")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Repeatable: id, name, label, status (or state), exited, ancestor (or image), before, since.")
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable; any case), e.g. --state running.")
@click.option("-l", "--label", "labels", multiple=True, help="Only jobs with this KEY=VALUE label (repeatable: all must match).")
@click.option("--format", "template", help="A Go template, as docker ps's: 'table {{.ID}}\\t{{.Status}}', json, ...")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the command.")
@click.option("-q", "--quiet", is_flag=True, help="Only job ids.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def ps(ctx: click.Context, show_all: bool, last: int, latest: bool, filters: tuple[str, ...], states: tuple[str, ...],
       labels: tuple[str, ...], template: str | None, no_trunc: bool, quiet: bool, as_json: bool) -> None:
    """List jobs, the most recently created first (running and waiting ones; -a for all)."""
    wanted = _ps_filters(filters, states, labels)
    limit = 1 if latest else last if last > 0 else None
    if wanted["states"] is None and not (show_all or limit):  # as docker's: -n and a status filter imply -a
        wanted["states"] = [s for s in JobState if s not in FINAL_STATES]
    if quiet and template:
        click.echo("WARNING: Ignoring custom format, because both --format and --quiet are set.", err=True)
    if as_json and template:
        fail("--json and --format: use one (--format json prints a JSON object a line, as docker's)")
    fmt = _ps_template(template) if template and template != "table" and not quiet else None
    jobs = _list(connect(ctx), wanted, limit)
    if as_json:
        click.echo(json.dumps(jobs, indent=2))
    elif quiet:
        click.echo("".join(f"{j['id']}\n" for j in jobs), nl=False)
    elif fmt:
        _print_formatted(fmt, jobs, no_trunc)
    else:
        click.echo(columns([("JOB ID", "NAME", "IMAGE", "COMMAND", "STATE", "EXIT", "CREATED")] + [_ps_row(j, no_trunc) for j in jobs]))


def _list(api, wanted: dict, limit: int | None) -> list[dict]:
    """The jobs ``wanted`` (list()'s filters) selects, newest first: a page of ``limit``."""
    from ..client.api import list_query

    states = None if wanted["states"] is None else [s.value for s in wanted["states"]]
    params = list_query(states, **{k: v for k, v in wanted.items() if k != "states"}, newest_first=True)
    return [] if params is None else api.list_all(params, limit=limit)


def _ps_row(job: dict, no_trunc: bool) -> tuple[str, ...]:
    command = " ".join(job["command"] or [])
    exit_code = "" if job["exit_code"] is None else str(job["exit_code"])
    return (job["id"], job["name"] or "", job["image"], command if no_trunc else command[:30], state_label(job),
            exit_code, timestamp(job["created_at"]))


# docker ps --filter keys -> the list() parameter each fills (label, status, before and since apart)
_FILTER_LISTS = {"id": "ids", "name": "names", "ancestor": "images", "image": "images", "exited": "exit_codes"}
FILTER_KEYS = ("id", "name", "label", "status", "state", "exited", "ancestor", "image", "before", "since")


def _ps_filters(filters: tuple[str, ...], states: tuple[str, ...], labels: tuple[str, ...]) -> dict:
    """docker's --filter KEY=VALUE (and conveyor's --state, -l) -> list()'s keyword arguments.
    The values of one key are alternatives; labels must all match."""
    wanted: dict = {"states": None, "labels": {}, "ids": None, "names": None, "images": None, "exit_codes": None,
                    "before": None, "since": None}
    for item in labels:
        key, eq, value = item.partition("=")
        if not eq or not key:
            fail(f"--label {item!r}: use KEY=VALUE")
        wanted["labels"][key] = value
    pairs = [("state", s, f"--state {s!r}") for s in states]
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq or key not in FILTER_KEYS:
            fail(f"--filter {item!r}: " + (f"unknown filter {key!r}; use " if eq else "use KEY=VALUE with KEY one of ")
                 + ", ".join(FILTER_KEYS))
        pairs.append((key, value, f"--filter {item!r}"))
    for key, value, given in pairs:
        if key in ("status", "state"):
            wanted["states"] = sorted({*(wanted["states"] or ()), *_states_of(value, given)}, key=list(JobState).index)
        elif key == "label":
            name, eq, label_value = value.partition("=")
            wanted["labels"][name] = label_value if eq else None
        elif key in ("before", "since"):
            wanted[key] = value
        else:
            wanted[_FILTER_LISTS[key]] = (wanted[_FILTER_LISTS[key]] or []) + [_filter_value(key, value, given)]
    wanted["labels"] = wanted["labels"] or None
    return wanted


def _states_of(word: str, given: str) -> frozenset[JobState]:
    """A docker status word (running, exited, ...) or a job state (any case) -> job states."""
    by_name = {s.value.lower(): frozenset({s}) for s in JobState}
    found = DOCKER_STATUS.get(word) if word in DOCKER_STATUS else by_name.get(word.lower())
    if found is None:
        fail(f"{given}: {word!r} is not a status; use one of {', '.join(DOCKER_STATUS)} "
             f"or a job state: {', '.join(s.value for s in JobState)}")
    return found


def _filter_value(key: str, value: str, given: str) -> str | int:
    if key == "exited":
        if not value.lstrip("-").isdigit():
            fail(f"{given}: {value!r} is not an exit code")
        return int(value)
    if key == "name":
        import re

        try:
            re.compile(value)
        except re.error as exc:
            fail(f"{given}: not a regular expression ({exc})")
    return value


def _ps_template(text: str) -> "Template":
    from .format import Template, TemplateError  # only for --format: not on the start-up path

    try:
        return Template(text)
    except TemplateError as exc:
        fail(f"--format: {exc}")


def _print_formatted(fmt: "Template", jobs: list[dict], no_trunc: bool) -> None:
    from .format import Fields, TemplateError

    now, trunc = time.time(), not no_trunc
    getters = {name: (lambda job, get=get: get(job, now, trunc)) for name, (_, get) in PS_FIELDS.items()}
    try:
        click.echo(fmt.render([Fields(j, getters) for j in jobs], {n: h for n, (h, _) in PS_FIELDS.items()}), nl=False)
    except TemplateError as exc:
        fail(f"--format: {exc}")


def _status(job: dict, now: float) -> str:
    """docker's Status of a job: "Up 5 seconds", "Up 2 hours (Paused)", "Exited (3) 2 minutes
    ago"; one that has no container says so: "Queued", "Queued (held)", "Requeued"."""
    state = JobState(job["state"])
    since = job["finished_at"] if state in FINAL_STATES else job["started_at"]
    age = human_duration(now - (since or job["created_at"]))
    if state is JobState.RUNNING or state is JobState.SUSPENDED:
        return f"Up {age}" + (" (Paused)" if state is JobState.SUSPENDED else "")
    if state in FINAL_STATES:
        ended = f"Exited ({job['exit_code']})" if job["exit_code"] is not None else _state_text(state, job["substate"])
        return f"{ended} {age} ago"
    if state in (JobState.QUEUED_HELD, JobState.REQUEUED_HELD):
        return state.value.removesuffix("Held") + " (held)"
    return _state_text(state, job["substate"])


def _state_text(state: JobState, substate: str | None) -> str:
    return state.value + (f" ({substate})" if substate else "")


def _docker_state(job: dict) -> str:
    return docker_status(JobState(job["state"]))


def _ports(job: dict) -> str:
    """The ports the job publishes, as docker lists them: 0.0.0.0:8080->80/tcp, 443/tcp."""
    return ", ".join(
        (f"{p.get('host_ip') or '0.0.0.0'}:{p['host_port']}->" if p.get("host_port") else "")
        + f"{p['container_port']}/{p.get('protocol', 'tcp')}" for p in job["spec"].get("ports", [])
    )


def _command(job: dict, trunc: bool) -> str:
    from .format import go_quote

    command = " ".join(job["command"] or [])
    return go_quote(ellipsis(command, 20) if trunc else command)


# The fields of `ps --format`: docker ps's, then conveyor's own. name -> (column title, value of
# a job's wire form, given the time now and whether to truncate)
PS_FIELDS: dict[str, tuple[Any, Callable[[dict, float, bool], Any]]] = {
    "ID": ("CONTAINER ID", lambda j, now, trunc: j["id"]),
    "Image": ("IMAGE", lambda j, now, trunc: j["image"]),
    "Command": ("COMMAND", lambda j, now, trunc: _command(j, trunc)),
    "CreatedAt": ("CREATED AT", lambda j, now, trunc: go_time(j["created_at"])),
    "RunningFor": ("CREATED", lambda j, now, trunc: human_duration(now - j["created_at"]) + " ago"),
    "Ports": ("PORTS", lambda j, now, trunc: _ports(j)),
    "State": ("STATE", lambda j, now, trunc: _docker_state(j)),
    "Status": ("STATUS", lambda j, now, trunc: _status(j, now)),
    "Names": ("NAMES", lambda j, now, trunc: j["name"] or ""),
    "Labels": ("LABELS", lambda j, now, trunc: ",".join(f"{k}={v}" for k, v in sorted(j["labels"].items()))),
    # a method: {{.Label "com.example.team"}}; its title is the key's last part, as docker's was
    "Label": (lambda key: key.rsplit(".", 1)[-1].replace("-", " ").replace("_", " ").upper(),
              lambda j, now, trunc: lambda key: j["labels"].get(key, "")),
    "JobState": ("JOB STATE", lambda j, now, trunc: j["state"]),
    "Substate": ("SUBSTATE", lambda j, now, trunc: j["substate"] or ""),
    "ExitCode": ("EXIT CODE", lambda j, now, trunc: "" if j["exit_code"] is None else j["exit_code"]),
    "StartedAt": ("STARTED AT", lambda j, now, trunc: go_time(j["started_at"])),
    "FinishedAt": ("FINISHED AT", lambda j, now, trunc: go_time(j["finished_at"])),
    "Message": ("MESSAGE", lambda j, now, trunc: j["message"] or ""),
}


@cli.command("inspect")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the output is always JSON.")
@click.argument("job")
@click.pass_context
def inspect_cmd(ctx: click.Context, as_json: bool, job: str) -> None:
    """Show everything about a job as JSON."""
    api = connect(ctx)
    job_id(api, job)  # an empty reference is a usage error, not a lookup
    click.echo(json.dumps(api.info(job), indent=2))


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


def _since(value: str | None) -> float | None:
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
            param_hint="--since",
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
    after = _since(since)
    api = connect(ctx)
    only = job_id(api, job) if job is not None else None
    start = 0 if (after is not None or not follow) else None
    try:
        for t in api.events(only, since=start, follow=follow):
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
        ("engine", f"{m['engine']['name']} {m['engine']['version'] or '(not reachable)'}"),
        ("capacity", f"{cap['cpus']:g} CPUs, {size(cap['memory'])}, GPUs {cap_gpus} "
                     f"(reserve {cap['reserve']['cpus']:g} CPUs, {size(cap['reserve']['memory'])})"),
        ("in use", f"{used['cpus']:g} CPUs, {size(used['memory'])}, GPUs {', '.join(used['gpus']) or 'none'} "
                   f"by {used['jobs']} job(s)"
                   + (f" of max_running {cap['max_running']}" if cap.get("max_running") else "")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


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
