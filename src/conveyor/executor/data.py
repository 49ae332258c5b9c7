"""Data (README: Data): a job's captured outputs, the content store's integrity, garbage
collection, and images shipped as files. Blobs live in ``<state dir>/cas`` by sha256; every
read re-hashes them."""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING, BinaryIO

from .. import faults
from ..faults import Point
from ..arguments import job_ref
from ..errors import JobNotFound
from .base import ExecutorBase

if TYPE_CHECKING:
    from ..cas import BlobStore


class DataMixin(ExecutorBase):
    _blobs: "BlobStore | None"

    @property
    def blobs(self) -> "BlobStore":
        from ..cas import BlobStore

        if self._blobs is None:
            self._blobs = BlobStore(self.home.cas)
        return self._blobs

    def filesets(self, ref: str, role: str = "output") -> dict[str, str]:
        """A job's filesets of one role: container path -> fileset digest."""
        job_ref("filesets", ref)
        rec = self._record(ref)
        return {t: d for _, _, t, d in self.store.filesets(rec.id, role)}

    def outputs(self, ref: str) -> list[dict]:
        """Every captured output file: output path, path inside it, size, digest, mode."""
        job_ref("outputs", ref)
        out = []
        for target, digest in self.filesets(ref).items():
            fs = self.blobs.fileset(digest)
            for path, e in fs.entries.items():
                out.append({"output": target, "fileset": digest, "path": f"{target}/{path}",
                            "size": e.size, "digest": e.digest, "mode": e.mode})
        return out

    def _output_entry(self, ref: str, path: str):
        path = "/" + path.strip("/")
        for target, digest in self.filesets(ref).items():
            if path == target or path.startswith(target + "/"):
                rel = path[len(target) + 1:]
                fs = self.blobs.fileset(digest)
                if rel in fs.entries:
                    return fs.entries[rel]
                if not rel and len(fs.entries) == 1:  # an output that was one file
                    return next(iter(fs.entries.values()))
        raise JobNotFound(ref, f"no captured output file {path!r}; see 'conveyor outputs {ref}'")

    def read_output(self, ref: str, path: str, out: BinaryIO | None = None) -> bytes | int:
        """One output file's bytes (verified); written to ``out`` instead when given."""
        job_ref("read_output", ref)
        entry = self._output_entry(ref, path)
        if out is not None:
            return self.blobs.copy_to(entry.digest, out)
        return self.blobs.read(entry.digest)

    def restore_outputs(self, ref: str, target: str | os.PathLike) -> list[str]:
        """Write every output fileset under ``target``: output /out lands in target/out.
        Nothing is written outside ``target``."""
        job_ref("restore_outputs", ref)
        written = []
        for out_path, digest in self.filesets(ref).items():
            dest = os.path.join(target, out_path.lstrip("/"))
            fs = self.blobs.restore(digest, dest)
            written += [os.path.join(dest, p) for p in fs.entries]
        return written

    def verify(self, ref: str | None = None) -> dict:
        """Re-hash blobs (a job's, or every blob with ``ref`` None) and report each corrupt
        or missing one with the jobs that reference it: {"checked": n, "bad": [...]}."""
        if ref is not None:
            job_ref("verify", ref)
        from ..cas import CasError

        rows = self.store.filesets(self._record(ref).id if ref else None)
        users: dict[str, set[str]] = {}
        wanted: set[str] = set()
        bad: dict[str, dict] = {}

        def flag(digest: str, problem: str, job_ids) -> None:
            item = bad.setdefault(digest, {"digest": digest, "problem": problem, "jobs": set()})
            item["jobs"].update(job_ids)

        for job_id, role, target, digest in rows:
            users.setdefault(digest, set()).add(job_id)
        for fs_digest, job_ids in list(users.items()):
            wanted.add(fs_digest)
            actual = self.blobs.hash_of(fs_digest)
            if actual != fs_digest:
                flag(fs_digest, "missing" if actual is None else "corrupt", job_ids)
                continue
            try:
                fs = self.blobs.fileset(fs_digest)
            except CasError:
                flag(fs_digest, "not a fileset", job_ids)
                continue
            for e in fs.entries.values():
                wanted.add(e.digest)
                if e.digest in bad:
                    bad[e.digest]["jobs"].update(job_ids)
                    continue
                actual = self.blobs.hash_of(e.digest)
                if actual != e.digest:
                    flag(e.digest, "missing" if actual is None else "corrupt", job_ids)
        checked = len(wanted)
        if ref is None:  # and every other blob in the store
            for digest, _ in self.blobs.all():
                if digest not in wanted:
                    checked += 1
                    actual = self.blobs.hash_of(digest)
                    if actual != digest:
                        flag(digest, "corrupt", ())
        return {"checked": checked, "bad": [{**b, "jobs": sorted(b["jobs"])} for b in bad.values()]}

    def _referenced(self) -> set[str]:
        """Every blob some job needs: its filesets and their files, plus digest inputs of
        specs (a queued job's inputs are also in job_filesets; this is belt and braces)."""
        from ..cas import CasError

        roots = {d for _, _, _, d in self.store.filesets()}
        for rec in self.store.list():
            roots.update(i.source for i in rec.spec.inputs if i.frozen)
        keep = set(roots)
        for digest in roots:
            try:
                keep.update(e.digest for e in self.blobs.fileset(digest).entries.values())
            except CasError:
                pass  # verify reports it; its files (if any survive) are not collected blindly
        return keep

    def gc(self, dry_run: bool = False, grace: float = 600.0) -> dict:
        """Remove blobs no job references. Blobs written in the last ``grace`` seconds are
        kept: a submit in progress has frozen its inputs but not yet recorded the job."""
        keep = self._referenced()
        now = time.time()
        removed, freed, kept = [], 0, 0
        for digest, mtime in list(self.blobs.all()):
            if digest in keep or now - mtime < grace:
                kept += 1
                continue
            size = self.blobs.path(digest).stat().st_size
            if not dry_run:
                if self._referenced_now(digest):
                    kept += 1
                    continue
                self.blobs.delete(digest)
                faults.reached(Point.BLOB_DELETED, digest)
            removed.append(digest)
            freed += size
        return {"removed": len(removed), "bytes": freed, "kept": kept, "dry_run": dry_run, "digests": removed}

    def _referenced_now(self, digest: str) -> bool:
        # a job submitted while gc ran: its fileset rows name the digest directly
        return bool(self.store.query("SELECT 1 FROM job_filesets WHERE digest=? LIMIT 1", (digest,)))

    def load_image(self, path: str | os.PathLike) -> dict:
        """Load an image tarball (docker save) into the engine and record its digests."""
        self.backend.require(None, "image_load", "load image tarballs")
        h = hashlib.sha256()

        def chunks(f):
            while data := f.read(1 << 20):
                h.update(data)
                yield data

        with open(path, "rb") as f:
            ids = self.backend.load_image(chunks(f))
        file_digest = "sha256:" + h.hexdigest()
        images = []
        for image_id in ids:
            tags = self.backend.image_tags(image_id)
            self.store.record_image(image_id, tags, file_digest, os.path.basename(str(path)))
            images.append({"image_id": image_id, "tags": tags})
        return {"file": str(path), "file_digest": file_digest, "images": images}
