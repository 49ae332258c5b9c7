"""Failing clearly, end to end: every error the CLI can meet is one line that says what happened
and what to do, exit code 125, no Python traceback, and nothing half-made (no job row, no
container). And an agent whose state directory is removed notices and stops.

Real processes (the console script, `conveyor serve`) against the real engine. What the
machine must not lose is never touched: "engine down" is an unreachable DOCKER_HOST, a full
disk is a tiny tmpfs of the test's own, and an unwritable directory is chmod (run without
CAP_DAC_OVERRIDE when the tests run as root, which would write anyway).
"""

from __future__ import annotations

import inspect
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor import Client, Executor, JobSpec
from conveyor.agent.server import WATCH_INTERVAL
from conveyor.home import Home
from conveyor.interface import ExecutorInterface
from helpers import CONVEYOR, Cli, SupervisorProcess, eventually

AGENT_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ conveyor (INFO|WARNING) ")
# Without these, root writes into a chmod 555 directory anyway.
NO_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search"]


@pytest.fixture
def cli(fresh_cli):
    """These tests arrange the state directory (or start their own agent) before the first
    command: no agent may run yet."""
    return fresh_cli


def conveyor(cli: Cli, *args: str, env: dict | None = None, prefix: list[str] = (), timeout: float = 60):
    return subprocess.run(
        [*prefix, CONVEYOR, *args], stdin=subprocess.DEVNULL, capture_output=True, env=cli.env(env), timeout=timeout
    )


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 125 and exactly one line on stderr, `conveyor: ...`, holding every one of ``words``.
    (`serve` may have logged what it did before it failed: its log lines are not counted.)"""
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert proc.returncode == 125, (proc.returncode, err)
    lines = [line for line in err.strip().splitlines() if not AGENT_LOG_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("conveyor: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def echo(cli: Cli) -> tuple[str, ...]:
    return ("--network", "none", cli.image, "echo", "hi")


def nothing_made(cli: Cli) -> None:
    """No job row and no container for the state directory (read from the store itself: the
    CLI may be the thing that cannot start)."""
    if (cli.home / "conveyor.db").exists():
        with Executor(cli.home, supervise=False) as view:
            assert view.list() == []
    assert cli.containers() == []


def run_without_override(cli: Cli, *args: str) -> subprocess.CompletedProcess:
    return conveyor(cli, *args, prefix=NO_OVERRIDE if os.geteuid() == 0 else [])


class Agent(SupervisorProcess):
    def start(self) -> "Agent":
        """Started and serving its API (the socket made, the token written)."""
        super().start()
        eventually("the agent answers", Client(self.home).ping, timeout=30)
        return self


@pytest.fixture
def agent(state_dir, tmp_path, cli):
    """`conveyor serve` on the test's state directory (SIGKILLed afterwards if still running)."""
    sup = Agent(state_dir, tmp_path)
    try:
        yield sup
    finally:
        sup.stop()


# ----------------------------------------------------------------------------- a removed state directory


def test_run_in_a_recreated_state_directory_while_the_old_agent_runs(cli, agent, state_dir):
    """Prevents: after the state directory was removed and made again while its agent still ran,
    every `conveyor run` there died with a traceback (OSError: Address already in use, binding
    the wake socket) and exit 1. Now the run works at once, and the old agent goes away."""
    agent.start()
    shutil.rmtree(state_dir)
    state_dir.mkdir()

    proc = conveyor(cli, "run", *echo(cli))
    assert "Traceback" not in proc.stderr.decode(), proc.stderr.decode()
    assert (proc.returncode, proc.stdout) == (0, b"hi\n"), proc.stderr.decode()
    eventually(f"the old agent gone; its log:\n{agent.log_path}", lambda: agent.proc.poll() is not None, timeout=WATCH_INTERVAL + 10)
    assert agent.proc.returncode == 0, agent.log()


