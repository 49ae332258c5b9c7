"""The node agent end to end: a real `conveyor serve` process, the real engine, real HTTP.

Covers the unix socket and token (0600, 401, rotation), one agent per state directory,
the CLI through the agent for every verb, SIGKILL of the agent while jobs run, the policy
rules, log follow and events over HTTP, the committed OpenAPI document and a schemathesis
fuzz run that must see no 5xx.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conveyor import Client, Executor, JobSpec, JobState
from conveyor.errors import AgentError, InvalidSpec, InvalidState, JobNotFound, PolicyRefused, WaitTimeout
from helpers import AgentProcess, eventually, sh

REPO = Path(__file__).resolve().parent.parent
CONVEYOR = [sys.executable, "-m", "conveyor"]
WAIT = 90


def conveyor(home: Path, *args: str, env: dict | None = None, timeout: float = WAIT, **kw) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_HOST", "CONVEYOR_TOKEN")}
    full_env.update({"CONVEYOR_HOME": str(home), **(env or {})})
    return subprocess.run([*CONVEYOR, *args], env=full_env, capture_output=True, text=True, timeout=timeout, **kw)


# ----------------------------------------------------------------------------- socket, token, lock


def test_socket_token_401_rotation_and_one_agent_per_state_dir(agent, state_dir):
    for name in ("agent.sock", "agent.token"):
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600, name

    # no token, a wrong token, a wrong scheme: 401 with the JSON error, and nothing changes
    body = {"spec": {"image": "conveyor/busybox:latest", "command": ["true"], "network": "none"}}
    for token in (None, "wrong", agent.token + "x"):
        with agent.http(token) as h:
            for method, path, kw in (
                ("POST", "/v1/jobs", {"json": body}), ("GET", "/v1/jobs", {}), ("POST", "/v1/cleanup", {}),
                ("GET", "/v1/events", {"params": {"follow": "false"}}),
            ):
                r = h.request(method, path, **kw)
                assert r.status_code == 401, (token, path, r.text)
                assert r.json()["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    with agent.http() as h:
        r = h.get("/v1/jobs", headers={"Authorization": f"Basic {agent.token}"})
        assert r.status_code == 401
        assert h.get("/v1/jobs").json()["total"] == 0  # none of the refused submits created a job
    with pytest.raises(AgentError, match="token"):
        Client(state_dir, token="nope").list()

    # a second agent on the same state directory says which pid holds it
    second = conveyor(state_dir, "serve")
    assert second.returncode == 125
    assert f"process {agent.proc.pid} already supervises" in second.stderr
    status = conveyor(state_dir, "serve", "--status")
    assert status.returncode == 0 and f"agent pid {agent.proc.pid}" in status.stdout and agent.url in status.stdout

    # rotation: the running agent takes the new token at once, the old one is refused
    old = agent.token
    out = conveyor(state_dir, "serve", "--rotate-token")
    assert out.returncode == 0, out.stderr
    assert agent.token != old and stat.S_IMODE((state_dir / "agent.token").stat().st_mode) == 0o600
    with agent.http(old) as h:
        assert h.get("/v1/jobs").status_code == 401
    with agent.http() as h:
        assert h.get("/v1/jobs").status_code == 200

    stop = conveyor(state_dir, "serve", "--stop")
    assert stop.returncode == 0 and f"stopped agent pid {agent.proc.pid}" in stop.stdout
    assert agent.proc.wait(timeout=30) == 0
    assert not (state_dir / "agent.sock").exists()
    assert conveyor(state_dir, "serve", "--status").returncode == 3


# ----------------------------------------------------------------------------- the Client


# The unvalidated spec below is on purpose (the agent must validate); pydantic warns when
# serialising it.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_client_and_executor_are_interchangeable(agent, state_dir, test_image):
    """The same code against Client (through the agent) gives what Executor gives."""
    ok = sh(test_image, "echo out; echo err >&2; exit 3", labels={"suite": "agent"}, network="none")
    with Client(state_dir) as ex:
        job = ex.run(ok, timeout=WAIT)
        assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, "exited", 3)
        assert (job.stdout, job.stderr) == ("out\n", "err\n")
        assert list(ex.logs(job.id)) == [("stdout", b"out\n"), ("stderr", b"err\n")]
        assert list(ex.logs(job.id, "stderr")) == [("stderr", b"err\n")]
        assert [j.id for j in ex.list(labels={"suite": "agent"})] == [job.id]
        assert ex.list(states=["Running"]) == []
        assert ex.info(job.id[:6]).id == job.id
        assert ex.future(job.id).result(timeout=WAIT).exit_code == 3

        held = ex.submit(sh(test_image, "echo held-ran", network="none"), hold=True)
        assert ex.info(held).state is JobState.QUEUED_HELD
        with pytest.raises(WaitTimeout):
            ex.wait(held, timeout=1)
        with pytest.raises(InvalidState):
            ex.suspend(held)
        assert ex.release(held).state in (JobState.QUEUED, JobState.RUNNING, JobState.DONE)
        assert ex.wait(held, timeout=WAIT).stdout == "held-ran\n"
        still_held = ex.submit(sh(test_image, "echo never", network="none"), hold=True)
        assert ex.wait_any([still_held, held], timeout=WAIT).id == held  # the one that has ended

        sleeper = ex.start(sh(test_image, "sleep 60", network="none"))
        assert ex.suspend(sleeper).state is JobState.SUSPENDED
        assert ex.resume(sleeper).state is JobState.RUNNING
        cancelled = ex.cancel(sleeper, grace=1)
        assert (cancelled.state, cancelled.substate) == (JobState.FAILED, "cancelled")

        with pytest.raises(InvalidSpec) as bad:
            ex.submit(JobSpec.model_construct(image="conveyor/busybox:latest", resources={"memory": "12x"}))
        assert bad.value.problems[0][0] == "resources.memory"
        with pytest.raises(JobNotFound):
            ex.info("no-such-job")
        ex.remove(held)
        with pytest.raises(JobNotFound):
            ex.info(held)
        assert set(ex.cleanup()) >= {"containers"}

    # the library, embedded, sees the same jobs the same way once the agent is gone
    agent.stop()
    with Executor(state_dir) as ex:
        local = ex.info(job.id)
        assert (local.state, local.exit_code, local.stdout) == (job.state, job.exit_code, job.stdout)


def test_wait_is_a_long_poll(agent, test_image):
    with Client(agent.home) as c, agent.http() as h:
        job_id = c.submit(sh(test_image, "sleep 2; echo late", network="none"))
        t = time.monotonic()
        r = h.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 60})
        assert r.status_code == 200 and r.json()["state"] == "Done"
        assert 1.0 < time.monotonic() - t < 30  # answered when the job ended, not by polling the caller
        held = c.submit(sh(test_image, "true", network="none"), hold=True)
        r = h.get(f"/v1/jobs/{held}/wait", params={"timeout": 0.5})
        assert r.status_code == 408 and r.json()["code"] == "wait_timeout"
        assert h.get(f"/v1/jobs/{held}/wait", params={"timeout": 61}).json()["code"] == "invalid_request"


# ----------------------------------------------------------------------------- crash of the agent


def test_agent_sigkilled_while_jobs_run_loses_nothing(agent, state_dir, test_image, docker_client):
    c = Client(state_dir)
    long = [c.submit(sh(test_image, f"sleep 12; echo long-{i}", network="none")) for i in range(2)]
    short = c.submit(sh(test_image, "sleep 2; echo short; exit 5", network="none"))
    held = c.submit(sh(test_image, "echo held", network="none"), hold=True)
    for j in (*long, short):
        assert c.wait_started(j, timeout=WAIT).state is JobState.RUNNING
    executor_id = (state_dir / "executor-id").read_text().strip()

    def live() -> set[str]:
        running = docker_client.containers.list(filters={"label": f"conveyor.executor={executor_id}"})
        return {ctr.labels["conveyor.job"] for ctr in running}

    deadline = time.monotonic() + WAIT
    while live() != {*long, short} and time.monotonic() < deadline:  # claimed Running just before the engine's start
        time.sleep(0.1)
    assert live() == {*long, short}

    agent.stop(signal.SIGKILL)
    with pytest.raises(AgentError):
        Client(state_dir).list()
    assert live() >= set(long), "the jobs died with the agent"
    deadline = time.monotonic() + WAIT
    while short in live() and time.monotonic() < deadline:  # `short` ends while no agent watches
        time.sleep(0.2)
    assert live() == set(long)

    restarted = AgentProcess(state_dir).start()  # same state directory: re-attaches
    c = Client(state_dir)
    done = c.wait(short, timeout=WAIT)
    assert (done.state, done.exit_code, done.stdout) == (JobState.FAILED, 5, "short\n")
    for i, j in enumerate(long):
        job = c.wait(j, timeout=WAIT)
        assert (job.state, job.exit_code, job.stdout) == (JobState.DONE, 0, f"long-{i}\n")
    assert c.info(held).state is JobState.QUEUED_HELD
    c.release(held)
    assert c.wait(held, timeout=WAIT).stdout == "held\n"
    history = [(t.from_state, t.to_state) for t in c.events(short, since=0, follow=False)]
    assert history == [(None, JobState.QUEUED), (JobState.QUEUED, JobState.RUNNING), (JobState.RUNNING, JobState.FAILED)]
    restarted.stop()


# ----------------------------------------------------------------------------- policy


POLICY = """
mounts:
  allowed_host_paths: [{allowed}]
  volumes: false
