"""Leases (README: Leases) against the real engine: a share of the node reserved for a holder
that keeps it alive, its jobs confined to it, and everything it held given back when the holder
goes away, is released, or the agent restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conveyor import Client, Executor, JobSpec
from conveyor.errors import InvalidSpec, LeaseNotFound
from conveyor.state import JobState, Substate
from conveyor.store import Store
from helpers import AgentProcess, eventually, most_at_once, sh

CONFIG = '[capacity]\ncpus = 2\nmemory = "2g"\n'


@pytest.fixture
def node(state_dir):
    """A state directory whose node has 2 CPUs and 2 GiB for jobs, whatever the machine."""
    (state_dir / "config.toml").write_text(CONFIG)
    return state_dir


@pytest.fixture
def lex(node, ex):
    """conftest's Executor, on the 2-CPU node (``node`` writes its config first)."""
    return ex


@pytest.fixture
def served(node, test_image):
    a = AgentProcess(node).start()
    yield a
    a.stop()
    with Executor(node) as ex:
        ex.cleanup()


def _refusal(fn):
    with pytest.raises(InvalidSpec) as err:
        fn()
    return err.value


@pytest.mark.parametrize("path", ["embedded", "agent"])
def test_a_lease_larger_than_what_is_free_is_refused_naming_what_is_missing(node, test_image, path):
    """Prevents a lease that promises capacity the node has already given away (two holders
    both told they have the same CPUs), and a refusal that differs between the embedded
    Executor and the agent."""
    agent = AgentProcess(node).start() if path == "agent" else None
    ex = Client(node) if agent else Executor(node)
    try:
        first = ex.lease_create(cpus=1.5, memory="1g", keepalive=60)
        assert first["state"] == "active"
        refused = _refusal(lambda: ex.lease_create(cpus=1, memory="512m"))
        assert [p[0] for p in refused.problems] == ["cpus"]
        assert "needs 1, 0.5 free" in str(refused) and str(refused).startswith("invalid lease request: cpus:")
        both = _refusal(lambda: ex.lease_create(cpus=1, memory="2g"))
        assert [p[0] for p in both.problems] == ["cpus", "memory"]
        assert "needs 1, 0.5 free" in str(both) and "1g free" in str(both)
        assert len(ex.lease_list()) == 1  # nothing was reserved by the refusals
        bad = _refusal(lambda: ex.lease_create(cpus=0.1, keepalive="0s"))
        assert bad.problems[0][0] == "keepalive"
    finally:
        ex.close()
        if agent:
            agent.stop()


def test_jobs_stay_inside_their_lease_and_outside_others(lex, test_image):
    """Prevents jobs without a lease taking what a lease holds, a job naming an unknown lease
    or asking for more than its lease has being accepted, and a burst of submits into a lease
    running more at once than its share."""
    lease = lex.lease_create(cpus=1.5, keepalive=60)
    unknown = _refusal(lambda: lex.submit(sh(test_image, "true", lease="lnosuchlease")))
    assert unknown.problems[0][0] == "lease" and "no such lease" in str(unknown)
    too_big = _refusal(lambda: lex.submit(sh(test_image, "true", lease=lease["id"], resources={"cpus": 2})))
    assert too_big.problems[0][0] == "resources.cpus" and lease["id"] in str(too_big)

    outsider = lex.submit(sh(test_image, "sleep 30", resources={"cpus": 1}))
    small = lex.submit(sh(test_image, "true", resources={"cpus": 0.5}))
    assert lex.wait(small, timeout=60).state is JobState.DONE  # the 0.5 CPU outside the lease is usable
    assert lex.info(outsider).state is JobState.QUEUED
    reason = next(j["reason"] for j in lex.queue()["jobs"] if j["id"] == outsider)
    assert reason.startswith("resources: cpus (needs 1, 0.5 free)")

    burst = [lex.submit(sh(test_image, "sleep 1", lease=lease["id"], resources={"cpus": 0.5})) for _ in range(20)]
    seen = 0
    deadline = time.monotonic() + 120
    while not all(lex.info(j).state.is_final for j in burst):
        running = sum(1 for j in burst if lex.info(j).state is JobState.RUNNING)
        seen = max(seen, running)
        assert running <= 3, f"{running} jobs of a 1.5-CPU lease run at once with 0.5 CPU each"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    jobs = [lex.info(j) for j in burst]
    assert all(j.state is JobState.DONE for j in jobs)
    assert seen >= 2 and most_at_once(jobs) <= 3
    assert lex.info(outsider).state is JobState.QUEUED  # the lease's share stayed the lease's
    lex.cancel(outsider, grace=0)


