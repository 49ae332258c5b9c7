"""`conveyor run -it` and `conveyor exec -it` in a real terminal (tmux), as a person types into it.

Each test starts a tmux server of its own (its own socket), types with send-keys and reads
the screen with capture-pane. They prevent what users met: a job's terminal without the
caller's window size (`stty size` failing inside), resizes not followed, Ctrl-C killing the
CLI instead of reaching the job, a terminal left in raw mode, and the CLI dying at exit with
"Fatal Python error: ... could not acquire lock for <stdin>" and exit code 134 instead of the
job's exit code.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from helpers import CONVEYOR

WAIT = 30


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: fails rather than skips)", pytrace=False)
    pytest.skip(reason)


class Terminal:
    """A tmux window of a given size running a shell, on a tmux server of its own."""

    def __init__(self, tmp_path, env: dict[str, str], width: int = 120, height: int = 30):
        if shutil.which("tmux") is None:
            _fail_or_skip("tmux is not installed; run scripts/ensure-docker")
        self.socket = str(tmp_path / f"tmux-{uuid.uuid4().hex[:8]}")
        self.env = env
        self.tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "sh")
        self.tmux("set-option", "-g", "window-size", "manual")

    def tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, env=self.env, timeout=20)
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    def type(self, text: str, enter: bool = True) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)
        if enter:
            self.tmux("send-keys", "-t", "t", "Enter")

    def key(self, name: str) -> None:
        self.tmux("send-keys", "-t", "t", name)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t", "-S", "-200")

    def wait_for(self, text: str, timeout: float = WAIT, after: int = 0) -> str:
        """Wait until ``text`` shows on the screen (at least ``after`` + 1 times)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if screen.count(text) > after:
                return screen
            assert time.monotonic() < deadline, f"{text!r} never showed; the screen:\n{screen}"
            time.sleep(0.1)

    def resize(self, width: int, height: int) -> None:
        self.tmux("resize-window", "-t", "t", "-x", str(width), "-y", str(height))

    def resize_and_see(self, width: int, height: int) -> None:
        """Resize the window; wait until `stty size` in the shell it runs says so (the CLI's
        SIGWINCH handler passes a resize on asynchronously)."""
        self.resize(width, height)
        deadline = time.monotonic() + WAIT
        while f"{height} {width}" not in self.screen():
            assert time.monotonic() < deadline, f"the terminal inside never got the new size:\n{self.screen()}"
            self.type("stty size")
            time.sleep(0.5)

    def close(self) -> None:
        """Kill what runs in the window first: a CLI left following its job would start the
        agent again once the test's teardown stops it (it reconnects, as it should)."""
        pane = subprocess.run(["tmux", "-S", self.socket, "list-panes", "-F", "#{pane_pid}"], capture_output=True, text=True)
        for pid in _descendants(int(pane.stdout.split()[0])) if pane.returncode == 0 and pane.stdout.strip() else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=20)


def _descendants(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry))
    return [d for child in children for d in (child, *_descendants(child))]


@pytest.fixture
def terminal(tmp_path, cli):
    env = {**cli.env(), "PS1": "$ ", "TERM": "xterm"}
    term = Terminal(tmp_path, env)
    term.type(f"stty -a > {tmp_path}/stty-before")
    yield term
    term.close()


def _settings_after(tmp_path) -> str:
    """What `stty -a` said in the shell after the CLI ended (the terminal it left behind)."""
    deadline = time.monotonic() + WAIT
    while not (tmp_path / "stty-after").exists() or not (tmp_path / "stty-after").read_text():
        assert time.monotonic() < deadline, "the shell after the CLI never wrote its terminal settings"
        time.sleep(0.1)
    return (tmp_path / "stty-after").read_text()


def _run_it(terminal: Terminal, cli, tmp_path, *args: str) -> None:
    terminal.type(
        f"{CONVEYOR} run -it --rm --network none {cli.image} {' '.join(args)}; echo EXIT=$?; stty -a > {tmp_path}/stty-after"
    )


def test_interactive_shell_has_the_window_size_and_follows_resizes(terminal, cli, tmp_path):
    _run_it(terminal, cli, tmp_path, "sh")
    terminal.wait_for("/ #")  # capture-pane drops the space after it
    terminal.type("stty size")
    terminal.wait_for("30 120")
    terminal.resize_and_see(100, 40)
    terminal.type("exit 3")
    terminal.wait_for("EXIT=3")
    assert "Fatal Python error" not in terminal.screen() and "Traceback" not in terminal.screen()


def test_keys_go_to_the_job_and_the_terminal_is_restored(terminal, cli, tmp_path):
    _run_it(terminal, cli, tmp_path, "sh")
    terminal.wait_for("/ #")  # capture-pane drops the space after it
    terminal.type("sleep 100")
    time.sleep(1)
    terminal.key("C-c")  # to the job's shell (its sleep ends), not to the CLI
    terminal.type("echo still-here $?")
    terminal.wait_for("still-here 130")
    terminal.type("cat")
    time.sleep(0.5)
    terminal.key("C-d")  # EOF for the job's cat, read through its terminal
    terminal.type("echo after-cat")
    terminal.wait_for("after-cat", after=1)
    terminal.key("C-d")  # EOF for the shell: the job ends
    screen = terminal.wait_for("EXIT=0")
    assert "Fatal Python error" not in screen and "Traceback" not in screen
    assert _settings_after(tmp_path) == (tmp_path / "stty-before").read_text()


def test_exit_code_of_a_command_run_with_a_terminal(terminal, cli, tmp_path):
    _run_it(terminal, cli, tmp_path, "sh", "-c", "'echo in-tty; exit 7'")
    screen = terminal.wait_for("EXIT=7")
    assert "in-tty" in screen and "Fatal Python error" not in screen


def test_exec_it_is_a_terminal_in_a_running_job(terminal, cli, tmp_path):
    """`conveyor exec -it JOB sh` must give a person a shell in the job as docker exec -it
    does: what is typed runs, the shell's terminal has the window's size and follows its
    resizes, Ctrl-C interrupts the command in the job (not the CLI), `exit 5` is the CLI's
    exit code, and the terminal is restored afterwards."""
    job = cli.submit(cli.image, "sleep", "300")
    cli.until(job, "Running")
    terminal.type(f"{CONVEYOR} exec -it {job} sh; echo EXIT=$?; stty -a > {tmp_path}/stty-after")
    terminal.wait_for("/ #")  # capture-pane drops the space after it
    terminal.type("echo typed-$((6 * 7))")
    terminal.wait_for("typed-42")
    terminal.type("stty size")
    terminal.wait_for("30 120")
    terminal.resize_and_see(100, 40)
    terminal.type("sleep 100")
    time.sleep(1)
    terminal.key("C-c")
    terminal.type("echo still-here $?")
    terminal.wait_for("still-here 130")
    terminal.type("exit 5")
    screen = terminal.wait_for("EXIT=5")
    assert "Fatal Python error" not in screen and "Traceback" not in screen

    def unsized(settings: str) -> str:  # all but the size, which the resize changed
        return re.sub(r"rows \d+; columns \d+;", "", settings)

    assert unsized(_settings_after(tmp_path)) == unsized((tmp_path / "stty-before").read_text())
    assert cli.info(job)["state"] == "Running"  # the job goes on: only the command ended
