"""Metrics (issue: look inside a job, item 5): the agent's /v1/metrics in the Prometheus text
format, scraped and parsed with prometheus-client's own parser, moving as jobs run; the same
text from the embedded Executor, the Client and `conveyor metrics`; a token needed unless the
operator opens them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor import Client, Executor, JobSpec
from conveyor.errors import InvalidSpec, PolicyRefused

pytestmark = pytest.mark.docker


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_scrape_parses_and_moves_when_jobs_run(agent, state_dir, test_image):
    client = Client(state_dir)
    before = _samples(client.metrics())
    assert _value(before, "conveyor_capacity", resource="cpus", kind="total") > 0
    job = client.run(JobSpec(image=test_image, command=["sh", "-c", "sleep 1.2"], network="none"))
    assert job.ok
    failed = client.run(JobSpec(image=test_image, command=["sh", "-c", "exit 3"], network="none"))
    with pytest.raises(InvalidSpec):
        client.submit(JobSpec(image=test_image, command=["true"], resources={"cpus": 4096}))
    after = _samples(client.metrics())

    assert _value(after, "conveyor_jobs", state="Done") == _value(before, "conveyor_jobs", state="Done") + 1
    assert _value(after, "conveyor_jobs", state="Failed") == _value(before, "conveyor_jobs", state="Failed") + 1
    assert _value(after, "conveyor_jobs_ended_total", state="Failed", substate="exited") >= 1 and failed.exit_code == 3
    assert _value(after, "conveyor_job_starts_total") == _value(before, "conveyor_job_starts_total") + 2
    # durations: both jobs counted, the 1.2 s one above the 1 s bucket
    assert _value(after, "conveyor_job_duration_seconds_count") == _value(before, "conveyor_job_duration_seconds_count") + 2
    assert _value(after, "conveyor_job_duration_seconds_bucket", le="1.0") == \
        _value(before, "conveyor_job_duration_seconds_bucket", le="1.0") + 1
    assert _value(after, "conveyor_job_duration_seconds_sum") - _value(before, "conveyor_job_duration_seconds_sum") >= 1.2
    # the agent's own counts: engine calls timed, submissions accepted and refused
    for call in ("create", "start"):
        assert _value(after, "conveyor_engine_call_seconds_count", call=call) >= \
            _value(before, "conveyor_engine_call_seconds_count", call=call) + 2, call
    assert _value(after, "conveyor_submissions_total", result="accepted", reason="") == \
        _value(before, "conveyor_submissions_total", result="accepted", reason="") + 2
    assert _value(after, "conveyor_submissions_total", result="refused", reason="invalid_spec") == \
        _value(before, "conveyor_submissions_total", result="refused", reason="invalid_spec") + 1
    assert _value(after, "conveyor_disk_bytes", what="logs") >= 0

    # the same text through the CLI
    out = subprocess.run([sys.executable, "-m", "conveyor", "--home", str(state_dir), "metrics"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert _value(_samples(out.stdout), "conveyor_jobs", state="Done") == _value(after, "conveyor_jobs", state="Done")


def test_queue_depth_and_wait_while_jobs_wait(tmp_path, test_image):
    with Executor(tmp_path / "home", scheduling={"capacity": {"cpus": 1}}) as ex:
        blocker = ex.submit(JobSpec(image=test_image, command=["sleep", "30"], resources={"cpus": 1}, network="none"))
        ex.wait_started(blocker, timeout=60)
        waiting = [ex.submit(JobSpec(image=test_image, command=["true"], resources={"cpus": 1}, network="none"))
                   for _ in range(3)]
        samples = _samples(ex.metrics())
        assert _value(samples, "conveyor_queue_depth") == 3
        assert _value(samples, "conveyor_jobs", state="Running") == 1
        assert _value(samples, "conveyor_capacity", resource="cpus", kind="used") == 1.0
        assert _value(samples, "conveyor_capacity", resource="cpus", kind="free") == 0.0
        assert _value(samples, "conveyor_queue_oldest_wait_seconds") >= 0
        for job_id in (blocker, *waiting):
            ex.cancel(job_id, grace=0)


def test_metrics_need_a_token_unless_the_operator_opens_them(agent, state_dir):
    with agent.http(None) as h:
        r = h.get("/v1/metrics")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    with agent.http() as h:
        r = h.get("/v1/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert "conveyor_jobs" in r.text


def test_open_metrics_are_served_without_a_token(state_dir):
    from helpers import AgentProcess

    (state_dir / "config.toml").write_text("[agent]\nopen_metrics = true\n")
    a = AgentProcess(state_dir).start()
    try:
        with a.http(None) as h:
            r = h.get("/v1/metrics")
            assert r.status_code == 200 and "conveyor_queue_depth" in r.text
            assert h.get("/v1/jobs").status_code == 401  # only the metrics are open
    finally:
        a.stop()


def test_a_refusal_by_policy_is_counted(agent, state_dir, test_image):
    # A named token with no policy file of its own meets the built-in default policy, which
    # refuses a privileged job.
    made = subprocess.run([sys.executable, "-m", "conveyor", "--home", str(state_dir), "token", "create", "guest"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    guest = Client(state_dir, token=made.stdout.strip())
    before = _samples(Client(state_dir).metrics())
    with pytest.raises(PolicyRefused):
        guest.submit(JobSpec(image=test_image, command=["true"], privileged=True))
    after = _samples(Client(state_dir).metrics())
    assert _value(after, "conveyor_submissions_total", result="refused", reason="policy_refused") == \
        _value(before, "conveyor_submissions_total", result="refused", reason="policy_refused") + 1
