"""A job as `docker ps` shows a container: docker's --filter keys, its Status text and the
fields of its --format. Shared by `conveyor ps` and the docker stand-in's `docker ps`; stdlib
only (the stand-in starts without click). A bad filter raises FlagError, which each front end
reports its own way.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from ..state import DOCKER_STATUS, FINAL_STATES, JobState, docker_status
from .format import go_quote
from .humanize import ellipsis, go_time, human_duration
from .jobspec import FlagError


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
