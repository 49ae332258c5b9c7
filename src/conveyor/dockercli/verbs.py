"""The verbs tools call around `docker run`, answered by the agent, printed as docker prints.

Images are the engine's (the agent passes its documents through); containers are Conveyor
jobs, named by job id, unique id prefix or job name (--cidfile wrote the job id). A job keeps
its record after its container is gone, so `inspect`, `wait` and `logs` answer for it still.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

from ..cli.format import Fields, Template, TemplateError, binary_size, human_duration, human_size
from ..errors import ConveyorError, ImageNotFound, JobNotFound
from ..state import FINAL_STATES, JobState, docker_status
from .commands import EXIT_FAILED, DockerError, Session, command, one_line
from .flags import BOOL, LIST, VALUE, Flag

FORMAT = Flag("format", "f", VALUE, help="Format output using a custom template ('json', or a Go template)")

# ----------------------------------------------------------------------------- images


@command("pull", "pull [OPTIONS] NAME[:TAG|@DIGEST]", "Download an image from a registry", (
    Flag("quiet", "q", BOOL, help="Suppress verbose output"),
    Flag("disable-content-trust", kind=BOOL, help="Skip image verification (always skipped)"),
    Flag("all-tags", "a", BOOL, unsupported="pull each tag by name"),
    Flag("platform", kind=VALUE, unsupported="images are pulled for the node's own platform"),
), aliases=("image pull",), min_args=1, max_args=1)
def pull(session: Session, values: dict, args: list[str]) -> int:
    name = args[0]
    if not _has_tag_or_digest(name) and not values["quiet"]:
        session.out("Using default tag: latest\n")
    for message in session.api.pull(name):
        if message.get("error"):
            raise DockerError(f"Error response from daemon: {one_line(message['error'])}")
        if not values["quiet"] and not message.get("progress"):
            # docker prints a non-terminal pull without its progress bars
            session.out((f"{message['id']}: " if message.get("id") else "") + message.get("status", "") + "\n")
    session.out(canonical_reference(name) + "\n")
    return 0


@command("images", "images [OPTIONS] [REPOSITORY[:TAG]]", "List images", (
    Flag("all", "a", BOOL, help="Show all images (default hides intermediate images)"),
    Flag("quiet", "q", BOOL, help="Only show image IDs"),
    Flag("no-trunc", kind=BOOL, help="Don't truncate output"),
    Flag("digests", kind=BOOL, help="Show digests"),
    Flag("filter", "f", LIST, help="Filter output: reference=PATTERN, dangling=true|false"),
    FORMAT,
    Flag("tree", kind=BOOL, unsupported="list images with their tags instead"),
), aliases=("image ls", "image list"), max_args=1)
def images(session: Session, values: dict, args: list[str]) -> int:
    now = time.time()
    rows = [row for image in session.api.images() for row in _image_rows(image)]
    wanted = _image_filters(values["filter"], args)
    rows = [r for r in rows if all(test(r) for test in wanted)]
    rows.sort(key=lambda r: -r["Created"])
    trunc = not values["no_trunc"]
    if values["quiet"]:
        ids = dict.fromkeys(_short_image_id(r["Id"], trunc) for r in rows)
        session.out("".join(f"{i}\n" for i in ids))
        return 0
    fields = {
        "Repository": ("REPOSITORY", lambda r: r["Repository"]),
        "Tag": ("TAG", lambda r: r["Tag"]),
        "Digest": ("DIGEST", lambda r: r["Digest"]),
        "ID": ("IMAGE ID", lambda r: _short_image_id(r["Id"], trunc)),
        "CreatedSince": ("CREATED", lambda r: human_duration(now - r["Created"]) + " ago"),
        "CreatedAt": ("CREATED AT", lambda r: _go_local_time(r["Created"])),
        "Size": ("SIZE", lambda r: human_size(r["Size"])),
        "VirtualSize": ("SIZE", lambda r: human_size(r["Size"])),
        "SharedSize": ("SHARED SIZE", lambda r: "N/A" if r["SharedSize"] < 0 else human_size(r["SharedSize"])),
        "UniqueSize": ("UNIQUE SIZE", lambda r: "N/A" if r["SharedSize"] < 0 else human_size(r["Size"] - r["SharedSize"])),
        "Containers": ("CONTAINERS", lambda r: "N/A" if r["Containers"] < 0 else str(r["Containers"])),
    }
    default = "table {{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if values["digests"] else "") + "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    _print_table(session, values["format"] or default, rows, fields)
    return 0


def _image_rows(image: dict) -> list[dict]:
    """docker images' rows of one image: one per tag (<none> when it has none)."""
    base = {"Id": image["Id"], "Created": image.get("Created", 0), "Size": image.get("Size", 0),
            "SharedSize": image.get("SharedSize", -1), "Containers": image.get("Containers", -1)}
    digests = [d.partition("@")[2] for d in image.get("RepoDigests") or []]
    tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
    if not tags:
        repo = (image.get("RepoDigests") or ["<none>@"])[0].partition("@")[0]
        return [{**base, "Repository": repo, "Tag": "<none>", "Digest": digests[0] if digests else "<none>"}]
    rows = []
    for tag in tags:
        repo, _, name = tag.rpartition(":")
        rows.append({**base, "Repository": repo, "Tag": name, "Digest": digests[0] if digests else "<none>"})
    return rows


