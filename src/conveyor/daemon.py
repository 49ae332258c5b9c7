"""One supervisor per state directory: the lock that elects it, the wake-up signal that
submitters send it, and the agent the CLI starts in the background when none is running."""

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


def ensure_agent(root: Path, timeout: float = 30.0) -> None:
    """Make sure the agent of the state directory ``root`` answers on its socket, starting
    `conveyor serve` in the background (detached: it stays, like dockerd) when none does.
    Eight CLIs at once start one agent: the first to take ``agent.start.lock`` starts it,
    the others wait on that lock and then find it answering."""
    from .agent import socket_answers, socket_path

    sock = socket_path(root)
    if socket_answers(sock):
        return
    home = Home(root)
    with open(home.root / "agent.start.lock", "a") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)
        if socket_answers(sock):
            return
        lock = SupervisorLock(home)
        holder = lock.holder()
        if holder and not _is_agent(holder):
            raise ConveyorError(
                f"process {holder} supervises {home.root} but serves no API (an Executor embedded in a "
                "program): the CLI needs the agent; end that program, or give the CLI another --home"
            )
        proc = None if holder else _spawn_agent(home)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if socket_answers(sock):
                return
            if proc is not None and proc.poll() is not None:
                raise ConveyorError(f"the agent exited with code {proc.returncode} at start; {_log_tail(home)}")
            time.sleep(0.02)
    raise ConveyorError(f"the agent did not answer within {timeout:g}s; {_log_tail(home)}")


def _spawn_agent(home: Home) -> subprocess.Popen:
    with open(home.root / "supervisor.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", "--home", str(home.root), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives the CLI and its terminal
            close_fds=True,
        )


def _is_agent(pid: int) -> bool:
    """Whether the supervising process ``pid`` is an agent (`conveyor ... serve`), which will
    answer on the socket once it has started, rather than an Executor embedded in a program."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # gone or not ours to read: let the wait decide
    return b"serve" in argv


def _log_tail(home: Home) -> str:
    try:
        tail = (home.root / "supervisor.log").read_text(errors="replace")[-1500:].strip()
    except OSError:
        return "its log (supervisor.log) cannot be read"
    return f"the end of its log ({home.root / 'supervisor.log'}):\n{tail}" if tail else "its log is empty"


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
