"""A job's files where this machine can read them directly: through a bind mount whose source
is a host directory (the process backend's outputs, a swarm job's outputs on the cluster's
shared directory). Docker reads files out of a container with its archive call; these backends
build the same tar from the host side."""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO


def under(path: str, target: str) -> bool:
    """``path`` is ``target`` or inside it."""
    return path == target or path.startswith(target.rstrip("/") + "/")


def mount_holding(mounts: list[dict], path: str) -> dict | None:
    """The deepest of ``mounts`` ({"source", "target"}) that holds ``path``; None if none does."""
    best = None
    for m in mounts:
        if under(path, m["target"]) and (best is None or len(m["target"]) > len(best["target"])):
            best = m
    return best


def host_path(mounts: list[dict], path: str) -> str:
    """Where the job's ``path`` is on the host: through the deepest mount that holds it, else
    the same path (a process job sees the host's filesystem)."""
    m = mount_holding(mounts, path)
    return path if m is None else m["source"] + path[len(m["target"].rstrip("/")):]


def tar_of(host: str, path: str, scratch: str | os.PathLike) -> BinaryIO | None:
    """A tar of the host file or directory ``host``, its top entry named after the last part of
    the job's ``path`` (as docker's archive call names it); None when it does not exist. Built in
    a temporary file under ``scratch``, so the caller reads a plain file."""
    if not os.path.lexists(host):
        return None
    out = tempfile.TemporaryFile(dir=scratch)
    with tarfile.open(fileobj=out, mode="w|") as tar:
        tar.add(host, arcname=os.path.basename(path.rstrip("/")) or ".")
    out.seek(0)
    return out


def fresh_dir(path: Path, mode: int) -> Path:
    """Make ``path`` (and its parents) with exactly ``mode``, whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def write_json(path: Path, data: dict) -> None:
    """Write-then-rename with fsync: a reader (on another node, too) sees a whole file or none."""
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
