"""A job as `docker ps` shows a container: docker's --filter keys, its Status text and the
fields of its --format. Shared by `conveyor ps` and the docker stand-in's `docker ps`; stdlib
only (the stand-in and the fast path start without click). A bad filter raises FlagError, which
each front end reports its own way. `conveyor ps` itself is here too (its flags and its body),
for click's command (views.py) and the fast path (fast.py).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable

from ..dockercli.flags import BOOL, LIST, VALUE, Flag
from ..state import DOCKER_STATUS, FINAL_STATES, JobState, docker_status
from .humanize import ellipsis, go_time, human_duration
from .jobspec import FlagError
from .render import columns, echo, fail, state_label, timestamp

PS_FLAGS: tuple[Flag, ...] = (
    Flag("all", "a", BOOL, dest="show_all", help="Include finished jobs."),
    Flag("last", "n", VALUE, type=int, default=-1, help="The N most recently created jobs, in any state."),
    Flag("latest", kind=BOOL, help="The most recently created job, in any state (docker's -l)."),
    Flag("filter", "f", LIST, dest="filters", metavar="KEY=VALUE",
         help="Repeatable: id, name, label, status (or state), exited, ancestor (or image), before, since."),
    Flag("state", kind=LIST, dest="states", help="Only jobs in this state (repeatable; any case), e.g. --state running."),
    Flag("label", "l", LIST, dest="labels", help="Only jobs with this KEY=VALUE label (repeatable: all must match)."),
    Flag("format", kind=VALUE, dest="template", help="A Go template, as docker ps's: 'table {{.ID}}\\t{{.Status}}', json, ..."),
    Flag("no-trunc", kind=BOOL, help="Do not truncate the command."),
    Flag("quiet", "q", BOOL, help="Only job ids."),
    Flag("json", kind=BOOL, dest="as_json", help="Machine-readable output."),
)


def ps_command(connect: Callable[[], Any], show_all: bool, last: int, latest: bool, filters: tuple[str, ...],
               states: tuple[str, ...], labels: tuple[str, ...], template: str | None, no_trunc: bool, quiet: bool,
               as_json: bool) -> None:
    """`conveyor ps` once its flags are read."""
    try:
        wanted = ps_filters(filters, states, labels)
    except FlagError as exc:
        fail(str(exc))
    limit = 1 if latest else last if last > 0 else None
    if wanted["states"] is None and not (show_all or limit):  # as docker's: -n and a status filter imply -a
        wanted["states"] = [s for s in JobState if s not in FINAL_STATES]
    if quiet and template:
        echo("WARNING: Ignoring custom format, because both --format and --quiet are set.", err=True)
    if as_json and template:
        fail("--json and --format: use one (--format json prints a JSON object a line, as docker's)")
    fmt = _ps_template(template) if template and template != "table" and not quiet else None
    jobs = list_jobs(connect(), wanted, limit)
    if as_json:
        echo(json.dumps(jobs, indent=2))
    elif quiet:
        echo("".join(f"{j['id']}\n" for j in jobs), nl=False)
    elif fmt:
        _print_formatted(fmt, jobs, no_trunc)
    else:
        # On a cluster (some job has a node), a NODE column says where each job runs or ran.
        cluster = any(j.get("node") for j in jobs)
        header = ("JOB ID", "NAME", "IMAGE", "COMMAND", "STATE", "EXIT", "CREATED") + (("NODE",) if cluster else ())
        echo(columns([header] + [_ps_row(j, no_trunc, cluster) for j in jobs]))


def _ps_row(job: dict, no_trunc: bool, cluster: bool = False) -> tuple[str, ...]:
    command = " ".join(job["command"] or [])
    exit_code = "" if job["exit_code"] is None else str(job["exit_code"])
    row = (job["id"], job["name"] or "", job["image"] or "-", command if no_trunc else command[:30], state_label(job),
           exit_code, timestamp(job["created_at"]))
    return row + ((job.get("node") or "-",) if cluster else ())


def _ps_template(text: str):
    from .format import Template, TemplateError  # only for --format: not on the start-up path

    try:
        return Template(text)
    except TemplateError as exc:
        fail(f"--format: {exc}")


def _print_formatted(fmt, jobs: list[dict], no_trunc: bool) -> None:
    from .format import Fields, TemplateError

    now, trunc = time.time(), not no_trunc
    getters = {name: (lambda job, get=get: get(job, now, trunc)) for name, (_, get) in PS_FIELDS.items()}
    try:
        echo(fmt.render([Fields(j, getters) for j in jobs], {n: h for n, (h, _) in PS_FIELDS.items()}), nl=False)
    except TemplateError as exc:
        fail(f"--format: {exc}")


def list_jobs(api, wanted: dict, limit: int | None) -> list[dict]:
    """The jobs ``wanted`` (ps_filters()'s keyword arguments) selects, newest first: at most
    ``limit``."""
    from ..client.api import list_query

    states = None if wanted["states"] is None else [s.value for s in wanted["states"]]
    params = list_query(states, **{k: v for k, v in wanted.items() if k != "states"}, newest_first=True)
    return [] if params is None else api.list_all(params, limit=limit)


# docker ps --filter keys -> the list() parameter each fills (label, status, before and since apart)
_FILTER_LISTS = {"id": "ids", "name": "names", "ancestor": "images", "image": "images", "exited": "exit_codes"}
FILTER_KEYS = ("id", "name", "label", "status", "state", "exited", "ancestor", "image", "before", "since")


def ps_filters(filters: tuple[str, ...], states: tuple[str, ...], labels: tuple[str, ...]) -> dict:
    """docker's --filter KEY=VALUE (and conveyor's --state, -l) -> list()'s keyword arguments.
    The values of one key are alternatives; labels must all match."""
    wanted: dict = {"states": None, "labels": {}, "ids": None, "names": None, "images": None, "exit_codes": None,
                    "before": None, "since": None}
    for item in labels:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise FlagError(f"--label {item!r}: use KEY=VALUE")
        wanted["labels"][key] = value
    pairs = [("state", s, f"--state {s!r}") for s in states]
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq or key not in FILTER_KEYS:
            raise FlagError(f"--filter {item!r}: " + (f"unknown filter {key!r}; use " if eq else "use KEY=VALUE with KEY one of ")
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
        raise FlagError(f"{given}: {word!r} is not a status; use one of {', '.join(DOCKER_STATUS)} "
             f"or a job state: {', '.join(s.value for s in JobState)}")
    return found


def _filter_value(key: str, value: str, given: str) -> str | int:
    if key == "exited":
        if not value.lstrip("-").isdigit():
            raise FlagError(f"{given}: {value!r} is not an exit code")
        return int(value)
    if key == "name":
        try:
            re.compile(value)
        except re.error as exc:
            raise FlagError(f"{given}: not a regular expression ({exc})") from None
    return value


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
    "Image": ("IMAGE", lambda j, now, trunc: j["image"] or "-"),  # "-": a process job
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
    "Node": ("NODE", lambda j, now, trunc: j.get("node") or ""),
}