images:
  allowed: ["conveyor/*", "127.0.0.1:5999/*"]
  registries: [docker.io]
max_resources: {{cpus: 1, memory: 256m, pids_limit: 100, gpus: 0, shm_size: 64m, timeout: 1h}}
"""


def test_each_policy_rule_refuses_with_nothing_created(state_dir, test_image, docker_client, tmp_path):
    """The node's policy.yaml binds the named tokens made without a policy of their own (the
    owner's token meets no policy: tests/test_tokens.py)."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (state_dir / "policy.yaml").write_text(POLICY.format(allowed=allowed))
    agent = AgentProcess(state_dir).start()
    try:
        made = conveyor(state_dir, "token", "create", "ci")
        assert made.returncode == 0, made.stderr
        ci = made.stdout.strip()
        fine = {"image": test_image, "command": ["cat", "/in/x"], "network": "none", "timeout": 60,
                "resources": {"cpus": 0.5, "memory": "64m", "pids_limit": 50}}
        cases = {
            "mounts.allowed_host_paths": {"mounts": ["/etc:/in:ro"]},
            "mounts.volumes": {"mounts": ["somevol:/in"]},
            "privileged": {"privileged": True},
            "host_network": {"network": "host"},
            "host_pid": {"pid_mode": "host"},
            "host_ipc": {"ipc_mode": "host"},
            "host_uts": {"uts_mode": "host"},
            "container_namespaces": {"ipc_mode": "container:abcdef012345"},
            "images.allowed": {"image": "busybox:latest"},
            "images.registries": {"image": "127.0.0.1:5999/conveyor/busybox:latest"},
            "max_resources.cpus": {"resources": {**fine["resources"], "cpus": 2}},
            "max_resources.memory": {"resources": {"cpus": 0.5, "pids_limit": 50}},  # unlimited memory
            "max_resources.pids_limit": {"resources": {**fine["resources"], "pids_limit": 1000}},
            "max_resources.gpus": {"resources": {**fine["resources"], "gpus": "all"}},
            "max_resources.shm_size": {"shm_size": "1g"},
            "max_resources.timeout": {"timeout": "2h"},
        }
        # escaping the allowed path through a symlink is still outside it
        (allowed / "escape").symlink_to("/etc")
        cases_extra = [("mounts.allowed_host_paths", {"mounts": [f"{allowed}/escape:/in:ro"]})]
        with agent.http(ci) as h:
            for rule, change in [*cases.items(), *cases_extra]:
                r = h.post("/v1/jobs", json={"spec": {**fine, **change}})
                assert r.status_code == 403, (rule, r.text)
                err = r.json()
                assert err["code"] == "policy_refused" and err["details"]["rule"] == rule, err
                assert err["details"]["token"] == "ci" and err["details"]["policy"] == str(state_dir / "policy.yaml"), err
                assert rule in err["message"] and err["field"]
            r = h.post("/v1/images/ensure", json={"spec": {**fine, "image": "busybox:latest"}})
            assert r.status_code == 403 and r.json()["details"]["rule"] == "images.allowed"
        with agent.http() as h:
            assert h.get("/v1/jobs").json()["total"] == 0
        mine = docker_client.containers.list(all=True, filters={"label": f"conveyor.executor={(state_dir / 'executor-id').read_text().strip()}"})
        assert mine == [], "a refused job left a container"

        with pytest.raises(PolicyRefused) as refused:
            Client(state_dir, token=ci).submit(JobSpec.model_validate({**fine, "privileged": True}))
        assert refused.value.rule == "privileged" and refused.value.field == "privileged"
        assert refused.value.token == "ci"
        # the CLI with that token goes through the agent, so the same rules apply to it
        cli = conveyor(state_dir, "run", "--privileged", "--network", "none", test_image, "true", env={"CONVEYOR_TOKEN": ci})
        assert cli.returncode == 125 and "refused by policy rule 'privileged' of token 'ci'" in cli.stderr

        # what the policy allows runs: a bind mount inside an allowed path
        (allowed / "x").write_text("allowed data\n")
        job = Client(state_dir, token=ci).run(JobSpec.model_validate({**fine, "mounts": [f"{allowed}:/in:ro"]}), timeout=WAIT)
        assert (job.state, job.stdout) == (JobState.DONE, "allowed data\n")

        # a broken policy file refuses everything until fixed (fail closed)
        (state_dir / "policy.yaml").write_text("privileged: [not, a, bool\n")
        with agent.http(ci) as h:
            r = h.post("/v1/jobs", json={"spec": fine})
            assert r.status_code == 403 and r.json()["details"]["rule"] == "policy_file"
            (state_dir / "policy.yaml").write_text("privileged: true\n")
            r = h.post("/v1/jobs", json={"spec": {**fine, "command": ["true"], "privileged": True}})
            assert r.status_code == 201, r.text
    finally:
        agent.stop()
        with Executor(state_dir) as ex:
            ex.cleanup()


