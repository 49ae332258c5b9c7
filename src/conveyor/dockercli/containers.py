"""Containers, which are Conveyor jobs: `inspect` (of a job or an image), `ps`, `stats`,
`kill`, `stop`, `rm`, `wait`, `logs`.

A job is named by job id (what --cidfile and `run -d` give), unique id prefix or job name. It
keeps its record after its container is gone, so `inspect`, `wait` and `logs` answer for it
still.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

from ..cli.format import Template, TemplateError
from ..errors import ConveyorError, ImageNotFound, JobNotFound
from ..state import FINAL_STATES, JobState, docker_status
from .commands import EXIT_FAILED, FORMAT, DockerError, Session, command, one_line, print_table
from .flags import BOOL, LIST, VALUE, Flag
from .images import has_tag_or_digest

_JOB_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # what a job id, id prefix or job name looks like

# ----------------------------------------------------------------------------- inspect


@command("inspect", "inspect [OPTIONS] NAME|ID [NAME|ID...]", "Return low-level information on Docker objects", (
    FORMAT,
    Flag("size", "s", BOOL, help="Display total file sizes if the type is container"),
    Flag("type", kind=VALUE, help="Only inspect objects of the given type: container or image"),
), min_args=1)
def inspect(session: Session, values: dict, args: list[str]) -> int:
    kind = values["type"]
    if kind not in (None, "container", "image"):
        raise DockerError(f'"{kind}" is not a valid value for --type; the stand-in inspects containers and images')
    return _inspect(session, values["format"], args, kind)


@command("image inspect", "image inspect [OPTIONS] IMAGE [IMAGE...]", "Display detailed information on one or more images",
         (FORMAT,), min_args=1)
def image_inspect(session: Session, values: dict, args: list[str]) -> int:
    return _inspect(session, values["format"], args, "image")


@command("container inspect", "container inspect [OPTIONS] CONTAINER [CONTAINER...]",
         "Display detailed information on one or more containers",
         (FORMAT, Flag("size", "s", BOOL, help="Display total file sizes")), min_args=1)
def container_inspect(session: Session, values: dict, args: list[str]) -> int:
    return _inspect(session, values["format"], args, "container")


def _inspect(session: Session, fmt: str | None, names: list[str], kind: str | None) -> int:
    found, missing = [], []
    for name in names:
        doc = _find(session, name, kind)
        (found if doc is not None else missing).append(doc if doc is not None else name)
    if fmt:
        try:
            template = Template(fmt)
            session.out("".join(template.execute(doc) + "\n" for doc in found))
        except TemplateError as exc:
            raise DockerError(f"template parsing error: {exc.problem}") from None
    else:
        session.out(go_json(found) + "\n")
    for name in missing:
        session.err(_no_such(kind, name) + "\n")
    return EXIT_FAILED if missing else 0


def _no_such(kind: str | None, name: str) -> str:
    """docker's words for a missing object, which depend on what was asked for."""
    if kind == "container":
        return f"Error response from daemon: No such container: {name}"
    if kind == "image":
        full = name if has_tag_or_digest(name) else name + ":latest"
        return f"Error response from daemon: no such image: {name}: No such image: {full}"
    return f"Error: No such object: {name}"


def _find(session: Session, name: str, kind: str | None) -> dict | None:
    if kind != "image" and _JOB_REF.fullmatch(name):  # busybox:1.36 or a/b is no job's id or name
        try:
            return container_document(session.api.info(name))
        except JobNotFound:
            pass
    if kind != "container":
        try:
            return session.api.image_inspect(name)
        except ImageNotFound:
            pass
    return None


def container_document(job: dict) -> dict:
    """A job as docker inspects a container: the fields tools read (.State.ExitCode,
    .State.Status, .Config.Image, .Id, .Name, ...), from the job's record, which outlives the
    container. Conveyor's own view of the job is under .Conveyor."""
    spec = job.get("spec") or {}
    state = JobState(job["state"])
    command = spec.get("command") or []
    entrypoint = spec.get("entrypoint")
    argv = [*(entrypoint or []), *command, *spec.get("args", [])]
    exit_code = job["exit_code"]
    return {
        "Id": job["id"],
        "Created": _rfc3339(job["created_at"]),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": {
            "Status": docker_status(state),
            "Running": state in (JobState.RUNNING, JobState.SUSPENDED),
            "Paused": state == JobState.SUSPENDED,
            "Restarting": False,
            "OOMKilled": job.get("substate") == "oom_killed",
            "Dead": False,
            "Pid": 0,
            "ExitCode": exit_code if exit_code is not None else 0,
            "Error": job["message"] or "" if job.get("substate") == "start_failed" else "",
            "StartedAt": _rfc3339(job["started_at"]),
            "FinishedAt": _rfc3339(job["finished_at"]) if state in FINAL_STATES else "0001-01-01T00:00:00Z",
        },
        "Image": job["image"] or "",
        "Name": "/" + (job["name"] or job["id"]),
        "RestartCount": 0,
        "HostConfig": {
            "AutoRemove": bool(spec.get("auto_remove")),
            "NetworkMode": spec.get("network") or "bridge",
            "Privileged": bool(spec.get("privileged")),
            "ReadonlyRootfs": bool(spec.get("read_only")),
        },
        "Config": {
            "Hostname": spec.get("hostname") or "",
            "User": spec.get("user") or "",
            "Tty": bool(spec.get("tty")),
            "OpenStdin": bool(spec.get("stdin_open")),
            "Env": [f"{k}={v}" for k, v in (spec.get("env") or {}).items()],
            "Cmd": [*command, *spec.get("args", [])] or None,
            "Image": job["image"] or "",
            "WorkingDir": spec.get("workdir") or "",
            "Entrypoint": entrypoint,
            "Labels": job.get("labels") or {},
        },
        "Conveyor": {
            "State": job["state"], "Substate": job.get("substate"), "Message": job.get("message"),
            "ContainerId": job.get("container_id"), "Logs": job.get("logs_dir"),
        },
    }


