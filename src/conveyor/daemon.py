"""One supervisor per state directory: the lock that elects it, the wake-up signal that
submitters send it, and the background process the CLI starts when none is running."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import ConveyorError
from .home import Home


class SupervisorLock:
    """An exclusive flock on ``supervisor.lock``; the file holds the owner's pid.

    The kernel drops the lock when its process dies, however it dies, so a SIGKILLed
    supervisor never leaves a stale lock behind."""

    def __init__(self, home: Home):
        self.path = home.root / "supervisor.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held_here(self) -> bool:
        return self._fd is not None

    def holder(self) -> int | None:
        """The pid of the process holding the lock, or None when nobody does."""
        if self._fd is not None:
            return os.getpid()
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = Path(self.path).read_text().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def _wake_address(home: Home) -> str:
    # Linux abstract socket: no file to clean up and no 108-byte path limit.
    digest = hashlib.sha256(str(home.root).encode()).hexdigest()[:24]
    return f"\0conveyor-wake-{digest}"


class WakeReceiver:
    """The supervisor's end: a datagram socket submitters poke after queueing work."""

    def __init__(self, home: Home):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(_wake_address(home))

    def wait(self, timeout: float) -> bool:
        self._sock.settimeout(timeout)
        try:
            self._sock.recv(64)
        except (TimeoutError, socket.timeout):
            return False
        except OSError:
            return False
        self._sock.setblocking(False)
        try:  # one wake-up serves any number of pokes sent meanwhile
            while self._sock.recv(64):
                pass
        except OSError:
            pass
        return True

    def poke(self) -> None:
        wake(None, address=self._sock.getsockname())

    def close(self) -> None:
        self._sock.close()


def wake(home: Home | None, address: str | bytes | None = None) -> None:
    """Tell the supervisor of ``home`` there is new work. Harmless if none is listening."""
    addr = address if address is not None else _wake_address(home)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"!", addr)
        except OSError:
            pass


def ensure_supervisor(home: Home, timeout: float = 15.0) -> int:
    """Start ``conveyor serve`` in the background unless a supervisor already holds the
    state directory; return the supervisor's pid."""
    lock = SupervisorLock(home)
    pid = lock.holder()
    if pid:
        return pid
    log = open(home.root / "supervisor.log", "ab")
    subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--home", str(home.root), "serve"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,  # outlives the CLI and its terminal
        close_fds=True,
    )
    log.close()
    from .agent import socket_answers, socket_path

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = lock.holder()
        if pid and socket_answers(socket_path(home.root)):  # supervising and serving the API
            return pid
        time.sleep(0.05)
    tail = (home.root / "supervisor.log").read_text(errors="replace")[-2000:]
    raise ConveyorError(f"the background supervisor did not start within {timeout:g}s; its log says:\n{tail}")


def stop_supervisor(home: Home, timeout: float = 30.0) -> int | None:
    """SIGTERM the supervisor (jobs keep running) and wait for it to let go of the lock."""
    lock = SupervisorLock(home)
    pid = lock.holder()
    if not pid or pid < 0:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and lock.holder():
        time.sleep(0.05)
    return pid
