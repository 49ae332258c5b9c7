"""The docker stand-in (conveyor.dockercli), end to end: the same command line through the real
docker CLI and through `conveyor docker-shim`'s `docker`, compared byte for byte, exit code
for exit code. Every container the stand-in starts must be a Conveyor job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import CONVEYOR, eventually

pytestmark = pytest.mark.docker

REAL_DOCKER = shutil.which("docker")


class StandIn:
    """`docker` through the stand-in (a link made by `conveyor docker-shim`) and through
    the real docker CLI, on one state directory."""

    def __init__(self, cli, shim_dir: Path):
        self.cli, self.shim_dir = cli, shim_dir
        self.docker = str(shim_dir / "docker")

    def env(self, extra: dict | None = None) -> dict:
        return self.cli.env({"PATH": f"{self.shim_dir}:{os.environ['PATH']}", **(extra or {})})

    def run(self, *args: str, input: bytes | None = None, timeout: float = 90, env: dict | None = None, stdin=None):
        return subprocess.run([self.docker, *args], input=input,
                              stdin=stdin if stdin is not None else (None if input is not None else subprocess.DEVNULL),
                              capture_output=True, env=self.env(env), timeout=timeout)

    @staticmethod
    def real(*args: str, input: bytes | None = None, timeout: float = 90, stdin=None):
        return subprocess.run([REAL_DOCKER, *args], input=input,
                              stdin=stdin if stdin is not None else (None if input is not None else subprocess.DEVNULL),
                              capture_output=True, timeout=timeout)

    def same(self, *args: str, input: bytes | None = None):
        """Run both; assert stdout, stderr and exit code are equal; return the stand-in's run."""
        ours, theirs = self.run(*args, input=input), self.real(*args, input=input)
        assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr), args
        return ours


