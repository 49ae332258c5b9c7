"""End to end under cwltool, the reference runner of the Common Workflow Language.

The CWL documents in tests/cwl/ (every tool runs in conveyor/busybox:latest) are run three ways:

- ``docker``: cwltool with the real docker CLI: the baseline, run once per case and session.
- ``user-space``: ``cwltool --user-space-docker-cmd CONVEYOR``: cwltool calls ``conveyor run``
  itself, as it would udocker: ``conveyor run --volume=SRC:DST ... --workdir=DIR --rm
  --env=K=V ... IMAGE CMD...`` (its UDocker job class: ``--volume``, with the ``:rw``/``:ro``
  suffix stripped, so every bind is writable; no ``-i``, no ``--cidfile``, no ``--user``,
  ``--net`` or ``--read-only``; no ``docker inspect`` first, and no ``docker stats`` after).
- ``stand-in``: cwltool with a directory made by ``conveyor docker-shim DIR`` first on PATH, so
  the ``docker`` it runs is Conveyor: ``docker inspect IMAGE``, then per step ``docker run -i
  --mount=type=bind,source=..,target=..[,readonly] ... --workdir=DIR --read-only=true --net=none
  [--log-driver=none] --user=UID:GID --rm --cidfile=FILE --env=K=V ... IMAGE CMD...``, ``docker
  stats --no-trunc --format {{.MemPerc}} CID`` while a step lasts more than a second, and
  ``docker kill CID`` when cwltool is sent SIGTERM.

Each Conveyor-mode run must give cwltool's exit code and the same output files (content, size,
and the sha1 checksums cwltool reports) as the docker baseline of the same case in this session.
Further: the stand-in's jobs carry ``conveyor.client=cwltool`` and keep their logs; a cwltool
killed mid-step (SIGKILL or SIGTERM on its process group) leaves no job running and no container
behind within a bounded wait; the user-space stdin case works.

Like every Docker test, these fail rather than skip under CI=true; so does a missing cwltool
(``pip install -e .[test]`` installs it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker.errors
import pytest

from helpers import CONVEYOR, Cli, eventually

pytestmark = pytest.mark.docker

CWL_DIR = Path(__file__).resolve().parent / "cwl"
WORDS = (CWL_DIR / "data" / "words.txt").read_text()
CONVEYOR_MODES = ["user-space", "stand-in"]
CLIENT_LABEL = "conveyor.client=cwltool"
# After the kill: the step sleeps 30 s and is killed a second or two in, so a job that merely
# ran to its end takes ~28 s more. Within this bound it must have been made to end.
KILL_BOUND = 20.0
RUN_TIMEOUT = 60.0  # one case takes 3-6 s
TIMED_OUT = -999  # CwlRun.returncode of a run that was killed on RUN_TIMEOUT


def _fail_or_skip(reason: str) -> None:
    """As conftest does for Docker: fail under CI=true (CI must not go green by skipping)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: these tests fail rather than skip)", pytrace=False)
    pytest.skip(reason)


# ----------------------------------------------------------------------------- the cases


@dataclasses.dataclass(frozen=True)
class Case:
    document: str  # under tests/cwl/
    job: str  # the input object, beside it
    returncode: int = 0  # cwltool's exit code
    parallel: bool = False  # cwltool --parallel
    check: Callable[[dict], None] | None = None  # on the docker baseline's digest (see digest())


def _content(digested: dict, name: str) -> str:
    return digested[name]["content"]


def _check_stdin_stdout(d):
    assert _content(d, "out") == WORDS.upper()


def _check_stderr(d):
    assert _content(d, "out") == "to stdout: hello from the job\n"
    assert _content(d, "err") == "to stderr: hello from the job\nsecond stderr line\n"


def _check_initial_workdir(d):
    greeting = "hello conveyor\nfrom the initial work dir\n"
    assert _content(d, "greeting") == greeting
    assert _content(d, "out") == greeting + "6\ngreeting.txt\nout.txt\nstaged.txt\n"


def _check_env(d):
    assert _content(d, "out") == (
        "GREETING=hello world\nWHO=cwltool\nWITH_SPACES=[  a  b  ]\n"
        "HOME is the work dir\nTMPDIR=/tmp is writable\n"
    )


def _check_glob_outputs(d):
    assert [(f["basename"], f["content"]) for f in d["parts"]] == [
        (f"part{i}.txt", f"part {i}\n") for i in (1, 2, 3)
    ]
    listing = {f["basename"]: f["content"] for f in d["report"]["listing"]}
    assert listing == {"all.txt": "part 1\npart 2\npart 3\n", "count.txt": "3\n"}


