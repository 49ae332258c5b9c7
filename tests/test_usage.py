"""Usage (issue 17, item 3), end to end on the real engine: the sampler's totals (peak memory,
CPU seconds, IO, OOM margin) in a job's record during and after its run and across an executor
restart, the bounded series, `conveyor stats` and `conveyor top`, and the process backend."""

from __future__ import annotations

import json
import time

import pytest

from conveyor import Executor, JobSpec
from conveyor.errors import NotSupported

MIB = 1 << 20
FAST = {"usage": {"interval": 0.3, "samples": 4}}  # samples often, keeps few: the ring wraps within a test


def _until(predicate, timeout: float = 30.0, pause: float = 0.1):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(pause)
    return found


@pytest.fixture
def sampled(state_dir):
    executor = Executor(state_dir, scheduling=FAST)
    yield executor
    executor.cleanup()
    executor.close()


def _holding(test_image: str, mib: int, seconds: float, memory: str | None = "256m") -> JobSpec:
    """A job that keeps ``mib`` MiB resident (a file in /dev/shm: tmpfs pages are charged to the
    job's memory and stay there), then sleeps."""
    script = f"dd if=/dev/zero of=/dev/shm/held bs=1M count={mib} 2>/dev/null && sleep {seconds}"
    resources = {"memory": memory} if memory else {}
    return JobSpec(image=test_image, command=["sh", "-c", script], network="none", resources=resources)


def test_peak_memory_of_a_job_holding_48_mib_is_within_10_percent_and_outlives_it(sampled, state_dir, test_image):
    """A user sizing a job's memory limit from its recorded peak would set it wrong if the peak
    were off (or gone once the job ended, or once the agent restarted)."""
    job = sampled.submit(_holding(test_image, 48, 3))
    sampled.wait(job)
    totals = sampled.info(job).usage
    assert totals is not None and totals["samples"] >= 3, totals
    assert abs(totals["memory_peak"] - 48 * MIB) <= 0.10 * 48 * MIB, totals["memory_peak"] / MIB
    assert totals["memory_limit"] == 256 * MIB
    assert totals["oom_margin"] == 256 * MIB - totals["memory_peak"]
    assert totals["net_rx"] == 0 and totals["block_read"] is not None and totals["pids_max"] >= 1
    with Executor(state_dir, supervise=False) as reader:  # another executor's view: from the store alone
        assert reader.info(job).usage == totals
        assert reader.usage([job]) == [{"job": job, "name": None, "state": "Done", "now": None, "totals": totals,
                                        "node_memory": reader.usage([job])[0]["node_memory"]}]


def test_cpu_seconds_of_a_busy_loop_are_plausible(sampled, test_image):
    """CPU seconds that were zero, or wall time, would mislead whoever bills or sizes jobs by them:
    a loop busy for 2 s uses between 0.6 and 2.4 CPU seconds (a shared 2-CPU machine) and shows
    a busy CPU % meanwhile."""
    script = "timeout 2 sh -c 'while :; do :; done'; sleep 1"  # the sleep lets a sample see the end
    job = sampled.submit(JobSpec(image=test_image, command=["sh", "-c", script], network="none"))
    sampled.wait(job)
    totals = sampled.info(job).usage
    assert 0.6 <= totals["cpu_seconds"] <= 2.4, totals
    assert totals["cpu_percent_max"] > 30, totals
    assert totals["memory_limit"] is None and totals["oom_margin"] is None  # no limit set: no margin


def test_totals_go_on_across_an_executor_restart_and_the_series_stays_bounded(state_dir, test_image):
    """An agent restart mid-job must not lose the usage recorded so far (the peak was reached
    before it), and a long job's series must not grow without end."""
    first = Executor(state_dir, scheduling=FAST)
    job = first.submit(_holding(test_image, 32, 6))
    before = _until(lambda: (u := first.info(job).usage) and u["samples"] >= 6 and u)
    entry = first.usage([job], series=True)[0]
    assert len(entry["series"]) == FAST["usage"]["samples"]  # bounded: the ring wrapped
    assert [s["at"] for s in entry["series"]] == sorted(s["at"] for s in entry["series"])
    assert entry["now"]["memory"] >= 30 * MIB and entry["now"]["pids"] >= 1
    first.close()  # the job runs on; nothing samples it for a while
    time.sleep(0.5)
    second = Executor(state_dir, scheduling=FAST)
    try:
        second.wait(job)
        after = second.info(job).usage
        assert after["samples"] > before["samples"] and after["first_at"] == before["first_at"]
        assert after["memory_peak"] >= before["memory_peak"] >= 32 * MIB
        # ended: its ring is dropped, its totals stay
        _until(lambda: second.usage([job], series=True)[0]["series"] == [])
    finally:
        second.cleanup()
        second.close()


