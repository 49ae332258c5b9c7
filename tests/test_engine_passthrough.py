"""The engine's own documents through the agent (images, image inspect, pull, the engine's
version and info, a job's stats) and the `signal` verb (`conveyor kill`), end to end: a real
`conveyor serve`, the real engine, a real registry, real HTTP. What comes back is compared with
what the docker SDK gets from the same engine: passed through means the same document.
"""

from __future__ import annotations

import json

import docker.errors
import pytest

from conveyor import Client, Executor, JobState
from conveyor.client import AgentAPI
from conveyor.errors import AgentError, ImageNotFound, InvalidState, JobNotFound, PolicyRefused
from conveyor.operations import SIGNAL
from helpers import eventually, sh, untag

WAIT = 90
# Traps TERM (PID 1 of a container ignores a signal it has no handler for) and says when it has.
TRAPS_TERM = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.2; done"


def _running(client, spec) -> str:
    job_id = client.start(spec)
    assert client.info(job_id).state is JobState.RUNNING, client.info(job_id)
    return job_id


def _printed(client, job_id: str, text: bytes) -> None:
    eventually(f"{text!r} in the output of {job_id}",
               lambda: text in b"".join(chunk for _, chunk in client.logs(job_id, "stdout")), timeout=30)


# ----------------------------------------------------------------------------- images and the engine


def test_images_inspect_and_engine_are_the_engines_own_documents(agent, state_dir, test_image, docker_client):
    api = AgentAPI(state_dir)
    listed = api.images()
    ours = [i for i in listed if test_image in (i.get("RepoTags") or [])]
    assert len(ours) == 1, listed
    engine_listing = {i["Id"]: i for i in docker_client.api.images()}
    assert ours[0] == engine_listing[ours[0]["Id"]]

    inspected = api.image_inspect(test_image)
    assert inspected == docker_client.api.inspect_image(test_image)
    assert api.image_inspect(inspected["Id"])["Id"] == inspected["Id"]  # an image id works too
    assert api.image_inspect("conveyor/busybox")["Id"] == inspected["Id"]  # no tag: latest

    with pytest.raises(ImageNotFound) as missing:
        api.image_inspect("conveyor/no-such-image:1")
    assert missing.value.image == "conveyor/no-such-image:1"
    with agent.http() as h:
        r = h.get("/v1/images/inspect", params={"name": "conveyor/no-such-image:1"})
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "image_not_found" and r.json()["field"] == "name"
        assert "conveyor/no-such-image:1" in r.json()["message"]
        assert h.get("/v1/images/inspect").status_code == 422  # the name is required

    engine = api.engine()
    assert set(engine) == {"version", "info"}
    assert engine["version"]["ApiVersion"] == docker_client.api.version()["ApiVersion"]
    assert engine["info"]["OSType"] == "linux" and engine["info"]["ID"] == docker_client.api.info()["ID"]

    # the Python Client and an observing Executor (the agent supervises) say the same
    with Client(state_dir) as client:
        assert client.image_inspect(test_image) == inspected
        assert client.engine()["version"]["ApiVersion"] == engine["version"]["ApiVersion"]
        assert any(test_image in (i.get("RepoTags") or []) for i in client.images())
    with Executor(state_dir) as observing:
        assert not observing.supervising
        assert observing.image_inspect(test_image) == inspected
        assert observing.capabilities().images is True


def test_an_image_name_cannot_reach_another_engine_endpoint(agent, state_dir, test_image):
    """The name goes into the engine URL's path: `../containers/NAME` would inspect a container."""
    with Client(state_dir) as client:
        job_id = _running(client, sh(test_image, "sleep 60", network="none"))
        try:
            with pytest.raises(ImageNotFound):
                client.image_inspect(f"../containers/conveyor-{job_id}")
        finally:
            client.signal(job_id)


def test_the_engine_routes_need_a_token(agent):
    with agent.http(None) as h:
        for method, path, params in (
            ("GET", "/v1/images", {}), ("GET", "/v1/images/inspect", {"name": "busybox"}),
            ("POST", "/v1/images/pull", {"name": "busybox"}), ("GET", "/v1/engine", {}),
            ("GET", "/v1/jobs/x/stats", {}), ("POST", "/v1/jobs/x/signal", {}),
        ):
            r = h.request(method, path, params=params)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized", (path, r.text)


