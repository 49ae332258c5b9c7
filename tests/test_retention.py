"""Retention and busy clients (README: Retention, Growth): logs kept to their cap with a visible
cut, `conveyor prune` and `gc` that never take what a live job needs, batch submit, and
`events --since` read from an index. End-to-end against the real engine, through the agent."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest

from conveyor import Client
from conveyor.errors import InvalidSpec
from helpers import sh

DAY = 86400


def _config(home, text: str) -> None:
    (home / "config.toml").write_text(text)


def _backdate(home, ids: list[str], days: float) -> None:
    """As if these jobs had ended ``days`` ago (the one thing a test cannot wait for)."""
    with sqlite3.connect(home / "conveyor.db") as db:
        db.executemany("UPDATE jobs SET finished_at = finished_at - ? WHERE id = ?", [(days * DAY, i) for i in ids])


def test_a_log_over_its_cap_keeps_its_head_and_tail_and_says_where_it_was_cut(fresh_cli, test_image):
    """A job that prints megabytes does not fill the disk, and its user is not misled: the
    saved log keeps the first and last lines, and a line in between says how many bytes were
    cut and where. (A silent cut would show a log that looks complete; no cap would keep all.)"""
    _config(fresh_cli.home, "[retention]\nlog_max_bytes = 4096\n")
    job = fresh_cli.submit(test_image, "sh", "-c", "seq 1 20000")
    fresh_cli.until(job, "Done")
    out = fresh_cli.ok("logs", job)
    full = "".join(f"{i}\n" for i in range(1, 20001))
    marker = re.search(r"^\[conveyor: (\d+) bytes cut here, bytes (\d+) to (\d+) of (\d+): [^\n]*\]\n", out, re.M)
    assert marker, out[1900:2300]
    cut, head, tail, size = map(int, marker.groups())
    assert size == len(full) and cut == tail - head and head <= 2048 and size - tail <= 2048, marker.group(0)
    assert head > 2000 and size - tail > 2000  # whole lines: at most one line short of each half
    assert full[head - 1] == "\n" and full[tail - 1] == "\n"
    assert out == full[:head] + marker.group(0) + full[tail:]
    # the times index follows the cut: every kept line still has its time
    stamped = fresh_cli.ok("logs", "--timestamps", job).splitlines()
    assert stamped[0].endswith(" 1") and stamped[-1].endswith(" 20000"), (stamped[0], stamped[-1])
    unstamped = [line for line in stamped if not (line[:4].isdigit() and line[10] == "T")]
    assert len(unstamped) <= 1 and all(line.startswith("[conveyor: ") for line in unstamped), unstamped


def test_prune_forgets_old_ended_jobs_but_never_a_live_one_its_dependency_or_its_input(fresh_cli, test_image, tmp_path):
    """After months of use `conveyor prune` (with keep_days) removes old ended jobs' records,
    transitions and logs, and `gc` their blobs, without breaking what still waits: a held job
    keeps its dependency and its input blob (shared with a pruned job), and runs afterwards
    reading that input. A recent ended job stays; --dry-run removes nothing."""
    home = fresh_cli.home
    _config(home, "[retention]\nkeep_days = 1\n")
    shared, only_old = tmp_path / "shared.txt", tmp_path / "old.txt"
    shared.write_text("still needed\n")
    only_old.write_text("nobody needs this any more\n")
    fresh_cli.ok("ps")  # its agent, and with it the token a Client reads
    with Client(home) as c:
        old = [c.submit(sh(test_image, "cat /in", network="none", inputs=[f"{p}:/in"]), image_ready=True)
               for p in (shared, only_old)]
        dep = c.submit(sh(test_image, "true", network="none"))
        for job in old + [dep]:
            c.wait(job, timeout=60)
        recent = c.submit(sh(test_image, "true", network="none"))
        c.wait(recent, timeout=60)
        waiting = c.submit(sh(test_image, "cat /in", network="none", inputs=[f"{shared}:/in"], after=[dep]), hold=True)
        _backdate(home, old + [dep], days=2)
        shared_blob = c.info(waiting).spec.inputs[0].source

        dry = json.loads(fresh_cli.ok("prune", "--dry-run", "--json"))
        assert dry["dry_run"] and sorted(dry["ids"]) == sorted(old) and dry["jobs"] == 2, dry
        assert len(c.list()) == 5
        assert fresh_cli.ok("prune").strip() == "removed 2 ended job(s)"
        assert sorted(j.id for j in c.list()) == sorted([dep, recent, waiting])
        assert not any((home / "logs" / job).exists() for job in old)
        assert not [t for t in c.events(since=0, follow=False) if t.job_id in old]  # the history shrinks too
        assert (home / "logs" / recent).exists()

        freed = c.gc(grace=0)
        assert freed["removed"] >= 1, freed
        assert shared_blob not in freed["digests"], freed
        c.release(waiting)
        done = c.wait(waiting, timeout=60)
        assert done.state.value == "Done" and done.stdout == "still needed\n", (done.state, done.message, done.stdout)


def test_prune_refuses_a_bad_until_keeps_records_without_rules_and_caps_all_logs(fresh_cli, test_image):
    """A typo in --until is an error naming the flag, not a prune of everything; with no age
    rule and no --until no job is removed; over logs_total_bytes the oldest ended job's saved
    log is replaced by a line saying it was removed and why (not silently emptied)."""
    _config(fresh_cli.home, "[retention]\nlogs_total_bytes = 1024\n")
    job = fresh_cli.submit(test_image, "seq", "1", "600")
    fresh_cli.until(job, "Done")
    _backdate(fresh_cli.home, [job], days=400)
    bad = fresh_cli.run("prune", "--until", "yesterdayish")
    assert bad.returncode != 0 and b"--until" in bad.stderr, bad.stderr
    assert fresh_cli.ok("prune").startswith("removed 0 ended job(s); removed the saved logs of 1 more")
    assert fresh_cli.info(job)["state"] == "Done"
    assert fresh_cli.ok("logs", job) == ("[conveyor: the 2292 bytes of this log were removed: retention keeps all saved "
                                         "logs to logs_total_bytes = 1024]\n")
    assert fresh_cli.ok("prune", "--until", "30d").startswith("removed 1 ended job(s)")
    assert fresh_cli.run("inspect", job).returncode != 0

    # a retried job's earlier attempts count toward the total and are removed with its own
    script = 'seq 1 600; [ "$CONVEYOR_ATTEMPT" -ge 2 ]'
    retried = fresh_cli.submit("--retries", "1", test_image, "sh", "-c", script)
    fresh_cli.until(retried, "Done")
    first = fresh_cli.home / "logs" / retried / "attempt-1" / "stdout"
    assert first.stat().st_size == 2292
    assert fresh_cli.ok("prune").startswith("removed 0 ended job(s); removed the saved logs of 1 more")
    assert first.read_text().startswith("[conveyor: the 2292 bytes of this log were removed: retention")
    assert fresh_cli.ok("logs", retried).startswith("[conveyor: the 2292 bytes of this log were removed")
    assert fresh_cli.ok("prune") == "removed 0 ended job(s)\n"  # its notes are not dropped again


def test_batch_submit_is_all_or_nothing_and_names_the_bad_spec(agent, test_image):
    """A client with thousands of jobs submits them in one request (not one round trip each),
    and a single bad spec among them is named by its index with nothing half-submitted."""
    with Client(agent.home) as c:
        specs = [sh(test_image, f"echo {i}", network="none") for i in range(300)]
        t = time.perf_counter()
        ids = c.submit_many(specs, hold=True)
        took = time.perf_counter() - t
        assert len(set(ids)) == 300
        jobs = c.list(states=["QueuedHeld"])
        assert sorted(j.id for j in jobs) == sorted(ids)
        assert {j.spec.command[-1] for j in jobs} == {f"echo {i}" for i in range(300)}
        with pytest.raises(InvalidSpec) as err:
            c.submit_many([specs[0], sh(test_image, "true", resources={"cpus": 1000})])
        assert err.value.field.startswith("specs[1].resources"), err.value.problems
        assert c.count() == 300
        released = c.release(ids[0])
        assert c.wait(released.id, timeout=60).stdout == "0\n"
    assert took < 30  # one request, not 300 (generous: the machine is shared)


def test_events_since_starts_at_that_time(fresh_cli, test_image):
    """`conveyor events --since` shows the transitions from that time on (found by time in
    the store, not by reading the whole history to the client), and nothing older."""
    first = fresh_cli.submit(test_image, "true")
    fresh_cli.until(first, "Done")
    time.sleep(1.1)
    mark = time.time()
    second = fresh_cli.submit(test_image, "true")
    fresh_cli.until(second, "Done")
    lines = fresh_cli.ok("events", "--since", f"{mark:.3f}", "--json").splitlines()
    seen = [json.loads(line) for line in lines]
    assert {t["job_id"] for t in seen} == {second}, seen
    assert [t["to_state"] for t in seen][-1] == "Done"
    assert all(t["at"] >= mark for t in seen)
