"""Backends from the command line and the agent (issue 14): `conveyor backends`, `--backend`,
`--runtime` and backend options on `run`, job files naming a backend, `conveyor machine`'s
runtimes, clear refusals naming the flag, and a token's policy on backends and runtimes. Each
CLI test runs twice (no agent yet / agent running) through the `cli` fixture."""

from __future__ import annotations

import json
import socket

import pytest

from conveyor import Client, JobSpec, JobState
from conveyor.errors import PolicyRefused

WAIT = 60


def test_backends_lists_each_backend_with_its_capabilities_and_options(cli, runsc_runtime):
    found = {b["name"]: b for b in json.loads(cli.ok("backends", "--json"))}
    assert sorted(found) == ["docker", "podman", "process", "slurm", "swarm"]
    assert found["docker"]["available"] and found["docker"]["default"]
    assert found["process"]["available"] and not found["process"]["default"]
    assert not found["podman"]["available"] and "container engine is docker" in found["podman"]["error"]
    assert not found["slurm"]["available"] and set(found["slurm"]["options"]) >= {"partition", "account", "qos"}
    assert found["process"]["capabilities"]["ports"] is False and found["docker"]["capabilities"]["ports"] is True
    assert set(found["process"]["options"]) == {"cgroup", "nice", "umask"}
    assert found["docker"]["options"]["runtime"]["default"] is None
    table = cli.ok("backends")
    assert "process" in table and "available (default)" in table and "not here" in table

    machine = json.loads(cli.ok("machine", "--json"))
    assert "runsc" in machine["engine"]["runtimes"] and machine["backends"] == ["docker", "process"]
    assert "runsc" in cli.ok("machine")


def test_run_on_the_process_backend_from_flags_and_from_a_job_file(cli, tmp_path):
    out = cli.ok("run", "--backend", "process", "--backend-opt", "nice=7", "-e", "WHO=host",
                 "sh", "-c", "echo $WHO $(hostname); cut -d' ' -f19 /proc/self/stat")
    who, nice = out.splitlines()
    assert who == f"host {socket.gethostname()}" and nice == "7"

    job_file = tmp_path / "job.yaml"
    job_file.write_text("backend: {name: process, options: {umask: '077'}}\ncommand: [sh, -c, 'umask']\n")
    assert cli.ok("run", "-f", str(job_file)).strip() == "0077"
    # the views show a job without an image as such, docker's ps too
    table = cli.ok("ps", "-a").splitlines()
    assert len(table) == 3 and all(" - " in row for row in table[1:]), table
    assert cli.ok("ps", "-a", "--format", "{{.Image}}|{{.Command}}").splitlines()[0] == '-|"sh -c umask"'
    assert cli.ok("docker", "ps", "-a", "--format", "{{.Image}}").splitlines() == ["-", "-"]


def test_run_under_gvisor_with_runtime(cli, test_image, runsc_runtime):
    out = cli.ok("run", "--rm", "--runtime", "runsc", "--network", "none", test_image, "cat", "/proc/version")
    assert "4.4.0" in out  # gVisor's kernel, not the host's
    job = cli.only_job()
    assert job["spec"]["backend"] == {"options": {"runtime": "runsc"}}


@pytest.mark.parametrize(
    "args, words",
    [
        (("--backend", "kubernetes", "IMAGE", "true"), "backend.name (--backend): 'kubernetes' is not valid; unknown backend; use one of docker, podman, swarm, slurm, process"),
        (("--backend", "podman", "IMAGE", "true"), "this node has the container engine docker"),
        # Engines differ in what else they list (containerd's own shims on newer ones).
        (("--runtime", "nosuch", "IMAGE", "true"), ("the docker engine has no such runtime; it offers", "runc", "runsc")),
        (("--backend", "process", "-p", "8080", "true"), "the process backend cannot publish ports (capability 'ports')"),
        (("--backend", "process", "--backend-opt", "nice=99", "true"), "backend.options.nice (--backend-opt): '99' is not valid"),
        # options with no backend named are the node's engine's (docker here), not swarm's
        (("--backend-opt", "constraints=node.role==worker", "IMAGE", "true"), "the docker backend's options: runtime, cgroup_parent, security_opt"),
        (("--backend-opt", "colour=blue", "IMAGE", "true"), "backend.options.colour (--backend-opt)"),
        (("--backend", "process", "-t", "true"), "the process backend cannot give a job a terminal"),
    ],
)
def test_bad_backend_flags_are_refused_naming_the_flag_and_leave_nothing(cli, test_image, runsc_runtime, args, words):
    args = tuple(test_image if a == "IMAGE" else a for a in args)
    result = cli.run("run", *args)
    assert result.returncode == 125, result
    for fragment in (words,) if isinstance(words, str) else words:
        assert fragment in result.stderr.decode(), result.stderr.decode()
    assert cli.jobs() == [] and cli.containers() == []


def test_a_tokens_policy_rules_on_backends_and_runtimes(agent, cli, tmp_path, test_image, runsc_runtime):
    policy = tmp_path / "sandboxed.yaml"
    policy.write_text("backends: {sandbox: runsc}\n")
    token = cli.ok("token", "create", "guest", "--policy", str(policy)).strip()
    guest = Client(url=agent.url, token=token)

    with pytest.raises(PolicyRefused) as refused:
        guest.submit(JobSpec(image=test_image, command=["true"]))
    assert (refused.value.rule, refused.value.token) == ("backends.sandbox", "guest")
    with pytest.raises(PolicyRefused) as refused:
        guest.submit(JobSpec(backend="process", command=["true"]))
    assert refused.value.rule == "backends.allowed"  # a host process: never by default
    job = guest.run(JobSpec(image=test_image, command=["cat", "/proc/version"], network="none",
                            backend={"options": {"runtime": "runsc"}}), timeout=WAIT)
    assert (job.state, "4.4.0" in job.stdout) == (JobState.DONE, True)


def test_the_engine_is_chosen_by_conveyor_engine_and_never_switched_silently(fresh_cli, state_dir, test_image, podman_url):
    import docker

    from conveyor.daemon import stop_supervisor
    from conveyor.home import Home

    podman = docker.APIClient(base_url=podman_url, version="auto")
    try:
        on_podman = {"CONVEYOR_ENGINE": "podman"}
        found = {b["name"]: b for b in json.loads(fresh_cli.ok("backends", "--json", env=on_podman))}
        assert found["podman"]["default"] and found["podman"]["available"] and not found["docker"]["available"]
        out = fresh_cli.ok("run", "--name", "where", "--network", "none", test_image, "sh", "-c", "echo on podman",
                           env=on_podman)
        assert out == "on podman\n"
        job = fresh_cli.only_job()
        assert podman.inspect_container(job["container_id"])["Config"]["Labels"]["conveyor.job"] == job["id"]
        assert fresh_cli.containers() == []  # nothing in docker

        # The agent runs on podman: a command asking for docker is refused, not run on podman.
        wrong = fresh_cli.run("run", test_image, "true", env={"CONVEYOR_ENGINE": "docker"})
        assert wrong.returncode == 125
        assert "CONVEYOR_ENGINE=docker, but the agent of" in wrong.stderr.decode() and "podman" in wrong.stderr.decode()
    finally:
        stop_supervisor(Home(state_dir))
        for c in podman.containers(all=True, filters={"label": "conveyor.managed"}):
            if c["Labels"].get("conveyor.executor") == Home(state_dir).executor_id():
                podman.remove_container(c["Id"], force=True)