def test_agent_whose_state_directory_is_removed_stops_and_its_job_runs_on(cli, agent, state_dir, docker_client):
    """Prevents: an agent whose state directory was removed ran on forever, serving a store
    nobody could read and holding the names a new agent there needs. Now it notices within a
    few seconds, says so in its log and stops cleanly; its running job keeps running in the
    engine, and `serve --status` on the directory made again says no agent runs."""
    agent.start()
    job_id = cli.submit(cli.image, "sleep", "60")
    container_id = cli.until(job_id, "Running")["container_id"]
    executor_id = cli.executor_id

    shutil.rmtree(state_dir)
    started = time.monotonic()
    assert agent.proc.wait(timeout=WATCH_INTERVAL + 10) == 0, agent.log()
    assert time.monotonic() - started < WATCH_INTERVAL + 10
    assert f"the state directory {state_dir} was removed; stopping this agent" in agent.log()
    assert "Traceback" not in agent.log(), agent.log()
    try:
        assert docker_client.containers.get(container_id).status == "running"
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"conveyor.executor={executor_id}"}):
            c.remove(force=True)

    state_dir.mkdir()
    status = conveyor(cli, "serve", "--status")
    assert (status.returncode, status.stdout.decode().strip()) == (3, f"no agent runs for {state_dir}")


