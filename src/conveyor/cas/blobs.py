"""The :class:`BlobStore`: blobs written atomically under their sha256 and verified on every
read; filesets frozen from host paths, captured from a tar stream (through ``pipeline``) and
restored under a target directory without following anything planted there."""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import stat
import tarfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from .checks import CasError, CorruptBlob, UnsafePath, check_digest, check_path
from .fileset import Entry, Fileset
from .pipeline import CHUNK, BlobWriter, Forward, ReadAhead, discard, hash_through, write_all


def _load_syncfs():
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None


_syncfs = _load_syncfs()


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
                write_all(fd, chunk)
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
            discard(fd, tmp_name)

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
        """Read a tar stream (a backend's read_archive) into blobs and build a fileset. Nothing is
        written to disk but blobs: regular files are kept; directories are implied; symlinks,
        hard links, devices and any member whose path is absolute or has '..' are refused
        (listed under ``skipped``, never followed)."""
        entries: dict[str, Entry] = {}
        skipped: list[dict] = []
        # Blobs are written unsynced and made durable by one sync() before the fileset (and
        # so before anything that names them) is stored: the same guarantee, one flush.
        # tarfile's own stream mode ("r|") copies every block through a joined buffer (3x
        # slower than the socket); a forward-only seekable view lets "r:" read it directly.
        # The stream is read ahead in one thread and the blob files written in another, so
        # the engine keeps sending while this thread hashes (see pipeline.py).
        ahead, writer = ReadAhead(stream), BlobWriter(self.tmp)
        try:
            put = functools.partial(hash_through, writer=writer, path_of=self.path)
            _capture_members(Forward(io.BufferedReader(ahead, CHUNK)), strip_top, entries, skipped, put)
        except BaseException:
            writer.close(abort=True)
            raise
        else:
            writer.close()
        finally:
            ahead.close()
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
        linked = False
        if link and not e.mode & 0o7111:  # blobs are 0444: link only what needs no other mode
            self.check(e.digest)  # hash once: the link shares the verified inode
            try:
                os.link(self.path(e.digest), tmp, dst_dir_fd=dir_fd)
                linked = True
            except OSError as exc:  # another filesystem (a cluster's shared directory): copy
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
        if not linked:
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


def _capture_members(stream: BinaryIO, strip_top: bool, entries: dict[str, Entry], skipped: list[dict], put) -> None:
    """The tar's members into ``entries`` (each regular file stored by ``put``) or ``skipped``."""
    with tarfile.open(fileobj=stream, mode="r:") as tar:
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
            digest, size = put(tar.extractfile(member))
            entries[name] = Entry(name, digest, size, member.mode & 0o7777)
