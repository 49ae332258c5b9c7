"""Shared pytest fixtures for Conveyor's test-suite.

Docker-backed tests ask for the ``docker_client`` fixture (directly or through
``test_image`` / other fixtures); such tests get the ``docker`` marker
automatically. When the engine is unreachable they are skipped locally, but
fail when ``CI=true`` so that CI can never go green by skipping them.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import docker.errors
import pytest

from helpers import Cli

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = "conveyor/busybox:latest"


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _fail_or_skip(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: Docker tests fail rather than skip)", pytrace=False)
    pytest.skip(reason)


@functools.lru_cache(maxsize=1)
def _probe_docker():
    try:
        client = docker.from_env(version="auto")
        client.ping()
    except Exception as exc:  # any failure means "not usable"
        return None, f"{type(exc).__name__}: {exc}"
    return client, None


def docker_available() -> bool:
    """True when the Docker engine answers a ping (result cached per process)."""
    client, _ = _probe_docker()
    return client is not None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "docker_client" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client for the local engine (API version negotiated)."""
    client, error = _probe_docker()
    if client is None:
        _fail_or_skip(
            f"Docker engine not reachable ({error}); start it with scripts/ensure-docker"
        )
    return client


@pytest.fixture(scope="session")
def test_image(docker_client) -> str:
    """Name of the BusyBox test image, built with scripts/build-busybox-image if missing."""
    # A host-wide lock so that parallel workers (pytest-xdist) build it only once.
    lock_path = Path(tempfile.gettempdir()) / "conveyor-test-image.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            docker_client.images.get(TEST_IMAGE)
        except docker.errors.NotFound:
            proc = subprocess.run(
                ["bash", str(REPO_ROOT / "scripts" / "build-busybox-image"), TEST_IMAGE],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                pytest.fail(
                    f"building {TEST_IMAGE} failed (exit {proc.returncode}):\n"
                    f"{proc.stdout}{proc.stderr}",
                    pytrace=False,
                )
            docker_client.images.get(TEST_IMAGE)
    return TEST_IMAGE


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _registry_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if not with 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A private registry (Debian's docker-registry) on 127.0.0.1; yields "127.0.0.1:PORT".

    The engine treats 127.0.0.0/8 registries as insecure, so plain HTTP works for
    tag / push / pull of ``127.0.0.1:PORT/name:tag``.
    """
    binary = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if os.path.exists("/usr/bin/docker-registry") else None
    )
    if binary is None:
        _fail_or_skip("docker-registry is not installed; run scripts/ensure-docker")

    workdir = tmp_path_factory.mktemp("registry")
    storage = workdir / "storage"
    storage.mkdir()
    log_path = workdir / "registry.log"

    proc = None
    failures = []
    for _attempt in range(3):  # the free port may be taken again before the registry binds it
        port = _free_port()
        config = workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n"
            "  level: warn\n"
            "  accesslog:\n"
            "    disabled: true\n"
            "storage:\n"
            "  filesystem:\n"
            f"    rootdirectory: {storage}\n"
            "http:\n"
            f"  addr: 127.0.0.1:{port}\n"
        )
        log_file = open(log_path, "ab")
        proc = subprocess.Popen(
            [binary, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        log_file.close()
        url = f"http://127.0.0.1:{port}/v2/"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if _registry_answers(url):
                break
            time.sleep(0.1)
        else:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                pytest.fail(
                    f"docker-registry did not answer on {url} within 20 s; "
                    f"log:\n{log_path.read_text(errors='replace')}",
                    pytrace=False,
                )
            failures.append(f"port {port}: exited with {proc.returncode}")
            proc = None
            continue
        break

    if proc is None:
        pytest.fail(
            f"docker-registry failed to start ({'; '.join(failures)}); "
            f"log:\n{log_path.read_text(errors='replace')}",
            pytrace=False,
        )

    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty directory for Conveyor's state.

    Pass it as ``home=`` to the API; it is also exported as CONVEYOR_HOME for the
    duration of the test so nothing leaks into the user's real state directory.
    """
    path = tmp_path / "conveyor-home"
    path.mkdir()
    monkeypatch.setenv("CONVEYOR_HOME", str(path))
    return path


@pytest.fixture
def ex(state_dir):
    """An Executor (the supervisor) on the test's state directory; everything it made is
    removed afterwards."""
    from conveyor import Executor

    executor = Executor(state_dir)
    try:
        yield executor
    finally:
        try:
            executor.cleanup()
        finally:
            executor.close()


@pytest.fixture
def agent(state_dir, test_image):
    """A `conveyor serve` on the test's state directory (helpers.AgentProcess); stopped
    afterwards, and whatever its jobs left in the engine removed."""
    from conveyor import Executor
    from helpers import AgentProcess

    a = AgentProcess(state_dir).start()
    yield a
    a.stop()
    with Executor(state_dir) as ex:
        ex.cleanup()


def _cli(state_dir, docker_client, test_image, agent_first: bool):
    from conveyor.daemon import ensure_agent, stop_supervisor
    from conveyor.home import Home

    c = Cli(state_dir, docker_client, test_image)
    if agent_first:
        ensure_agent(state_dir)
    yield c
    # Hygiene only (assertions about leftovers are made inside the tests).
    stop_supervisor(Home(state_dir))
    for container in c.containers():
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture(params=["no agent yet", "agent running"])
def cli(request, state_dir, docker_client, test_image):
    """The console script on the test's state directory (see helpers.Cli), twice: with no
    agent at first (the first command starts it) and with an agent already running. A CLI
    test must pass both ways: the CLI gives one answer whether an agent ran or not.
    Afterwards the agent is stopped and every container of its executor removed."""
    yield from _cli(state_dir, docker_client, test_image, agent_first=request.param == "agent running")


@pytest.fixture
def fresh_cli(state_dir, docker_client, test_image):
    """The console script on a state directory where no agent runs yet (for tests that
    arrange the directory, or start their own agent, before the first command)."""
    yield from _cli(state_dir, docker_client, test_image, agent_first=False)


PODMAN_URL = "unix:///run/conveyor-podman/podman.sock"


@functools.lru_cache(maxsize=1)
def _probe_podman():
    try:
        client = docker.APIClient(base_url=PODMAN_URL, version="auto", timeout=30)
        client.ping()
        client.inspect_image(TEST_IMAGE)
    except Exception as exc:  # any failure means "not usable"
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def podman_url() -> str:
    """The URL of Conveyor's podman service (Docker-compatible API), with the test image in it."""
    error = _probe_podman()
    if error is not None:
        _fail_or_skip(f"podman service not usable at {PODMAN_URL} ({error}); start it with scripts/ensure-podman")
    return PODMAN_URL


@pytest.fixture(scope="session")
def runsc_runtime(docker_client, test_image) -> str:
    """"runsc": gVisor registered with the local dockerd (scripts/ensure-docker does it)."""
    runtimes = docker_client.info().get("Runtimes") or {}
    if "runsc" not in runtimes:
        _fail_or_skip(f"the Docker engine has no runtime runsc (it has {', '.join(sorted(runtimes))}); run scripts/ensure-docker")
    return "runsc"