def _hold_wake_socket(home: Path) -> subprocess.Popen:
    """A process of our own that holds the state directory's wake-up socket (a supervisor whose
    supervisor.lock was removed looks like this)."""
    code = (
        "import socket, sys, time\n"
        "from conveyor.daemon import _wake_address\nfrom conveyor.home import Home\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        f"s.bind(_wake_address(Home({str(home)!r})))\nprint('bound', flush=True)\ntime.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"bound\n"
    return proc


def test_wake_socket_held_by_another_process_is_one_line_naming_it(cli, state_dir):
    """Prevents: a supervisor that found the state directory's wake-up socket taken died with
    a Python traceback (and `submit`, which starts one in the background, waited 15 s and then
    printed that agent's whole log). Now `run` and `submit` say in one line which process holds
    it and how to stop it, and exit 125; `run` records nothing."""
    holder = _hold_wake_socket(state_dir)
    try:
        line = one_line_error(conveyor(cli, "run", *echo(cli)), f"process {holder.pid}", f"kill {holder.pid}")
        assert "wake-up socket" in line
        nothing_made(cli)
        started = time.monotonic()
        line = one_line_error(conveyor(cli, "submit", *echo(cli)), "could not start", f"kill {holder.pid}")
        assert time.monotonic() - started < 10, "it waited for an agent that had given up"
    finally:
        holder.kill()
        holder.wait()


def test_submit_when_no_agent_can_start_queues_nothing(cli, state_dir):
    """Prevents: `conveyor submit` said the agent could not start, yet left a job queued behind
    that message, to start at some later, unannounced time."""
    holder = _hold_wake_socket(state_dir)
    try:
        one_line_error(conveyor(cli, "submit", *echo(cli)), "could not start", f"kill {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    nothing_made(cli)


def test_a_job_finalized_while_the_supervisor_closes_pokes_harmlessly(state_dir):
    """Prevents: `conveyor run` printing "finalizing job ... failed" and a traceback (OSError:
    Bad file descriptor) now and then: a job finalized while its supervisor closed poked the
    scheduler's wake-up socket after it was closed."""
    from conveyor.daemon import WakeReceiver

    receiver = WakeReceiver(Home(state_dir))
    receiver.close()
    receiver.poke()  # raised OSError [Errno 9]


# ----------------------------------------------------------------------------- the agent


def test_stale_agent_socket_is_replaced_not_fatal(cli, state_dir):
    """Prevents: an agent.sock left by a dead agent (nothing listening) made every command fail
    to connect. `run` runs, and `submit` starts a new agent that replaces the socket."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(state_dir / "agent.sock"))
    stale.close()  # the file stays, nobody listens

    proc = conveyor(cli, "run", *echo(cli))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"hi\n", b"")
    job_id = cli.submit(cli.image, "echo", "again")
    assert cli.until(job_id, "Done")["exit_code"] == 0
    assert Client(state_dir).ping()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_agent_address_pointing_nowhere_is_one_line(cli, where, tmp_path):
    """Prevents: CONVEYOR_HOST naming an address where no agent listens ended in a traceback
    from the HTTP client. Now it is one line naming the address, exit 125."""
    url = f"http://127.0.0.1:{_closed_port()}" if where == "tcp" else f"unix://{tmp_path}/nobody.sock"
    for args in (("run", *echo(cli)), ("ps",)):
        one_line_error(conveyor(cli, *args, env={"CONVEYOR_HOST": url}), url)
    nothing_made(cli)


def test_agent_address_pointing_nowhere_says_what_to_do(cli):
    """Prevents: "cannot reach the agent at URL: [Errno 111] Connection refused" left the user
    guessing whether to start an agent or fix the address."""
    url = f"http://127.0.0.1:{_closed_port()}"
    one_line_error(conveyor(cli, "run", *echo(cli), env={"CONVEYOR_HOST": url}), url, "CONVEYOR_HOST", "conveyor serve")


def test_wrong_token_is_one_line_and_records_nothing(cli, agent):
    """Prevents: a wrong CONVEYOR_TOKEN (the agent answers 401) ending in a traceback, or in a
    job half-submitted. Now it is one line naming the token file to use, exit 125."""
    agent.start()
    for args in (("run", *echo(cli)), ("submit", *echo(cli)), ("ps",)):
        one_line_error(conveyor(cli, *args, env={"CONVEYOR_TOKEN": "not-the-token"}), "token", "agent.token")
    nothing_made(cli)


def test_tcp_address_taken_is_one_line_and_leaves_no_agent(cli, state_dir):
    """Prevents: `conveyor serve --tcp PORT` on a port another process listens on ended in a
    traceback (OSError: Address already in use). Now it is one line naming the address and what
    to do, exit 125, and no agent.sock, agent.json or lock holder is left behind."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        one_line_error(conveyor(cli, "serve", "--tcp", str(port)), f"127.0.0.1:{port}", "another process uses that port", "--tcp")
    assert not (state_dir / "agent.sock").exists() and not (state_dir / "agent.json").exists()
    status = conveyor(cli, "serve", "--status")
    assert status.returncode == 3, status.stdout


# ----------------------------------------------------------------------------- the state directory


def test_unwritable_state_directory_is_one_line(cli, state_dir, tmp_path):
    """Prevents: a state directory the user cannot write (chmod) ending every command in a
    sqlite3 traceback ("attempt to write a readonly database"), and a state directory that
    cannot be created in a PermissionError traceback."""
    cli.ok("ps")  # made, with its store
    cli.ok("serve", "--stop")  # each command below must start the agent, in a directory it cannot write
    state_dir.chmod(0o555)
    try:
        for args in (("run", *echo(cli)), ("submit", *echo(cli)), ("ps",), ("serve",)):
            one_line_error(run_without_override(cli, *args), f"{state_dir} is not writable", f"chmod -R u+w {state_dir}")
    finally:
        state_dir.chmod(0o755)
    nothing_made(cli)

    parent = tmp_path / "locked"
    parent.mkdir(mode=0o555)
    elsewhere = Cli(parent / "home", cli.docker, cli.image)
    one_line_error(run_without_override(elsewhere, "run", *echo(cli)), f"{parent}/home cannot be created", f"make {parent} writable")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs of the test's own (root only), and a way to fill it up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root) to simulate a full disk")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, name: str) -> Path:
    filler = disk / name
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    assert os.statvfs(disk).f_bavail == 0
    return filler


def test_full_disk_is_one_line_and_records_nothing(small_disk, docker_client, test_image, tmp_path):
    """Prevents: a full disk under the state directory ending in a sqlite3 traceback ("disk I/O
    error", "database or disk is full"), with the agent answering 500 and a half-written job.
    Now, with and without an agent running, it is one line saying the disk is full and what to
    do, exit 125, and no job row or container."""
    home = small_disk / "home"
    home.mkdir()
    cli = Cli(home, docker_client, test_image)
    agent = Agent(home, tmp_path)
    try:
        agent.start()
        fillers = [_fill(small_disk, "filler-1")]
        for args in (("submit", *echo(cli)), ("run", *echo(cli))):  # through the agent
            one_line_error(conveyor(cli, *args), f"{home} is on a full disk", "free some space")
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=30) == 0, agent.log()
        fillers.append(_fill(small_disk, "filler-2"))  # what the agent's store gave back on exit
        for args in (("run", *echo(cli)), ("submit", *echo(cli))):  # no agent: the CLI cannot start one there
            one_line_error(conveyor(cli, *args), f"{home} is on a full disk", "free some space")
        for filler in fillers:
            filler.unlink()
        nothing_made(cli)
    finally:
        agent.stop()
        for c in cli.containers():
            c.remove(force=True)


def test_engine_down_is_one_line_and_records_nothing(cli):
    """Prevents: an unreachable container engine (DOCKER_HOST pointing nowhere) ending in a
    traceback from the engine SDK, or in a job recorded that can never start. Now `run`,
    `submit` and `serve` say in one line that the engine cannot be reached and what to do."""
    down = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    for args in (("run", *echo(cli)), ("submit", *echo(cli)), ("serve",)):
        one_line_error(conveyor(cli, *args, env=down), "cannot reach the Docker engine", "DOCKER_HOST")
    nothing_made(cli)


# ----------------------------------------------------------------------------- the Python API


def _takes_job_ref(name: str) -> str | None:
    """The parameter of ExecutorInterface.<name> that names a job or array, if it has one."""
    params = list(inspect.signature(getattr(ExecutorInterface, name)).parameters)[1:2]
    return params[0] if params and params[0] in ("ref", "job", "refs") else None


REF_METHODS = sorted(n for n in dir(ExecutorInterface) if not n.startswith("_") and callable(getattr(ExecutorInterface, n))
                     and _takes_job_ref(n))
OPTIONAL_REF = {"events", "verify"}  # None there means every job
SPEC_METHODS = ["ensure_image", "submit", "submit_array", "start", "run"]
EXTRA_ARGS = {
    "read_output": ("/out/file",), "restore_outputs": ("/tmp/nowhere",), "submit_array": (0, 1),
    "resize": (30, 120), "attach_stdin": (io.BytesIO(b""),), "exec": (["true"],), "open_exec": (["true"],),
    "open_port": (80,),
}


def _call(api, name: str, value):
    method = getattr(api, name)
    if _takes_job_ref(name) == "job":
        return method(job=value)
    if _takes_job_ref(name) == "refs":
        return method([value])
    return method(value, *EXTRA_ARGS.get(name, ()))


def test_wrong_arguments_raise_type_errors_that_say_what_was_expected(ex, state_dir, test_image):
    """Prevents: a JobSpec passed where a job id belongs (``future(spec)``) failing with an
    AttributeError from deep inside the store, and an empty id matching some job as a prefix.
    Every method of the Executor and the Client that takes a job (or array) reference says,
    naming itself, what it takes; every one that takes a spec says how to make one."""
    assert len(REF_METHODS) > 25, REF_METHODS  # every job method of the interface, read from it
    spec = JobSpec(image=test_image, command=["true"])
    kept = ex.submit(spec, hold=True)  # an empty prefix would match it
    client = Client(state_dir)  # the checks come before any request: no agent needed
    for api in (ex, client):
        for name in REF_METHODS:
            takes = "an array id" if "array" in name else "a lease id" if name.startswith("lease_") else "a job id"
            if name.startswith("lease_"):  # a JobSpec is no lease: no hint
                with pytest.raises(TypeError, match=rf"^{name}\(\) takes a lease id \(str\): a JobSpec was given$"):
                    _call(api, name, spec)
            elif name == "wait_any":
                with pytest.raises(TypeError, match=r"^wait_any\(\) takes job ids \(a list of str\): a JobSpec was given; put the ids in a list$"):
                    api.wait_any(spec)
            else:
                with pytest.raises(TypeError, match=rf"^{name}\(\) takes {takes} \(str\): a JobSpec was given; submit it first$"):
                    _call(api, name, spec)
            if name not in OPTIONAL_REF:
                with pytest.raises(TypeError, match=rf"^{name}\(\) takes .*: None was given$"):
                    _call(api, name, None)
            with pytest.raises(ValueError, match=rf"^{name}\(\) takes .*: an empty string was given$"):
                _call(api, name, "")
        for name in SPEC_METHODS:
            with pytest.raises(TypeError, match=rf"^{name}\(\) takes a JobSpec: a str was given; build one with JobSpec"):
                getattr(api, name)(kept, *EXTRA_ARGS.get(name, ()))
    job = ex.info(kept)
    with pytest.raises(TypeError, match=rf"^cancel\(\) takes a job id \(str\): a Job was given; pass its id \('{kept}'\)$"):
        ex.cancel(job)
    assert [j.id for j in ex.list()] == [kept] and ex.info(kept).state.value == "QueuedHeld"