def _check_success_codes(d):
    assert _content(d, "result") == "partial result\n"


def _check_failing(d):
    assert d in ({}, None)


def _check_workflow(d):
    upper = WORDS.upper()
    assert _content(d, "upper") == upper
    numbered = "".join(f"{i:6d}\t{line}\n" for i, line in enumerate(upper.splitlines(), 1))
    assert _content(d, "numbered") == numbered
    lines, words, size = len(numbered.splitlines()), len(numbered.split()), len(numbered)
    assert _content(d, "count").split() == [str(lines), str(words), str(size)]


SCATTER_WORDS = ["alpha", "bravo", "charlie", "delta", "echo"]


def _check_scatter(d):
    assert [(f["basename"], f["content"]) for f in d["shouted"]] == [
        (f"{w}.txt", w.upper() + "\n") for w in SCATTER_WORDS
    ]
    assert _content(d, "all") == "".join(w.upper() + "\n" for w in SCATTER_WORDS)


CASES = {
    "stdin_stdout": Case("stdin_stdout.cwl", "stdin_stdout.yml", check=_check_stdin_stdout),
    "stderr": Case("stderr.cwl", "stderr.yml", check=_check_stderr),
    "initial_workdir": Case("initial_workdir.cwl", "initial_workdir.yml", check=_check_initial_workdir),
    "env": Case("env.cwl", "env.yml", check=_check_env),
    "glob_outputs": Case("glob_outputs.cwl", "glob_outputs.yml", check=_check_glob_outputs),
    "success_codes": Case("success_codes.cwl", "success_codes.yml", check=_check_success_codes),
    "failing": Case("failing.cwl", "failing.yml", returncode=1, check=_check_failing),
    "workflow": Case("workflow.cwl", "workflow.yml", check=_check_workflow),
    "scatter": Case("scatter.cwl", "scatter.yml", parallel=True, check=_check_scatter),
}


# ----------------------------------------------------------------------------- running cwltool


@dataclasses.dataclass
class CwlRun:
    mode: str
    returncode: int
    output: dict | None  # the JSON object cwltool printed (None if it printed none)
    stderr: str
    outdir: Path
    seconds: float

    def describe(self) -> str:
        return f"cwltool ({self.mode}) exited {self.returncode}; its stderr ends:\n{self.stderr[-4000:]}"


def cwltool_command(
    cwltool: str, mode: str, document: str, job: str, work: Path, *,
    env: dict[str, str], shim: Path | None = None, parallel: bool = False,
) -> tuple[list[str], dict[str, str], Path]:
    """cwltool's command line and environment in one mode: (argv, env, outdir). Every run has its
    own --outdir, --tmpdir-prefix and --tmp-outdir-prefix under ``work``."""
    outdir, tmp = work / "out", work / "tmp"
    outdir.mkdir(parents=True)
    tmp.mkdir()
    argv = [
        cwltool, "--disable-color",
        "--outdir", str(outdir),
        "--tmpdir-prefix", f"{tmp}/job-",
        "--tmp-outdir-prefix", f"{tmp}/out-",
    ]
    env = dict(env)
    if parallel:
        argv.append("--parallel")
    if mode == "user-space":
        argv += ["--user-space-docker-cmd", CONVEYOR]
    elif mode == "stand-in":
        assert shim is not None
        env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', os.defpath)}"
    else:
        assert mode == "docker", mode
    argv += [str(CWL_DIR / document), str(CWL_DIR / job)]
    return argv, env, outdir


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def run_cwltool(cwltool: str, mode: str, case: Case, work: Path, *, env: dict[str, str],
                shim: Path | None = None, timeout: float = RUN_TIMEOUT) -> CwlRun:
    """Run one case in one mode: cwltool's exit code and parsed JSON output object. cwltool runs
    in its own process group, killed whole on timeout (cwltool --parallel never returns once a
    step raised in a worker thread, e.g. when `docker pull` fails: seen with the stand-in)."""
    argv, env, outdir = cwltool_command(
        cwltool, mode, case.document, case.job, work, env=env, shim=shim, parallel=case.parallel
    )
    t = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        returncode = TIMED_OUT
        stderr += f"\n[test] cwltool did not end within {timeout:.0f} s: its process group was killed"
    seconds = time.monotonic() - t
    output = None
    if stdout.strip():
        try:
            output = json.loads(stdout)
        except json.JSONDecodeError:
            output = {"<unparsable stdout>": stdout[-2000:]}
    return CwlRun(mode, returncode, output, stderr, outdir, seconds)