# ----------------------------------------------------------------------------- pull


def test_pull_streams_the_engines_messages(agent, state_dir, pushed, docker_client):
    repo, digest = pushed
    api = AgentAPI(state_dir)

    messages = list(api.pull(f"{repo}:1"))
    assert all(isinstance(m, dict) and "status" in m for m in messages), messages
    assert messages[-1]["status"] == f"Status: Downloaded newer image for {repo}:1", messages
    assert any(m["status"] == f"Digest: {digest}" for m in messages), messages
    assert docker_client.images.get(f"{repo}:1")
    assert list(api.pull(f"{repo}:1"))[-1]["status"] == f"Status: Image is up to date for {repo}:1"

    # no tag means latest, as docker says; the Python Client pulls the same way
    with Client(state_dir) as client:
        assert list(client.pull(repo))[-1]["status"] == f"Status: Downloaded newer image for {repo}:latest"

    # a digest reference
    untag(docker_client, repo)
    by_digest = list(api.pull(f"{repo}@{digest}"))
    assert by_digest[-1]["status"] == f"Status: Downloaded newer image for {repo}@{digest}", by_digest
    assert f"{repo}@{digest}" in api.image_inspect(f"{repo}@{digest}")["RepoDigests"]

    # on the wire: one engine message a line, then the end
    with agent.http() as h, h.stream("POST", "/v1/images/pull", params={"name": f"{repo}:1"}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[-1] == {"end": True} and lines[-2]["status"].startswith("Status: "), lines
    assert all("status" in line for line in lines[:-1])


def test_pull_of_an_image_the_registry_lacks(agent, state_dir, registry):
    name = f"{registry}/conveyor-passthrough-missing:1"
    with pytest.raises(ImageNotFound) as missing:
        AgentAPI(state_dir).pull(name)
    assert missing.value.image == name and "manifest unknown" in str(missing.value)  # the engine's words
    with agent.http() as h:
        r = h.post("/v1/images/pull", params={"name": name})
        assert r.status_code == 404 and r.json()["code"] == "image_not_found", r.text


def test_a_named_tokens_policy_refuses_a_pull_naming_the_rule(agent, state_dir, registry, docker_client):
    with agent.http() as h:  # the owner makes a token bound to a policy
        made = h.post("/v1/tokens", json={"name": "ci", "policy": "images: {allowed: ['conveyor/*']}"})
        assert made.status_code == 201, made.text
    ci = made.json()["token"]
    name = f"{registry}/conveyor-passthrough-refused:1"  # not in the registry: only a refusal answers 403

    with pytest.raises(PolicyRefused) as refused:
        AgentAPI(url=agent.url, token=ci).pull(name)
    assert (refused.value.rule, refused.value.token) == ("images.allowed", "ci")
    assert "matches none of the allowed images" in str(refused.value)
    with agent.http(ci) as h:
        r = h.post("/v1/images/pull", params={"name": name})
        assert r.status_code == 403 and r.json()["details"]["rule"] == "images.allowed", r.text
        assert h.get("/v1/images").status_code == 200  # reading is not refused
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(name)


# ----------------------------------------------------------------------------- stats


def test_stats_of_a_running_job_and_of_a_finished_one(agent, state_dir, test_image):
    with Client(state_dir) as client:
        job_id = _running(client, sh(test_image, "sleep 60", network="none"))
        sample = client.stats(job_id)
        assert sample["job"] == job_id
        raw = sample["stats"]
        assert raw["memory_stats"]["usage"] > 0
        # one sample, with the one before it: enough to compute CPU use (docker stats --no-stream)
        assert raw["precpu_stats"]["system_cpu_usage"] > 0 and raw["cpu_stats"]["system_cpu_usage"] > 0
        assert raw["name"] == f"/conveyor-{job_id}"

        assert client.suspend(job_id).state is JobState.SUSPENDED
        assert client.stats(job_id)["stats"]["memory_stats"]["usage"] > 0

        client.signal(job_id)
        assert client.wait(job_id, timeout=WAIT).state is JobState.FAILED
        assert client.stats(job_id) == {"job": job_id, "stats": None}
        with pytest.raises(JobNotFound):
            client.stats("no-such-job")


# ----------------------------------------------------------------------------- signal (docker kill)


def test_signal_kill_and_term_end_jobs_as_the_watcher_records_them(agent, state_dir, test_image):
    with Client(state_dir) as client:
        killed = _running(client, sh(test_image, "sleep 60", network="none"))
        assert client.signal(killed).id == killed  # default SIGKILL; returns at once
        job = client.wait(killed, timeout=WAIT)
        assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, "exited", 137), job.message

        termed = _running(client, sh(test_image, TRAPS_TERM, network="none"))
        _printed(client, termed, b"ready\n")
        assert AgentAPI(state_dir).perform(SIGNAL, termed, {"signal": "TERM"})["id"] == termed
        job = client.wait(termed, timeout=WAIT)
        assert (job.state, job.exit_code, job.stdout) == (JobState.FAILED, 3, "ready\ngot TERM\n")

        # a suspended job is thawed by the engine to take it
        frozen = _running(client, sh(test_image, "sleep 60", network="none"))
        assert client.suspend(frozen).state is JobState.SUSPENDED
        client.signal(frozen, "9")
        job = client.wait(frozen, timeout=WAIT)
        assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, "exited", 137)

        # a job that has ended is refused, naming its state
        done = client.run(sh(test_image, "true", network="none"), timeout=WAIT)
        with pytest.raises(InvalidState) as ended:
            client.signal(done.id, "TERM")
        assert ended.value.state == "Done" and f"cannot send a signal to job {done.id}: it is Done" in str(ended.value)


