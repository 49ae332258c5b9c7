"""End-to-end tests of the scheduler (issue 4) against the real engine.

Small capacities (1-3 CPUs) and short sleep jobs keep them fast; observations come from the
store's timestamps and from sampling what runs (the store and the engine's container list),
never from tight timing. The pure parts (ledger, GPU assignment, config) are tested without
the engine at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conveyor import Executor, InvalidSpec, InvalidState, JobSpec, JobState, Substate
from conveyor.backends.base import LABEL_EXECUTOR, LABEL_JOB
from helpers import eventually, sh
from conveyor.capacity import (
    ConfigError,
    Ledger,
    Machine,
    SchedulingConfig,
    check_possible,
    node_capacity,
    request_for,
)

WAIT = 60
NET = {"network": "none"}  # no bridge needed, and faster to start


def job(image: str, script: str, cpus: float | None = 1, **kw) -> JobSpec:
    """sh() with a CPU request (1 unless said) and no network."""
    resources = kw.pop("resources", {})
    if cpus is not None:
        resources["cpus"] = cpus
    return sh(image, script, resources=resources, **NET, **kw)


@pytest.fixture
def make_ex(state_dir):
    made = []

    def make(**scheduling) -> Executor:
        ex = Executor(state_dir, scheduling=scheduling)
        made.append(ex)
        return ex

    yield make
    for ex in reversed(made):
        try:
            if ex.supervising:
                # Jobs still queued would be launched between cleanup() and close().
                for j in ex.list(states=[JobState.QUEUED, JobState.QUEUED_HELD, JobState.REQUEUED, JobState.REQUEUED_HELD]):
                    try:
                        ex.cancel(j.id, wait=False)
                    except InvalidState:
                        pass  # it started or ended meanwhile; cleanup() below takes it
                ex.cleanup()
        finally:
            ex.close()


def cap(cpus: float, **more) -> dict:
    return {"capacity": {"cpus": cpus, **more.pop("capacity", {})}, **more}


class Sampler:
    """Samples, every 50 ms, the jobs the store says are active and the containers the
    engine says are running, until stopped."""

    def __init__(self, ex: Executor, docker_client, fn=None):
        self.ex, self.client, self.fn = ex, docker_client, fn
        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            active = self.ex.store.query(
                "SELECT id, req_cpus, array_id FROM jobs WHERE state IN ('Running', 'Suspended', 'Undetermined')"
            )
            running = self.client.api.containers(filters={"label": f"{LABEL_EXECUTOR}={self.ex.executor_id}", "status": "running"})
            self.samples.append((active, [c["Labels"][LABEL_JOB] for c in running]))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def wait_all(ex: Executor, ids, timeout: float = WAIT):
    return [ex.wait(i, timeout=timeout) for i in ids]


# ----------------------------------------------------------------------------- admission


def test_burst_never_exceeds_capacity(make_ex, test_image, docker_client):
    ex = make_ex(**cap(2))
    requests = {}
    with Sampler(ex, docker_client) as s:
        for i in range(50):
            cpus = 1 if i % 2 else 0.5
            requests[ex.submit(job(test_image, "sleep 0.3", cpus=cpus))] = cpus
        jobs = wait_all(ex, list(requests), timeout=240)
    assert all(j.state is JobState.DONE for j in jobs), {j.id: (j.state, j.message) for j in jobs if not j.ok}
    store_peak = max(sum(c for _, c, _ in active) for active, _ in s.samples)
    engine_peak = max(sum(requests[j] for j in running) for _, running in s.samples)
    assert store_peak <= 2 and engine_peak <= 2, (store_peak, engine_peak)
    assert max(len(running) for _, running in s.samples) >= 2  # it did run jobs side by side
    # Intervals from the engine's own timestamps never overlap beyond capacity either.
    events = sorted([(j.started_at, requests[j.id]) for j in jobs] + [(j.finished_at, -requests[j.id]) for j in jobs],
                    key=lambda e: (e[0], e[1]))
    level = 0.0
    for _, delta in events:
        level += delta
        assert level <= 2 + 1e-9


def test_impossible_requests_rejected_at_submit(make_ex, test_image):
    ex = make_ex(**cap(2, capacity={"memory": "1g"}))
    with pytest.raises(InvalidSpec) as err:
        ex.submit(job(test_image, "true", cpus=3))
    assert err.value.problems[0][0] == "resources.cpus" and "at most 2 CPUs" in err.value.problems[0][2]
    with pytest.raises(InvalidSpec, match="at most 1g") as err:
        ex.submit(job(test_image, "true", resources={"memory": "2g"}))
    assert err.value.problems[0][0] == "resources.memory"
    with pytest.raises(InvalidSpec, match="no nvidia GPUs"):
        ex.submit(job(test_image, "true", resources={"gpus": 1}))
    with pytest.raises(InvalidSpec, match="at most 2 CPUs"):
        ex.submit_array(job(test_image, "true", cpus=4), 1, 3)
    assert ex.list() == [] and ex.store.query("SELECT COUNT(*) FROM arrays") == [(0,)]


def test_defaults_apply_to_jobs_without_requests(make_ex, test_image):
    ex = make_ex(**cap(2), defaults={"cpus": 1, "memory": "64m"})
    ids = [ex.submit(job(test_image, "sleep 1", cpus=None)) for _ in range(3)]
    time.sleep(0.8)
    rows = ex.store.query("SELECT req_cpus, req_memory FROM jobs")
    assert rows == [(1.0, 64 << 20)] * 3
    ex.wait(ids[0], WAIT)
    jobs = wait_all(ex, ids)
    # the third one (1 CPU by default) started only once one of the first two had ended
    first_end = min(j.finished_at for j in jobs[:2])
    assert jobs[2].started_at >= first_end - 0.05, [(j.started_at, j.finished_at) for j in jobs]


def test_ledger_is_rebuilt_from_the_store(state_dir, test_image):
    """A restarted supervisor counts the jobs still running: it never overcommits."""
    ex1 = Executor(state_dir, scheduling=cap(1))
    first = ex1.start(job(test_image, "sleep 3"))
    ex1.close()  # the job keeps running
    ex2 = Executor(state_dir, scheduling=cap(1))
    try:
        second = ex2.submit(job(test_image, "true"))
        a, b = ex2.wait(first, WAIT), ex2.wait(second, WAIT)
        assert a.ok and b.ok
        assert b.started_at >= a.finished_at - 0.05
    finally:
        ex2.cleanup()
        ex2.close()


# ----------------------------------------------------------------------------- order


def test_priority_order_fifo_within_priority(make_ex, test_image):
    ex = make_ex(**cap(1))
    blocker = ex.start(job(test_image, "sleep 1.5"))
    names = ["low", "high-1", "mid", "high-2"]
    prio = {"low": -5, "high-1": 10, "mid": 0, "high-2": 10}
    ids = {n: ex.submit(job(test_image, "true", name=n, priority=prio[n])) for n in names}
    assert ex.queue()["jobs"][0]["id"] == ids["high-1"]
    jobs = {n: ex.wait(i, WAIT) for n, i in ids.items()}
    ex.wait(blocker, WAIT)
    order = sorted(jobs, key=lambda n: jobs[n].started_at)
    assert order == ["high-1", "high-2", "mid", "low"], order


def test_backfill_small_job_passes_a_large_one(make_ex, test_image):
    ex = make_ex(**cap(2), limits={"backfill_window": 600})
    running = ex.start(job(test_image, "sleep 2"))
    large = ex.submit(job(test_image, "true", cpus=2))
    small = ex.submit(job(test_image, "sleep 0.5", cpus=1))
    s, l = ex.wait(small, WAIT), ex.wait(large, WAIT)
    ex.wait(running, WAIT)
    assert s.ok and l.ok
    assert s.started_at < l.started_at  # backfilled
    assert l.started_at >= s.finished_at - 0.05  # and the large one got its room afterwards


def test_backfill_stops_after_the_window(make_ex, test_image):
    """Once the blocked job has waited its window, nothing behind it takes the CPUs it needs,
    and the queue view says that is why the smaller job waits."""
    ex = make_ex(**cap(2), limits={"backfill_window": 0})
    running = ex.start(job(test_image, "sleep 1.5"))
    large = ex.submit(job(test_image, "true", cpus=2))
    small = ex.submit(job(test_image, "true", cpus=1))
    time.sleep(0.5)
    view = {j["id"]: j for j in ex.queue()["jobs"]}
    assert view[large]["waits_for"] == "resources"
    # the CPU it would take is free, but the large job comes first now: it says so
    assert view[small]["waits_for"] == "backfill" and large in view[small]["reason"], view[small]
    s, l = ex.wait(small, WAIT), ex.wait(large, WAIT)
    ex.wait(running, WAIT)
    assert s.started_at >= l.started_at, (s.started_at, l.started_at)


def test_label_and_executor_caps(make_ex, test_image, docker_client, tmp_path):
    """No more jobs with a capped label (label_caps) and no more jobs in all (max_running)
    run at once than configured, and the queue view names the cap each waiting job is
    held back by."""
    ex = make_ex(**cap(3), label_caps={"team=ml": 1}, limits={"max_running": 2})
    gate = tmp_path / "gate"
    gate.mkdir()
    script = "while [ ! -e /gate/go ]; do sleep 0.1; done; sleep 0.5"  # runs on until the test opens the gate

    def submit(team: str) -> list[str]:
        return [ex.submit(job(test_image, script, cpus=0.1, labels={"team": team}, mounts=[f"{gate}:/gate:ro"]))
                for _ in range(3)]

    def waiting() -> dict[str, str]:
        return {j["id"]: j["reason"] for j in ex.queue()["jobs"]}

    with Sampler(ex, docker_client) as s:
        ml = submit("ml")
        eventually("the first ml job runs", lambda: ex.info(ml[0]).state is JobState.RUNNING)
        held_by_label = waiting()  # one job runs: the label's cap holds the other two back
        assert sorted(held_by_label) == sorted(ml[1:]), held_by_label
        assert all("team=ml" in r for r in held_by_label.values()), held_by_label
        other = submit("web")
        eventually("the first web job runs", lambda: ex.info(other[0]).state is JobState.RUNNING)
        held_by_max_running = waiting()  # two run: max_running holds everything else back
        assert sorted(held_by_max_running) == sorted(ml[1:] + other[1:]), held_by_max_running
        assert all("max_running" in r for r in held_by_max_running.values()), held_by_max_running
        (gate / "go").touch()
        jobs = wait_all(ex, ml + other)
    assert all(j.ok for j in jobs)
    ml_set = set(ml)
    assert max(sum(1 for i, _, _ in a if i in ml_set) for a, _ in s.samples) == 1
    assert max(len(a) for a, _ in s.samples) == 2


# ----------------------------------------------------------------------------- arrays


def test_array_tasks_and_max_parallel(make_ex, test_image, docker_client):
    ex = make_ex(**cap(2))
    spec = job(test_image, 'echo "task=$CONVEYOR_TASK_ID drmaa=$TASK_ID of $CONVEYOR_ARRAY_ID"; sleep 0.5', cpus=0.1)
    with Sampler(ex, docker_client) as s:
        array_id = ex.submit_array(spec, 1, 19, 2, max_parallel=3)
        tasks = ex.array_tasks(array_id)
        jobs = wait_all(ex, [t[0] for t in tasks], timeout=120)
    assert [t[1] for t in tasks] == list(range(1, 20, 2))
    for (job_id, index, _), j in zip(tasks, jobs):
        assert j.ok, (j.state, j.message)
        assert j.stdout.strip() == f"task={index} drmaa={index} of {array_id}"
    peak = max(sum(1 for _, _, a in active if a == array_id) for active, _ in s.samples)
    assert 2 <= peak <= 3, peak
    assert max(len(running) for _, running in s.samples) <= 3
    summary = ex.array(array_id)
    assert summary["tasks"] == 10 and summary["states"] == {"Done": 10}
    assert (summary["begin"], summary["end"], summary["step"], summary["max_parallel"]) == (1, 19, 2, 3)
    container = docker_client.api.inspect_container(jobs[0].container_id)
    assert container["Config"]["Labels"]["conveyor.array"] == array_id
    assert container["Config"]["Labels"]["conveyor.task"] == "1"


def test_array_control(make_ex, test_image):
    ex = make_ex(**cap(2))
    array_id = ex.submit_array(job(test_image, "sleep 60", cpus=0.1, stop_grace=1), 0, 3, max_parallel=2, hold=True)
    assert ex.array(array_id)["states"] == {"QueuedHeld": 4}
    ex.release_array(array_id)
    deadline = time.monotonic() + WAIT
    while ex.array(array_id)["states"].get("Running", 0) < 2:
        assert time.monotonic() < deadline, ex.array(array_id)
        time.sleep(0.1)
    assert ex.array(array_id)["states"] == {"Running": 2, "Queued": 2}
    assert ex.hold_array(array_id)["states"] == {"Running": 2, "QueuedHeld": 2}
    assert ex.suspend_array(array_id)["states"] == {"Suspended": 2, "QueuedHeld": 2}
    assert ex.resume_array(array_id)["states"] == {"Running": 2, "QueuedHeld": 2}
    summary = ex.cancel_array(array_id, grace=1)
    assert summary["states"] == {"Failed": 4} and summary["tasks"] == 4
    assert {ex.info(t[0]).substate for t in ex.array_tasks(array_id)} == {Substate.CANCELLED}


@pytest.mark.parametrize(
    "begin, end, step, hint",
    [(1, 10, 0, "step must be 1 or more"), (1, 10, -2, "step must be 1 or more"), (10, 1, 1, "ends before it begins"),
     (1, 6, 1, "over this node's maximum array size 5")],
)
def test_bad_array_range_creates_nothing(make_ex, test_image, begin, end, step, hint):
    ex = make_ex(**cap(2), limits={"max_array_size": 5})
    with pytest.raises(InvalidSpec, match=hint) as err:
        ex.submit_array(job(test_image, "true"), begin, end, step)
    assert err.value.problems[0][0] == "array"
    assert ex.list() == [] and ex.store.query("SELECT COUNT(*) FROM arrays") == [(0,)]


# ----------------------------------------------------------------------------- dependencies, retries, deadlines


def test_dependencies(make_ex, test_image, docker_client):
    ex = make_ex(**cap(3))
    first = ex.submit(job(test_image, "sleep 1; echo first", name="first"))
    bad = ex.submit(job(test_image, "exit 4"))
    after_ok = ex.submit(job(test_image, "echo second", after=["first"]))  # by name
    after_bad = ex.submit(job(test_image, "echo never", after=[bad]))
    after_any = ex.submit(job(test_image, "echo anyway", after=f"{bad}:any"))
    chain = ex.submit(job(test_image, "echo never", after=[after_bad]))  # fails in turn
    a, b = ex.wait(first, WAIT), ex.wait(after_ok, WAIT)
    assert a.ok and b.ok and b.started_at >= a.finished_at
    assert ex.info(after_ok).spec.after[0].job == first  # stored resolved to the id
    for ref in (after_bad, chain):
        j = ex.wait(ref, WAIT)
        assert (j.state, j.substate, j.started_at, j.container_id) == (JobState.FAILED, Substate.DEPENDENCY_FAILED, None, None)
    assert bad in ex.info(after_bad).message
    assert ex.wait(after_any, WAIT).stdout == "anyway\n"
    with pytest.raises(InvalidSpec, match="no job or array") as err:
        ex.submit(job(test_image, "true", after=["nosuchjob"]))
    assert err.value.problems[0][0] == "after[0]"


def test_dependency_on_an_array(make_ex, test_image):
    ex = make_ex(**cap(2))
    array_id = ex.submit_array(job(test_image, "sleep 0.5", cpus=0.5), 1, 3)
    after = ex.submit(job(test_image, "true", after=[array_id]))
    j = ex.wait(after, WAIT)
    tasks = wait_all(ex, [t[0] for t in ex.array_tasks(array_id)])
    assert j.ok and j.started_at >= max(t.finished_at for t in tasks)


def test_retries_keep_every_attempt(make_ex, test_image):
    ex = make_ex(**cap(2))
    script = 'echo "try $CONVEYOR_ATTEMPT"; [ "$CONVEYOR_ATTEMPT" -ge 3 ] && exit 0; exit 7'
    job_id = ex.submit(job(test_image, script, retries=3, retry_backoff=0.3))
    j = ex.wait(job_id, WAIT)
    assert j.ok and j.stdout == "try 3\n"
    attempts = ex.attempts(job_id)
    assert [(a["attempt"], a["state"], a["exit_code"]) for a in attempts] == [(1, "Failed", 7), (2, "Failed", 7), (3, "Done", 0)]
    for a in attempts[:2]:
        assert open(f"{a['logs_dir']}/stdout").read() == f"try {a['attempt']}\n"
        # its time index went with it: one message, dated within the attempt
        index = Path(a["logs_dir"]) / "stdout.times"
        assert index.exists() and index.stat().st_size > 0, a
    assert len({a["container_id"] for a in attempts}) == 3
    states = [t.to_state for t in ex.store.transitions(job_id)]
    assert states.count(JobState.REQUEUED) == 2 and states[-1] is JobState.DONE
    # the backoff doubles: 0.3 s, then 0.6 s between an attempt's end and the next start
    assert attempts[1]["started_at"] - attempts[0]["finished_at"] >= 0.25
    assert attempts[2]["started_at"] - attempts[1]["finished_at"] >= 0.55

    exhausted = ex.wait(ex.submit(job(test_image, "exit 5", retries=1)), WAIT)
    assert (exhausted.state, exhausted.substate, exhausted.exit_code) == (JobState.FAILED, Substate.EXITED, 5)
    assert [a["exit_code"] for a in ex.attempts(exhausted.id)] == [5, 5]
    # a retry after a timeout is judged on its own: it ran to exit 0, so the job is Done (the
    # first attempt's stop reason once made it Failed/timeout with exit code 0)
    retried = ex.wait(ex.submit(job(test_image, '[ "$CONVEYOR_ATTEMPT" = 1 ] && sleep 30; echo ok', retries=1,
                                    timeout=1, stop_grace=1)), WAIT)
    assert (retried.state, retried.substate, retried.exit_code, retried.stdout) == (JobState.DONE, Substate.EXITED, 0, "ok\n")
    assert [a["substate"] for a in ex.attempts(retried.id)] == [Substate.TIMEOUT, Substate.EXITED]
    # not retried: what another try cannot change
    nocmd = ex.wait(ex.submit(JobSpec(image=test_image, command=["nosuchcmd"], retries=2, **NET)), WAIT)
    assert nocmd.substate == Substate.START_FAILED and len(ex.attempts(nocmd.id)) == 1


def test_start_deadline_and_run_timeout(make_ex, test_image):
    ex = make_ex(**cap(1))
    blocker = ex.start(job(test_image, "sleep 3"))
    late = ex.submit(job(test_image, "echo never", start_deadline="1s"))
    held = ex.submit(job(test_image, "echo never", start_deadline=1), hold=True)
    for ref in (late, held):
        j = ex.wait(ref, WAIT)
        assert (j.state, j.substate, j.started_at) == (JobState.FAILED, Substate.START_DEADLINE, None)
    assert ex.info(blocker).state is JobState.RUNNING
    timed = ex.wait(ex.submit(job(test_image, "sleep 30", timeout=1, stop_grace=1)), WAIT)
    assert (timed.state, timed.substate) == (JobState.FAILED, Substate.TIMEOUT)
    assert ex.wait(blocker, WAIT).ok


# ----------------------------------------------------------------------------- views


def test_queue_view_says_what_each_job_waits_for(make_ex, test_image):
    ex = make_ex(**cap(1), limits={"backfill_window": 600})
    running = ex.start(job(test_image, "sleep 30", stop_grace=0))
    big = ex.submit(job(test_image, "true", cpus=1, priority=5))
    dep = ex.submit(job(test_image, "true", after=[running], cpus=0.1))
    held = ex.submit(job(test_image, "true"), hold=True)
    view = ex.queue()
    why = {j["id"]: j["waits_for"] for j in view["jobs"]}
    assert why == {big: "resources", dep: "dependency", held: "hold"}
    assert view["priorities"]["5"] == {"running": 0, "queued": 1, "held": 0}
    assert view["priorities"]["0"] == {"running": 1, "queued": 1, "held": 1}
    assert view["in_use"]["cpus"] == 1.0 and view["capacity"]["cpus"] == 1.0
    ex.cancel(running, grace=0)


def test_cli_machine_and_queue_json(cli, test_image, state_dir):
    """The CLI's node views through its agent: capacity from config.toml, a held job's reason."""
    (state_dir / "config.toml").write_text('[capacity]\ncpus = 2\n[reserve]\nmemory = "1g"\n')
    cli.ok("serve", "--stop")  # the agent reads config.toml when it starts
    cli.ok("submit", "--hold", "--network", "none", test_image, "true")
    conveyor = [sys.executable, "-m", "conveyor", "--home", str(state_dir)]
    machine = json.loads(subprocess.run([*conveyor, "machine", "--json"], capture_output=True, text=True, check=True, timeout=60).stdout)
    for key in ("hostname", "os", "arch", "cpus", "memory", "gpus", "load", "engine", "capacity", "in_use"):
        assert key in machine
    assert machine["engine"]["version"] and machine["capacity"]["cpus"] == 2
    assert machine["capacity"]["memory"] == machine["memory"] - (1 << 30)
    queue = json.loads(subprocess.run([*conveyor, "queue", "--json"], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert [j["waits_for"] for j in queue["jobs"]] == ["hold"]
    text = subprocess.run([*conveyor, "queue"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "hold" in text


# ----------------------------------------------------------------------------- pure parts (no engine)


def test_gpus_assigned_by_id_never_shared():
    config = SchedulingConfig.model_validate({"capacity": {"cpus": 8, "memory": "8g", "gpus": {"nvidia": ["0", "1", "2"]}}})
    capacity = node_capacity(config)
    ledger = Ledger(capacity)
    two = request_for(JobSpec(image="x", resources={"gpus": 2}), config)
    one = request_for(JobSpec(image="x", resources={"gpus": "device=1"}), config)
    assert ledger.shortfall(two) is None
    assert ledger.take("a", two) == ("0", "1")
    assert ledger.shortfall(one) is not None  # GPU 1 is taken
    other = request_for(JobSpec(image="x", resources={"gpus": 1}), config)
    assert ledger.take("b", other) == ("2",)
    assert ledger.shortfall(other) is not None
    ledger.release("a")
    assert ledger.take("c", one) == ("1",)
    every = request_for(JobSpec(image="x", resources={"gpus": "all"}), config)
    assert ledger.shortfall(every) is not None
    with pytest.raises(InvalidSpec, match="has 3 nvidia"):
        check_possible(request_for(JobSpec(image="x", resources={"gpus": 4}), config), capacity)
    with pytest.raises(InvalidSpec, match="GPUs are 0, 1, 2"):
        check_possible(request_for(JobSpec(image="x", resources={"gpus": "device=7"}), config), capacity)


def test_gpu_sharing_when_configured():
    config = SchedulingConfig.model_validate({"capacity": {"cpus": 8, "gpus": {"amd": 1}}, "limits": {"gpu_sharing": 2}})
    ledger = Ledger(node_capacity(config, Machine(cpus=8, memory=1 << 34, gpus={})))
    req = request_for(JobSpec(image="x", resources={"gpus": {"vendor": "amd", "count": 1}}), config)
    assert ledger.take("a", req) == ("0",) and ledger.take("b", req) == ("0",)
    assert ledger.shortfall(req) is not None


def test_capacity_from_machine_minus_reserve_and_config_errors(tmp_path):
    """Capacity is the machine minus the reserve where discovered and exactly what is
    configured where configured (a node never admits more, or less, than the operator
    said), and a config file with a typo or a bad label cap is refused by name."""
    machine = Machine(cpus=16, memory=32 << 30, gpus={"nvidia": ["0", "1"]})
    config = SchedulingConfig.model_validate({"reserve": {"cpus": 2, "memory": "4g"}})
    capacity = node_capacity(config, machine)
    assert (capacity.cpus, capacity.memory, capacity.gpus) == (14, 28 << 30, {"nvidia": ("0", "1")})
    # Jobs without requests use nothing, so a default cap keeps 10,000 of them from all
    # starting at once: 32 per CPU of capacity, unless configured.
    assert capacity.max_running == 32 * 14
    assert node_capacity(SchedulingConfig.model_validate({"capacity": {"cpus": 0.5}}), machine).max_running == 32
    assert node_capacity(SchedulingConfig.model_validate({"limits": {"max_running": 5}}), machine).max_running == 5
    (tmp_path / "config.toml").write_text('[defaults]\ncpus = 0.5\n[label_caps]\n"team=ml" = 4\n')
    loaded = SchedulingConfig.load(tmp_path, {"defaults": {"memory": "1g"}})
    assert (loaded.defaults.cpus, loaded.defaults.memory, loaded.caps) == (0.5, 1 << 30, [("team", "ml", 4)])
    (tmp_path / "config.toml").write_text("[limits]\nmax_array_sise = 3\n")
    with pytest.raises(ConfigError, match="max_array_sise"):
        SchedulingConfig.load(tmp_path)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        SchedulingConfig.load(None, {"label_caps": {"ml": 2}})
    # The reserve is kept back from what is discovered, never from what is configured.
    both = {"capacity": {"cpus": 4, "memory": "8g"}, "reserve": {"cpus": 2, "memory": "4g"}}
    explicit = node_capacity(SchedulingConfig.model_validate(both), machine)
    assert (explicit.cpus, explicit.memory, explicit.gpus) == (4, 8 << 30, {"nvidia": ("0", "1")})


def test_claim_enforces_max_parallel_atomically(state_dir, test_image):
    """Whatever a planner decided, the store refuses to move a fourth task of a
    max-parallel-3 array to Running: the claim counts the array's active tasks in the same
    transaction, so racing launcher threads cannot overshoot."""
    with Executor(state_dir, supervise=False) as ex:
        array_id = ex.submit_array(job(test_image, "true"), 1, 5, max_parallel=3, image_ready=True)
        ids = [t[0] for t in ex.array_tasks(array_id)]
        claim = lambda i: ex.store.transition(i, JobState.RUNNING, expect={JobState.QUEUED}, reason="test")  # noqa: E731
        assert [claim(i) for i in ids] == [True, True, True, False, False]
        assert ex.store.get(ids[3]).state is JobState.QUEUED
        assert ex.store.transition(ids[0], JobState.DONE, exit_code=0, reason="test")
        assert [claim(i) for i in ids[3:]] == [True, False]
