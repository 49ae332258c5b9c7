"""`conveyor serve`: the supervisor and the API in one process, one per state directory.

Listens on ``<state dir>/agent.sock`` (mode 0600) and, when asked, on TCP (127.0.0.1 unless
another address is given explicitly). SIGTERM, SIGINT and SIGHUP stop it gracefully; running
jobs keep running and the next agent re-attaches them.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ConveyorError
from ..home import Home, writing
from . import INFO_NAME, socket_path

if TYPE_CHECKING:
    from .dependencies import AgentState

log = logging.getLogger("conveyor.agent")

# What a running agent looks at, every WATCH_INTERVAL seconds, to notice that its state
# directory was removed (or replaced) under it: a few stats, nothing read.
WATCH_INTERVAL = 2.0
WATCHED = ("conveyor.db", "supervisor.lock")


def parse_tcp(text: str) -> tuple[str, int]:
    """``PORT`` (on 127.0.0.1), ``HOST:PORT`` or ``[IPv6]:PORT``."""
    text = text.strip()
    host, port = "127.0.0.1", text
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ConveyorError(f"--tcp {text!r}: use PORT (on 127.0.0.1), HOST:PORT or [IPV6]:PORT")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind_unix(path: Path) -> socket.socket:
    """The agent's unix socket, 0600 from the moment it exists. Called with the supervisor lock
    held, so a socket file already there is a dead agent's and is replaced."""
    if len(str(path).encode()) > 107:
        raise ConveyorError(f"the socket path {path} is too long for a unix socket (max 107 bytes); use a shorter --home")
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        with writing(path.parent):
            sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=512, reuse_port=False)
    except OSError as exc:
        raise tcp_refused(host, port, exc) from None
    sock.set_inheritable(True)
    return sock


