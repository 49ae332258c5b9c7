"""`conveyor exec` (and Executor/Client ``exec``, ``open_exec``): a command in a running job, as
`docker exec` runs one, against the real engine, through the real agent and its WebSocket.
(The interactive terminal under tmux is in test_terminal.py.)
"""

from __future__ import annotations

import os

import pytest

from conveyor import Client, JobSpec
from conveyor.errors import AgentError, InvalidSpec, InvalidState, PolicyRefused
from helpers import AgentProcess, eventually

WAIT = 90


def _running(cli) -> str:
    """A job that runs long enough to exec into; its id."""
    job = cli.submit(cli.image, "sleep", "300")
    cli.until(job, "Running")
    return job


def _execs(cli, job: str) -> list[str]:
    """The exec records of a job's event log, as `conveyor events` prints them."""
    lines = cli.ok("events", "--job", job).splitlines()
    return [line for line in lines if "  exec  " in line]


def test_exit_codes_and_output_streams_are_the_commands_own(cli):
    """A script that runs `conveyor exec` must get the command's exit code (not 0 or 125 for
    every failure), its stdout and stderr apart, and docker's 126/127 for a program that
    cannot run or does not exist."""
    job = _running(cli)
    proc = cli.run("exec", job, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, b"out\n", b"err\n")
    proc = cli.run("exec", job, "true")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    proc = cli.run("exec", job, "no-such-program")
    assert proc.returncode == 127 and b"no-such-program" in proc.stdout + proc.stderr, proc
    proc = cli.run("exec", job, "/etc/passwd")
    assert proc.returncode == 126 and b"permission denied" in proc.stdout + proc.stderr, proc


def test_stdin_env_user_and_workdir(fresh_cli):
    """-i must feed our stdin to the command whole and end it with EOF (a 1 MiB upload that
    hangs or is cut short breaks `tar c . | conveyor exec -i JOB tar x`); without -i the
    command reads nothing; -e, -u and -w must reach the command as docker's do."""
    cli = fresh_cli
    job = _running(cli)
    data = os.urandom(1 << 20)
    proc = cli.run("exec", "-i", job, "sh", "-c", "wc -c; echo done", input=data)
    assert (proc.returncode, proc.stdout.split()) == (0, [b"1048576", b"done"]), proc.stderr
    proc = cli.run("exec", job, "cat", input=b"not for it\n")
    assert (proc.returncode, proc.stdout) == (0, b"")
    proc = cli.run("exec", "-e", "A=1", "-e", "FROM_SHELL", "-u", "1000", "-w", "/tmp", job,
                   "sh", "-c", 'echo "$A $FROM_SHELL $(id -u) $(pwd)"', env={"FROM_SHELL": "passed"})
    assert (proc.returncode, proc.stdout) == (0, b"1 passed 1000 /tmp\n"), proc.stderr
    proc = cli.run("exec", "-w", "relative", job, "true")
    assert proc.returncode == 125 and b"workdir" in proc.stderr and b"absolute" in proc.stderr, proc.stderr


def test_exec_into_a_job_that_is_not_running_says_why(fresh_cli):
    """Exec into a queued or finished job must be refused with exit 125 and a message that
    names the job's state and why no command can run there, not an engine error about a
    container id; nothing is recorded for it."""
    cli = fresh_cli
    held = cli.ok("submit", "--hold", cli.image, "true").strip()
    proc = cli.run("exec", held, "true")
    assert proc.returncode == 125
    assert f"cannot run a command in job {held}: it is QueuedHeld (it has not started" in proc.stderr.decode()
    done = cli.submit(cli.image, "true")
    cli.ok("wait", done)
    proc = cli.run("exec", done, "true")
    assert proc.returncode == 125
    assert (f"cannot run a command in job {done}: it is Done (exited, exit code 0; its container has stopped, and only a "
             "Running job can be reached)"
            in proc.stderr.decode()), proc.stderr
    assert _execs(cli, held) == [] and _execs(cli, done) == []


