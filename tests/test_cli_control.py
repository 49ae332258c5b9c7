"""End-to-end tests of the job-control verbs (submit, ps, wait, logs --timestamps, suspend,
resume, hold, release, cancel, rm, events) and of saved log times, against the real engine.

`conveyor submit` starts a background supervisor (the agent) for the state directory; the
fixture stops it and removes what the test's executor made.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import docker.errors
import pytest

from conveyor import Executor, JobSpec, JobState, Substate
from helpers import CONVEYOR, eventually

STAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (.*)$")


def _docker_logs(docker_client, container_id: str, **kw) -> bytes:
    return docker_client.api.logs(container_id, stream=False, **kw)


# ----------------------------------------------------------------------------- submit, wait, logs


def test_submit_wait_and_saved_timestamps_match_docker(cli):
    job_id = cli.submit(cli.image, "sh", "-c", "echo one; sleep 1; echo two; echo err >&2; exit 3")
    proc = cli.run("wait", job_id[:6])  # an abbreviated id
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.decode().split()[:2] == [job_id, "3"]

    job = cli.info(job_id)
    assert (job["state"], job["exit_code"]) == ("Failed", 3)
    # the plain log stays exactly the job's bytes
    assert cli.ok("logs", "--stdout", job_id) == "one\ntwo\n"
    out = cli.run("logs", "--timestamps", job_id)
    lines = out.stdout.splitlines()
    assert [STAMP.match(line).group(2) for line in lines] == [b"one", b"two"], out.stdout
    # the saved times are the engine's own: identical to `docker logs --timestamps`
    cid = job["container_id"]
    assert out.stdout == _docker_logs(cli.docker, cid, stdout=True, stderr=False, timestamps=True)
    assert out.stderr == _docker_logs(cli.docker, cid, stdout=False, stderr=True, timestamps=True)
    first, second = (STAMP.match(line).group(1) for line in lines)
    assert second > first  # the job slept between them
    tail = cli.run("logs", "-t", "--tail", "1", "--stdout", job_id)
    assert tail.stdout == lines[1] + b"\n"
    # saved as a side index next to the plain file
    assert (cli.home / "logs" / job_id / "stdout.times").exists()


def test_timestamps_of_a_running_job_and_of_a_tty_job(cli):
    job_id = cli.submit(cli.image, "sh", "-c", "echo early; sleep 60")
    cli.until(job_id, "Running")
    cid = cli.info(job_id)["container_id"]
    deadline = time.monotonic() + 30
    while b"early" not in (out := cli.run("logs", "-t", "--stdout", job_id).stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert STAMP.match(out.rstrip(b"\n")).group(2) == b"early", out
    assert out == _docker_logs(cli.docker, cid, stdout=True, stderr=False, timestamps=True)
    cli.ok("cancel", "--grace", "0", job_id)

    tty_id = cli.submit("-t", cli.image, "sh", "-c", "echo a; echo b")
    assert cli.run("wait", tty_id).returncode == 0
    tty_cid = cli.info(tty_id)["container_id"]
    saved = (cli.home / "logs" / tty_id / "stdout").read_bytes()
    assert saved == _docker_logs(cli.docker, tty_cid, stdout=True, stderr=False) == b"a\r\nb\r\n"
    stamped = cli.run("logs", "-t", tty_id).stdout
    assert stamped == _docker_logs(cli.docker, tty_cid, stdout=True, stderr=False, timestamps=True)


def test_idempotent_submit_and_first_failure_exit_code(cli):
    a = cli.submit("--idempotency-key", "nightly-1", cli.image, "true")
    assert cli.submit("--idempotency-key", "nightly-1", cli.image, "true") == a
    d = cli.submit("--digest-key", cli.image, "sh", "-c", "sleep 1; exit 4")
    assert cli.submit("--digest-key", cli.image, "sh", "-c", "sleep 1; exit 4") == d
    proc = cli.run("wait", "--json", a, d)
    assert proc.returncode == 4, proc.stderr
    ends = {e["id"]: e for e in map(json.loads, proc.stdout.splitlines())}
    assert ends[a]["exit_code"] == 0 and ends[d]["exit_code"] == 4


# ----------------------------------------------------------------------------- control


def test_hold_release_suspend_resume_cancel_rm(cli):
    job_id = cli.submit("--hold", "--name", "ctl", cli.image, "sh", "-c", "trap 'exit 9' TERM; while true; do sleep 0.2; done")
    assert cli.ok("ps", "--state", "queuedheld", "-q").split() == [job_id]
    assert cli.ok("ps", "--state", "Running", "-q").split() == []

    wrong = cli.run("suspend", "ctl")  # by name; a held job cannot be suspended
    assert wrong.returncode == 125 and b"QueuedHeld" in wrong.stderr, wrong.stderr

    assert cli.ok("release", job_id).split() == [job_id, "Queued"]
    cli.until(job_id, "Running")
    cid = cli.info(job_id)["container_id"]

    cli.ok("suspend", job_id)
    assert cli.info(job_id)["state"] == "Suspended"
    assert cli.docker.api.inspect_container(cid)["State"]["Status"] == "paused"
    cli.ok("resume", job_id)
    assert cli.info(job_id)["state"] == "Running"
    assert cli.docker.api.inspect_container(cid)["State"]["Status"] == "running"

    refused = cli.run("rm", job_id)
    assert refused.returncode == 125 and b"Running" in refused.stderr, refused.stderr

    cancelled = json.loads(cli.ok("cancel", "--grace", "5", "--json", job_id))
    assert (cancelled[0]["state"], cancelled[0]["substate"], cancelled[0]["exit_code"]) == ("Failed", "cancelled", 9)
    again = cli.run("cancel", job_id)
    assert again.returncode == 125 and b"Failed" in again.stderr

    cli.ok("rm", job_id)
    assert cli.ok("ps", "-a", "-q").split() == []
    assert not (cli.home / "logs" / job_id).exists()
    with pytest.raises(docker.errors.NotFound):
        cli.docker.api.inspect_container(cid)


def test_rm_force_and_ps_filters(cli):
    keep = cli.submit("--label", "team=a", "--hold", cli.image, "true")
    live = cli.submit("--label", "team=b", cli.image, "sleep", "60")
    cli.until(live, "Running")
    assert cli.ok("ps", "-q", "--label", "team=b").split() == [live]
    assert sorted(cli.ok("ps", "-q").split()) == sorted([keep, live])
    cli.ok("rm", "-f", live)
    assert cli.ok("ps", "-a", "-q").split() == [keep]


def test_unknown_ambiguous_and_invalid_input_exit_125(cli):
    cli.submit("--hold", "--name", "twin", cli.image, "true")
    cli.submit("--hold", "--name", "twin", cli.image, "true")
    for args, needle in [
        (("inspect", "nosuchjob"), b"no such job"),
        (("logs", "twin"), b"several jobs have that name"),
        (("wait", "nosuchjob"), b"no such job"),
        (("ps", "--state", "bogus"), b"QueuedHeld"),
        (("ps", "--label", "novalue"), b"KEY=VALUE"),
        (("events", "--since", "yesterday-ish"), b"--since"),
        (("cancel", "--grace", "soon", "twin"), b"--grace"),
        (("submit", "--idempotency-key", "k", "--digest-key", cli.image, "true"), b"not both"),
    ]:
        proc = cli.run(*args)
        assert proc.returncode == 125, (args, proc.returncode, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)


def test_wait_timeout(cli):
    held = cli.submit("--hold", cli.image, "true")
    proc = cli.run("wait", "--timeout", "1", held)
    assert proc.returncode == 125 and held.encode() in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- events


def test_events_history_since_and_follow(cli):
    # --since: the follower may start after the job's first transitions; they are kept.
    follower = subprocess.Popen(
        [CONVEYOR, "events", "-f", "--json", "--since", str(time.time() - 1)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli.env(),
    )
    try:
        job_id = cli.submit(cli.image, "true")
        assert cli.run("wait", job_id).returncode == 0
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(e["to_state"] == "Done" for e in seen):
            line = follower.stdout.readline()
            if line:
                seen.append(json.loads(line))
        assert [(e["from_state"], e["to_state"]) for e in seen if e["job_id"] == job_id] == [
            (None, "Queued"), ("Queued", "Running"), ("Running", "Done")]
    finally:
        follower.terminate()
        follower.wait(10)
    text = cli.ok("events", "--since", "10m")
    assert f"{job_id}  Running -> Done  exited" in text
    assert cli.ok("events", "--since", str(time.time() + 3600)) == ""


# ----------------------------------------------------------------------------- library, client mode


def test_cleanup_from_a_client_executor(state_dir, test_image):
    with Executor(state_dir) as sup, Executor(state_dir, supervise=False) as client:
        assert sup.supervising and not client.supervising
        job_id = sup.start(JobSpec(image=test_image, network="none", command=["sh", "-c", "echo kept; sleep 60"]))
        deadline = time.monotonic() + 30
        while b"kept" not in b"".join(c for _, c in client.logs(job_id, "stdout")) and time.monotonic() < deadline:
            time.sleep(0.2)
        counts = client.cleanup()  # another Executor supervises: it records the end
        assert counts["containers"] == 1
        job = client.info(job_id)
        assert (job.state, job.substate) == (JobState.FAILED, Substate.CANCELLED)
        assert job.stdout == "kept\n"
        assert sup.backend.list() == []
    # nobody supervises: the client does it itself, for the duration of the cleanup
    with Executor(state_dir, supervise=False) as client:
        job_id = client.submit(JobSpec(image=test_image, network="none", command=["true"]), hold=True)
        assert client.cleanup()["containers"] == 0
        assert not client.supervising
        assert client.info(job_id).state is JobState.QUEUED_HELD


def test_jobs_submitted_during_a_foreground_run_stay_supervised(cli):
    """`conveyor run` is a client of the state directory's agent (started by the first
    command that needs it, and staying): a job submitted while a foreground run is going is
    supervised by that same agent, `run` exits as soon as its own job ends (not with other
    people's jobs), and the other job still finishes after `run` has gone."""
    run = subprocess.Popen(
        [CONVEYOR, "run", "--network", "none", cli.image, "sleep", "4"], env=cli.env(), stdin=subprocess.DEVNULL
    )
    try:
        eventually("an agent supervises", lambda: cli.run("serve", "--status").returncode == 0, every=0.2)
        holder = int(re.search(rb"agent pid (\d+) ", cli.run("serve", "--status").stdout).group(1))
        assert holder != run.pid  # the agent, not the CLI, supervises
        job_id = cli.submit(cli.image, "sh", "-c", "sleep 8; echo handed-over")
        assert run.wait(timeout=90) == 0
    finally:
        run.kill()
    assert cli.info(job_id)["state"] == "Running"  # `run` ended with its own job, not with this one
    status = cli.run("serve", "--status")
    assert status.returncode == 0 and int(re.search(rb"agent pid (\d+) ", status.stdout).group(1)) == holder
    job = cli.until(job_id, "Done", timeout=90)
    assert job["exit_code"] == 0
    assert cli.ok("logs", job_id) == "handed-over\n"


def test_array_commands_control_every_task(cli):
    array_id = cli.ok(
        "submit", "--network", "none", "--array", "1-10:3", "--max-parallel", "2", cli.image, "sh", "-c", "sleep 60"
    ).strip()

    def summary() -> dict:
        return json.loads(cli.ok("array", "show", "--json", array_id))

    deadline = time.monotonic() + 60
    while summary()["states"].get("Running") != 2:
        assert time.monotonic() < deadline, summary()
        time.sleep(0.3)
    assert summary()["tasks"] == 4  # indices 1, 4, 7, 10
    assert json.loads(cli.ok("array", "hold", "--json", array_id))["states"] == {"QueuedHeld": 2, "Running": 2}
    assert json.loads(cli.ok("array", "suspend", "--json", array_id))["states"] == {"QueuedHeld": 2, "Suspended": 2}
    paused = [c.attrs["State"]["Paused"] for c in cli.docker.containers.list(filters={"label": "conveyor.array=" + array_id})]
    assert paused == [True, True]
    assert json.loads(cli.ok("array", "resume", "--json", array_id))["states"] == {"QueuedHeld": 2, "Running": 2}
    cli.ok("array", "cancel", "--grace", "1", array_id)
    deadline = time.monotonic() + 60
    while summary()["states"] != {"Failed": 4}:
        assert time.monotonic() < deadline, summary()
        time.sleep(0.3)
    human = cli.ok("array", "show", array_id)
    assert array_id in human and "Failed=4" in human
    missing = cli.run("array", "show", "nosucharray")
    assert missing.returncode == 125 and b"no such" in missing.stderr