def tcp_refused(host: str, port: int, exc: OSError) -> ConveyorError:
    """Why ``--tcp HOST:PORT`` cannot be listened on, and what to do instead."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConveyorError(f"cannot listen on {where}: another process uses that port; stop it or give --tcp another port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConveyorError(f"cannot listen on {where}: no network interface of this machine has that address; give --tcp one of its addresses")
    if exc.errno == errno.EACCES:
        return ConveyorError(f"cannot listen on {where}: ports below 1024 need privileges; give --tcp a port of 1024 or more")
    return ConveyorError(f"cannot listen on {where}: {exc.strerror or exc}; give --tcp another address")


def _write_info(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with writing(path.parent):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)


def read_info(root: Path) -> dict | None:
    try:
        return json.loads((root / INFO_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None


class StateDirWatch:
    """Notices, within ``interval`` seconds, that the state directory an agent serves was removed
    or replaced (the supervisor.lock at its path is no longer this process's), or lost its
    database; then logs why and calls ``on_gone()`` once.

    Such an agent serves nothing any more: its store is an unlinked file nobody else reads, and
    the directory now at that path needs an agent of its own, which this one must not stand in
    for (its socket answers for a path that is no longer its directory)."""

    def __init__(self, home: Home, on_gone: Callable[[], None], interval: float = WATCH_INTERVAL):
        from ..daemon import SupervisorLock

        self.home, self._on_gone, self.interval = home, on_gone, interval
        self._lock = SupervisorLock(home)  # a second look at the file: held by this process?
        self._first = home.identity(home.db.name)
        self._done = threading.Event()

    def start(self) -> "StateDirWatch":
        threading.Thread(target=self._watch, name="conveyor-state-dir-watch", daemon=True).start()
        return self

    def close(self) -> None:
        self._done.set()

    @property
    def ours(self) -> bool:
        """The path still names the directory this agent supervises (it holds its lock)."""
        return self._lock.holder() == os.getpid()

    def what_changed(self) -> str | None:
        if not self.home.root.is_dir():
            return f"the state directory {self.home.root} was removed"
        if not self.ours:
            return f"the state directory {self.home.root} was replaced, or its {self._lock.path.name} removed"
        if self._first is None or self.home.identity(self.home.db.name) != self._first:
            return f"{self.home.db} was removed or replaced"
        return None

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            why = self.what_changed()
            if why:
                log.warning("%s; stopping this agent (its running jobs keep running in the engine)", why)
                self._on_gone()
                return


def _idle_exit(state: "AgentState", after: float, stop: Callable[[], None]) -> None:
    """Stop the agent once it has had no live job and no request for ``after`` seconds."""
    from ..state import LIVE_STATES

    def watch() -> None:
        tick = min(5.0, after / 4)
        while not state.stopping:
            time.sleep(tick)
            quiet = state.requests == 0 and time.monotonic() - state.last_activity >= after
            if quiet and state.executor.count(states=LIVE_STATES) == 0:
                log.info("idle for %gs with no live job: stopping ([agent] idle_exit in config.toml)", after)
                stop()
                return

    threading.Thread(target=watch, name="conveyor-idle-exit", daemon=True).start()


def serve(home: str | os.PathLike | None, tcp: str | None = None, announce=print, tcp_allow_owner: bool = False) -> None:
    """Run the agent in the foreground until a signal. Raises ConveyorError when another
    process already supervises the state directory (naming its pid).

    The unix socket serves every token; the TCP listener serves named tokens only, and the
    owner's token too with ``tcp_allow_owner``."""
    import uvicorn

    from ..daemon import SupervisorLock
    from ..executor import Executor
    from .app import create_app
    from .dependencies import AgentState
    from .auth import token_path
    from .policy import PolicyFile
    from .tokens import Callers

    root = Home(home).root
    with writing(root):
        policy = PolicyFile(root)
    if policy.error:  # a broken node policy file stops the start, loudly
        raise ConveyorError(f"policy file: {policy.error}")
    tcp_addr = parse_tcp(tcp) if tcp else None

    stopping = {"signal": None}
    server_ref: dict = {}

    def on_signal(signum, frame):
        stopping["signal"] = signum
        state = server_ref.get("state")
        if state is not None:
            state.stopping = True  # the streams it cuts now must not cancel their jobs
        server = server_ref.get("server")
        if server is not None:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    ex = Executor(root, supervise=True)
    if not ex.supervising:
        holder = SupervisorLock(ex.home).holder()
        ex.close()
        raise ConveyorError(f"process {holder} already supervises {root}; stop it with 'conveyor serve --stop'")
    # From now on: the state directory removed under this agent stops it as a SIGTERM does.
    watch = StateDirWatch(ex.home, lambda: on_signal(signal.SIGTERM, None)).start()
    sockets: list[socket.socket] = []
    sock_file = socket_path(root)
    info_file = root / INFO_NAME
    try:
        with writing(root):
            callers = Callers(root, policy)
        sockets.append(bind_unix(sock_file))
        url = None
        if tcp_addr:
            host, port = tcp_addr
            if not _is_loopback(host):
                announce(f"conveyor: warning: listening on {host}:{port} beyond this machine; the token travels unencrypted (put TLS in front)")
            sockets.append(bind_tcp(host, port))
            bound = sockets[-1].getsockname()
            url = f"http://{'[' + host + ']' if ':' in host else host}:{bound[1]}"
        _write_info(info_file, {"pid": os.getpid(), "socket": str(sock_file), "url": url, "started_at": time.time()})
        state = server_ref["state"] = AgentState(
            executor=ex, callers=callers, policy=policy, unix_socket=str(sock_file), tcp_allows_owner=tcp_allow_owner,
        )
        if ex.scheduling.agent.idle_exit:
            _idle_exit(state, ex.scheduling.agent.idle_exit, lambda: on_signal(signal.SIGTERM, None))
        app = create_app(state)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=3, lifespan="on",
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        server_ref["server"] = server
        if stopping["signal"] is not None:
            return
        announce(
            f"conveyor: agent pid {os.getpid()} supervising {root}; API on unix:{sock_file}"
            + (f" and {url}; the dashboard on {url}/ui" if url else "") + f"; the owner's token in {token_path(root)}"
            + (" (not accepted on TCP: named tokens only, see 'conveyor token create')" if url and not tcp_allow_owner else "")
        )
        server.run(sockets=sockets)
    finally:
        for s in sockets:
            s.close()
        watch.close()
        if watch.ours:  # else these paths are another agent's now, or gone
            for path in (sock_file, info_file):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
        ex.close()
    announce("conveyor: agent stopped; running jobs keep running")
    # A request thread may still be blocked for a client that was following a job which
    # goes on running (its connection is closed already): nothing is left to do for it.
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main() -> None:  # python -m conveyor.agent.server [HOME] [TCP]
    try:
        serve(sys.argv[1] if len(sys.argv) > 1 else None, sys.argv[2] if len(sys.argv) > 2 else None)
    except ConveyorError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        sys.exit(125)


if __name__ == "__main__":
    main()