def _image_filters(filters: list[str], args: list[str]) -> list[Callable[[dict], bool]]:
    tests = []
    patterns = [*args, *(f.partition("=")[2] for f in filters if f.partition("=")[0] == "reference")]
    for f in filters:
        key, eq, value = f.partition("=")
        if not eq or key not in ("reference", "dangling"):
            raise DockerError(f"invalid filter {f!r}: the stand-in filters images by reference=PATTERN and dangling=true|false")
        if key == "dangling":
            dangling = value.lower() in ("1", "true")
            tests.append(lambda r, d=dangling: (r["Tag"] == "<none>") == d)
    if patterns:
        tests.append(lambda r: any(_reference_matches(p, r) for p in patterns))
    return tests


def _reference_matches(pattern: str, row: dict) -> bool:
    import fnmatch

    name = f"{row['Repository']}:{row['Tag']}"
    if ":" in pattern.rpartition("/")[2]:
        return fnmatch.fnmatchcase(name, pattern)
    return fnmatch.fnmatchcase(row["Repository"], pattern)


def _short_image_id(image_id: str, trunc: bool) -> str:
    return image_id.removeprefix("sha256:")[:12] if trunc else image_id


@command("load", "load [OPTIONS]", "Load an image from a tar archive or STDIN", (
    Flag("input", "i", VALUE, help="Read from tar archive file, instead of STDIN"),
    Flag("quiet", "q", BOOL, help="Suppress the load output"),
    Flag("platform", kind=LIST, unsupported="an archive is loaded whole"),
), aliases=("image load",), max_args=0)
def load(session: Session, values: dict, args: list[str]) -> int:
    path = values["input"]
    if path is None and sys.stdin.isatty():
        raise DockerError("requested load from stdin, but stdin is empty")
    if path is not None and not os.path.isfile(path):
        raise DockerError(f"open {path}: no such file or directory")
    result = session.api.load_image(path if path is not None else sys.stdin.buffer)
    for image in result["images"]:
        for tag in image["tags"] or [image["image_id"]]:
            kind = "image" if tag in image["tags"] else "image ID"
            session.out(f"Loaded {kind}: {tag}\n")
    return 0


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
        what = {"container": "container", "image": "image"}.get(kind or "", "object")
        session.err(f"Error: No such {what}: {name}\n")
    return EXIT_FAILED if missing else 0


def _find(session: Session, name: str, kind: str | None) -> dict | None:
    if kind != "image":
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
        "Image": job["image"],
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
            "Image": job["image"],
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


