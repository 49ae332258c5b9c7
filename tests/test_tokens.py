"""Tokens carry rights: the owner of the state directory (agent.token) has the engine's full
power through the agent as embedded; named tokens (`conveyor token create`) are bound to a
policy, and every refusal names the rule, the token and the policy. A real `conveyor serve`,
the real engine, real HTTP on the unix socket and on TCP.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from conveyor import Client, Executor, JobSpec, JobState
from conveyor.errors import PolicyRefused
from helpers import AgentProcess, sh

WAIT = 90


@pytest.fixture
def cli(fresh_cli):
    """These tests arrange the state directory (or start their own agent) before the first
    command: no agent may run yet."""
    return fresh_cli


@pytest.fixture
def agent(state_dir, test_image):
    """An agent whose TCP listener serves named tokens only (the default)."""
    a = AgentProcess(state_dir, tcp_allow_owner=False).start()
    yield a
    a.stop()
    with Executor(state_dir) as ex:
        ex.cleanup()


def unix_http(home: Path, token: str | None) -> httpx.Client:
    """Requests on the agent's unix socket (where the owner's CLI talks to it)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(home / "agent.sock")), base_url="http://agent",
                        headers=headers, timeout=WAIT)


def create(cli, name: str, *args: str) -> str:
    """`conveyor token create NAME ARGS` as the owner; the token it printed."""
    token = cli.ok("token", "create", name, *args).strip()
    assert len(token) >= 40 and "\n" not in token, token
    return token


def containers(cli) -> list:
    return cli.containers()


# ----------------------------------------------------------------------------- the owner


def test_the_owner_through_the_agent_runs_what_the_embedded_executor_runs(state_dir, cli, tmp_path, test_image):
    """The bug: once an agent ran, the owner's own CLI and Client were refused a bind mount
    outside <state dir>/jobs (and anything the node policy forbade) that the embedded
    Executor ran. The same job must be accepted both ways."""
    data = tmp_path / "host-data"
    data.mkdir()
    (data / "x").write_text("host file\n")
    # A node policy that would refuse this job on every count: it is not the owner's.
    (state_dir / "policy.yaml").write_text(
        "images: {allowed: ['nothing/*']}\nmax_resources: {memory: 1m}\nmounts: {allowed_host_paths: []}\n"
    )
    spec = JobSpec(image=test_image, command=["cat", "/in/x"], mounts=[f"{data}:/in:ro"], network="none")

    with Executor(state_dir) as ex:
        embedded = ex.run(spec, timeout=WAIT)
    assert (embedded.state, embedded.stdout) == (JobState.DONE, "host file\n")

    agent = AgentProcess(state_dir, tcp_allow_owner=False).start()
    try:
        with Client(state_dir) as owner:  # the unix socket, the token in agent.token
            through = owner.run(spec, timeout=WAIT)
        assert (through.state, through.stdout) == (JobState.DONE, "host file\n")
        run = cli.run("run", "--network", "none", "-v", f"{data}:/in:ro", test_image, "cat", "/in/x")
        assert (run.returncode, run.stdout, run.stderr) == (0, b"host file\n", b""), run.stderr
        assert len(cli.jobs()) == 3
    finally:
        agent.stop()


# ----------------------------------------------------------------------------- named tokens