HOLDER = """
import json, sys, time
from conveyor import Client, JobSpec
client = Client(sys.argv[1])
with client.lease(cpus=1, keepalive=2) as lease:
    spec = dict(image=sys.argv[2], lease=lease.id, resources={"cpus": 1}, stop_grace=1)
    ids = [client.submit(JobSpec(command=["sh", "-c", "echo started; sleep 300"], **spec))]
    ids += [client.submit(JobSpec(command=["true"], **spec)) for _ in range(2)]
    print(json.dumps({"lease": lease.id, "jobs": ids}), flush=True)
    time.sleep(600)
"""


def test_a_holder_killed_with_running_and_queued_jobs_loses_its_lease_and_its_jobs(served, test_image):
    """Prevents a crashed workflow engine leaving its jobs running and its capacity taken: its
    lease expires within keepalive + grace, its jobs end cancelled naming the expiry, their
    logs are kept, and the capacity is free again."""
    home = served.home
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(home), test_image], stdout=subprocess.PIPE,
                              env={**os.environ, "CONVEYOR_HOME": str(home)})
    made = json.loads(holder.stdout.readline())
    client = Client(home)
    running, *queued = made["jobs"]
    eventually("the first job runs", lambda: client.info(running).state is JobState.RUNNING)
    time.sleep(3)  # past one keepalive: the holder's background renewals keep it alive
    assert client.lease_info(made["lease"])["state"] == "active"
    assert all(client.info(j).state is JobState.QUEUED for j in queued)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed = time.monotonic()
    # keepalive 2 s + grace 1 s, with room for the scheduler's pass and the finisher
    eventually("every job of the lease ended", lambda: all(client.info(j).state.is_final for j in made["jobs"]), timeout=10)
    assert time.monotonic() - killed < 2 + 1 + 4
    lease = client.lease_info(made["lease"])
    assert lease["state"] == "expired" and "no keepalive for 2s" in lease["reason"]
    for job_id in made["jobs"]:
        job = client.info(job_id)
        assert (job.state, job.substate) == (JobState.FAILED, Substate.CANCELLED)
        assert "lease expired" in job.message
    assert client.info(running).stdout == "started\n"  # its logs were kept
    used = client.machine()["in_use"]
    assert (used["cpus"], used["jobs"], used["leases"]) == (0, 0, 0)
    with pytest.raises(LeaseNotFound, match="expired"):
        client.lease_renew(made["lease"])


def test_release_cancels_at_once_and_drain_lets_jobs_finish(lex, test_image):
    """Prevents a released lease's jobs running on (and holding capacity) after release, and a
    drained one cutting its jobs short or taking new ones."""
    now = lex.lease_create(cpus=0.5, keepalive=60)
    doomed = lex.submit(sh(test_image, "echo hi; sleep 300", lease=now["id"], stop_grace=1))
    eventually("it runs", lambda: lex.info(doomed).state is JobState.RUNNING)
    assert lex.lease_release(now["id"])["state"] == "released"
    job = lex.wait(doomed, timeout=30)
    assert (job.state, job.substate) == (JobState.FAILED, Substate.CANCELLED)
    assert "lease was released" in job.message and job.stdout == "hi\n"

    drained = lex.lease_create(cpus=1, keepalive=60)
    first = lex.submit(sh(test_image, "sleep 2", lease=drained["id"], resources={"cpus": 1}))
    second = lex.submit(sh(test_image, "true", lease=drained["id"], resources={"cpus": 1}))
    eventually("it runs", lambda: lex.info(first).state is JobState.RUNNING)
    assert lex.lease_release(drained["id"], drain=True)["state"] == "draining"
    late = _refusal(lambda: lex.submit(sh(test_image, "true", lease=drained["id"])))
    assert late.problems[0][0] == "lease" and "draining" in str(late)
    assert lex.wait(first, timeout=60).state is JobState.DONE
    assert lex.wait(second, timeout=60).state is JobState.DONE
    eventually("the drained lease ends", lambda: lex.lease_info(drained["id"])["state"] == "released", timeout=10)
    assert lex.machine()["in_use"]["leases"] == 0


