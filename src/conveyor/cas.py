"""Content-addressed storage: blobs by sha256, filesets as manifests stored as blobs.

Layout under the state directory::

    cas/blobs/ab/cdef...   one file per blob, named by its sha256 (read-only, 0444)
    cas/tmp/               partial writes; renamed into blobs/ only when complete and synced

A blob is written to a temp file while it is hashed, fsynced, then renamed to its digest:
a crash leaves either no blob or a whole one, and the same content is stored once. Every
read hashes what it reads; a blob whose bytes do not match its name raises
:class:`CorruptBlob` and is never handed out as good data.

A fileset is ``{"conveyor": "fileset/1", "entries": {path: {"digest", "size", "mode"}}}`` in
canonical JSON (sorted keys, no spaces), stored as a blob; its digest names it. Paths are
relative, normalised, without ``..``: :func:`check_path` is the one gate, applied when a
manifest is built, when one is read, and again when it is restored.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .errors import ConveyorError

CHUNK = 1 << 20
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
FILESET_KIND = "fileset/1"


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


def _load_syncfs():
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None


_syncfs = _load_syncfs()


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


class BlobStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ writing

    def path(self, digest: str) -> Path:
        hexd = check_digest(digest)[7:]
        return self.blobs / hexd[:2] / hexd[2:]

    def put_stream(self, src: BinaryIO, sync: bool = True) -> tuple[str, int]:
        """Store the bytes read from ``src``; return (digest, size). Atomic and deduplicated."""
        h = hashlib.sha256()
        size = 0
        tmp_name = self.tmp / f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        fd = os.open(tmp_name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o444)
        try:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            if sync:
                os.fsync(fd)
            os.close(fd)
            fd = -1
            digest = "sha256:" + h.hexdigest()
            final = self.path(digest)
            if sync and final.exists():  # dedup: same content, stored once; touched for gc's grace
                os.utime(final)
                return digest, size
            # Unsynced (a batch that syncs once at its end): always rename, so a blob torn by
            # a crash before that sync is replaced when the batch is written again.
            final.parent.mkdir(exist_ok=True)
            os.rename(tmp_name, final)  # whole and synced, or not there at all
            tmp_name = None
            return digest, size
        finally:
            if fd >= 0:
                os.close(fd)
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except FileNotFoundError:
                    pass

    def sync(self) -> None:
        """Flush every write to the store's file system (one syncfs instead of an fsync per
        blob, for batches written with ``sync=False``)."""
        fd = os.open(self.blobs, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _syncfs is None or _syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream(io.BytesIO(data))[0]

    def put_file(self, path: str | os.PathLike, sync: bool = True) -> tuple[str, int]:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            return self.put_stream(f, sync=sync)

    # ------------------------------------------------------------------ reading (verified)

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def hash_of(self, digest: str) -> str | None:
        """What the stored blob really hashes to (None when missing)."""
        try:
            f = open(self.path(digest), "rb")
        except FileNotFoundError:
            return None
        with f:
            h = hashlib.sha256()
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return "sha256:" + h.hexdigest()

    def check(self, digest: str) -> None:
        actual = self.hash_of(digest)
        if actual != digest:
            raise CorruptBlob(digest, actual)

    def read(self, digest: str) -> bytes:
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise CorruptBlob(digest, None) from None
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise CorruptBlob(digest, actual)
        return data

    def copy_to(self, digest: str, out: BinaryIO) -> int:
        """Write the blob to ``out``: checked first, and again while copying."""
        self.check(digest)
        h = hashlib.sha256()
        n = 0
        with open(self.path(digest), "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                n += len(chunk)
        if "sha256:" + h.hexdigest() != digest:
            raise CorruptBlob(digest, "sha256:" + h.hexdigest())
        return n

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def all(self) -> Iterator[tuple[str, float]]:
        """(digest, mtime) of every stored blob."""
        for sub in sorted(self.blobs.iterdir()):
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                try:
                    yield f"sha256:{sub.name}{f.name}", f.stat().st_mtime
                except FileNotFoundError:
                    pass

    # ------------------------------------------------------------------ filesets

    def put_fileset(self, fs: Fileset) -> str:
        return self.put_bytes(fs.to_bytes())

    def fileset(self, digest: str) -> Fileset:
        return Fileset.from_bytes(self.read(digest))

    def freeze(self, source: str | os.PathLike) -> tuple[str, bool]:
        """Copy a host file or directory into the store; return (fileset digest, is_file).

        A file becomes a one-entry fileset named by its base name. In a directory, symlinks
        are followed only when they resolve to a regular file inside it; any other symlink
        (pointing outside, or to a directory) is refused."""
        src = Path(source)
        st = os.lstat(src)
        if stat.S_ISREG(st.st_mode):
            digest, size = self.put_file(src)
            return self.put_fileset(Fileset({src.name: Entry(src.name, digest, size, st.st_mode & 0o7777)})), True
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(str(src), "an input must be a regular file or a directory (not a symlink or device)")
        root = os.path.realpath(src)
        entries: dict[str, Entry] = {}
        for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
            rel_dir = os.path.relpath(dirpath, src)
            for name in sorted(dirnames):
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    raise UnsafePath(os.path.relpath(full, src), "symlinks to directories are not allowed in an input")
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                check_path(rel)
                lst = os.lstat(full)
                if stat.S_ISLNK(lst.st_mode):
                    real = os.path.realpath(full)
                    if not (real.startswith(root + os.sep) and os.path.isfile(real)):
                        raise UnsafePath(rel, "symlink points outside the input directory (or not to a file)")
                    digest, size = self.put_file(real, sync=False)
                    mode = os.stat(real).st_mode & 0o7777
                elif stat.S_ISREG(lst.st_mode):
                    digest, size = self.put_file(full, sync=False)
                    mode = lst.st_mode & 0o7777
                else:
                    raise UnsafePath(rel, "only regular files, directories and internal symlinks can be inputs")
                entries[rel] = Entry(rel, digest, size, mode)
        self.sync()  # every blob durable before the manifest that names them
        return self.put_fileset(Fileset(entries)), False

    # ------------------------------------------------------------------ capture from a tar stream

    def capture_tar(self, stream: BinaryIO, strip_top: bool = True) -> Fileset:
        """Read a tar stream (docker's get_archive) into blobs and build a fileset. Nothing is
        written to disk but blobs: regular files are kept; directories are implied; symlinks,
        hard links, devices and any member whose path is absolute or has '..' are refused
        (listed under ``skipped``, never followed)."""
        entries: dict[str, Entry] = {}
        skipped: list[dict] = []
        # Blobs are written unsynced and made durable by one sync() before the fileset (and
        # so before anything that names them) is stored: the same guarantee, one flush.
        # tarfile's own stream mode ("r|") copies every block through a joined buffer (3x
        # slower than the socket); a forward-only seekable view lets "r:" read it directly.
        with tarfile.open(fileobj=_Forward(stream), mode="r:") as tar:
            for member in tar:
                name = member.name
                if strip_top:
                    top, _, rest = name.partition("/")
                    if not rest:
                        if member.isdir():
                            continue
                        rest = top  # the output path was a file: keep its name
                    name = rest
                name = name.rstrip("/")
                try:
                    check_path(name)
                except UnsafePath as exc:
                    skipped.append({"path": member.name, "reason": str(exc)})
                    continue
                if member.isdir():
                    continue
                if not member.isreg():
                    kind = "symlink" if member.issym() else "hard link" if member.islnk() else "special file"
                    skipped.append({"path": name, "reason": f"{kind} not captured"})
                    continue
                f = tar.extractfile(member)
                digest, size = self.put_stream(f, sync=False)
                entries[name] = Entry(name, digest, size, member.mode & 0o7777)
        self.sync()
        try:
            return Fileset(entries, skipped)
        except UnsafePath as exc:
            raise CasError(str(exc)) from None

    # ------------------------------------------------------------------ restore

    def restore(self, digest: str, target: str | os.PathLike, link: bool = False) -> Fileset:
        """Write a fileset's files under ``target`` and nowhere else.

        Every path is checked before anything is written; directories are walked with
        O_NOFOLLOW relative to their parent's descriptor, so a symlink planted in the
        target cannot redirect a write; each file is written to a temp name, its content
        verified, then renamed into place. ``link`` hard-links blobs instead of copying
        (read-only files, for staging) when the mode allows it."""
        fs = self.fileset(digest)
        for path in fs.entries:
            check_path(path)
        os.makedirs(target, exist_ok=True)
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for path, e in fs.entries.items():
                *dirs, name = path.split("/")
                fd = root_fd
                opened = []
                try:
                    for d in dirs:
                        try:
                            os.mkdir(d, 0o755, dir_fd=fd)
                        except FileExistsError:
                            pass
                        try:
                            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                        except OSError as exc:
                            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                                raise UnsafePath(path, f"{d!r} in the target is a symlink or not a directory") from None
                            raise
                        opened.append(fd)
                    self._write_entry(e, fd, name, link)
                finally:
                    for o in opened:
                        os.close(o)
        finally:
            os.close(root_fd)
        return fs

    def _write_entry(self, e: Entry, dir_fd: int, name: str, link: bool) -> None:
        tmp = f".{name}.conveyor-{os.getpid()}-{time.monotonic_ns()}"
        if link and not e.mode & 0o7111:  # blobs are 0444: link only what needs no other mode
            self.check(e.digest)  # hash once: the link shares the verified inode
            os.link(self.path(e.digest), tmp, dst_dir_fd=dir_fd)
        else:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb", closefd=False) as out:
                    try:
                        self.copy_to(e.digest, out)
                    except BaseException:
                        os.unlink(tmp, dir_fd=dir_fd)
                        raise
                os.fchmod(fd, e.mode & 0o777)
            finally:
                os.close(fd)
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            os.unlink(tmp, dir_fd=dir_fd)
            raise


# ---------------------------------------------------------------------------- jobs and data
#
# The glue the executor, scheduler and supervisor use. Kept here so the data rules live in
# one module: inputs frozen at submit, staged read-only at launch, outputs captured at the end.


def freeze_inputs(spec, blobs: BlobStore):
    """Return ``spec`` with every host-path input replaced by the digest of its frozen copy.
    A digest input must name a fileset whose blobs are all present."""
    from .spec import Input
    from .errors import InvalidSpec

    if not spec.inputs:
        return spec
    frozen = []
    for i, item in enumerate(spec.inputs):
        field = f"inputs[{i}].source"
        if item.frozen:
            try:
                fs = blobs.fileset(item.source)
            except CasError as exc:
                raise InvalidSpec.single(field, item.source, f"not a stored fileset ({exc}); use an output digest from 'conveyor outputs ID --json'") from None
            missing = [p for p, e in fs.entries.items() if not blobs.has(e.digest)]
            if missing:
                raise InvalidSpec.single(field, item.source, f"the fileset's blobs for {missing[:3]} are missing; run 'conveyor verify --all'")
            if item.file and len(fs.entries) != 1:
                raise InvalidSpec.single(field, item.source, "file=true needs a fileset with exactly one file")
            frozen.append(item)
            continue
        try:
            digest, is_file = blobs.freeze(item.source)
        except FileNotFoundError:
            raise InvalidSpec.single(field, item.source, "no such file or directory on this host") from None
        except PermissionError:
            raise InvalidSpec.single(field, item.source, "not readable by Conveyor") from None
        except UnsafePath as exc:
            raise InvalidSpec.single(field, item.source, f"{exc}; copy the data into a plain directory") from None
        except OSError as exc:
            raise InvalidSpec.single(field, item.source, f"cannot read it: {exc.strerror or exc}") from None
        frozen.append(Input(source=digest, target=item.target, file=is_file))
    return spec.model_copy(update={"inputs": frozen})


def stage_inputs(spec, blobs: BlobStore, staging: Path) -> list:
    """Materialise a job's input filesets under ``staging`` (hard links from the store where
    the mode allows, else verified copies) and return the read-only bind mounts for them.
    Built in a temp directory and renamed: a crash mid-way leaves nothing half-staged."""
    from .spec import Mount

    mounts = []
    for n, item in enumerate(spec.inputs):
        dest = staging / str(n)
        if not dest.exists():
            tmp = staging / f".{n}.tmp-{os.getpid()}-{time.monotonic_ns()}"
            try:
                blobs.restore(item.source, tmp, link=True)
                os.chmod(tmp, 0o755)
                os.rename(tmp, dest)
            except BaseException:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
                raise
        source = dest
        if item.file:
            (name,) = blobs.fileset(item.source).entries
            source = dest / name
        mounts.append(Mount(type="bind", source=str(source), target=item.target, read_only=True))
    return mounts


def capture_outputs(backend, container_id: str, outputs: list[str], blobs: BlobStore) -> dict[str, str]:
    """Read each output path out of the (stopped) container into the store: target -> fileset
    digest. A path the job did not create is recorded as an empty fileset with a note."""
    result = {}
    for target in outputs:
        stream = backend.get_archive(container_id, target)
        if stream is None:
            fs = Fileset({}, [{"path": target, "reason": "not present in the container when the job ended"}])
        else:
            try:
                fs = blobs.capture_tar(stream)
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
        result[target] = blobs.put_fileset(fs)
    return result


class _Forward:
    """A read-only stream that can "seek" forward (by reading and discarding) and tell."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.pos = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n) if n is not None and n >= 0 else self.raw.read()
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self.pos
        elif whence != 0:
            raise io.UnsupportedOperation("only forward seeks from the start or the current position")
        if pos < self.pos:
            raise io.UnsupportedOperation(f"cannot seek back from {self.pos} to {pos} in a stream")
        while self.pos < pos:
            if not self.read(min(CHUNK, pos - self.pos)):
                break
        return self.pos
