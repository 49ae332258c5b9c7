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
import uuid
from pathlib import Path

import docker
import docker.errors
import pytest

from helpers import Cli, untag

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


# Tests of one shared engine that change it (stop a swarm node, kill a slurmd, restart a
# podman service) run one after another on one pytest-xdist worker; the rest spread out.
_SERIAL_GROUPS = ("swarm", "slurm", "podman")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "docker_client" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)
        group = next((g for g in _SERIAL_GROUPS if g in item.nodeid), None)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


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
def pushed(docker_client, test_image, registry):
    """The test image pushed to the local registry as ``REPO:1`` and ``REPO:latest``, then
    untagged here, so a pull has something to fetch; yields (repo, digest). A repository of
    its own per test: other runs may share the engine."""
    repo = f"{registry}/conveyor-pushed-{uuid.uuid4().hex[:8]}"
    digest = None
    for tag in ("1", "latest"):
        assert docker_client.images.get(test_image).tag(repo, tag=tag)
        for line in docker_client.images.push(repo, tag=tag, stream=True, decode=True):
            assert "error" not in line, line
            digest = (line.get("aux") or {}).get("Digest", digest)
    untag(docker_client, repo)
    yield repo, digest
    untag(docker_client, repo)


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


SWARM_SCRIPT = REPO_ROOT / "scripts" / "swarm-cluster"
SWARM_NODES = ("n1", "n2", "n3")
SWARM_MANAGED_LABEL = "conveyor.managed"


def _swarm_node_url(name: str) -> str:
    return f"unix:///run/conveyor-swarm/{name}.sock"


def _swarm_time(stamp: str) -> float:
    """Seconds since the epoch of a Swarm time stamp ("2026-12-02T07:23:51.467825511Z")."""
    from datetime import datetime, timezone

    whole, _, frac = stamp.rstrip("Z").partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return seconds + float(f"0.{frac or 0}")