def _stored_lease_state(agent: AgentProcess, lease_id: str) -> str:
    """A lease's state as the store has it, with no agent running."""
    return Store(agent.home / "conveyor.db", readonly=True).get_lease(lease_id).state


def test_leases_in_every_state_survive_an_agent_restart(served, test_image):
    """Prevents a restart forgetting a lease (its share then given to others), renewing one
    that expired while the agent was down, or applying that expiry more than once."""
    client = Client(served.home)
    live = client.lease_create(cpus=0.5, keepalive=120)
    short = client.lease_create(cpus=0.5, keepalive=2)
    released = client.lease_create(cpus=0.25, keepalive=120)
    draining = client.lease_create(cpus=0.5, keepalive=120)
    kept = client.submit(sh(test_image, "sleep 300", lease=live["id"]))
    lost = client.submit(sh(test_image, "echo bye; sleep 300", lease=short["id"], stop_grace=1))
    drains = client.submit(sh(test_image, "sleep 6", lease=draining["id"]))
    for job_id in (kept, lost, drains):
        eventually("it runs", lambda: client.info(job_id).state is JobState.RUNNING)
    client.lease_renew(short["id"])
    client.lease_release(released["id"])
    client.lease_release(draining["id"], drain=True)
    served.stop(signal.SIGKILL)
    down = time.time()
    assert _stored_lease_state(served, short["id"]) == "active"  # it was alive when the agent died
    time.sleep(3)  # the short lease's deadline falls while no agent runs
    served.start()
    client = Client(served.home)
    eventually("the overdue lease's job ended", lambda: client.info(lost).state.is_final, timeout=15)
    states = {lease["id"]: lease["state"] for lease in client.lease_list(all=True)}
    assert states == {live["id"]: "active", short["id"]: "expired", released["id"]: "released",
                      draining["id"]: "draining"}
    assert client.lease_info(live["id"])["deadline"] == pytest.approx(live["deadline"], abs=0.5)  # kept, not reset
    assert client.info(kept).state is JobState.RUNNING
    job = client.info(lost)
    assert "lease expired" in job.message and job.stdout == "bye\n"
    assert client.lease_info(short["id"])["ended_at"] > down + 2  # expired by the restarted agent, at reconcile
    ended = [t for t in Store(served.home / "conveyor.db", readonly=True).transitions(lost) if t.to_state is JobState.FAILED]
    assert len(ended) == 1  # applied once
    assert client.wait(drains, timeout=60).state is JobState.DONE
    eventually("the drained lease ends", lambda: client.lease_info(draining["id"])["state"] == "released", timeout=10)
    used = client.machine()["in_use"]
    assert used["leases"] == 1 and used["cpus"] == 0.5  # only the live lease holds anything
    client.lease_release(live["id"])


