"""The content store's errors and its gates: a digest is ``sha256:`` and 64 lowercase hex
digits; a fileset path is relative and normalised, without ``..`` (:func:`check_path`, applied
when a manifest is built, when one is read and again when it is restored)."""

from __future__ import annotations

import re
from typing import Iterable

from ..errors import ConveyorError

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class CasError(ConveyorError):
    """A content-store problem (bad digest, missing or corrupt blob, unsafe path)."""


class CorruptBlob(CasError):
    def __init__(self, digest: str, actual: str | None):
        self.digest, self.actual = digest, actual
        what = "missing" if actual is None else f"content hashes to {actual}"
        super().__init__(f"blob {digest} is corrupt ({what}); run 'conveyor verify --all'")


class MissingBlob(CasError):
    def __init__(self, digest: str):
        self.digest = digest
        super().__init__(f"blob {digest} is not in the content store")


class UnsafePath(CasError):
    def __init__(self, path: str, why: str):
        self.path = path
        super().__init__(f"refused path {path!r}: {why}")


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise CasError(f"bad digest {digest!r}: use sha256: followed by 64 lowercase hex digits")
    return digest


def check_path(path: str) -> str:
    """A fileset path: relative, normalised, no '..', no '.', no empty part, no NUL."""
    if not isinstance(path, str) or not path:
        raise UnsafePath(str(path), "empty path")
    if "\0" in path:
        raise UnsafePath(path, "contains NUL")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path) or "\\" in path:
        raise UnsafePath(path, "absolute paths (and backslashes) are not allowed")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePath(path, "paths must be normalised, without '.', '..' or empty parts")
    return path


def _check_tree(paths: Iterable[str]) -> None:
    """No path may be both a file and a directory prefix of another one."""
    seen = set(paths)
    for p in seen:
        parts = p.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise UnsafePath(p, f"{'/'.join(parts[:i])!r} is a file and a directory at once")