class SwarmCluster:
    """The three-node Swarm of scripts/swarm-cluster: n1 manager, n2 and n3 workers, each a
    dockerd in its own network namespace with the test image loaded.

    ``manager_url`` / ``node_urls`` (name -> unix URL), ``node_ids`` and ``hostnames``
    (name -> Swarm node id / host name); ``client(name)`` a docker SDK client for a node
    (the manager by default). Helpers change the cluster for a test: ``label`` / ``unlabel``
    a node, ``stop_node`` (a worker dying: its dockerd, containerd and containers killed) and
    ``start_node``. What they change is put back at session end."""

    def __init__(self) -> None:
        self.node_urls = {name: _swarm_node_url(name) for name in SWARM_NODES}
        self.manager_url = self.node_urls["n1"]
        self.started = time.time()
        self._clients: dict[str, docker.DockerClient] = {}
        self._labels_added: set[tuple[str, str]] = set()
        self._stopped: set[str] = set()
        self.node_ids = {
            name: self.client(name).info()["Swarm"]["NodeID"] for name in SWARM_NODES
        }
        self.hostnames = {
            name: self.client().nodes.get(node_id).attrs["Description"]["Hostname"]
            for name, node_id in self.node_ids.items()
        }

    def client(self, name: str = "n1") -> docker.DockerClient:
        if name not in self._clients:
            self._clients[name] = docker.DockerClient(
                base_url=self.node_urls[name], version="auto", timeout=60
            )
        return self._clients[name]

    def _node(self, name: str):
        return self.client().nodes.get(self.node_ids.get(name, name))

    def set_availability(self, node: str, availability: str) -> None:
        """`docker node update --availability active|pause|drain NODE`."""
        self._update_spec(node, lambda spec: spec.__setitem__("Availability", availability))

    def _update_labels(self, name: str, change) -> None:
        def update(spec: dict) -> None:
            labels = dict(spec.get("Labels") or {})
            change(labels)
            spec["Labels"] = labels

        self._update_spec(name, update)

    def _update_spec(self, name: str, change) -> None:
        for _attempt in range(5):  # the node's version moves on with every heartbeat update
            node = self._node(name)
            spec = dict(node.attrs["Spec"])
            change(spec)
            try:
                node.update(spec)
                return
            except docker.errors.APIError as exc:
                if "update out of sequence" not in str(exc):
                    raise
        raise RuntimeError(f"could not update node {name}")

    def label(self, node: str, key: str, value: str) -> None:
        """Add (or set) a node label, like `docker node update --label-add key=value`."""
        self._labels_added.add((node, key))
        self._update_labels(node, lambda labels: labels.__setitem__(key, value))

    def unlabel(self, node: str, key: str) -> None:
        """Remove a node label, like `docker node update --label-rm key`."""
        self._labels_added.discard((node, key))
        self._update_labels(node, lambda labels: labels.pop(key, None))

    def _run_script(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["bash", str(SWARM_SCRIPT), *args], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"scripts/swarm-cluster {' '.join(args)} failed (exit {proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def node_state(self, name: str) -> str:
        """The node's state as the manager sees it: "ready", "down", "unknown", ..."""
        return self._node(name).attrs["Status"]["State"]

    def wait_node_state(self, name: str, state: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.node_state(name) != state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {name} not {state} within {timeout} s (it is {self.node_state(name)})")
            time.sleep(0.2)

    def stop_node(self, name: str) -> None:
        """Kill a worker outright (dockerd, containerd, its containers' processes), as if the
        machine died. The manager marks it down after its heartbeat runs out (~8 s here)."""
        if name == "n1":
            raise ValueError("n1 is the only manager; stopping it stops the whole swarm")
        self._stopped.add(name)
        self._clients.pop(name, None)
        self._run_script("stop-node", name)

    def start_node(self, name: str) -> None:
        """Start a stopped node's dockerd again; returns once the manager sees it Ready."""
        self._run_script("start-node", name)
        self._stopped.discard(name)

    def remove_managed_services(self, stale_after: float = 3600) -> None:
        """Remove services labelled conveyor.managed that this session made (created since the
        fixture started) or that a session which died left (older than `stale_after` s). The
        cluster is shared by every test session on the machine: another session's services in
        use are left alone."""
        for service in self.client().services.list(filters={"label": SWARM_MANAGED_LABEL}):
            created = _swarm_time(service.attrs["CreatedAt"])
            if created >= self.started - 1 or created < time.time() - stale_after:
                try:
                    service.remove()
                except docker.errors.NotFound:
                    pass

    def restore(self) -> None:
        """Put back what the helpers changed: stopped nodes started, labels added removed."""
        for name in sorted(self._stopped):
            self.start_node(name)
        for node, key in sorted(self._labels_added):
            self.unlabel(node, key)


@pytest.fixture(scope="session")
def swarm(test_image) -> SwarmCluster:
    """A real three-node Docker Swarm on this machine (scripts/swarm-cluster up: reused when
    it is already up, and left running afterwards; `scripts/swarm-cluster down` is for
    humans). At session end, services labelled conveyor.managed that this session made (or
    that a dead session left, over an hour old) are removed, stopped nodes started again and
    node labels added through the helpers removed. Other sessions may share the cluster at the
    same time: tests use unique service names and label keys."""
    lock_path = Path(tempfile.gettempdir()) / "conveyor-swarm-cluster.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel workers (pytest-xdist) set it up once
        try:
            proc = subprocess.run(
                ["bash", str(SWARM_SCRIPT), "up"], capture_output=True, text=True, timeout=300
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _fail_or_skip(f"scripts/swarm-cluster up did not finish: {exc}")
        if proc.returncode != 0:
            _fail_or_skip(
                f"scripts/swarm-cluster up failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
    try:
        cluster = SwarmCluster()
    except Exception as exc:
        _fail_or_skip(f"the swarm of scripts/swarm-cluster is not usable: {type(exc).__name__}: {exc}")
    try:
        yield cluster
    finally:
        try:
            cluster.remove_managed_services()
        finally:
            cluster.restore()


SLURM_SCRIPT = REPO_ROOT / "scripts" / "slurm-cluster"


class SlurmCluster:
    """The two-node Slurm of scripts/slurm-cluster (slurmctld, slurmd n1 and n2 on this host).

    ``conf``: its slurm.conf; ``env()``: the environment its clients need (SLURM_CONF);
    ``run(*argv)``: a Slurm command (sbatch, squeue, ...) whose output is returned, failing the
    test when it fails; ``stop_node`` (a node dying: its slurmd killed) and ``start_node``. Nodes
    stopped are started and resumed at session end."""

    def __init__(self, conf: str) -> None:
        self.conf = conf
        self._stopped: set[str] = set()

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": self.conf}

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=self.env(), timeout=timeout, cwd="/")
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def node_states(self) -> dict[str, str]:
        return dict(line.split() for line in self.run("sinfo", "-h", "-N", "-o", "%N %T").splitlines())

    def _script(self, *args: str) -> None:
        proc = subprocess.run(["bash", str(SLURM_SCRIPT), *args], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/slurm-cluster {' '.join(args)} failed (exit {proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}")

    def stop_node(self, name: str) -> None:
        """Kill a node's slurmd (SIGKILL): slurmctld marks it down after SlurmdTimeout (10 s)."""
        self._stopped.add(name)
        self._script("stop-node", name)

    def start_node(self, name: str) -> None:
        """Start the node's slurmd again and wait until slurmctld sees it ready (``up`` repairs)."""
        self._script("up")
        self._stopped.discard(name)

    def restore(self) -> None:
        if self._stopped:
            self._script("up")
            self._stopped.clear()


@pytest.fixture(scope="session")
def slurm() -> SlurmCluster:
    """A real two-node Slurm cluster on this machine (scripts/slurm-cluster up: reused when it
    is up, left running afterwards; `scripts/slurm-cluster down` removes it). Fails in CI when
    it cannot be brought up."""
    lock_path = Path(tempfile.gettempdir()) / "conveyor-slurm-cluster.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            proc = subprocess.run(["bash", str(SLURM_SCRIPT), "up"], capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            _fail_or_skip(f"scripts/slurm-cluster up did not finish: {exc}")
        if proc.returncode != 0:
            _fail_or_skip(f"scripts/slurm-cluster up failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    cluster = SlurmCluster(proc.stdout.strip().splitlines()[-1])
    try:
        yield cluster
    finally:
        cluster.restore()
