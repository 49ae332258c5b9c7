"""Plumbing the test files share: job specs, polling, the console script, and the
`conveyor serve` processes some tests start and kill. Fixtures built on these live in
conftest.py; this module holds only plain functions and classes, so a test file imports
what it uses by name (``from helpers import sh``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker.errors
import pytest

from conveyor import Client, JobSpec

# The installed console script, next to the interpreter that runs the tests.
CONVEYOR = str(Path(sys.executable).parent / "conveyor")
# Variables that would send a CLI run to some other agent than the test's own.
_AGENT_ENV = ("CONVEYOR_HOST", "CONVEYOR_TOKEN")


def sh(image: str, script: str, **kw) -> JobSpec:
    """A job that runs ``script`` with ``sh -c``; other JobSpec fields as keywords."""
    return JobSpec(image=image, command=["sh", "-c", script], **kw)


def eventually(what: str, check, timeout: float = 60, every: float = 0.1):
    """Poll ``check`` until it returns something truthy (which is returned); fail the test
    with ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(every)


def most_at_once(jobs) -> int:
    """The most of ``jobs`` that ran at the same moment (from their start and end times)."""
    edges = sorted([(j.started_at, 1) for j in jobs] + [(j.finished_at, -1) for j in jobs])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


# ----------------------------------------------------------------------------- the console script


