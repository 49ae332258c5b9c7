"""Images and the engine, as docker prints them: `pull`, `images`, `load`, `version`, `info`.

The images are the engine's: the agent passes its documents through (routers/engine.py), and
a pull is checked against the caller's policy as a job's image is.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from typing import Callable

from ..cli.humanize import human_duration, human_size
from ..errors import ImageNotFound
from .commands import FORMAT, DockerError, Session, command, one_line, print_table, print_template
from .flags import BOOL, LIST, VALUE, Flag

# ----------------------------------------------------------------------------- images


@command("pull", "pull [OPTIONS] NAME[:TAG|@DIGEST]", "Download an image from a registry", (
    Flag("quiet", "q", BOOL, help="Suppress verbose output"),
    Flag("disable-content-trust", kind=BOOL, help="Skip image verification (always skipped)"),
    Flag("all-tags", "a", BOOL, unsupported="pull each tag by name"),
    Flag("platform", kind=VALUE, unsupported="images are pulled for the node's own platform"),
), aliases=("image pull",), min_args=1, max_args=1)
def pull(session: Session, values: dict, args: list[str]) -> int:
    name = args[0]
    if not has_tag_or_digest(name) and not values["quiet"]:
        session.out("Using default tag: latest\n")
    try:
        for line in _pulled(session, name, values["quiet"]):
            session.out(line)
    except ImageNotFound as exc:  # the registry's words, as docker prints them
        raise DockerError(f"Error response from daemon: {one_line(exc.detail)}") from None
    session.out(canonical_reference(name) + "\n")
    return 0


def _pulled(session: Session, name: str, quiet: bool):
    for message in session.api.pull(name):
        if not quiet and not message.get("progress"):
            # docker prints a non-terminal pull without its progress bars
            yield (f"{message['id']}: " if message.get("id") else "") + message.get("status", "") + "\n"


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
    print_table(session, values["format"] or default, rows, fields)
    return 0


def _image_rows(image: dict) -> list[dict]:
    """docker images' rows of one image: one per tag (<none> when it has none)."""
    base = {"Id": image["Id"], "Created": image.get("Created", 0), "Size": image.get("Size", 0),
            "SharedSize": image.get("SharedSize", -1), "Containers": image.get("Containers", -1)}
    digests: dict[str, str] = {}  # repository -> its digest (docker shows a tag the digest of its own repository)
    for item in image.get("RepoDigests") or []:
        repo, _, digest = item.partition("@")
        digests.setdefault(repo, digest)
    tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
    if not tags:
        repo = next(iter(digests), "<none>")
        return [{**base, "Repository": repo, "Tag": "<none>", "Digest": digests.get(repo, "<none>")}]
    rows = []
    for tag in tags:
        repo, _, name = tag.rpartition(":")
        rows.append({**base, "Repository": repo, "Tag": name, "Digest": digests.get(repo, "<none>")})
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
    import tempfile

    path = values["input"]
    if path is None:
        if sys.stdin.isatty():
            raise DockerError("requested load from stdin, but stdin is empty")
        with tempfile.NamedTemporaryFile(prefix="conveyor-load-", suffix=".tar") as spool:
            # read once: the archive's manifest says what it tags, then it goes to the agent
            while chunk := sys.stdin.buffer.read(1 << 20):
                spool.write(chunk)
            spool.flush()
            return _load(session, spool.name, values["quiet"])
    if not os.path.isfile(path):
        raise DockerError(f"open {path}: no such file or directory")
    return _load(session, path, values["quiet"])


def _load(session: Session, path: str, quiet: bool) -> int:
    tags = _archive_tags(path)
    result = session.api.load_image(path)
    if quiet:
        return 0
    if tags:  # docker names what the archive tagged, not every tag the image has here
        session.out("".join(f"Loaded image: {tag}\n" for tag in tags))
    else:
        session.out("".join(f"Loaded image ID: {image['image_id']}\n" for image in result["images"]))
    return 0


def _archive_tags(path: str) -> list[str]:
    """The RepoTags of a `docker save` archive's manifest.json (none if it has none)."""
    import tarfile

    try:
        with tarfile.open(path) as archive:
            member = archive.extractfile("manifest.json")
            manifest = json.load(member) if member else []
    except (tarfile.TarError, KeyError, ValueError, OSError):
        return []  # not ours to judge: the engine says what is wrong with it
    return [tag for entry in manifest for tag in entry.get("RepoTags") or []]


def _go_local_time(stamp: float) -> str:
    return datetime.fromtimestamp(int(stamp)).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z")


# ----------------------------------------------------------------------------- the engine


@command("version", "version [OPTIONS]", "Show the Docker version information", (FORMAT,), max_args=0)
def version(session: Session, values: dict, args: list[str]) -> int:
    from .. import __version__

    engine = session.api.engine()["version"]
    api_version = engine.get("ApiVersion", "")
    client = {"Platform": {"Name": "Conveyor docker stand-in"}, "Version": __version__, "APIVersion": api_version,
              "DefaultAPIVersion": api_version, "GoVersion": "", "GitCommit": "", "Os": sys.platform,
              "Arch": engine.get("Arch", ""), "BuildTime": "", "Context": "conveyor"}
    # docker's template sees Go's field names (APIVersion), the engine's JSON says ApiVersion
    server = {**engine, "APIVersion": api_version, "MinAPIVersion": engine.get("MinAPIVersion", "")}
    data = {"Client": client, "Server": server}
    if values["format"]:
        print_template(session, values["format"], data)
        return 0
    lines = [
        "Client:", f" Version:           {__version__} (Conveyor docker stand-in)", f" API version:       {api_version}",
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
        print_template(session, values["format"], engine)
        return 0
    keys = ("ID", "Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped", "Images",
            "ServerVersion", "Driver", "CgroupDriver", "CgroupVersion", "KernelVersion", "OperatingSystem",
            "OSType", "Architecture", "NCPU", "MemTotal", "DockerRootDir", "Name")
    lines = ["Client:", " Context:    conveyor", " Debug Mode: false", "", "Server:"]
    lines += [f" {key}: {engine.get(key)}" for key in keys if key in engine]
    session.out("\n".join(lines) + "\n")
    return 0


# ----------------------------------------------------------------------------- references


def has_tag_or_digest(name: str) -> bool:
    return "@" in name or ":" in name.rpartition("/")[2]


def canonical_reference(name: str) -> str:
    """docker's fully qualified name: busybox -> docker.io/library/busybox:latest."""
    if not has_tag_or_digest(name):
        name += ":latest"
    first, slash, _ = name.partition("/")
    if not slash or not (("." in first or ":" in first) or first == "localhost"):
        name = "docker.io/" + ("library/" if not slash else "") + name
    return name