def test_every_exec_is_in_the_jobs_events(fresh_cli):
    """Who ran what in a job, when, and how it ended must be in the job's history (the
    audit trail of a shell opened in someone's job), on the CLI and the Python API alike, also
    when the caller is killed before the command ends."""
    cli = fresh_cli
    job = _running(cli)
    assert cli.run("exec", job, "sh", "-c", "exit 4").returncode == 4
    with Client(cli.home) as client:
        result = client.exec(job, ["sh", "-c", "cat; echo err >&2"], stdin=b"from python\n")
        assert (result.exit_code, result.stdout, result.stderr) == (0, b"from python\n", b"err\n")
        records = [t for t in client.events(job, since=0, follow=False) if t.substate == "exec"]
    assert [(t.from_state.value, t.to_state.value) for t in records] == [("Running", "Running")] * 2
    assert records[0].reason.startswith("exec by owner (") and records[0].reason.endswith(", exit 4): sh -c 'exit 4'")
    assert records[1].reason.endswith(", exit 0): sh -c 'cat; echo err >&2'")
    assert records[0].at < records[1].at
    assert len(_execs(cli, job)) == 2
    gone = cli.popen("exec", job, "sh", "-c", "echo begun; sleep 60")  # a caller killed mid-command
    gone.wait_for_line(b"begun", timeout=WAIT)
    gone.kill()
    last = eventually("the exec of the killed CLI is recorded", lambda: len(_execs(cli, job)) == 3 and _execs(cli, job)[-1])
    assert "its caller went away before it ended): sh -c 'echo begun; sleep 60'" in last


def test_embedded_executor_exec_and_its_terminal(ex, test_image):
    """The embedded Executor must run commands in its jobs as the agent does: exit codes,
    stdin, a terminal of the asked size, a clear refusal once the job ended."""
    job = ex.submit(JobSpec(image=test_image, command=["sleep", "300"], network="none"))
    ex.wait_started(job)
    assert ex.exec(job, ["sh", "-c", "exit 3"]).exit_code == 3
    assert ex.exec(job, ["tr", "a-z", "A-Z"], stdin=b"shout\n").stdout == b"SHOUT\n"
    with ex.open_exec(job, ["sh", "-c", "sleep 0.5; stty size"], tty=True, console_size=(33, 77)) as session:
        output = b"".join(chunk for _, chunk in iter(session.read, None))
        assert (session.wait(), output) == (0, b"33 77\r\n")
    with pytest.raises(InvalidSpec) as bad:
        ex.exec(job, [])
    assert bad.value.field == "command"
    ex.cancel(job, grace=0)
    with pytest.raises(InvalidState, match=r"it is Failed \(cancelled, exit code 137; its container has stopped"):
        ex.exec(job, ["true"])
    reasons = [t.reason for t in ex.events(job, since=0, follow=False) if t.substate == "exec"]
    assert len(reasons) == 3 and all(r.startswith("exec by owner (") for r in reasons), reasons


@pytest.fixture
def agent(state_dir, test_image):
    a = AgentProcess(state_dir, tcp_allow_owner=False).start()
    yield a
    a.stop()


def test_a_tokens_policy_allows_or_refuses_exec(agent, fresh_cli, state_dir, tmp_path, test_image):
    """A named token must not open a shell in jobs unless its policy says `exec: true`, and
    then only in a job its policy admits (not in the owner's job with a host directory); the refusal
    names the rule, the token and the policy; no token at all is a 401. An exec allowed is
    recorded under the token's name."""
    cli = fresh_cli
    plain = cli.submit(test_image, "sleep", "300")
    (tmp_path / "host").mkdir()
    mounted = cli.submit("-v", f"{tmp_path / 'host'}:/host:ro", test_image, "sleep", "300")
    for job in (plain, mounted):
        cli.until(job, "Running")
    guest = cli.ok("token", "create", "guest").strip()  # the node's default policy: no exec
    policy = tmp_path / "shell.yaml"
    policy.write_text("exec: true\nothers_jobs: control\n")  # the jobs here are the owner's
    shell = cli.ok("token", "create", "shell", "--policy", str(policy)).strip()

    with pytest.raises(PolicyRefused) as refused:
        Client(url=agent.url, token=guest).exec(plain, ["true"])
    assert (refused.value.rule, refused.value.token, refused.value.policy) == ("exec", "guest", None)
    proc = cli.run("exec", plain, "true", env={"CONVEYOR_TOKEN": guest})
    assert proc.returncode == 125
    assert "refused by policy rule 'exec' of token 'guest' (the built-in default policy)" in proc.stderr.decode()

    assert Client(url=agent.url, token=shell).exec(plain, ["sh", "-c", "exit 6"]).exit_code == 6
    with pytest.raises(PolicyRefused) as refused:
        Client(url=agent.url, token=shell).exec(mounted, ["true"])
    assert (refused.value.rule, refused.value.token) == ("mounts.allowed_host_paths", "shell")
    assert "only a job this policy admits may be reached (running commands inside jobs)" in str(refused.value)

    with pytest.raises(AgentError) as unauthorized:
        Client(url=agent.url, token="not-a-token").exec(plain, ["true"])
    assert unauthorized.value.status == 401
    assert [line.split("exec by ", 1)[1][:5] for line in _execs(cli, plain)] == ["shell"]
    assert _execs(cli, mounted) == []