class Cli:
    """Runs the console script against one state directory (never another agent) and looks
    at what the engine holds for it."""

    def __init__(self, home: Path, docker_client, image: str):
        self.home, self.docker, self.image = home, docker_client, image

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _AGENT_ENV}
        return {**env, "CONVEYOR_HOME": str(self.home), **(extra or {})}

    def run(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 90):
        return subprocess.run(
            [CONVEYOR, *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self.env(env),
            timeout=timeout,
        )

    def ok(self, *args: str, **kw) -> str:
        """Run; assert exit 0; return stdout as text."""
        proc = self.run(*args, **kw)
        assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout.decode()

    def popen(self, *args: str) -> "Streamed":
        return Streamed(
            subprocess.Popen(
                [CONVEYOR, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env(),
            )
        )

    def submit(self, *args: str) -> str:
        """`conveyor submit --network none ARGS`; returns the job id it printed."""
        job_id = self.ok("submit", "--network", "none", *args).strip()
        assert len(job_id) == 12 and all(c in "0123456789abcdef" for c in job_id), job_id
        return job_id

    def info(self, job_id: str) -> dict:
        return json.loads(self.ok("inspect", job_id))

    def until(self, job_id: str, state: str, timeout: float = 60) -> dict:
        """Poll `inspect` until the job is in ``state``; returns what inspect said."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.info(job_id)
            if job["state"] == state or time.monotonic() > deadline:
                assert job["state"] == state, job
                return job
            time.sleep(0.2)

    @property
    def executor_id(self) -> str | None:
        path = self.home / "executor-id"
        return path.read_text().strip() if path.exists() else None

    def containers(self) -> list:
        """Every container (any state) labelled with this state directory's executor id."""
        eid = self.executor_id
        if eid is None:
            return []
        # sparse: one list call, no per-container inspect (that 404s on a container in creation)
        return self.docker.containers.list(all=True, sparse=True, filters={"label": f"conveyor.executor={eid}"})

    def jobs(self) -> list[dict]:
        proc = self.run("ps", "-a", "--json")
        assert proc.returncode == 0, proc.stderr.decode()
        return json.loads(proc.stdout)

    def only_job(self) -> dict:
        jobs = self.jobs()
        assert len(jobs) == 1, jobs
        return jobs[0]


class Streamed:
    """A running CLI process whose stdout lines are read (with arrival times) by a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[tuple[float, bytes]] = []
        self.stderr = b""
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _read_stdout(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put((time.monotonic(), line))
        self.lines.put((time.monotonic(), None))

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    def wait_for_line(self, text: bytes, timeout: float) -> float:
        """Block until a stdout line equal to ``text`` arrives; returns its arrival time."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} not printed within {timeout}s; got {self.seen}")
            try:
                at, line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stdout closed before {text!r}; got {self.seen}, stderr {self.stderr!r}")
            self.seen.append((at, line))
            if line.rstrip(b"\r\n") == text:
                return at

    def finish(self, timeout: float) -> tuple[int, bytes, bytes]:
        """Wait for the process to exit; returns (exit code, all stdout, stderr)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"conveyor did not exit within {timeout}s")
        self._out.join(5)
        self._err.join(5)
        while True:
            try:
                at, line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append((at, line))
        return code, b"".join(line for _, line in self.seen), self.stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------------- `conveyor serve` processes


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


class SupervisorProcess:
    """`conveyor serve` for one state directory, started and SIGKILLed by the test; a fault
    point (``CONVEYOR_FAULT``, see ``conveyor/faults.py``) stops it at an exact step."""

    def __init__(self, home: Path, log_dir: Path):
        self.home, self.log_dir = home, log_dir
        self.fault_file = log_dir / "faults"
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"serve-{self.runs}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, fault: str | None = None) -> "SupervisorProcess":
        from conveyor.daemon import SupervisorLock
        from conveyor.home import Home

        assert self.proc is None or self.proc.poll() is not None, "the previous supervisor still runs"
        self.runs += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_FAULT")}
        if fault:
            env.update(CONVEYOR_FAULT=fault, CONVEYOR_FAULT_FILE=str(self.fault_file))
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "--home", str(self.home), "serve"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            )
        # Ready = it holds the lock and has reconciled the store against the engine.
        eventually(
            f"supervisor up and reconciled; log:\n{self.log_path}",
            lambda: self.proc.poll() is None and "reconciled in" in self.log()
            and SupervisorLock(Home(self.home)).holder() == self.proc.pid
            or self._died(),
        )
        return self

    def _died(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"supervisor exited with {self.proc.returncode}:\n{self.log()}", pytrace=False)
        return False

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def wait_fault(self, point: str, job_id: str) -> None:
        eventually(
            f"fault point {point} for {job_id}",
            lambda: self.fault_file.exists() and f"{point} {job_id}" in self.fault_file.read_text() or self._died(),
        )

    @property
    def threads(self) -> int:
        return int(_proc_status(self.proc.pid)["Threads"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class AgentProcess:
    """`conveyor --home HOME serve --tcp 127.0.0.1:0 --tcp-allow-owner` as a child process;
    ready once the agent it started answers a ping. The tests that use its TCP address play
    the owner from afar, hence the flag; ``tcp_allow_owner=False`` starts it without."""

    def __init__(self, home: Path, tcp_allow_owner: bool = True):
        self.home = home
        self.proc: subprocess.Popen | None = None
        self.log = home.parent / "agent.log"
        self.flags = ["--tcp-allow-owner"] if tcp_allow_owner else []

    def start(self, timeout: float = 60) -> "AgentProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "--home", str(self.home), "serve", "--tcp", "127.0.0.1:0", *self.flags],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log.read_text()}")
            info = self.info()
            if info and info.get("pid") == self.proc.pid and Client(self.home).ping():
                return self
            time.sleep(0.1)
        raise AssertionError(f"agent did not answer within {timeout}s:\n{self.log.read_text()}")

    def info(self) -> dict | None:
        try:
            return json.loads((self.home / "agent.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def url(self) -> str:
        return self.info()["url"]

    @property
    def token(self) -> str:
        return (self.home / "agent.token").read_text().strip()

    def http(self, token: str | None = ""):
        import httpx

        headers = {} if token is None else {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=90)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)


def untag(docker_client, repo: str) -> None:
    """Remove every tag and digest reference of ``repo`` from the engine."""
    for image in docker_client.images.list():
        for ref in [*image.tags, *image.attrs.get("RepoDigests", [])]:
            if ref.startswith(repo + ":") or ref.startswith(repo + "@"):
                try:
                    docker_client.images.remove(ref)
                except docker.errors.NotFound:
                    pass


def in_terminal(args: list[str], env: dict[str, str], timeout: float = 90, rows: int = 40, cols: int = 120):
    """Run ``args`` with a pseudo-terminal as its stdin, stdout and stderr, as in a person's
    terminal; (exit code, every byte it wrote there, escape sequences included)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm-256color"},
                            close_fds=True)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"{args} did not end within {timeout}s; it wrote {out[-2000:]!r}")
        return proc.wait(timeout=30), out
    finally:
        os.close(master)