def digest(value):
    """An output object with everything run-specific (locations, paths) taken out: each File
    becomes basename, size, reported checksum, the sha1 of what is on disk and its content; each
    Directory its basename and listing (sorted by name)."""
    if isinstance(value, list):
        return [digest(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("class") == "File":
        try:
            data = Path(value["path"]).read_bytes()
        except (KeyError, OSError) as exc:
            data = f"<unreadable: {exc}>".encode()
        return {
            "class": "File",
            "basename": value["basename"],
            "size": value.get("size"),
            "checksum": value.get("checksum"),
            "sha1_on_disk": "sha1$" + hashlib.sha1(data).hexdigest(),
            "content": data.decode(errors="replace"),
        }
    if value.get("class") == "Directory":
        listing = [digest(v) for v in value.get("listing", [])]
        return {"class": "Directory", "basename": value["basename"],
                "listing": sorted(listing, key=lambda e: e["basename"])}
    return {k: digest(v) for k, v in value.items()}


def make_shim(directory: Path, env: dict[str, str]) -> Path:
    """``conveyor docker-shim DIR``: DIR/docker, Conveyor behaving as docker."""
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([CONVEYOR, "docker-shim", str(directory)], check=False, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, (
        f"`conveyor docker-shim {directory}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    )
    shim = directory / "docker"
    assert shim.exists() and os.access(shim, os.X_OK), f"`conveyor docker-shim` made no executable {shim}"
    return directory


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def cwltool() -> str:
    """The cwltool executable of the test interpreter's environment."""
    path = Path(sys.executable).parent / "cwltool"
    found = str(path) if path.exists() else shutil.which("cwltool")
    if found is None:
        _fail_or_skip("cwltool is not installed; pip install -e '.[test]'")
    return found


@pytest.fixture(scope="session")
def docker_baseline(cwltool, test_image, tmp_path_factory):
    """``baseline(name)``: the case run with the real docker, once per session."""
    if shutil.which("docker") is None:
        _fail_or_skip("the docker CLI is not on PATH")
    cache: dict[str, CwlRun] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}

    def baseline(name: str) -> CwlRun:
        if name not in cache:
            work = tmp_path_factory.mktemp(f"docker-{name}")
            cache[name] = run_cwltool(cwltool, "docker", CASES[name], work, env=env)
        return cache[name]

    return baseline


@pytest.fixture(scope="session")
def conveyor_homes(docker_client, test_image, tmp_path_factory):
    """``home(mode)``: (Cli, environment, shim directory or None) on one state directory per
    Conveyor mode, shared by the comparison tests of the session: its agent starts once, so
    each case costs what a warm `conveyor run` costs. Afterwards its agent is stopped and
    every container it made removed."""
    from conveyor.daemon import stop_supervisor
    from conveyor.home import Home

    made: dict[str, tuple] = {}

    def home(mode: str):
        if mode not in made:
            root = tmp_path_factory.mktemp(f"conveyor-{mode}")
            cli = Cli(root / "home", docker_client, test_image)
            cli.home.mkdir()
            env = cli.env()
            shim = make_shim(root / "shim", env) if mode == "stand-in" else None
            made[mode] = (cli, env, shim)
        return made[mode]

    yield home
    for cli, _, _ in made.values():
        stop_supervisor(Home(cli.home))
        for container in cli.containers():
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture
def conveyor_mode(request, fresh_cli, tmp_path):
    """(mode, environment, shim directory or None) for a Conveyor mode on the test's own state
    directory (CONVEYOR_HOME). fresh_cli stops its agent and removes its containers afterwards."""
    mode = request.param
    env = fresh_cli.env()
    shim = make_shim(tmp_path / "shim", env) if mode == "stand-in" else None
    return mode, env, shim


def _baseline_ok(run: CwlRun, case: Case) -> dict:
    assert run.returncode == case.returncode, run.describe()
    return digest(run.output)


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", list(CASES))
def test_docker_baseline(name, docker_baseline):
    """Each case under cwltool with the real docker gives the exit code and outputs it should:
    the baseline the Conveyor modes are held to is itself right."""
    case = CASES[name]
    digested = _baseline_ok(docker_baseline(name), case)
    for entry in _files(digested):
        assert entry["checksum"] == entry["sha1_on_disk"], entry
    if case.check:
        case.check(digested)


@pytest.mark.parametrize("mode", CONVEYOR_MODES)
@pytest.mark.parametrize("name", list(CASES))
def test_conveyor_matches_docker(name, mode, docker_baseline, conveyor_homes, cwltool, tmp_path):
    """The same case through Conveyor: cwltool's exit code, and every output file's name,
    content, size and reported checksum, as with docker."""
    cli, env, shim = conveyor_homes(mode)
    case = CASES[name]
    expected = _baseline_ok(docker_baseline(name), case)
    run = run_cwltool(cwltool, mode, case, tmp_path / "run", env=env, shim=shim)
    assert run.returncode == case.returncode, run.describe()
    assert digest(run.output) == expected, run.describe()
    # Every job Conveyor ran for it has ended.
    live = [j for j in cli.jobs() if j["state"] not in ("Done", "Failed")]
    assert not live, live


def test_stand_in_workflow_jobs_carry_the_client_label_and_keep_logs(docker_baseline, cwltool, tmp_path, fresh_cli):
    """After the three-step workflow through the stand-in, `conveyor ps -a --filter
    label=conveyor.client=cwltool` lists one job per container step (cwltool's `docker inspect`
    and `docker stats` make none), and `conveyor logs JOB` of the numbering step shows what that
    step wrote on its (uncaptured) stderr."""
    case = CASES["workflow"]
    expected = _baseline_ok(docker_baseline("workflow"), case)
    env = fresh_cli.env()
    shim = make_shim(tmp_path / "shim", env)
    run = run_cwltool(cwltool, "stand-in", case, tmp_path / "run", env=env, shim=shim)
    assert run.returncode == 0, run.describe()
    assert digest(run.output) == expected

    jobs = json.loads(fresh_cli.ok("ps", "-a", "--filter", f"label={CLIENT_LABEL}", "--json"))
    commands = sorted(" ".join(j["command"]) for j in jobs)
    assert len(jobs) == 3, commands
    assert all(j["state"] == "Done" and j["exit_code"] == 0 for j in jobs), jobs
    assert all(j["labels"].get("conveyor.client") == "cwltool" for j in jobs), jobs
    assert len(fresh_cli.jobs()) == 3, "a job without the client label, or one per docker inspect/stats"
    (number,) = [j for j in jobs if "numbering step" in " ".join(j["command"])]
    logs = fresh_cli.run("logs", number["id"])
    assert logs.returncode == 0, logs.stderr
    assert "numbering step: numbering upper.txt" in logs.stderr.decode(), logs


def test_user_space_stdin(cwltool, tmp_path, fresh_cli):
    """User-space mode, `stdin: $(inputs.infile.path)`: cwltool starts `conveyor run IMAGE tr a-z
    A-Z` (no -i) with its stdin opened on the input file, as a `< file` redirect would.

    What the stand-in decided: `conveyor run` forwards its stdin to the job when that stdin is a
    regular file (a `< file` redirect, which is what cwltool's `stdin:` amounts to), without -i.
    Pipes and terminals are forwarded only with -i, as with docker (docker mode cwltool always
    passes -i; here, with no `stdin:`, cwltool's stdin is a closed pipe and the job gets none)."""
    run = run_cwltool(cwltool, "user-space", CASES["stdin_stdout"], tmp_path / "run", env=fresh_cli.env())
    assert run.returncode == 0, run.describe()
    out = digest(run.output)["out"]
    assert out["content"] == WORDS.upper(), run.describe()
    assert out["checksum"] == out["sha1_on_disk"]


# ----------------------------------------------------------------------------- killing cwltool


def _start_sleeper(cwltool: str, mode: str, work: Path, env: dict[str, str], shim: Path | None):
    """cwltool on the 30-second sleep step, in a new session (its own process group); its output
    goes to files in ``work``."""
    argv, env, _ = cwltool_command(cwltool, mode, "sleep.cwl", "sleep.yml", work, env=env, shim=shim)
    with open(work / "cwltool.stdout", "wb") as out, open(work / "cwltool.stderr", "wb") as err:
        return subprocess.Popen(argv, env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True)


def _stderr(work: Path) -> str:
    path = work / "cwltool.stderr"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _conveyor_containers(cli) -> list:
    """`docker ps -a --filter label=conveyor.managed`, narrowed to this state directory's executor
    (other tests' jobs may run beside ours)."""
    eid = cli.executor_id
    if eid is None:
        return []
    return cli.docker.containers.list(
        all=True, sparse=True, filters={"label": ["conveyor.managed", f"conveyor.executor={eid}"]}
    )


SIGNALS = [pytest.param(signal.SIGKILL, id="SIGKILL"), pytest.param(signal.SIGTERM, id="SIGTERM")]


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("conveyor_mode", CONVEYOR_MODES, indirect=True)
def test_killed_cwltool_leaves_no_job_running(sig, conveyor_mode, cwltool, tmp_path, fresh_cli):
    """cwltool's process group killed while its step runs `sleep 30`: within KILL_BOUND seconds
    Conveyor's job has ended (`conveyor ps` says so) and no container of it is left (`docker ps
    -a`). With SIGKILL nobody gets to clean up: Conveyor must notice its client is gone. With
    SIGTERM, the `conveyor run` (user-space) or `docker run` (stand-in) gets it too, and cwltool
    runs `docker kill CID` from its cidfile (stand-in only) before exiting."""
    mode, env, shim = conveyor_mode
    work = tmp_path / "run"
    work.mkdir()
    proc = _start_sleeper(cwltool, mode, work, env, shim)
    try:
        def running():
            if proc.poll() is not None:
                pytest.fail(f"cwltool ended before its step ran: exit {proc.returncode}\n{_stderr(work)}")
            return [j for j in fresh_cli.jobs() if j["state"] == "Running"]

        (job,) = eventually("the sleep step runs as a Conveyor job", running, timeout=60, every=0.2)
        time.sleep(1)  # the step is well into its sleep
        _kill_group(proc, sig)
        killed = time.monotonic()
        # Not waiting for cwltool: on SIGTERM it takes ~10 s to exit whatever happens (its signal
        # handler's Popen.wait(10) cannot take the lock its main thread's wait() holds).

        def ended():
            return fresh_cli.info(job["id"])["state"] in ("Done", "Failed")

        left = KILL_BOUND - (time.monotonic() - killed)
        eventually(f"job {job['id']} ended after cwltool got {sig.name}", ended, timeout=max(left, 0.1), every=0.2)
        left = KILL_BOUND - (time.monotonic() - killed)
        eventually(
            f"no container of job {job['id']} is left after cwltool got {sig.name}",
            lambda: not _conveyor_containers(fresh_cli), timeout=max(left, 0.1), every=0.2,
        )
        info = fresh_cli.info(job["id"])
        assert not (info["state"] == "Done" and info["exit_code"] == 0), f"the step ran to its end: {info}"
        assert not (work / "out" / "done.txt").exists()
    finally:
        _kill_group(proc, signal.SIGKILL)
        proc.wait(timeout=30)


def test_docker_baseline_sigterm_leaves_no_container(cwltool, docker_client, test_image, tmp_path):
    """The kill harness against the real docker: cwltool on SIGTERM runs `docker kill CID` (from
    its --cidfile) and the --rm container is gone within the bound. (With SIGKILL on the group,
    docker's container runs on to the end of its command, then --rm removes it: docker gives no
    better guarantee than that; the Conveyor modes are held to the bound above anyway.)"""
    work = tmp_path / "run"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    proc = _start_sleeper(cwltool, "docker", work, env, None)
    cid = None
    try:
        def running_container():
            if proc.poll() is not None:
                pytest.fail(f"cwltool ended before its step ran: exit {proc.returncode}\n{_stderr(work)}")
            for cidfile in (work / "tmp").rglob("*.cid"):
                text = cidfile.read_text().strip()
                if text:
                    try:
                        state = docker_client.api.inspect_container(text)["State"]
                    except docker.errors.NotFound:
                        return None
                    return text if state["Running"] else None
            return None

        cid = eventually("the sleep step's container runs", running_container, timeout=60, every=0.2)
        time.sleep(1)
        _kill_group(proc, signal.SIGTERM)
        killed = time.monotonic()

        def gone():
            try:
                docker_client.api.inspect_container(cid)
            except docker.errors.NotFound:
                return True
            return False

        eventually("the container is gone", gone, timeout=max(KILL_BOUND - (time.monotonic() - killed), 0.1))
    finally:
        _kill_group(proc, signal.SIGKILL)
        proc.wait(timeout=30)
        if cid:
            try:
                docker_client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass


def _files(value):
    """Every digested File in an output object."""
    if isinstance(value, list):
        for v in value:
            yield from _files(v)
    elif isinstance(value, dict):
        if value.get("class") == "File":
            yield value
        else:
            for v in value.values():
                yield from _files(v)