@pytest.fixture
def standin(fresh_cli, tmp_path):
    if REAL_DOCKER is None:
        pytest.fail("the docker CLI is not on PATH; run scripts/ensure-docker")
    shim_dir = tmp_path / "shim"
    out = subprocess.run([CONVEYOR, "docker-shim", str(shim_dir)], capture_output=True, text=True, env=fresh_cli.env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(shim_dir / "docker") and os.path.islink(shim_dir / "docker")
    return StandIn(fresh_cli, shim_dir)


# ----------------------------------------------------------------------------- docker run


@pytest.mark.parametrize("script", [
    "printf 'no newline'",
    "printf 'out\\n'; printf 'err\\n' >&2; printf 'out2\\n'",
    "printf '\\000\\001\\377binary\\r\\n'",
    "echo to stderr only >&2; exit 3",
    "seq 1 2000",
    "kill -9 $$",
])
def test_run_output_and_exit_code_are_dockers(standin, test_image, script):
    ours = standin.same("run", "--rm", "--net=none", test_image, "sh", "-c", script)
    assert ours.returncode in (0, 3, 137)


@pytest.mark.parametrize("command", [["nosuchcommand"], ["/etc/passwd"]])
def test_run_start_failures_exit_like_docker(standin, test_image, command):
    ours, theirs = standin.run("run", "--rm", test_image, *command), standin.real("run", "--rm", test_image, *command)
    assert ours.returncode == theirs.returncode in (126, 127)
    assert ours.stdout == theirs.stdout == b""
    assert ours.stderr == theirs.stderr  # the engine's words, in docker's shape
    job = standin.cli.only_job()
    assert job["state"] == "Failed" and job["exit_code"] == ours.returncode


def test_run_flags_tools_pass_have_dockers_meaning(standin, test_image, tmp_path):
    """cwltool's own command line (docker.py), through the stand-in: --mount readonly, a
    read-only root, no network, the caller's uid, env, workdir, cidfile, log-driver none."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("hello\n")
    out = tmp_path / "out"
    out.mkdir()
    env_file = tmp_path / "env.list"
    env_file.write_text("# comment\n\nFROM_FILE=file value\nPASSED_THROUGH\n")
    cidfile = tmp_path / "job.cid"
    script = ("cat /data/in.txt; echo \"$A|$FROM_FILE|$PASSED_THROUGH\"; id -u; pwd; "
              "touch /rootfs-file 2>/dev/null || echo root read-only; touch /data/x 2>/dev/null || echo data read-only; "
              "echo out > /out/result; ip -o link 2>/dev/null | grep -vc lo; cat /proc/1/cmdline | tr '\\0' ' '; echo")
    args = ["run", "-i", "--mount=type=bind,source=%s,target=/data,readonly" % data,
            f"--mount=type=bind,source={out},target=/out", "--workdir=/out", "--read-only=true", "--net=none",
            "--log-driver=none", f"--user={os.getuid()}:{os.getgid()}", "--rm", "--env=A=from flag",
            f"--env-file={env_file}", "--init", f"--cidfile={cidfile}", "--shm-size=8m", "--memory=64m", "--cpus=1",
            test_image, "sh", "-c", script]
    ours = standin.run(*args, input=b"", env={"PASSED_THROUGH": "from shell"})
    assert ours.returncode == 0, ours.stderr
    lines = ours.stdout.decode().splitlines()
    assert lines[:3] == ["hello", "from flag|file value|from shell", str(os.getuid())]
    assert lines[3:6] == ["/out", "root read-only", "data read-only"]
    assert lines[7].startswith("/sbin/docker-init")  # --init: docker's init is PID 1
    assert (out / "result").read_text() == "out\n"
    job = standin.cli.only_job()
    assert cidfile.read_text() == job["id"]  # the cidfile names the job, which every verb takes
    assert job["state"] == "Done" and job["labels"]["conveyor.client"]
    spec = job["spec"]
    assert spec["read_only"] is spec["init"] is True and spec["network"] == "none"
    assert spec["resources"]["memory"] == 64 * 2**20 and spec["resources"]["cpus"] == 1


def test_run_refuses_an_existing_cidfile_and_makes_no_job(standin, test_image, tmp_path):
    cidfile = tmp_path / "taken.cid"
    cidfile.write_text("something")
    ours, theirs = (f(*("run", "--rm", f"--cidfile={cidfile}", test_image, "true")) for f in (standin.run, standin.real))
    assert ours.returncode == theirs.returncode == 125
    assert ours.stderr == theirs.stderr
    assert standin.cli.jobs() == [] and cidfile.read_text() == "something"


def test_run_stdin_needs_dash_i_as_with_docker(standin, test_image):
    assert standin.same("run", "--rm", "-i", test_image, "tr", "a-z", "A-Z", input=b"piped in\n").stdout == b"PIPED IN\n"
    assert standin.same("run", "--rm", test_image, "cat", input=b"not for the job\n").stdout == b""


def test_run_detached_then_wait_logs_kill_rm(standin, test_image):
    job = standin.run("run", "-d", "--net=none", test_image, "sh", "-c", "echo started; echo oops >&2; sleep 60")
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.decode().strip()
    assert standin.cli.info(job_id)["state"] in ("Queued", "Running")
    eventually("the job printed", lambda: b"started" in standin.run("logs", job_id).stdout, timeout=30)
    logs = standin.run("logs", job_id)
    assert (logs.stdout, logs.stderr) == (b"started\n", b"oops\n")  # stdout and stderr kept apart
    refused = standin.run("rm", job_id)
    assert refused.returncode == 1 and b"stop the container before removing or force remove" in refused.stderr
    killed = standin.run("kill", job_id)
    assert (killed.returncode, killed.stdout) == (0, f"{job_id}\n".encode()), killed.stderr
    waited = standin.run("wait", job_id)
    assert waited.stdout == b"137\n"
    assert standin.run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", job_id).stdout == b"exited 137\n"
    removed = standin.run("rm", job_id)
    assert (removed.returncode, removed.stdout) == (0, f"{job_id}\n".encode())
    gone = standin.run("inspect", job_id)
    assert gone.returncode == 1 and gone.stdout == b"[]\n" and gone.stderr == f"Error: No such object: {job_id}\n".encode()


def test_interrupted_run_cancels_its_job(standin, test_image):
    proc = subprocess.Popen([standin.docker, "run", "--rm", test_image, "sh", "-c", "echo up; sleep 60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=standin.env())
    assert proc.stdout.readline() == b"up\n"
    proc.send_signal(signal.SIGKILL)  # a workflow engine killing its step: no one to cancel but the agent
    proc.wait(timeout=10)
    job = standin.cli.only_job()
    eventually("the killed client's job ended", lambda: standin.cli.info(job["id"])["state"] in ("Failed", "Done"), timeout=60)
    eventually("its container removed", lambda: not standin.cli.containers(), timeout=60)


# ----------------------------------------------------------------------------- docker's errors


@pytest.mark.parametrize("args", [
    ["run"], ["run", "-Z", "x"], ["run", "--rm=maybe", "x"], ["run", "-e"], ["images", "--foo"], ["frobnicate"],
    ["inspect"], ["pull"], ["rm"], ["kill"], ["version", "x"], ["images", "a", "b"], ["load", "x"], ["logs"],
])
def test_usage_errors_are_dockers_word_for_word(standin, args):
    standin.same(*args)


def test_unsupported_flag_is_refused_in_dockers_shape(standin, test_image):
    out = standin.run("run", "--rm", "--cap-add=SYS_ADMIN", test_image, "true")
    assert out.returncode == 125
    assert out.stderr.startswith(b"docker: --cap-add is not supported by Conveyor's docker stand-in (")
    assert out.stderr.endswith(b"\n\nUsage:  docker run [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nRun 'docker run --help' for more information\n")
    assert standin.cli.jobs() == []
    driver = standin.run("run", "--rm", "--log-driver=syslog", test_image, "true")
    assert driver.returncode == 125 and b"--log-driver syslog is not supported" in driver.stderr


def test_a_bad_job_is_refused_naming_the_flag(standin, test_image):
    out = standin.run("run", "--rm", "--memory=lots", test_image, "true")
    assert out.returncode == 125
    assert out.stderr.startswith(b"docker: invalid job: resources.memory: 'lots' is not valid")
    assert standin.cli.jobs() == [] and not standin.cli.containers()


# ----------------------------------------------------------------------------- the shim itself


def test_docker_shim_keeps_a_foreign_docker_unless_forced(fresh_cli, tmp_path):
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    (shim_dir / "docker").write_text("#!/bin/sh\n")
    refused = fresh_cli.run("docker-shim", str(shim_dir))
    assert refused.returncode == 125 and b"pass --force" in refused.stderr
    assert (shim_dir / "docker").read_text() == "#!/bin/sh\n"
    assert fresh_cli.run("docker-shim", "--force", str(shim_dir)).returncode == 0
    assert os.path.realpath(shim_dir / "docker") == os.path.realpath(CONVEYOR)
    assert fresh_cli.run("docker-shim", str(shim_dir)).returncode == 0  # again: nothing to do


def test_conveyor_docker_is_the_stand_in_under_conveyors_name(fresh_cli, test_image):
    out = fresh_cli.run("docker", "run", "--rm", "--net=none", test_image, "echo", "hi")
    assert (out.returncode, out.stdout) == (0, b"hi\n"), out.stderr
    assert fresh_cli.only_job()["labels"]["conveyor.client"]


def test_calling_tool_names_the_script_an_interpreter_runs(standin, test_image, tmp_path):
    script = tmp_path / "my-workflow-tool"
    script.write_text(f"import subprocess, sys\nsys.exit(subprocess.call(['docker', 'run', '--rm', '{test_image}', 'true']))\n")
    out = subprocess.run([shutil.which("python3") or "python3", str(script)], env=standin.env(), capture_output=True)
    assert out.returncode == 0, out.stderr
    listed = standin.cli.ok("ps", "-a", "--filter", "label=conveyor.client=my-workflow-tool", "--format", "{{.ID}}")
    assert listed.split() == [standin.cli.only_job()["id"]]


def test_conveyor_run_reads_a_redirected_file_without_moving_its_offset(fresh_cli, test_image, tmp_path):
    """The user-space mode's stdin (cwltool --user-space-docker-cmd conveyor passes no -i):
    a `< file` is the job's stdin; the caller's offset stays, so a `while read` loop over the
    same file still sees every line. A pipe is not read without -i, as with docker."""
    listing = tmp_path / "names.txt"
    listing.write_text("one\ntwo\nthree\n")
    script = (f'while read name; do echo "loop $name"; {CONVEYOR} run --rm --net=none {test_image} wc -l; done')
    with open(listing, "rb") as f:
        out = subprocess.run(["sh", "-c", script], stdin=f, capture_output=True, env=fresh_cli.env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split("\n")[:6] == ["loop one", "2", "loop two", "1", "loop three", "0"]
    piped = fresh_cli.run("run", "--rm", "--net=none", test_image, "cat", input=b"a pipe\n")
    assert (piped.returncode, piped.stdout) == (0, b"")


def test_jobs_a_tool_ran_are_listed_with_their_logs(standin, test_image):
    for i in range(3):
        assert standin.run("run", "--rm", "--net=none", test_image, "sh", "-c", f"echo step {i} >&2").returncode == 0
    jobs = json.loads(standin.cli.ok("ps", "-a", "--json", "--filter", "label=conveyor.client"))
    assert len(jobs) == 3 and not standin.cli.containers()  # --rm: containers gone, jobs kept
    for job in jobs:
        logs = standin.cli.run("logs", job["id"])
        assert logs.stderr.decode().startswith("step ") and logs.stdout == b""
    assert time.time() - jobs[0]["created_at"] < 600


# ----------------------------------------------------------------------------- the verbs around a run


@pytest.fixture
def in_registry(docker_client, test_image, registry):
    """The test image in the local registry as REPO:1, and not on the node."""
    repo = f"{registry}/conveyor-standin"
    docker_client.images.get(test_image).tag(repo, tag="1")
    for line in docker_client.images.push(repo, tag="1", stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(f"{repo}:1")
    yield f"{repo}:1"
    try:
        docker_client.images.remove(f"{repo}:1")
    except Exception:  # noqa: BLE001 - hygiene only
        pass


def test_inspect_of_an_image_is_dockers_byte_for_byte(standin, test_image):
    standin.same("inspect", test_image)
    standin.same("image", "inspect", test_image)
    standin.same("inspect", "--format", "{{.Id}} {{.Config.Cmd}} {{json .Config.Env}} {{.Os}}/{{.Architecture}}", test_image)
    standin.same("inspect", "--type=image", "-f", "{{index .RepoTags 0}}", test_image)
    standin.same("inspect", "no-such-image:7")
    standin.same("image", "inspect", "no-such-image:7")


def test_pull_prints_what_docker_prints(standin, in_registry, docker_client):
    first = standin.run("pull", in_registry)  # not on the node: downloaded
    assert first.returncode == 0, first.stderr
    lines = first.stdout.decode().splitlines()
    assert lines[0] == f"1: Pulling from {in_registry.rsplit(':', 1)[0].split('/', 1)[1]}"
    assert lines[-2:] == [f"Status: Downloaded newer image for {in_registry}", in_registry]
    assert docker_client.images.get(in_registry)
    standin.same("pull", in_registry)  # present: "Image is up to date", word for word
    standin.same("pull", "-q", in_registry)
    standin.same("pull", in_registry.rsplit(":", 1)[0] + ":no-such-tag")  # the registry's words, exit 1


def test_images_lists_what_docker_lists(standin, test_image):
    def rows(proc):
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.decode().splitlines()
        return lines[0], sorted(lines[1:])  # docker orders one image's tags at random

    fmt = "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}} {{.Digest}}"
    # CREATED is "N minutes ago": two listings a moment apart can straddle a minute's turn,
    # so a difference counts only when it is there three times running.
    for _ in range(3):
        ours, docker = rows(standin.run("images")), rows(standin.real("images"))
        if ours == docker:
            break
    assert ours == docker
    assert sorted(standin.run("images", "--format", fmt).stdout.split(b"\n")) == sorted(standin.real("images", "--format", fmt).stdout.split(b"\n"))
    standin.same("images", "-q", test_image)
    standin.same("images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}", test_image)
    standin.same("image", "ls", "--filter", f"reference={test_image}", "--format", "{{.Repository}} {{.Tag}}")


def test_version_and_info_answer_the_templates_tools_use(standin):
    standin.same("version", "--format", "{{.Server.Version}} {{.Server.APIVersion}} {{.Server.Os}}/{{.Server.Arch}}")
    standin.same("info", "--format", "{{.OSType}} {{.NCPU}} {{.ServerVersion}} {{.Driver}}")
    out = standin.run("--version")
    assert out.returncode == 0 and out.stdout.startswith(b"Docker version ")


def test_load_reads_a_docker_save_archive(standin, docker_client, test_image, tmp_path):
    archive = tmp_path / "image.tar"
    with open(archive, "wb") as f:
        for chunk in docker_client.images.get(test_image).save(named=True):
            f.write(chunk)
    loaded = standin.same("load", "-i", str(archive)).stdout
    assert loaded.startswith(b"Loaded image: ")
    with open(archive, "rb") as f:
        assert standin.run("load", stdin=f).stdout == loaded
    standin.same("load", "-i", str(tmp_path / "missing.tar"))


def test_stats_of_a_running_job_and_cwltools_memory_probe(standin, test_image, tmp_path):
    cidfile = tmp_path / "cid"
    proc = subprocess.Popen([standin.docker, "run", "--rm", f"--cidfile={cidfile}", test_image, "sh", "-c",
                             "echo up; sleep 4"], stdout=subprocess.PIPE, env=standin.env())
    assert proc.stdout.readline() == b"up\n"
    job = cidfile.read_text()
    table = standin.run("stats", "--no-stream", job)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.decode().splitlines()
    assert header.split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT", "MEM", "%",
                              "NET", "I/O", "BLOCK", "I/O", "PIDS"]
    assert row.startswith(job) and "MiB" in row or "KiB" in row
    # cwltool's probe: a stream of MemPerc lines until the container stops
    probe = standin.run("stats", "--no-trunc", "--format", "{{.MemPerc}}", job, timeout=60)
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.decode().split()
    assert lines and all(line.endswith("%") and float(line[:-1]) >= 0 for line in lines)
    assert proc.wait(timeout=30) == 0
    none = standin.run("stats", "--no-stream", "no-such-job")
    assert none.returncode == 1 and none.stderr == b"Error response from daemon: No such container: no-such-job\n"


def test_ps_lists_jobs_as_docker_lists_containers(standin, test_image):
    running = standin.run("run", "-d", "--name", "sleeper", "--net=none", test_image, "sleep", "60").stdout.decode().strip()
    assert standin.run("run", "--rm", "--name", "quick", "--net=none", test_image, "true").returncode == 0
    done = standin.cli.info("quick")["id"]
    eventually("the sleeper runs", lambda: standin.cli.info(running)["state"] == "Running", timeout=30)
    table = standin.run("ps").stdout.decode().splitlines()
    assert table[0].split() == standin.real("ps").stdout.decode().splitlines()[0].split()  # docker's columns
    assert [line.split()[0] for line in table[1:]] == [running]  # by default, running ones only
    assert table[1].split()[-1] == "sleeper" and '"sleep 60"' in table[1] and "Up " in table[1]
    assert set(standin.run("ps", "-a", "-q").stdout.decode().split()) == {done, running}
    assert standin.run("ps", "-q", "--filter", "status=exited").stdout.decode().split() == [done]
    assert standin.run("ps", "-n", "1", "--format", "{{.Names}} {{.State}}").stdout == b"quick exited\n"
    assert standin.run("container", "ls", "--format", "{{.Names}}: {{.Status}}").stdout.decode().startswith("sleeper: Up ")
    bad = standin.run("ps", "--filter", "colour=red")
    assert bad.returncode == 1 and b"unknown filter 'colour'" in bad.stderr
    assert standin.run("kill", "sleeper").returncode == 0


def test_help_and_management_commands(standin, test_image):
    overview = standin.run("--help")
    assert overview.returncode == 0 and b"Management Commands:" in overview.stdout and b"  run " in overview.stdout
    for group in ("image", "container", "system"):
        listing = standin.run(group)
        assert listing.returncode == 0 and listing.stdout.startswith(f"\nUsage:  docker {group} COMMAND".encode())
    assert standin.run("system", "info", "--format", "{{.OSType}}").stdout == b"linux\n"
    run_help = standin.run("run", "--help")
    assert run_help.returncode == 0 and b"--cidfile" in run_help.stdout and b"Not supported by the stand-in: " in run_help.stdout


def test_a_cidfile_that_cannot_be_made_fails_before_any_job(standin, test_image, tmp_path):
    cidfile = tmp_path / "no-such-dir" / "job.cid"
    ours, theirs = (f("run", "--rm", f"--cidfile={cidfile}", test_image, "true") for f in (standin.run, standin.real))
    assert ours.returncode == theirs.returncode == 127  # docker's: "no such file or directory" is 127
    assert ours.stderr == theirs.stderr  # docker's words: failed to create the container ID file: open ...
    assert standin.cli.jobs() == []
    refused = standin.run("run", "--rm", f"--cidfile={tmp_path / 'kept.cid'}", "--memory=lots", test_image, "true")
    assert refused.returncode == 125 and not (tmp_path / "kept.cid").exists()  # no job: no cidfile left


def test_bad_numbers_are_flag_errors_not_tracebacks(standin):
    out = standin.run("stop", "-t", "soon", "nothing")
    assert out.returncode == 1 and b"Traceback" not in out.stderr
    assert out.stderr == b'invalid argument "soon" for "--time" flag: strconv.ParseInt: parsing "soon": invalid syntax\n'
