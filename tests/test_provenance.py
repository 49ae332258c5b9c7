"""Provenance: each attempt of a job keeps where and how it ran (host, kernel, CPU, memory,
engine and version, runtime, the image by content, the spec as run and its digest, Conveyor's
version, the attempt, the submitting token), and two runs can be compared. End to end: the
real engine, a real registry, a real `conveyor serve` and the console script.
"""

from __future__ import annotations

import json
import platform
import socket
import urllib.request

import docker.errors
import pytest

from conveyor import Client, JobSpec, JobState
from conveyor.errors import InvalidSpec, InvalidState
from helpers import sh

WAIT = 90


def registry_digest(repo: str, tag: str) -> str:
    """The manifest digest the registry itself serves for ``repo:tag`` (not the engine's word)."""
    host, _, name = repo.partition("/")
    request = urllib.request.Request(
        f"http://{host}/v2/{name}/manifests/{tag}", method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.headers["Docker-Content-Digest"]


def test_a_job_of_an_image_pulled_by_digest_records_the_registrys_digest(ex, pushed, docker_client):
    """Prevents a provenance that names an image only by its tag (which moves): a job whose
    image was pulled by digest must record that digest, as the registry serves it, and the
    image id the engine made its container from, with the host and engine it ran on."""
    repo, pushed_digest = pushed
    digest = registry_digest(repo, "1")
    assert digest == pushed_digest
    reference = f"{repo}@{digest}"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(reference)  # not here yet: the job's submit pulls it by digest

    job = ex.run(JobSpec(image=reference, command=["echo", "pinned"], network="none"), timeout=WAIT)
    assert (job.state, job.stdout) == (JobState.DONE, "pinned\n")

    prov = ex.provenance(job.id)
    assert prov["image"]["reference"] == reference
    assert f"{repo}@{digest}" in prov["image"]["repo_digests"]
    assert prov["image"]["id"] == docker_client.images.get(reference).id
    version = docker_client.version()
    assert prov["engine"] == {"name": "docker", "version": version["Version"],
                              "runtime": docker_client.info()["DefaultRuntime"]}
    host = prov["host"]
    assert (host["hostname"], host["arch"]) == (socket.gethostname(), platform.machine())
    assert host["kernel"].startswith(platform.release())
    assert host["cpu_model"] and host["cpus"] > 0 and host["memory"] > 0
    assert (prov["attempt"], prov["job"], prov["submitted_by"]) == (1, job.id, {"token": None})
    assert prov["spec"]["image"] == reference and prov["spec_digest"] == JobSpec.model_validate(prov["spec"]).digest()


def test_spec_digest_is_stable_for_one_spec_and_the_diff_names_what_changed(ex, test_image, tmp_path):
    """Prevents a comparison of two runs that either flags identical jobs as different (a
    digest of something unstable: times, ids, dict order, the path a job's inputs were staged
    at) or misses a changed field."""
    (tmp_path / "in.txt").write_text("input\n")
    base = dict(image=test_image, command=["sh", "-c", "cat /in.txt; echo $GREETING"], network="none",
                inputs=[{"source": str(tmp_path / "in.txt"), "target": "/in.txt", "file": True}])
    first = ex.run(JobSpec(**base, env={"GREETING": "hi", "A": "1"}), timeout=WAIT)
    again = ex.run(JobSpec(**base, env={"A": "1", "GREETING": "hi"}), timeout=WAIT)  # same spec, other order
    changed = ex.run(JobSpec(**base, env={"GREETING": "bye", "A": "1"}), timeout=WAIT)
    assert (first.stdout, again.stdout, changed.stdout) == ("input\nhi\n", "input\nhi\n", "input\nbye\n")

    p1, p2, p3 = (ex.provenance(j.id) for j in (first, again, changed))
    assert p1["spec_digest"] == p2["spec_digest"] != p3["spec_digest"]
    assert p1["submitted_digest"] == p2["submitted_digest"] == ex.info(first.id).spec.digest() != p3["submitted_digest"]
    assert p1["spec"]["inputs"][0]["source"].startswith("sha256:")  # by content, not a host path
    assert ex.provenance_diff(first.id, again.id) == {"a": first.id, "b": again.id, "differences": []}
    diff = ex.provenance_diff(first.id, changed.id)
    assert diff["differences"] == [
        {"field": "spec.env.GREETING", "a": "hi", "b": "bye"},
        {"field": "spec_digest", "a": p1["spec_digest"], "b": p3["spec_digest"]},
        {"field": "submitted_digest", "a": p1["submitted_digest"], "b": p3["submitted_digest"]},
    ]


def test_each_attempt_of_a_retried_job_has_its_own(ex, test_image):
    """Prevents a retried job whose record shows only its last run: each attempt keeps the spec
    it ran with (its CONVEYOR_ATTEMPT), and asking for an attempt that never was says which exist."""
    job = ex.run(sh(test_image, '[ "$CONVEYOR_ATTEMPT" = 2 ]', network="none", retries=1), timeout=WAIT)
    assert job.state is JobState.DONE, job
    one, two = ex.provenance(job.id, attempt=1), ex.provenance(job.id)
    assert (one["attempt"], two["attempt"]) == (1, 2)
    assert (one["spec"]["env"]["CONVEYOR_ATTEMPT"], two["spec"]["env"]["CONVEYOR_ATTEMPT"]) == ("1", "2")
    with pytest.raises(InvalidSpec) as wrong:
        ex.provenance(job.id, attempt=3)
    assert wrong.value.field == "attempt" and "attempt 1, 2" in str(wrong.value)


def test_a_job_that_has_not_started_has_none_and_says_why(ex, test_image):
    """Prevents an empty or made-up provenance for a job that never ran."""
    job_id = ex.submit(JobSpec(image=test_image, command=["true"]), hold=True)
    with pytest.raises(InvalidState) as refused:
        ex.provenance(job_id)
    assert str(refused.value) == (
        f"cannot show the provenance (recorded when its container is made) of job {job_id}: it is QueuedHeld"
    )


def test_the_token_that_submitted_is_recorded_and_the_cli_shows_and_diffs(fresh_cli, state_dir, test_image, tmp_path):
    """Prevents a record that cannot say who ran a job: submitted through the agent with a
    named token, the token's name is kept (the owner's CLI: "owner"); `inspect` shows the
    provenance, `provenance --json` exports it, and `provenance diff` compares a job with
    another or with an exported file."""
    cli = fresh_cli
    ci = cli.ok("token", "create", "ci").strip()
    by_ci = cli.ok("submit", "--network", "none", test_image, "echo", "a", env={"CONVEYOR_TOKEN": ci}).strip()
    by_owner = cli.submit(test_image, "echo", "b")
    for job in (by_ci, by_owner):
        cli.ok("wait", job)

    inspected = cli.info(by_ci)
    assert inspected["provenance"]["submitted_by"] == {"token": "ci"}
    exported = json.loads(cli.ok("provenance", by_ci, "--json"))
    assert exported == inspected["provenance"]
    assert json.loads(cli.ok("provenance", by_owner, "--json"))["submitted_by"] == {"token": "owner"}
    with Client(state_dir) as client:  # the Python client gets the same document
        assert client.provenance(by_ci) == exported

    shown = cli.ok("provenance", by_ci)
    assert "submitted by  ci" in shown and exported["spec_digest"] in shown and exported["image"]["id"] in shown

    diff = json.loads(cli.ok("provenance", "diff", by_ci, by_owner, "--json"))
    assert [d["field"] for d in diff["differences"]] == ["spec.command", "spec_digest", "submitted_by.token", "submitted_digest"]
    table = cli.ok("provenance", "diff", by_ci, by_owner)
    assert table.splitlines()[0].split() == ["FIELD", by_ci, by_owner]
    assert "submitted_by.token" in table and '["echo", "a"]' in table

    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(exported))
    assert cli.ok("provenance", "diff", str(saved), by_ci).strip() == "no differences"
    differs = cli.run("provenance", "diff", "--exit-code", str(saved), by_owner)
    assert differs.returncode == 1 and b"spec_digest" in differs.stdout

    queued = cli.ok("submit", "--hold", "--network", "none", test_image, "true").strip()
    refused = cli.run("provenance", queued)
    assert refused.returncode == 125 and b"it is QueuedHeld" in refused.stderr
    assert cli.info(queued)["provenance"] is None
