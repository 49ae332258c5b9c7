"""One supervisor per state directory: the lock that elects it, the wake-up signal that
submitters send it, and the agent the CLI starts in the background when none is running."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConveyorError
from .home import Home, writing

if TYPE_CHECKING:
    import subprocess


class SupervisorLock:
    """An exclusive flock on ``supervisor.lock``; the file holds the owner's pid.

    The kernel drops the lock when its process dies, however it dies, so a SIGKILLed
    supervisor never leaves a stale lock behind."""

    def __init__(self, home: Home):
        self.path = home.root / "supervisor.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        with writing(self.path.parent):
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
    """A Linux abstract socket: no file to clean up and no 108-byte path limit. Named after the
    directory's path and inode, so a state directory removed and made again at the same path
    has another name: an agent of the old one that still runs does not hold the new one's."""
    try:
        st = os.stat(home.root)
        identity = f"{home.root}\0{st.st_dev}:{st.st_ino}"
    except OSError:
        identity = str(home.root)  # gone: nobody listens for it
    import hashlib  # here, as subprocess below: the CLI imports this module on every command

    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return f"\0conveyor-wake-{digest}"


class WakeReceiver:
    """The supervisor's end: a datagram socket submitters poke after queueing work."""

    def __init__(self, home: Home):
        address = self._address = _wake_address(home)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(address)
        except OSError as exc:
            self._sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            raise wake_address_taken(home, address) from None

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
        # By the address kept, not the socket's: a job finalized while the supervisor closes
        # pokes a closed socket, and getsockname() on it raised EBADF (a traceback in `run`).
        wake(None, address=self._address)

    def close(self) -> None:
        self._sock.close()


def wake_address_taken(home: Home, address: str) -> ConveyorError:
    """Another process holds the wake-up socket of ``home`` without holding its lock: a
    supervisor whose supervisor.lock was removed, say. Starting a second one would launch the
    same jobs twice."""
    pid = _abstract_socket_holder(address)
    who = f"process {pid} ({_command_of(pid)})" if pid else "another process"
    fix = f"stop that process (kill {pid})" if pid else "stop the conveyor process that still supervises it"
    return ConveyorError(
        f"cannot supervise {home.root}: {who} holds its wake-up socket but not its supervisor.lock "
        f"(was the lock file removed while it ran?); {fix} and try again"
    )


def _abstract_socket_holder(address: str) -> int | None:
    """The pid of a process with the abstract unix socket ``address`` open (Linux /proc; only
    processes this user may look into)."""
    name = "@" + address.lstrip("\0")
    try:
        with open("/proc/net/unix") as table:
            inodes = {fields[6] for fields in map(str.split, table) if len(fields) > 7 and fields[7] == name}
    except OSError:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                return int(pid)
        except OSError:
            continue  # gone meanwhile, or not ours to look into
    return None


def _command_of(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = " ".join(a.decode(errors="replace") for a in argv).split()  # one line, whatever the argv holds
    return " ".join(words)[:120]


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
    the others wait on that lock and then find it answering. An agent that cannot start
    raises a ConveyorError with the one line it said why."""
    from .agent import socket_answers, socket_path

    sock = socket_path(root)
    if socket_answers(sock):
        return
    home = Home(root)
    with writing(home.root):
        gate = open(home.root / "agent.start.lock", "a")
    with gate:
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
        log_path = home.root / "supervisor.log"
        started = None if holder else _spawn_agent(home, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if socket_answers(sock):
                return
            if started is not None and started[0].poll() is not None:  # it gave up
                raise ConveyorError(f"the background agent for {home.root} could not start: {_last_word(log_path, started[1])}")
            time.sleep(0.02)
    raise ConveyorError(f"the background agent for {home.root} did not answer within {timeout:g}s; see {log_path}")


def _spawn_agent(home: Home, log_path: Path) -> tuple[subprocess.Popen, int]:
    """`conveyor serve` in the background; with where its log was when it started."""
    import subprocess

    with writing(home.root):
        log = open(log_path, "ab")
        # A line of our own first: a full disk or a read-only directory is said here, in one
        # line, rather than by an agent that dies unable to write its log.
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} conveyor: starting the agent for {home.root}\n".encode())
        log.flush()
        os.fsync(log.fileno())
    with log:
        said_from = os.fstat(log.fileno()).st_size  # what this start writes comes after
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "--home", str(home.root), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives the CLI and its terminal
            close_fds=True,
        )
    return proc, said_from


def _is_agent(pid: int) -> bool:
    """Whether the supervising process ``pid`` is an agent (`conveyor ... serve`), which will
    answer on the socket once it has started, rather than an Executor embedded in a program."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # gone or not ours to read: let the wait decide
    return b"serve" in argv


def _last_word(log_path: Path, offset: int) -> str:
    """The error line a failed ``conveyor serve`` wrote to its log after ``offset``."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    said = [line.removeprefix("conveyor: ") for line in lines if line.startswith("conveyor: ")]
    if said:
        return said[-1]
    return f"{lines[-1] if lines else 'it exited without a word'} (see {log_path})"


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
