"""End-to-end tests of the `conveyor` command line, run the way a user runs it.

Every test starts the installed console script in a subprocess with CONVEYOR_HOME set to a
fresh state directory, and checks what a user sees: exit codes, stdout and stderr kept
apart, timing of streamed output, and what is (not) left behind in the engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import docker.errors
import pytest

from helpers import CONVEYOR, eventually

CONVEYOR_ERROR = 125


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


# ----------------------------------------------------------------------------- basics


def test_help_exits_zero(tmp_path):
    env = {**os.environ, "CONVEYOR_HOME": str(tmp_path)}
    for args in (["--help"], ["run", "--help"]):
        proc = subprocess.run([CONVEYOR, *args], capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert b"Usage:" in proc.stdout


def test_exit_code_and_streams_kept_apart(cli):
    proc = cli.run("run", cli.image, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == b"out\n"
    assert b"err" in proc.stderr
    assert b"out" not in proc.stderr


def test_output_is_streamed_as_written(cli):
    job = cli.popen("run", cli.image, "sh", "-c", "echo first; sleep 2; echo second")
    try:
        first_at = job.wait_for_line(b"first", timeout=20)
        second_at = job.wait_for_line(b"second", timeout=20)
        code, out, err = job.finish(timeout=20)
        ended_at = time.monotonic()
    finally:
        job.kill()
    assert code == 0, err
    assert out == b"first\nsecond\n"
    # "first" reached us while the job was still sleeping, not in one lump at the end.
    assert second_at - first_at >= 1.5, (first_at, second_at)
    assert ended_at - first_at >= 1.5, (first_at, ended_at)


# ----------------------------------------------------------------------------- errors (125)


def _spec_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


ERROR_CASES = {
    # id: (args builder, text every error line must name)
    "bad-memory": (lambda img, tmp: ["--memory", "12x", img, "true"], ["--memory", "12x"]),
    "ulimit-soft-over-hard": (lambda img, tmp: ["--ulimit", "nofile=3:2", img, "true"], ["--ulimit"]),
    "publish-with-network-none": (lambda img, tmp: ["-p", "80", "--network", "none", img, "true"], ["-p/--publish", "none"]),
    "unknown-flag": (lambda img, tmp: ["--no-such-flag", img, "true"], ["--no-such-flag"]),
    "missing-image": (lambda img, tmp: [], ["IMAGE"]),
    "pull-never-missing-image": (lambda img, tmp: ["--pull", "never", "nosuch/image:1"], ["--pull", "nosuch/image:1"]),
    "spec-file-missing": (lambda img, tmp: ["-f", str(tmp / "absent.yaml")], ["-f", "absent.yaml"]),
    "spec-file-invalid-yaml": (
        lambda img, tmp: ["-f", _spec_file(tmp, "broken.yaml", "image: [busybox\ncommand: {a: b\n")],
        ["-f", "broken.yaml", "[busybox"],  # the parser's quote survives (no markup eaten)
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_exits_125_with_a_clear_error_and_leaves_nothing(cli, tmp_path, case):
    build, must_name = ERROR_CASES[case]
    proc = cli.run("run", *build(cli.image, tmp_path))
    err = _text(proc.stderr)
    assert proc.returncode == CONVEYOR_ERROR, (proc.returncode, err)
    assert proc.stdout == b""
    assert "Traceback" not in err
    # The one line about the problem names the flag (and value) the user typed.
    lines = [line for line in err.splitlines() if line.strip()]
    problem_lines = [
        line for line in lines
        if not line.startswith(("Usage:", "Try ")) and not line.rstrip().endswith("invalid job spec:")
    ]
    assert len(problem_lines) == 1, f"expected one line for the one bad field, got:\n{err}"
    for text in must_name:
        assert text in problem_lines[0], f"{text!r} not named in {problem_lines[0]!r}"
    assert cli.containers() == []


# ----------------------------------------------------------------------------- spec file


def test_spec_file_runs_and_flags_override_it(cli, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"image: {cli.image}\n"
        "command: [sh, -c, 'echo \"$GREETING $WHO\"']\n"
        "env:\n"
        "  GREETING: hello\n"
        "  WHO: file\n"
        "resources:\n"
        "  memory: 64m\n"
    )
    proc = cli.run("run", "-f", str(spec))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hello file\n"

    proc = cli.run("run", "-f", str(spec), "-e", "WHO=flag")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hello flag\n"

    jobs = cli.jobs()
    assert len(jobs) == 2
    for job in jobs:
        attrs = cli.docker.api.inspect_container(job["container_id"])
        assert attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
    envs = sorted(tuple(sorted(j["spec"]["env"].items())) for j in jobs)
    assert envs == [(("GREETING", "hello"), ("WHO", "file")), (("GREETING", "hello"), ("WHO", "flag"))]


# ----------------------------------------------------------------------------- removal


def test_rm_leaves_no_container(cli):
    proc = cli.run("run", "--rm", cli.image, "sh", "-c", "echo gone; exit 2")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == b"gone\n"
    # Removed right after the result and logs are stored (`run` answers without waiting for it).
    eventually("the container removed", lambda: cli.containers() == [])
    # The record and logs outlive the container.
    job = cli.only_job()
    assert job["exit_code"] == 2
    logs = cli.run("logs", job["id"])
    assert logs.returncode == 0 and logs.stdout == b"gone\n"


def test_without_rm_the_container_stays_until_cleanup(cli):
    proc = cli.run("run", cli.image, "echo", "kept")
    assert proc.returncode == 0, proc.stderr
    job = cli.only_job()
    kept = cli.containers()
    assert [c.id for c in kept] == [job["container_id"]]
    container = cli.docker.containers.get(job["container_id"])
    assert container.status == "exited"
    assert container.labels.get("conveyor.managed") == "true"

    # A container of another executor must survive our cleanup.
    other = cli.docker.containers.create(cli.image, ["true"], labels={"conveyor.managed": "true", "conveyor.executor": "someone-else"})
    try:
        proc = cli.run("cleanup")
        assert proc.returncode == 0, proc.stderr
        out = _text(proc.stdout)
        assert "1 containers" in out and "removed" in out, out
        assert cli.containers() == []
        with pytest.raises(docker.errors.NotFound):
            cli.docker.containers.get(job["container_id"])
        other.reload()
    finally:
        other.remove(force=True)
    # The job's record and logs are still there.
    logs = cli.run("logs", job["id"])
    assert logs.stdout == b"kept\n"


# ----------------------------------------------------------------------------- stdin and tty


def test_interactive_feeds_stdin(cli):
    proc = cli.run("run", "-i", cli.image, "cat", input=b"hello\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hello\n"


def test_tty_without_a_terminal(cli):
    """`run -t` from a script (no terminal on our side) still gives the job a terminal,
    rather than failing or quietly running it without one."""
    proc = cli.run("run", "-t", cli.image, "echo", "tty-ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"tty-ok\r\n"  # CRLF: written through the job's terminal


# ----------------------------------------------------------------------------- timeout and signals


def test_timeout_kills_the_job(cli):
    started = time.monotonic()
    proc = cli.run("run", "--timeout", "1", "--stop-timeout", "1", cli.image, "sleep", "30", timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 137, proc.stderr
    assert elapsed < 7, f"took {elapsed:.1f}s"
    assert "timeout" in _text(proc.stderr).lower()
    job = cli.only_job()
    assert (job["state"], job["substate"], job["exit_code"]) == ("Failed", "timeout", 137)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_cancels_job_with_grace_and_removes_container(cli, sig):
    script = 'trap "echo bye; exit 0" TERM; echo started; while true; do sleep 0.1; done'
    job = cli.popen("run", cli.image, "sh", "-c", script)
    try:
        job.wait_for_line(b"started", timeout=20)
        assert len(cli.containers()) == 1
        sent = time.monotonic()
        job.proc.send_signal(sig)
        code, out, err = job.finish(timeout=15)
        elapsed = time.monotonic() - sent
    finally:
        job.kill()
    assert elapsed < 5, f"conveyor took {elapsed:.1f}s to exit after {sig.name}"
    assert b"bye" in out.splitlines(), (out, err)  # the job's own TERM handler ran
    assert "Traceback" not in _text(err)
    assert cli.containers() == [], "killing the client left its container behind"
    record = cli.only_job()
    assert record["state"] == "Failed" and record["substate"] == "cancelled", record


def test_signal_during_start_up_still_cancels_the_job(cli):
    """A SIGTERM that arrives while the container is being created/started (before the
    job's output is streamed) must not kill the client and leave the container behind."""
    for attempt in range(3):
        job = cli.popen("run", "--stop-timeout", "1", cli.image, "sleep", "30")
        try:
            deadline = time.monotonic() + 20
            while not cli.containers():  # signal as soon as the container exists
                assert time.monotonic() < deadline and job.proc.poll() is None, "no container appeared"
                time.sleep(0.01)
            sent = time.monotonic()
            job.proc.send_signal(signal.SIGTERM)
            code, _, err = job.finish(timeout=15)
            elapsed = time.monotonic() - sent
        finally:
            job.kill()
        assert code != -signal.SIGTERM, f"attempt {attempt}: conveyor died of the signal, job not cancelled"
        assert elapsed < 8, f"attempt {attempt}: took {elapsed:.1f}s"
        assert cli.containers() == [], f"attempt {attempt}: container left behind ({err!r})"


def test_second_signal_kills_without_waiting_for_the_grace_period(cli):
    job = cli.popen("run", cli.image, "sh", "-c", "echo started; exec sleep 30")  # PID 1 ignores SIGTERM
    try:
        job.wait_for_line(b"started", timeout=20)
        sent = time.monotonic()
        job.proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert job.proc.poll() is None, "the first signal should wait for the 10 s grace period"
        job.proc.send_signal(signal.SIGINT)
        code, _, err = job.finish(timeout=15)
        elapsed = time.monotonic() - sent
    finally:
        job.kill()
    assert elapsed < 5, f"took {elapsed:.1f}s: the second Ctrl-C did not kill at once"
    assert code == 137, err
    assert cli.containers() == []


# ----------------------------------------------------------------------------- env, user, workdir, volumes


def test_env_workdir_user_and_readonly_volume(cli, tmp_path):
    hostdir = tmp_path / "data"
    hostdir.mkdir()
    hostdir.chmod(0o777)
    proc = cli.run(
        "run", "-e", "A=1", "-w", "/tmp", "-u", "1000", "-v", f"{hostdir}:/data:ro",
        cli.image, "sh", "-c", "echo $A; pwd; id -u; touch /data/x",
    )
    assert proc.returncode != 0, "writing to a read-only volume succeeded"
    assert proc.returncode != CONVEYOR_ERROR, proc.stderr
    assert proc.stdout.decode().splitlines() == ["1", "/tmp", "1000"]
    assert b"/data/x" in proc.stderr  # touch said why
    assert not (hostdir / "x").exists()


def test_env_name_alone_passes_the_callers_value(cli):
    proc = cli.run(
        "run", "-e", "CONVEYOR_TEST_PASSED", "-e", "CONVEYOR_TEST_UNSET", cli.image,
        "sh", "-c", 'echo "$CONVEYOR_TEST_PASSED"; echo "${CONVEYOR_TEST_UNSET-unset}"',
        env={"CONVEYOR_TEST_PASSED": "from caller"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"from caller\nunset\n"


# ----------------------------------------------------------------------------- ps, inspect, logs


def test_ps_inspect_and_logs(cli):
    proc = cli.run("run", cli.image, "sh", "-c", "echo l1; echo l2; echo l3; echo e1 >&2; echo e2 >&2; exit 4")
    assert proc.returncode == 4
    proc = cli.run("run", "--name", "second-job", cli.image, "echo", "two")
    assert proc.returncode == 0

    jobs = cli.jobs()
    assert len(jobs) == 2
    first = next(j for j in jobs if j["name"] is None)
    second = next(j for j in jobs if j["name"] == "second-job")
    assert first["exit_code"] == 4 and first["state"] == "Failed"
    assert second["exit_code"] == 0 and second["state"] == "Done"
    # Nothing is running, so plain `ps --json` lists nothing.
    plain = cli.run("ps", "--json")
    assert plain.returncode == 0 and json.loads(plain.stdout) == []
    table = cli.run("ps", "-a")
    assert table.returncode == 0 and first["id"] in _text(table.stdout)

    proc = cli.run("inspect", first["id"])
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["id"] == first["id"]
    assert (info["state"], info["exit_code"], info["image"]) == ("Failed", 4, cli.image)

    # A unique prefix is as good as the id.
    n = next(n for n in range(1, 13) if not second["id"].startswith(first["id"][:n]))
    proc = cli.run("inspect", first["id"][:n])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == first["id"]

    proc = cli.run("logs", first["id"])
    assert proc.returncode == 0
    assert proc.stdout == b"l1\nl2\nl3\n"
    assert proc.stderr == b"e1\ne2\n"

    proc = cli.run("logs", "--stderr", first["id"])
    assert proc.returncode == 0
    assert (proc.stdout, proc.stderr) == (b"", b"e1\ne2\n")

    proc = cli.run("logs", "--stdout", first["id"])
    assert (proc.stdout, proc.stderr) == (b"l1\nl2\nl3\n", b"")

    proc = cli.run("logs", "--tail", "2", first["id"])
    assert proc.returncode == 0
    assert proc.stdout == b"l2\nl3\n"
    assert proc.stderr == b"e1\ne2\n"

    proc = cli.run("logs", "second-job")  # a job name works too
    assert proc.stdout == b"two\n"


def test_unknown_job_id(cli):
    cli.run("run", cli.image, "true")
    for args in (["inspect", "ffffffffffff"], ["logs", "ffffffffffff"]):
        proc = cli.run(*args)
        assert proc.returncode == CONVEYOR_ERROR, (args, proc.returncode)
        assert "no such job" in _text(proc.stderr)
        assert "Traceback" not in _text(proc.stderr)
        assert proc.stdout == b""