def test_the_cli_holds_a_lease_while_keepalive_runs_and_shows_it(fresh_cli):
    """Prevents a script's lease dying while `conveyor lease keepalive` still runs beside it
    (or living on after it is killed), a refusal that exits 0, and machine/queue hiding what
    leases hold."""
    cli = fresh_cli
    (cli.home / "config.toml").write_text(CONFIG)
    lease_id = cli.ok("lease", "create", "--cpus", "1", "-m", "512m", "--keepalive", "2s", "--label", "team=ml").strip()
    keeper = cli.popen("lease", "keepalive", lease_id)
    refused = cli.run("lease", "create", "--cpus", "1.5")
    assert refused.returncode != 0 and b"cpus" in refused.stderr and b"1 free" in refused.stderr
    time.sleep(4)  # two keepalives
    shown = json.loads(cli.ok("lease", "inspect", lease_id, "--json"))
    assert shown["state"] == "active" and shown["labels"] == {"team": "ml"}
    job_id = cli.submit("--lease", lease_id, "--cpus", "1", "--stop-timeout", "1", cli.image, "sleep", "300")
    cli.until(job_id, "Running")
    assert lease_id in cli.ok("machine") and lease_id in cli.ok("queue")
    assert "1 job(s)" in cli.ok("lease", "list")
    keeper.kill()
    job = cli.until(job_id, "Failed", timeout=20)
    assert job["substate"] == "cancelled" and "lease expired" in job["message"]
    gone = cli.run("lease", "renew", lease_id)
    assert gone.returncode != 0 and b"expired" in gone.stderr
    assert lease_id not in cli.ok("lease", "list")
    assert "expired" in cli.ok("lease", "list", "--all")


def test_a_lease_grows_only_into_free_capacity_and_shrinks_only_to_what_its_jobs_need(lex, test_image):
    """Prevents a resized lease taking capacity already given to others, or shrinking under
    the jobs it runs or holds queued (which would then overrun it or never start)."""
    lease = lex.lease_create(cpus=0.5, keepalive=60)
    other = lex.lease_create(cpus=1, keepalive=60)
    running = lex.submit(sh(test_image, "sleep 300", lease=lease["id"], resources={"cpus": 0.5}, stop_grace=1))
    waiting = lex.submit(sh(test_image, "true", lease=lease["id"], resources={"cpus": 0.5}))
    eventually("it runs", lambda: lex.info(running).state is JobState.RUNNING)
    too_big = _refusal(lambda: lex.lease_resize(lease["id"], cpus=1.5))
    assert too_big.problems[0][0] == "cpus" and "needs 1.5, 1 free" in str(too_big)
    too_small = _refusal(lambda: lex.lease_resize(lease["id"], cpus=0.25))
    assert too_small.problems[0][0] == "cpus" and "0.5 CPUs" in str(too_small)
    assert lex.info(waiting).state is JobState.QUEUED
    assert lex.lease_resize(lease["id"], cpus=1)["cpus"] == 1
    assert lex.wait(waiting, timeout=60).state is JobState.DONE  # the room it grew into is its jobs'
    assert _refusal(lambda: lex.lease_create(cpus=0.5)).problems[0][0] == "cpus"  # nothing left outside
    lex.lease_release(other["id"])
    lex.lease_release(lease["id"])
    assert lex.wait(running, timeout=30).substate == Substate.CANCELLED


def test_leases_are_the_owners_a_named_token_can_neither_hold_nor_use_one(served, test_image):
    """Prevents a named token (bound to a policy with no rule for leases) reserving the node
    against everyone else, or running its jobs inside the owner's lease."""
    owner = Client(served.home)
    lease = owner.lease_create(cpus=0.5, keepalive=60)
    made = subprocess.run([sys.executable, "-m", "conveyor", "--home", str(served.home), "token", "create", "guest"],
                          capture_output=True, text=True, env={**os.environ, "CONVEYOR_HOME": str(served.home)})
    assert made.returncode == 0, made.stderr
    guest = served.http(made.stdout.strip())
    assert guest.post("/v1/leases", json={"cpus": 0.5}).status_code == 403
    assert guest.get("/v1/leases").status_code == 403
    assert guest.post(f"/v1/leases/{lease['id']}/release").status_code == 403
    refused = guest.post("/v1/jobs", json={"spec": {"image": test_image, "command": ["true"], "lease": lease["id"]}})
    assert refused.status_code == 403 and refused.json()["code"] == "policy_refused"
    assert "lease" in refused.json()["message"]
    assert owner.lease_info(lease["id"])["jobs"] == []  # nothing ran in it
