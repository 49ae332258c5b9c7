"""The CLI is a client of its state directory's agent: started once however many CLIs ask at
the same moment, and survived by the CLI when it goes away mid-command.

Each test prevents a failure users met: eight workflow steps starting at once and racing to
start agents (tracebacks, lost output); a killed `conveyor run` leaving its container running;
an agent restart leaving a foreground `run`, a `wait` or a `logs -f` waiting forever or losing
output.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from helpers import CONVEYOR, eventually

WAIT = 90


def _agent_pid(cli) -> int | None:
    status = cli.run("serve", "--status")
    if status.returncode != 0:
        return None
    return int(re.search(rb"agent pid (\d+) ", status.stdout).group(1))


def _kill_agent(cli) -> int:
    pid = _agent_pid(cli)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # gone, or already replaced: a CLI that was following it may start the next agent before
    # a status poll (a CLI start of its own, slow on a busy machine) finds none running
    eventually("the agent is gone", lambda: _agent_pid(cli) != pid)
    return pid


def test_eight_clis_at_once_start_one_agent(fresh_cli):
    """Eight `conveyor run`s on a fresh state directory: one agent, every output intact."""
    cli = fresh_cli
    assert _agent_pid(cli) is None

    def one(i: int) -> subprocess.CompletedProcess:
        return cli.run("run", "--rm", "--network", "none", cli.image, "sh", "-c", f"echo out-{i}; echo err-{i} >&2; exit {i}")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for i, proc in enumerate(results):
        assert proc.returncode == i, (i, proc.stderr)
        assert proc.stdout == f"out-{i}\n".encode() and proc.stderr == f"err-{i}\n".encode(), (i, proc.stdout, proc.stderr)
    agents = [line for line in (cli.home / "supervisor.log").read_text().splitlines() if "supervising" in line]
    assert len(agents) == 1, agents
    assert "already supervises" not in (cli.home / "supervisor.log").read_text()


def test_a_killed_client_leaves_no_job_running(cli):
    """`kill -9` of a foreground `conveyor run` (a workflow engine killed, a CI job aborted):
    the agent sees its connection go, cancels the job and removes its container."""
    run = cli.popen("run", "--network", "none", cli.image, "sh", "-c", "echo started; sleep 300")
    run.wait_for_line(b"started", timeout=WAIT)
    job = cli.jobs()[0]
    run.kill()
    done = cli.until(job["id"], "Failed", timeout=WAIT)
    assert done["substate"] == "cancelled"
    eventually("the container is removed", lambda: cli.containers() == [])


def test_a_closed_pipe_cancels_the_job(cli):
    """`conveyor run ... | head -1`: once nobody reads the output, the job is cancelled too
    (it would otherwise write into the void until its end)."""
    shell = f"{CONVEYOR} run --network none {cli.image} sh -c 'while true; do echo line; sleep 0.1; done' | head -1"
    out = subprocess.run(["sh", "-c", shell], capture_output=True, env=cli.env(), timeout=WAIT)
    assert out.stdout == b"line\n"
    job = cli.jobs()[0]
    assert cli.until(job["id"], "Failed", timeout=WAIT)["substate"] == "cancelled"


def test_run_goes_on_when_the_agent_is_killed_and_restarted(cli):
    """The agent SIGKILLed while a foreground run streams: the CLI starts the next agent,
    follows the same job from where it broke off (no line lost, none twice) and exits with
    the job's code. It never waits forever."""
    script = "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo line-$i; sleep 0.2; done; exit 4"
    run = cli.popen("run", "--network", "none", cli.image, "sh", "-c", script)
    run.wait_for_line(b"line-1", timeout=WAIT)
    _kill_agent(cli)
    code, out, err = run.finish(timeout=WAIT)
    assert code == 4, err
    assert out.split(b"\n")[:-1] == [f"line-{i}".encode() for i in range(1, 31)], (out, err)
    assert b"Traceback" not in err
    assert _agent_pid(cli) is not None  # started again, by the CLI


def test_wait_and_logs_follow_survive_an_agent_restart(cli):
    job_id = cli.submit(cli.image, "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo n$i; sleep 0.5; done; exit 2")
    follow = cli.popen("logs", "-f", job_id)
    wait = cli.popen("wait", "--json", job_id)
    follow.wait_for_line(b"n1", timeout=WAIT)
    _kill_agent(cli)
    code, out, err = follow.finish(timeout=WAIT)
    assert code == 0 and out == b"".join(f"n{i}\n".encode() for i in range(1, 9)), (out, err)
    code, out, err = wait.finish(timeout=WAIT)
    assert code == 2, err
    assert json.loads(out)["exit_code"] == 2


def test_a_command_without_an_agent_starts_it_and_it_stays(fresh_cli):
    """The first command starts the agent in the background (like dockerd, it stays), so
    jobs submitted by a CLI that has exited are still launched and recorded."""
    cli = fresh_cli
    assert _agent_pid(cli) is None
    job_id = cli.submit(cli.image, "sh", "-c", "sleep 1; echo later")
    pid = _agent_pid(cli)
    assert pid is not None
    assert cli.until(job_id, "Done", timeout=WAIT)["exit_code"] == 0
    assert cli.ok("logs", job_id) == "later\n"
    assert _agent_pid(cli) == pid
    time.sleep(0.5)


def test_an_idle_agent_stops_when_the_operator_asks_for_it(fresh_cli):
    """With `[agent] idle_exit` in config.toml the agent stops once nothing is live and no
    request came for that long; a running job or an open follow keeps it."""
    cli = fresh_cli
    (cli.home / "config.toml").write_text('[agent]\nidle_exit = "2s"\n')
    job_id = cli.submit(cli.image, "sh", "-c", "sleep 4; echo kept")
    pid = _agent_pid(cli)
    time.sleep(3)
    assert _agent_pid(cli) == pid  # its job is still live
    assert cli.until(job_id, "Done", timeout=WAIT)["exit_code"] == 0
    eventually("the idle agent stopped", lambda: _agent_pid(cli) is None, timeout=30)
    assert "idle for 2s with no live job" in (cli.home / "supervisor.log").read_text()
    assert cli.ok("logs", job_id) == "kept\n"  # the next command starts it again