def _go_local_time(stamp: float) -> str:
    return datetime.fromtimestamp(int(stamp)).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z")


def go_json(value: Any) -> str:
    """JSON as docker prints an inspect: four-space indents, and Go's escapes of <, > and &."""
    text = json.dumps(value, indent=4, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


# ----------------------------------------------------------------------------- containers (jobs)


@command("stats", "stats [OPTIONS] [CONTAINER...]", "Display a live stream of container(s) resource usage statistics", (
    Flag("no-stream", kind=BOOL, help="Disable streaming stats and only pull the first result"),
    Flag("no-trunc", kind=BOOL, help="Do not truncate output"),
    Flag("all", "a", BOOL, help="Show all containers (default shows just running)"),
    FORMAT,
), aliases=("container stats",))
def stats(session: Session, values: dict, args: list[str]) -> int:
    api = session.api
    if args:
        jobs = [_job(api, ref) for ref in args]
    else:
        from ..client.api import list_query

        states = None if values["all"] else [JobState.RUNNING.value, JobState.SUSPENDED.value]
        jobs = api.list_all(list_query(states, newest_first=True))
    fields = {
        "Container": ("CONTAINER", lambda s: s["ref"]),
        "ID": ("CONTAINER ID", lambda s: s["id"]),
        "Name": ("NAME", lambda s: s["name"]),
        "CPUPerc": ("CPU %", lambda s: s["cpu"]),
        "MemUsage": ("MEM USAGE / LIMIT", lambda s: s["mem"]),
        "MemPerc": ("MEM %", lambda s: s["memperc"]),
        "NetIO": ("NET I/O", lambda s: s["net"]),
        "BlockIO": ("BLOCK I/O", lambda s: s["block"]),
        "PIDs": ("PIDS", lambda s: s["pids"]),
    }
    fmt = values["format"] or "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
    refs = args or [j["id"] for j in jobs]
    while True:
        rows = [_stats_row(ref, job, api.stats(job["id"])["stats"]) for ref, job in zip(refs, jobs)]
        _print_table(session, fmt, rows, fields)
        if values["no_stream"]:
            return 0
        # docker streams until every named container has stopped (or forever, for all running)
        jobs = [api.info(j["id"]) for j in jobs]
        if all(JobState(j["state"]) in FINAL_STATES for j in jobs) and jobs:
            return 0
        time.sleep(1.0)


def _stats_row(ref: str, job: dict, raw: dict | None) -> dict:
    row = {"ref": ref, "id": job["id"], "name": job["name"] or job["id"]}
    if not raw:  # not running: docker prints zeros for a stopped container
        return {**row, "cpu": "0.00%", "mem": "0B / 0B", "memperc": "0.00%", "net": "0B / 0B", "block": "0B / 0B", "pids": "0"}
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    cpu_percent = cpu_delta / system_delta * online * 100.0 if cpu_delta > 0 and system_delta > 0 else 0.0
    memory = raw.get("memory_stats") or {}
    mem_stats = memory.get("stats") or {}
    # docker's "usage minus cache": cgroup v2 reports inactive_file, v1 total_inactive_file
    used = memory.get("usage", 0) - mem_stats.get("inactive_file", mem_stats.get("total_inactive_file", 0))
    limit = memory.get("limit", 0)
    net_rx = sum(n.get("rx_bytes", 0) for n in (raw.get("networks") or {}).values())
    net_tx = sum(n.get("tx_bytes", 0) for n in (raw.get("networks") or {}).values())
    blk = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    read = sum(e.get("value", 0) for e in blk if e.get("op", "").lower() == "read")
    write = sum(e.get("value", 0) for e in blk if e.get("op", "").lower() == "write")
    return {
        **row,
        "cpu": f"{cpu_percent:.2f}%",
        "mem": f"{binary_size(max(used, 0))} / {binary_size(limit)}",
        "memperc": f"{(used / limit * 100.0) if limit else 0.0:.2f}%",
        "net": f"{human_size(net_rx)} / {human_size(net_tx)}",
        "block": f"{human_size(read)} / {human_size(write)}",
        "pids": str((raw.get("pids_stats") or {}).get("current", 0)),
    }


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

    params = {"grace": float(values["time"])} if values["time"] is not None else {}

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


# ----------------------------------------------------------------------------- the engine


@command("version", "version [OPTIONS]", "Show the Docker version information", (FORMAT,), max_args=0)
def version(session: Session, values: dict, args: list[str]) -> int:
    from .. import __version__

    engine = session.api.engine()["version"]
    client = {"Platform": {"Name": "Conveyor docker stand-in"}, "Version": __version__,
              "ApiVersion": engine.get("ApiVersion", ""), "GoVersion": "", "GitCommit": "", "Os": sys.platform,
              "Arch": engine.get("Arch", ""), "BuildTime": "", "Context": "conveyor"}
    data = {"Client": client, "Server": engine}
    if values["format"]:
        _print_template(session, values["format"], data)
        return 0
    lines = [
        "Client:", f" Version:           {__version__} (Conveyor docker stand-in)", f" API version:       {client['ApiVersion']}",
        f" OS/Arch:           {client['Os']}/{client['Arch']}", f" Context:           {client['Context']}", "",
        f"Server: {engine.get('Platform', {}).get('Name', '')}".rstrip(),
    ]
    for component in engine.get("Components") or []:
        lines.append(f" {component.get('Name')}:")
        lines.append(f"  Version:          {component.get('Version')}")
        for key, value in (component.get("Details") or {}).items():
            lines.append(f"  {key + ':':<18}{value}")
    session.out("\n".join(lines) + "\n")
    return 0


@command("info", "info [OPTIONS]", "Display system-wide information", (FORMAT,), aliases=("system info",), max_args=0)
def info(session: Session, values: dict, args: list[str]) -> int:
    engine = session.api.engine()["info"]
    if values["format"]:
        _print_template(session, values["format"], engine)
        return 0
    keys = ("ID", "Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped", "Images",
            "ServerVersion", "Driver", "CgroupDriver", "CgroupVersion", "KernelVersion", "OperatingSystem",
            "OSType", "Architecture", "NCPU", "MemTotal", "DockerRootDir", "Name")
    lines = ["Client:", " Context:    conveyor", " Debug Mode: false", "", "Server:"]
    lines += [f" {key}: {engine.get(key)}" for key in keys if key in engine]
    session.out("\n".join(lines) + "\n")
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


def _print_table(session: Session, fmt: str, rows: list[dict], fields: dict[str, tuple[str, Callable]]) -> None:
    getters = {name: (lambda row, get=get: get(row)) for name, (_, get) in fields.items()}
    try:
        template = Template(fmt)
        session.out(template.render([Fields(r, getters) for r in rows], {n: h for n, (h, _) in fields.items()}))
    except TemplateError as exc:
        raise DockerError(f"template parsing error: {exc.problem}") from None


def _print_template(session: Session, fmt: str, data: Any) -> None:
    try:
        session.out(Template(fmt).execute(data) + "\n")
    except TemplateError as exc:
        raise DockerError(f"template parsing error: {exc.problem}") from None


def _int_arg(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DockerError(f'invalid argument "{value}" for "{flag}" flag: strconv.ParseInt: parsing "{value}": invalid syntax') from None


def _has_tag_or_digest(name: str) -> bool:
    return "@" in name or ":" in name.rpartition("/")[2]


def canonical_reference(name: str) -> str:
    """docker's fully qualified name: busybox -> docker.io/library/busybox:latest."""
    if not _has_tag_or_digest(name):
        name += ":latest"
    first, slash, _ = name.partition("/")
    if not slash or not (("." in first or ":" in first) or first == "localhost"):
        name = "docker.io/" + ("library/" if not slash else "") + name
    return name


__all__ = ["canonical_reference", "container_document", "go_json"]
