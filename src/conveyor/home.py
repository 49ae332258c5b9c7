"""The state directory: where the store, logs and the executor's identity live, and what is
wrong with it when it cannot be written."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import StateDirUnusable

DEFAULT_HOME = "~/.local/share/conveyor"


class Home:
    """Paths inside one state directory (``CONVEYOR_HOME`` or ``~/.local/share/conveyor``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        chosen = root or os.environ.get("CONVEYOR_HOME") or DEFAULT_HOME
        self.root = Path(chosen).expanduser().resolve()
        with writing(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(exist_ok=True)

    @property
    def db(self) -> Path:
        return self.root / "conveyor.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def job_logs(self, job_id: str) -> Path:
        return self.logs / job_id

    @property
    def cas(self) -> Path:
        """The content store (README: Data): blobs by sha256."""
        return self.root / "cas"

    def executor_id(self) -> str:
        """Persistent identity: the same after every restart, so labels keep finding our
        containers. Created once, atomically, so two processes agree on it."""
        path = self.root / "executor-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        tmp = self.root / f".executor-id.{os.getpid()}"
        with writing(self.root):
            import secrets  # here: the CLI's start-up path imports this module

            tmp.write_text(secrets.token_hex(8) + "\n")
            try:
                os.link(tmp, path)  # fails if another process won the race
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()

    def identity(self, *names: str) -> tuple[tuple[int, int], ...] | None:
        """(device, inode) of the directory and of the files ``names`` in it: another value
        once one of them was removed or replaced, None while one is missing. One stat each."""
        try:
            return tuple((st.st_dev, st.st_ino) for st in map(os.stat, (self.root, *(self.root / n for n in names))))
        except OSError:
            return None


# ----------------------------------------------------------------------------- unusable

# What the kernel's errors mean for a state directory (StateDirUnusable.PROBLEMS).
_ERRNO_PROBLEMS = {
    errno.EACCES: "not_writable", errno.EPERM: "not_writable",
    errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read_only",
}
# SQLite's primary result codes that are about the file system (not a busy lock or bad SQL).
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 13, 14
# Less free space than this counts as a full disk once a write failed: SQLite alone needs 32 KiB
# for its shared-memory file, and says only "disk I/O error" when it cannot have them.
FULL_BELOW = 1 << 20


@contextmanager
def writing(root: Path) -> Iterator[None]:
    """An error of writing the state directory ``root`` comes out as StateDirUnusable, which
    says what happened and what to do; any other error passes unchanged."""
    try:
        yield
    except Exception as exc:
        error = unusable(root, exc)
        if error is None:
            raise
        raise error from exc


def unusable(root: Path, exc: BaseException) -> StateDirUnusable | None:
    """What is wrong with ``root`` when writing in it raised ``exc`` (an OSError, or SQLite's
    OperationalError, which often says just "disk I/O error"); None when ``exc`` is something
    else or the directory is fine."""
    problem = _errno_problem(root, exc) if isinstance(exc, OSError) else _sqlite_problem(root, exc)
    return None if problem is None else StateDirUnusable(str(root), problem)


def _errno_problem(root: Path, exc: OSError) -> str | None:
    problem = _ERRNO_PROBLEMS.get(exc.errno)
    if root.is_dir():
        return problem
    if root.exists():
        return "not_a_directory"
    if problem == "not_writable":
        return "cannot_create"  # its parent is not writable
    return "gone" if exc.errno == errno.ENOENT else problem


def _sqlite_problem(root: Path, exc: BaseException) -> str | None:
    import sqlite3  # loaded already wherever SQLite raised

    if not isinstance(exc, sqlite3.OperationalError):
        return None
    code = exc.sqlite_errorcode & 0xFF
    if code == _SQLITE_FULL:
        return "full"
    if code not in (_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN):
        return None
    # Read-only says the database file itself may be the one not writable.
    return _probe(root) or ("not_writable" if code != _SQLITE_IOERR else None)


def _probe(root: Path) -> str | None:
    """Find out by trying: is ``root`` there, does its disk have room, can a file be written?"""
    if not root.is_dir():
        return "gone"
    try:
        st = os.statvfs(root)
        if st.f_bavail * st.f_frsize < FULL_BELOW:
            return "full"
    except OSError:
        pass
    probe = root / f".probe.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            probe.unlink()
    except OSError as exc:
        return _ERRNO_PROBLEMS.get(exc.errno)
    return None