# ----------------------------------------------------------------------------- logs and events over HTTP


def test_log_follow_over_http_of_a_job_writing_continuously(agent, test_image, monkeypatch):
    # The client tries to reach an agent that went away for RECONNECT_S (60 s) before it says
    # so; this agent is stopped for good, so 5 s shows the same answer.
    monkeypatch.setattr("conveyor.client.api.RECONNECT_S", 5.0)
    script = "i=0; while [ $i -lt 40 ]; do echo out$i; echo err$i >&2; i=$((i+1)); sleep 0.05; done"
    c = Client(agent.home)
    job_id = c.submit(sh(test_image, script, network="none"))
    got: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    first_at_state = None
    with agent.http() as h, h.stream("GET", f"/v1/jobs/{job_id}/logs", params={"follow": "true"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = []
        for line in r.iter_lines():
            frame = json.loads(line)
            lines.append(frame)
            if "data" in frame:
                import base64

                got[frame["stream"]] += base64.b64decode(frame["data"])
                if first_at_state is None:
                    first_at_state = c.info(job_id).state
    assert first_at_state is JobState.RUNNING, "the first chunk came only after the job ended: not streamed"
    assert lines[-1] == {"end": True}
    assert got["stdout"] == b"".join(f"out{i}\n".encode() for i in range(40))
    assert got["stderr"] == b"".join(f"err{i}\n".encode() for i in range(40))
    # tail and stream selection
    assert list(c.logs(job_id, "stderr", tail=2)) == [("stderr", b"err38\nerr39\n")]
    with agent.http() as h:
        assert h.get(f"/v1/jobs/{job_id}/logs", params={"stream": "both"}).json()["code"] == "invalid_request"
        assert h.get("/v1/jobs/nope/logs").status_code == 404

    # SIGTERM while a client follows a job that goes on running: the agent still stops
    sleeper = c.start(sh(test_image, "echo started; sleep 120", network="none"))
    follow = c.logs(sleeper, follow=True)
    assert next(follow) == ("stdout", b"started\n")
    t = time.monotonic()
    agent.stop()
    assert agent.proc.returncode == 0 and time.monotonic() - t < 30
    with pytest.raises(AgentError):
        list(follow)  # cut before its end: the client says so


def test_events_stream_sees_every_transition_in_order(agent, test_image):
    c = Client(agent.home)
    seen: list = []
    ready = threading.Event()
    job_ref: dict = {}

    def listen():
        stream = c.events()  # from now on, every job
        ready.set()
        for t in stream:
            seen.append(t)
            if t.job_id == job_ref.get("id") and t.to_state.is_final:
                return

    # the stream is open (headers received) before anything happens
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(30)
    time.sleep(0.5)
    job_ref["id"] = job_id = c.submit(sh(test_image, "sleep 3", network="none"), hold=True)
    c.release(job_id)
    c.wait_started(job_id, timeout=WAIT)
    c.suspend(job_id)
    c.resume(job_id)
    c.wait(job_id, timeout=WAIT)
    listener.join(timeout=30)
    assert not listener.is_alive(), f"the stream did not deliver the final transition; saw {seen}"
    mine = [(t.from_state, t.to_state) for t in seen if t.job_id == job_id]
    S = JobState
    assert mine == [
        (None, S.QUEUED_HELD), (S.QUEUED_HELD, S.QUEUED), (S.QUEUED, S.RUNNING),
        (S.RUNNING, S.SUSPENDED), (S.SUSPENDED, S.RUNNING), (S.RUNNING, S.DONE),
    ]
    seqs = [t.seq for t in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # the raw stream is SSE; history since a seq, and Last-Event-ID resumes after it
    with agent.http() as h:
        r = h.get("/v1/events", params={"job": job_id, "since": 0, "follow": "false"})
        assert r.headers["content-type"].startswith("text/event-stream")
        ids = [int(line[4:]) for line in r.text.splitlines() if line.startswith("id: ")]
        assert ids == [t.seq for t in seen if t.job_id == job_id]
        r = h.get("/v1/events", params={"job": job_id, "follow": "false"}, headers={"Last-Event-ID": str(ids[2])})
        assert [int(line[4:]) for line in r.text.splitlines() if line.startswith("id: ")] == ids[3:]


# ----------------------------------------------------------------------------- CLI through the agent


def test_cli_through_the_agent_for_every_verb(agent, state_dir, test_image, tmp_path):
    """CONVEYOR_HOST points at the agent's TCP address and CONVEYOR_HOME at an empty directory:
    whatever works here went through the API."""
    elsewhere = tmp_path / "empty-home"
    env = {"CONVEYOR_HOST": agent.url, "CONVEYOR_TOKEN": agent.token}

    def cli(*args: str, ok: bool = True, **kw) -> subprocess.CompletedProcess:
        out = conveyor(elsewhere, *args, env=env, **kw)
        if ok:
            assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out

    run = cli("run", "--network", "none", "--name", "first", test_image, "sh", "-c", "echo hello; echo oops >&2; exit 7", ok=False)
    assert (run.returncode, run.stdout, run.stderr) == (7, "hello\n", "oops\n")
    assert not (elsewhere / "conveyor.db").exists(), "the CLI ran the job itself instead of through the agent"
    assert "first" in cli("ps", "-a").stdout
    listed = json.loads(cli("ps", "-a", "--json").stdout)
    assert [j["name"] for j in listed] == ["first"]
    assert json.loads(cli("inspect", "first").stdout)["exit_code"] == 7
    logs = cli("logs", "first")
    assert (logs.stdout, logs.stderr) == ("hello\n", "oops\n")
    assert cli("logs", "--stderr", "first").stdout == ""
    bad = cli("run", "--memory", "12x", test_image, "true", ok=False)
    assert bad.returncode == 125 and "resources.memory (-m/--memory)" in bad.stderr
    missing = cli("inspect", "nope", ok=False)
    assert missing.returncode == 125 and "no such job: nope" in missing.stderr
    # the job-control verbs
    # It runs until told to end (a signal, below), so that suspend finds it Running however slow the node.
    held = cli("submit", "--hold", "--network", "none", "--name", "second", test_image, "sh", "-c",
               "trap 'echo second; exit 0' USR1; while :; do sleep 0.1; done").stdout.strip()
    assert json.loads(cli("inspect", held).stdout)["state"] == "QueuedHeld"
    cli("release", held)
    assert json.loads(cli("inspect", held).stdout)["state"] in ("Queued", "Running")
    deadline = time.monotonic() + WAIT
    while json.loads(cli("inspect", held).stdout)["state"] != "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
    cli("suspend", held)
    assert json.loads(cli("inspect", held).stdout)["state"] == "Suspended"
    cli("resume", held)
    cli("kill", "--signal", "USR1", held)
    waited = cli("wait", held)
    assert held in waited.stdout and " 0 " in waited.stdout
    assert cli("logs", "--timestamps", held).stdout.split(" ", 1)[1] == "second\n"
    doomed = cli("submit", "--network", "none", test_image, "sleep", "60").stdout.strip()
    cli("cancel", "--grace", "1", doomed)
    assert json.loads(cli("inspect", doomed).stdout)["substate"] == "cancelled"
    events = [json.loads(line) for line in cli("events", "--json", "--job", held).stdout.splitlines()]
    assert [e["to_state"] for e in events] == ["QueuedHeld", "Queued", "Running", "Suspended", "Running", "Done"]
    array = cli("submit", "--array", "1-3", "--network", "none", test_image, "sh", "-c", "echo task $CONVEYOR_TASK_ID").stdout.strip()
    # the id printed is the array's: the agent shows it with its three tasks, which all run

    def array_done() -> dict | None:
        summary = json.loads(cli("array", "show", "--json", array).stdout)
        return summary if summary["states"] == {"Done": 3} else None

    shown = eventually("the array's tasks are done", array_done, timeout=WAIT, every=0.2)
    assert (shown["id"], shown["tasks"], shown["begin"], shown["end"]) == (array, 3, 1, 3)
    first_id = json.loads(cli("inspect", "first").stdout)["id"]
    tasks = [j["id"] for j in json.loads(cli("ps", "-a", "--json").stdout) if j["id"] not in (first_id, held, doomed)]
    assert sorted(cli("logs", t).stdout for t in tasks) == ["task 1\n", "task 2\n", "task 3\n"]
    machine = json.loads(cli("machine", "--json").stdout)
    assert machine["engine"]["version"] and machine["capacity"]["cpus"] > 0
    assert "no waiting jobs" in cli("queue").stdout
    cli("rm", doomed)
    assert cli("inspect", doomed, ok=False).returncode == 125
    assert "removed" in cli("cleanup").stdout
    assert not (elsewhere / "conveyor.db").exists()

    # without CONVEYOR_HOST the CLI finds the agent through the state directory's socket
    local = conveyor(state_dir, "ps", "-a", "--json")
    assert [j["id"] for j in json.loads(local.stdout)] == [j["id"] for j in json.loads(cli("ps", "-a", "--json").stdout)]
    assert "first" in [j["name"] for j in json.loads(local.stdout)]
    unauthorized = conveyor(elsewhere, "ps", env={"CONVEYOR_HOST": agent.url, "CONVEYOR_TOKEN": "wrong"})
    assert unauthorized.returncode == 125 and "token" in unauthorized.stderr


# ----------------------------------------------------------------------------- OpenAPI


def test_served_openapi_document_is_the_committed_one(agent):
    served = httpx.get(agent.url + "/openapi.json", timeout=30).json()
    committed = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert served == committed, "docs/openapi.json is stale: regenerate it with `python -m conveyor.agent.app > docs/openapi.json`"


def test_schemathesis_fuzz_finds_no_server_error(state_dir, test_image, tmp_path):
    # Jobs the fuzzer submits can only run the test image, small and short.
    (state_dir / "policy.yaml").write_text(
        "images: {allowed: ['conveyor/busybox:latest']}\n"
        "max_resources: {cpus: 0.5, memory: 64m, pids_limit: 20, timeout: 10s}\n"
        "others_jobs: control\n"  # past the 403 on the owner's job below, to the routes' own answers
    )
    agent = AgentProcess(state_dir).start()
    try:
        made = conveyor(state_dir, "token", "create", "fuzz")  # bound to that policy; the owner's token meets none
        assert made.returncode == 0, made.stderr
        finished = Client(state_dir).run(
            JobSpec(image=test_image, command=["echo", "x"], network="none", timeout=5,
                    resources={"cpus": 0.5, "memory": "64m", "pids_limit": 20}), timeout=WAIT)
        config = tmp_path / "schemathesis.toml"
        config.write_text(f'[parameters]\n"path.ref" = "{finished.id}"\n')  # reach past the 404s
        common = [
            str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run", agent.url + "/openapi.json",
            "-H", f"Authorization: Bearer {made.stdout.strip()}", "--checks", "not_a_server_error", "--exclude-path", "/v1/events",
            "--request-timeout", "75", "--seed", "7", "--no-color", "--max-failures", "5",
        ]
        # Coverage (boundary values) of every operation but the three whose body is whole job
        # specs (thousands of cases); then random fuzzing of all of them, those three included.
        # CI fuzzes every operation with two examples (the coverage phase's boundary values
        # are thousands of requests, ~165 s); CONVEYOR_FUZZ_FULL=1 runs both phases in full
        # (README: Faults on purpose).
        runs = [[*common, "--phases", "fuzzing", "--max-examples", "2"]]
        if os.environ.get("CONVEYOR_FUZZ_FULL") == "1":
            runs = [
                [*common, "--phases", "coverage", "--max-examples", "8",
                 "--exclude-name", "POST /v1/jobs", "--exclude-name", "POST /v1/jobs:batch",
                 "--exclude-name", "POST /v1/images/ensure"],
                [*common, "--phases", "fuzzing", "--max-examples", "6"],
            ]
        for args in runs:
            out = subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=tmp_path)  # its cache stays out of the repo; ~120 s on 2 cores
            assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
            assert "Server error" not in out.stdout and " generated" in out.stdout, out.stdout[-3000:]
    finally:
        agent.stop()
        with Executor(state_dir) as ex:
            ex.cleanup()


def test_submit_without_an_agent_starts_one_that_outlives_the_cli(state_dir, test_image):
    assert conveyor(state_dir, "serve", "--status").returncode == 3
    out = conveyor(state_dir, "submit", "--network", "none", test_image, "sh", "-c", "sleep 1; echo bg")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    try:
        assert (state_dir / "agent.sock").exists(), "submit returned before the agent's API answered"
        status = conveyor(state_dir, "serve", "--status")
        assert status.returncode == 0 and "API on unix:" in status.stdout
        job = Client(state_dir).wait(job_id, timeout=WAIT)  # the CLI is gone; the agent finished it
        assert (job.state, job.stdout) == (JobState.DONE, "bg\n")
    finally:
        assert conveyor(state_dir, "serve", "--stop").returncode == 0
        with Executor(state_dir) as ex:
            ex.cleanup()


def test_list_pages_in_sql_and_client_matches_executor(agent, state_dir, test_image):
    """Paging is done by the store (a page of 10,000 jobs costs a page); Client and Executor
    give the same pages and counts."""
    client = Client(state_dir)
    ids = [client.submit(sh(test_image, f"echo {i}", labels={"page": "yes" if i % 2 else "no"}, network="none"), hold=True) for i in range(7)]
    with Executor(state_dir, supervise=False) as ex:
        for side in (ex, client):
            assert [j.id for j in side.list(limit=3, offset=2)] == ids[2:5]
            assert [j.id for j in side.list(offset=5)] == ids[5:]
            assert side.count() == 7
            assert side.count(states=[JobState.QUEUED_HELD], labels={"page": "yes"}) == 3
            assert [j.id for j in side.list(labels={"page": "yes"}, limit=2)] == [ids[1], ids[3]]
            assert side.list(states=[JobState.DONE]) == [] and side.count(states=[JobState.DONE]) == 0
    for job_id in ids:
        client.cancel(job_id)