def test_a_bad_signal_is_refused_naming_the_parameter(agent, state_dir, test_image):
    with Client(state_dir) as client:
        job_id = _running(client, sh(test_image, "sleep 60", network="none"))
        with agent.http() as h:
            for bad in ("FOO", "0", "65", "SIGKILLX"):
                r = h.post(f"/v1/jobs/{job_id}/signal", params={"signal": bad})
                assert r.status_code == 422, r.text
                assert r.json()["code"] == "invalid_request"
                assert r.json()["message"].startswith(f"signal '{bad}' is not valid: give a signal name (KILL, TERM")
        with pytest.raises(AgentError) as bad:
            client.signal(job_id, "NOPE")
        assert bad.value.status == 422 and "signal 'NOPE' is not valid" in str(bad.value)
        with Executor(state_dir) as observing, pytest.raises(ValueError, match="signal 'NOPE' is not valid"):
            observing.signal(job_id, "NOPE")
        assert client.info(job_id).state is JobState.RUNNING  # nothing was sent

        # the observing Executor's signal goes to the engine; the agent records the end
        with Executor(state_dir) as observing:
            assert not observing.supervising
            observing.signal(job_id, "sigkill")
        job = client.wait(job_id, timeout=WAIT)
        assert (job.state, job.substate, job.exit_code) == (JobState.FAILED, "exited", 137)


def test_conveyor_kill(cli):
    sleeper = cli.submit(cli.image, "sleep", "60")
    termed = cli.submit(cli.image, "sh", "-c", TRAPS_TERM)
    cli.until(sleeper, "Running")
    cli.until(termed, "Running")
    eventually("the trap is set", lambda: b"ready" in cli.run("logs", termed).stdout, timeout=30)

    out = cli.ok("kill", sleeper)
    assert out.split()[0] == sleeper
    assert cli.run("wait", sleeper).returncode == 137
    job = cli.info(sleeper)
    assert (job["state"], job["substate"], job["exit_code"]) == ("Failed", "exited", 137)

    bad = cli.run("kill", "-s", "FOO", termed)
    assert bad.returncode == 125 and b"signal 'FOO' is not valid" in bad.stderr, bad.stderr
    assert cli.info(termed)["state"] == "Running"

    cli.ok("kill", "--signal", "TERM", termed)
    assert cli.run("wait", termed).returncode == 3
    assert cli.ok("logs", termed) == "ready\ngot TERM\n"

    again = cli.run("kill", sleeper)
    assert again.returncode == 125
    assert f"cannot send a signal to job {sleeper}: it is Failed".encode() in again.stderr, again.stderr
    assert "Send a signal to a running job's processes" in cli.ok("kill", "--help")
