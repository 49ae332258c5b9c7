"""The fileset manifest: :class:`Entry` (path, digest, size, mode) and :class:`Fileset`, whose
canonical JSON form (sorted keys, no spaces) is stored as a blob and named by its digest."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .checks import CasError, _check_tree, check_digest, check_path

FILESET_KIND = "fileset/1"


@dataclass(frozen=True)
class Entry:
    path: str
    digest: str
    size: int
    mode: int


class Fileset:
    def __init__(self, entries: dict[str, Entry], skipped: list[dict] | None = None):
        _check_tree(entries)
        self.entries = dict(sorted(entries.items()))
        self.skipped = skipped or []

    def to_bytes(self) -> bytes:
        doc: dict = {
            "conveyor": FILESET_KIND,
            "entries": {p: {"digest": e.digest, "size": e.size, "mode": e.mode} for p, e in self.entries.items()},
        }
        if self.skipped:
            doc["skipped"] = self.skipped
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Fileset":
        try:
            doc = json.loads(data)
        except ValueError:
            raise CasError("not a fileset manifest (not JSON)") from None
        if not isinstance(doc, dict) or doc.get("conveyor") != FILESET_KIND or not isinstance(doc.get("entries"), dict):
            raise CasError("not a fileset manifest")
        entries = {}
        for path, e in doc["entries"].items():
            check_path(path)
            try:
                entries[path] = Entry(path, check_digest(e["digest"]), int(e["size"]), int(e["mode"]) & 0o7777)
            except (KeyError, TypeError, ValueError):
                raise CasError(f"bad manifest entry for {path!r}") from None
        return cls(entries, doc.get("skipped"))

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries.values())