def _rfc3339(stamp: float | None) -> str:
    if not stamp:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_json(value: Any) -> str:
    """JSON as docker prints an inspect: four-space indents, and Go's escapes of <, > and &."""
    text = json.dumps(value, indent=4, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


# ----------------------------------------------------------------------------- containers (jobs)


@command("ps", "ps [OPTIONS]", "List containers", (
    Flag("all", "a", BOOL, help="Show all containers (default shows just running)"),
    Flag("filter", "f", LIST, help="Filter output: id, name, label, status, exited, ancestor, before, since"),
    FORMAT,
    Flag("last", "n", VALUE, help="Show n last created containers (includes all states)"),
    Flag("latest", "l", BOOL, help="Show the latest created container (includes all states)"),
    Flag("no-trunc", kind=BOOL, help="Don't truncate output"),
    Flag("quiet", "q", BOOL, help="Only display container IDs"),
    Flag("size", "s", BOOL, unsupported="a job's container is removed once its results are stored"),
), aliases=("container ls", "container list", "container ps"), max_args=0)
def ps(session: Session, values: dict, args: list[str]) -> int:
    from ..cli.jobspec import FlagError
    from ..cli.psview import PS_FIELDS, list_jobs, ps_filters
    from ..state import DOCKER_STATUS

    try:
        wanted = ps_filters(tuple(values["filter"]), (), ())
    except FlagError as exc:
        raise DockerError(f"Error response from daemon: invalid filter: {exc}") from None
    last = _int_arg(values["last"], "--last") if values["last"] is not None else -1
    limit = 1 if values["latest"] else last if last > 0 else None
    if wanted["states"] is None and not (values["all"] or limit):  # docker's default: running ones
        wanted["states"] = sorted(DOCKER_STATUS["running"] | DOCKER_STATUS["paused"] | DOCKER_STATUS["restarting"],
                                  key=list(JobState).index)
    jobs = list_jobs(session.api, wanted, limit)
    if values["quiet"]:
        session.out("".join(f"{job['id']}\n" for job in jobs))
        return 0
    now, trunc = time.time(), not values["no_trunc"]
    fields = {name: (title, lambda job, get=get: get(job, now, trunc)) for name, (title, get) in PS_FIELDS.items()}
    print_table(session, values["format"] or _PS_TABLE, jobs, fields)
    return 0


_PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


@command("stats", "stats [OPTIONS] [CONTAINER...]", "Display a live stream of container(s) resource usage statistics", (
    Flag("no-stream", kind=BOOL, help="Disable streaming stats and only pull the first result"),
    Flag("no-trunc", kind=BOOL, help="Do not truncate output"),
    Flag("all", "a", BOOL, help="Show all containers (default shows just running)"),
    FORMAT,
), aliases=("container stats",))
def stats(session: Session, values: dict, args: list[str]) -> int:
    from ..cli.usageview import DOCKER_TABLE, STATS_FIELDS, stats_row

    api = session.api
    if args:
        jobs = [_job(api, ref) for ref in args]
    else:
        from ..client.api import list_query

        states = None if values["all"] else [JobState.RUNNING.value, JobState.SUSPENDED.value]
        jobs = api.list_all(list_query(states, newest_first=True))
    refs = args or [j["id"] for j in jobs]
    while True:
        entries = api.usage([j["id"] for j in jobs]) if jobs else []
        print_table(session, values["format"] or DOCKER_TABLE, [stats_row(r, e) for r, e in zip(refs, entries)],
                    STATS_FIELDS)
        # docker streams until every named container has stopped (or forever, for all running)
        if values["no_stream"] or (jobs and all(JobState(e["state"]) in FINAL_STATES for e in entries)):
            return 0
        time.sleep(1.0)


@command("kill", "kill [OPTIONS] CONTAINER [CONTAINER...]", "Kill one or more running containers", (
    Flag("signal", "s", VALUE, help="Signal to send to the container (default KILL)"),
), aliases=("container kill",), min_args=1)
def kill(session: Session, values: dict, args: list[str]) -> int:
    from ..operations import VERBS

    signal_verb = next(v for v in VERBS if v.name == "signal")
    params = {"signal": values["signal"]} if values["signal"] else {}
    return _each(session, args, lambda ref: session.api.perform(signal_verb, _job(session.api, ref)["id"], params),
                 "Cannot kill container: {ref}: ")


@command("stop", "stop [OPTIONS] CONTAINER [CONTAINER...]", "Stop one or more running containers", (
    Flag("time", "t", VALUE, help="Seconds to wait before killing the container"),
    Flag("signal", "s", VALUE, unsupported="a job is stopped with SIGTERM, then SIGKILL"),
), aliases=("container stop",), min_args=1)
def stop(session: Session, values: dict, args: list[str]) -> int:
    from ..operations import CANCEL

    params = {"grace": _int_arg(values["time"], "--time")} if values["time"] is not None else {}

    def stop_one(ref: str) -> None:
        job = _job(session.api, ref)
        if JobState(job["state"]) not in FINAL_STATES:
            session.api.perform(CANCEL, job["id"], params)
            session.api.wait(job["id"])
    return _each(session, args, stop_one, "")


@command("rm", "rm [OPTIONS] CONTAINER [CONTAINER...]", "Remove one or more containers", (
    Flag("force", "f", BOOL, help="Force the removal of a running container (uses SIGKILL)"),
    Flag("volumes", "v", BOOL, help="Remove anonymous volumes associated with the container"),
    Flag("link", "l", BOOL, unsupported="jobs have no links"),
), aliases=("container rm", "container remove"), min_args=1)
def rm(session: Session, values: dict, args: list[str]) -> int:
    from ..operations import REMOVE

    def remove(ref: str) -> None:
        job = _job(session.api, ref)
        if JobState(job["state"]) not in FINAL_STATES and not values["force"]:
            raise DockerError(f"Error response from daemon: cannot remove container \"{ref}\": container is "
                              f"{docker_status(JobState(job['state']))}: stop the container before removing or force remove")
        session.api.perform(REMOVE, job["id"], {"force": bool(values["force"])})
    return _each(session, args, remove, "")


@command("wait", "wait CONTAINER [CONTAINER...]", "Block until one or more containers stop, then print their exit codes",
         aliases=("container wait",), min_args=1)
def wait(session: Session, values: dict, args: list[str]) -> int:
    def wait_one(ref: str) -> None:
        job = session.api.wait(_job(session.api, ref)["id"])
        session.out(f"{job['exit_code'] if job['exit_code'] is not None else -1}\n")
    return _each(session, args, wait_one, "", echo=False)


@command("logs", "logs [OPTIONS] CONTAINER", "Fetch the logs of a container", (
    Flag("follow", "f", BOOL, help="Follow log output"),
    Flag("tail", "n", VALUE, help='Number of lines to show from the end of the logs (default "all")'),
    Flag("timestamps", "t", BOOL, help="Show timestamps"),
    Flag("since", kind=VALUE, unsupported="use conveyor logs"),
    Flag("until", kind=VALUE, unsupported="use conveyor logs"),
    Flag("details", kind=BOOL, unsupported="jobs' logs have no attributes"),
), aliases=("container logs",), min_args=1, max_args=1)
def logs(session: Session, values: dict, args: list[str]) -> int:
    tail = values["tail"]
    lines = None if tail in (None, "all") else _int_arg(tail, "--tail")
    job = _job(session.api, args[0])
    out = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    for stream, data in session.api.logs(job["id"], tail=lines, follow=values["follow"], timestamps=values["timestamps"]):
        out[stream].write(data)
        out[stream].flush()
    return 0


# ----------------------------------------------------------------------------- shared


def _job(api, ref: str) -> dict:
    try:
        return api.info(ref)
    except JobNotFound:
        raise DockerError(f"Error response from daemon: No such container: {ref}") from None


def _each(session: Session, refs: list[str], action: Callable[[str], Any], prefix: str, echo: bool = True) -> int:
    """docker's multi-container verbs: each name is done or its error printed; the name is
    echoed when done; exit 1 if any failed."""
    failed = False
    for ref in refs:
        try:
            action(ref)
        except DockerError as exc:
            failed = True
            session.err(f"{exc}\n")
            continue
        except ConveyorError as exc:
            failed = True
            session.err(f"Error response from daemon: {prefix.format(ref=ref)}{one_line(exc)}\n")
            continue
        if echo:
            session.out(ref + "\n")
    return EXIT_FAILED if failed else 0


def _int_arg(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DockerError(f'invalid argument "{value}" for "{flag}" flag: strconv.ParseInt: parsing "{value}": invalid syntax') from None