def test_a_named_tokens_policy_refuses_naming_rule_token_and_policy_and_creates_nothing(agent, cli, state_dir, tmp_path, test_image):
    """A remote user with a restricted token must be refused what its policy forbids, be told
    which rule of which token's policy refused it (not a bare 403), and leave no job row and
    no container behind; what the policy allows runs."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "x").write_text("allowed data\n")
    policy = tmp_path / "ci-policy.yaml"
    policy.write_text(f"mounts: {{allowed_host_paths: [{allowed}]}}\nimages: {{allowed: ['conveyor/*']}}\n")
    ci = create(cli, "ci", "--policy", str(policy))

    with agent.http(ci) as h:  # over TCP: named tokens are served there
        r = h.post("/v1/jobs", json={"spec": {"image": test_image, "command": ["true"], "privileged": True}})
        assert r.status_code == 403, r.text
        assert r.json() == {
            "code": "policy_refused", "field": "privileged",
            "message": f"refused by policy rule 'privileged' of token 'ci' (policy {policy}): privileged jobs are not allowed on this node",
            "details": {"rule": "privileged", "token": "ci", "policy": str(policy)},
        }
        r = h.post("/v1/jobs", json={"spec": {"image": test_image, "command": ["true"], "mounts": ["/etc:/in:ro"]}})
        assert r.status_code == 403 and r.json()["details"]["rule"] == "mounts.allowed_host_paths", r.text
        assert r.json()["message"].startswith(f"refused by policy rule 'mounts.allowed_host_paths' of token 'ci' (policy {policy}): ")
        r = h.post("/v1/arrays", json={"spec": {"image": test_image, "command": ["true"], "privileged": True}, "begin": 1, "end": 2})
        assert r.status_code == 403 and r.json()["details"]["token"] == "ci", r.text
        r = h.post("/v1/images/ensure", json={"spec": {"image": "busybox:latest"}})
        assert r.status_code == 403 and r.json()["details"] == {"rule": "images.allowed", "token": "ci", "policy": str(policy)}

    with pytest.raises(PolicyRefused) as refused:
        Client(url=agent.url, token=ci).submit(JobSpec(image=test_image, command=["true"], pid_mode="host"))
    assert (refused.value.rule, refused.value.token, refused.value.policy) == ("host_pid", "ci", str(policy))
    # the CLI with that token on the unix socket meets the same policy
    run = cli.run("run", "--privileged", "--network", "none", test_image, "true", env={"CONVEYOR_TOKEN": ci})
    assert run.returncode == 125
    assert f"refused by policy rule 'privileged' of token 'ci' (policy {policy})" in run.stderr.decode()

    assert cli.jobs() == [], "a refused job left a job row"
    assert containers(cli) == [], "a refused job left a container"

    job = Client(url=agent.url, token=ci).run(
        JobSpec(image=test_image, command=["cat", "/in/x"], mounts=[f"{allowed}:/in:ro"], network="none"), timeout=WAIT)
    assert (job.state, job.stdout) == (JobState.DONE, "allowed data\n")

    # the token follows its policy file; a broken file refuses its jobs until fixed (fail closed)
    policy.write_text("images: {allowed: [")
    with agent.http(ci) as h:
        r = h.post("/v1/jobs", json={"spec": {"image": test_image, "command": ["true"], "network": "none"}})
        assert r.status_code == 403 and r.json()["details"] == {"rule": "policy_file", "token": "ci", "policy": str(policy)}, r.text


def test_a_token_without_a_policy_of_its_own_meets_the_nodes(agent, cli, state_dir, tmp_path, test_image):
    """`token create NAME` without --policy must bind the token to the node's policy.yaml, or
    the built-in defaults without one (today's rules for submitted jobs), and say which."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "x").write_text("node data\n")
    guest = create(cli, "guest")
    spec = {"image": test_image, "command": ["cat", "/in/x"], "mounts": [f"{data}:/in:ro"], "network": "none"}
    with agent.http(guest) as h:
        r = h.post("/v1/jobs", json={"spec": spec})
        assert r.status_code == 403, r.text
        assert r.json()["message"].startswith(
            "refused by policy rule 'mounts.allowed_host_paths' of token 'guest' (the built-in default policy): ")
        assert r.json()["details"] == {"rule": "mounts.allowed_host_paths", "token": "guest", "policy": None}
        (state_dir / "policy.yaml").write_text(f"mounts: {{allowed_host_paths: [{data}]}}\n")
        r = h.post("/v1/jobs", json={"spec": spec})
        assert r.status_code == 201, r.text
        r = h.post("/v1/jobs", json={"spec": {**spec, "privileged": True}})
        assert r.json()["message"].startswith(
            f"refused by policy rule 'privileged' of token 'guest' (policy {state_dir / 'policy.yaml'}): "), r.text
    assert Client(url=agent.url, token=guest).wait(cli.only_job()["id"], timeout=WAIT).stdout == "node data\n"


def test_a_revoked_token_gets_401_at_once_on_a_running_agent(agent, cli, state_dir, test_image):
    """A leaked token must stop working the moment the owner revokes it, without restarting
    the agent, even on a connection the holder keeps open."""
    ci = create(cli, "ci")
    with agent.http(ci) as h:
        assert h.get("/v1/jobs").status_code == 200
        listed = json.loads(cli.ok("token", "list", "--json"))
        assert [t["name"] for t in listed] == ["ci"] and listed[0]["last_used_at"] is not None
        assert cli.ok("token", "revoke", "ci").strip() == "token 'ci' revoked"
        r = h.get("/v1/jobs")  # the same kept-alive connection
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text
        r = h.post("/v1/jobs", json={"spec": {"image": test_image, "command": ["true"], "network": "none"}})
        assert r.status_code == 401
    assert json.loads(cli.ok("token", "list", "--json")) == []
    again = cli.run("token", "revoke", "ci")
    assert again.returncode == 125 and "no token named 'ci'" in again.stderr.decode()
    assert cli.jobs() == []

    # tokens.json is re-read when it changes: removing it by hand revokes every named token
    other = create(cli, "other")
    with agent.http(other) as h:
        assert h.get("/v1/jobs").status_code == 200
        (state_dir / "tokens.json").unlink()
        assert h.get("/v1/jobs").status_code == 401


def test_tokens_are_shown_once_and_kept_only_as_hashes_in_0600_files(agent, cli, state_dir, tmp_path):
    """A token must never be readable again (list, files) once printed, and the files that
    hold hashes and policies must not be readable by other users."""
    policy = tmp_path / "p.yaml"
    policy.write_text("privileged: false\n")
    tokens = {"ci": create(cli, "ci", "--policy", str(policy)), "guest": create(cli, "guest")}
    with unix_http(state_dir, (state_dir / "agent.token").read_text().strip()) as h:
        r = h.post("/v1/tokens", json={"name": "inline", "policy": "host_network: false\n"})
        assert r.status_code == 201, r.text
        tokens["inline"] = r.json()["token"]
        assert r.json()["policy"] == str(state_dir / "policies" / "inline.yaml")
        listed = h.get("/v1/tokens").json()
    assert [t["name"] for t in listed["tokens"]] == ["ci", "guest", "inline"]
    assert set(listed["tokens"][0]) == {"name", "policy", "created_at", "last_used_at"}
    shown = json.dumps(listed) + cli.ok("token", "list") + cli.ok("token", "list", "--json")
    assert "ci" in shown and "(node policy)" in shown
    everything = "".join(p.read_text(errors="replace") for p in state_dir.rglob("*") if p.is_file())
    for token in tokens.values():
        assert token not in shown, "the list shows a token"
        assert token not in everything, "a token is kept in clear in the state directory"
    for path in (state_dir / "tokens.json", state_dir / "policies" / "inline.yaml", state_dir / "agent.token"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((state_dir / "policies").stat().st_mode) & 0o077 == 0
    assert (state_dir / "policies" / "inline.yaml").read_text() == "host_network: false\n"
    cli.ok("token", "revoke", "inline")
    assert not (state_dir / "policies" / "inline.yaml").exists()


def test_a_broken_policy_is_refused_at_create(agent, cli, state_dir, tmp_path):
    """A typo in a token's policy must be reported when the token is made (with the reason),
    not discovered when its first job is refused; nothing is created."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("privileged: maybe\nmounts: {allowed_host_paths: [relative/path]}\n")
    out = cli.run("token", "create", "ci", "--policy", str(bad))
    err = out.stderr.decode()
    assert out.returncode == 125 and out.stdout == b"", err
    assert f"policy file refused: {bad}: " in err
    assert "privileged: Input should be a valid boolean" in err and "allowed host paths must be absolute" in err
    owner = (state_dir / "agent.token").read_text().strip()
    with unix_http(state_dir, owner) as h:
        for body, field in (
            ({"name": "ci", "policy": "images: {allowed: ["}, "policy"),
            ({"name": "ci", "policy": "- a list\n"}, "policy"),
            ({"name": "ci", "policy_path": "relative.yaml"}, "policy_path"),
            ({"name": "ci", "policy_path": str(tmp_path / "missing.yaml")}, "policy_path"),
            ({"name": "ci", "policy_path": "/dev/zero"}, "policy_path"),  # not read forever
        ):
            r = h.post("/v1/tokens", json=body)
            assert r.status_code == 422 and r.json()["code"] == "invalid_policy" and r.json()["field"] == field, (body, r.text)
        for name in ("owner", "a/b", ".hidden"):
            assert h.post("/v1/tokens", json={"name": name}).status_code == 422, name
        assert h.get("/v1/tokens").json() == {"tokens": []}
    assert not (state_dir / "policies").exists() or list((state_dir / "policies").iterdir()) == []


def test_only_the_owner_manages_tokens(agent, cli, state_dir):
    """A named token must not mint itself more rights: creating, listing and revoking tokens
    is the owner's, on either listener."""
    ci = create(cli, "ci")
    for client in (agent.http(ci), unix_http(state_dir, ci)):
        with client as h:
            for method, path, kw in (("POST", "/v1/tokens", {"json": {"name": "more"}}), ("GET", "/v1/tokens", {}),
                                     ("DELETE", "/v1/tokens/ci", {})):
                r = h.request(method, path, **kw)
                assert r.status_code == 403 and r.json()["code"] == "forbidden", (method, r.text)
                assert "only the owner" in r.json()["message"] and r.json()["details"] == {"token": "ci"}
    out = cli.run("token", "list", env={"CONVEYOR_TOKEN": ci})
    assert out.returncode == 125 and "only the owner of the state directory" in out.stderr.decode()
    assert [t["name"] for t in json.loads(cli.ok("token", "list", "--json"))] == ["ci"]


# ----------------------------------------------------------------------------- TCP


def test_tcp_serves_named_tokens_and_the_owner_only_with_the_flag(state_dir, cli, test_image):
    """`serve --tcp` must not hand the engine's full power to whoever gets the owner's token
    onto the network: TCP refuses it (saying what to do instead) unless the operator passed
    --tcp-allow-owner, while named tokens work there and the owner keeps the unix socket."""
    agent = AgentProcess(state_dir, tcp_allow_owner=False).start()
    try:
        with agent.http() as h:  # the owner's token, over TCP
            r = h.get("/v1/jobs")
            assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
            assert "conveyor token create" in r.json()["message"] and "--tcp-allow-owner" in r.json()["message"]
            r = h.post("/v1/jobs", json={"spec": {"image": test_image, "command": ["true"], "network": "none"}})
            assert r.status_code == 403
        assert Client(state_dir).list() == []  # the unix socket serves the owner
        remote = cli.run("ps", env={"CONVEYOR_HOST": agent.url, "CONVEYOR_TOKEN": agent.token})
        assert remote.returncode == 125 and "--tcp-allow-owner" in remote.stderr.decode()
        ci = create(cli, "ci")
        job = Client(url=agent.url, token=ci).run(sh(test_image, "echo over tcp", network="none"), timeout=WAIT)
        assert (job.state, job.stdout) == (JobState.DONE, "over tcp\n")
    finally:
        agent.stop()

    agent = AgentProcess(state_dir, tcp_allow_owner=True).start()
    try:
        with agent.http() as h:
            assert h.get("/v1/jobs").json()["total"] == 1
        with agent.http(ci) as h:  # named tokens outlive the agent that made them
            assert h.get("/v1/jobs").status_code == 200
    finally:
        agent.stop()
        with Executor(state_dir) as ex:
            ex.cleanup()


def test_policy_backend_rules_name_the_rule(tmp_path):
    from conveyor.agent.policy import Policy
    from conveyor.errors import PolicyRefused
    from conveyor.spec import JobSpec

    def refused(policy: dict, **spec) -> str | None:
        try:
            Policy.model_validate(policy).check(JobSpec(**spec), tmp_path)
        except PolicyRefused as exc:
            return exc.rule
        return None

    container = dict(image="busybox", command=["true"])
    process = dict(backend="process", command=["true"])
    gvisor = dict(container, backend={"options": {"runtime": "runsc"}})
    assert refused({}, **container) is None
    assert refused({}, **process) == "backends.allowed"  # a host process: never by default
    assert refused({"backends": {"allowed": ["docker", "process"]}}, **process) is None
    assert refused({"backends": {"sandbox": "runsc"}}, **container) == "backends.sandbox"
    assert refused({"backends": {"sandbox": "runsc"}}, **gvisor) is None
    assert refused({"backends": {"runtimes": ["runc"]}}, **gvisor) == "backends.runtimes"
    assert refused({"backends": {"allowed": ["process"]}}, **container) == "backends.allowed"