def test_stats_and_top_on_the_command_line(fresh_cli, state_dir, test_image):
    """`conveyor stats` and `conveyor top` are how a user looks at a running job; wrong or
    missing columns, or no totals once it ended, would leave them guessing."""
    (state_dir / "config.toml").write_text("[usage]\ninterval = 0.3\n")
    job = fresh_cli.submit("--name", "holder", test_image, "sh", "-c",
                           "dd if=/dev/zero of=/dev/shm/held bs=1M count=24 2>/dev/null && sleep 10")
    fresh_cli.until(job, "Running")
    _until(lambda: fresh_cli.info(job)["usage"])
    header, row = fresh_cli.ok("stats", "--no-stream", job).splitlines()
    assert header.split()[:4] == ["CONTAINER", "ID", "NAME", "STATE"] and "MEM PEAK" in header and "CPU TIME" in header
    assert row.split()[:3] == [job, "holder", "Running"] and "MiB" in row
    peak = fresh_cli.ok("stats", "--no-stream", "--format", "{{.Name}} {{.MemPeak}} {{.PIDs}}", job).split()
    assert peak[0] == "holder" and peak[1].endswith("MiB") and 23 <= float(peak[1][:-3]) <= 30 and int(peak[2]) >= 1
    snapshot = json.loads(fresh_cli.ok("stats", "--json", job))
    assert snapshot[0]["job"] == job and snapshot[0]["series"] and snapshot[0]["now"]["memory"] >= 23 * MIB
    everything = fresh_cli.ok("stats", "--no-stream")  # no job named: every running one
    assert job in everything
    top = fresh_cli.ok("top", "holder").splitlines()
    assert top[0].split()[:3] == ["UID", "PID", "PPID"] and any(line.endswith("sleep 10") for line in top[1:])
    assert json.loads(fresh_cli.ok("top", "--json", job))["titles"][0] == "UID"
    # live: refreshes until the named job ends, then exits by itself
    streamed = fresh_cli.run("stats", "--format", "{{.State}}", job, timeout=60)
    assert streamed.returncode == 0, streamed.stderr
    states = streamed.stdout.decode().split()
    assert len(states) >= 2 and states[-1] == "Done" and "Running" in states
    ended = fresh_cli.info(job)["usage"]
    assert 23 * MIB <= ended["memory_peak"] <= 30 * MIB
    refused = fresh_cli.run("top", job)
    assert refused.returncode != 0 and b"cannot list the processes of job" in refused.stderr and b"Done" in refused.stderr
    missing = fresh_cli.run("stats", "--no-stream", "no-such-job")
    assert missing.returncode != 0 and b"no-such-job" in missing.stderr


def test_process_jobs_report_usage_from_their_cgroup_but_no_top(sampled):
    """A process job's memory and CPU come from its cgroup (there is no engine to ask); a
    backend that cannot list processes says so instead of printing nothing."""
    script = "timeout 1 sh -c 'while :; do :; done'; head -c 16m /dev/zero | tail -c 1 >/dev/null; sleep 1"
    job = sampled.submit(JobSpec(command=["sh", "-c", script], backend={"name": "process"}, resources={"memory": "128m"}))
    sampled.wait(job)
    totals = sampled.info(job).usage
    assert totals["samples"] >= 2 and totals["cpu_seconds"] >= 0.3 and totals["memory_peak"] > 0, totals
    assert totals["memory_limit"] == 128 * MIB and totals["net_rx"] is None  # the host's network: not the job's own
    running = sampled.submit(JobSpec(command=["sleep", "5"], backend={"name": "process"}))
    sampled.wait_started(running)
    with pytest.raises(NotSupported, match="capability 'top'"):
        sampled.top(running)
    sampled.cancel(running)


def test_usage_and_top_through_the_agent_and_the_python_client(agent, state_dir, test_image):
    """A remote caller (Client, REST) gets what the embedded Executor gets, behind the token:
    otherwise a dashboard would show other numbers than the CLI, or anyone could read them."""
    from conveyor import Client
    from conveyor.errors import InvalidState, JobNotFound

    client = Client(state_dir)
    job = client.submit(JobSpec(image=test_image, command=["sh", "-c", "sleep 8"], network="none"))
    client.wait_started(job)
    entry = _until(lambda: (e := client.usage([job])[0]) and e["totals"] and e)
    assert entry["job"] == job and entry["state"] == "Running" and entry["now"]["pids"] >= 1
    assert any(e["job"] == job for e in client.usage())  # no job named: every running one
    assert any(p[-1] == "sleep 8" for p in client.top(job)["processes"])
    with agent.http() as http:
        answer = http.get("/v1/usage", params={"job": job, "series": "true"})
        assert answer.status_code == 200 and answer.json()[0]["series"], answer.text
        assert http.get(f"/v1/jobs/{job}/top").json()["titles"][:2] == ["UID", "PID"]
        assert http.get("/v1/usage", params={"job": "no-such-job"}).status_code == 404
    with agent.http(token=None) as anonymous:
        assert anonymous.get("/v1/usage").status_code == 401
    with pytest.raises(JobNotFound):
        client.usage(["no-such-job"])
    with pytest.raises(TypeError, match="put the ids in a list"):
        client.usage(job)  # a string where a list of ids belongs
    client.cancel(job, grace=0)
    with pytest.raises(InvalidState, match="cannot list the processes of job"):
        client.top(job)
    assert client.info(job).usage["samples"] >= 1
