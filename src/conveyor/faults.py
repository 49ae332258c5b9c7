"""Fault points for crash tests: stop a process at an exact step so a test can SIGKILL it there.

Every durable step of every path (a write to the store, the engine, the content store, the
log directory or the token registry that a later step depends on) is a :class:`Point` below,
and only those: ``tests/test_faults.py`` walks the whole list, kills the agent at each point
with jobs in flight, restarts it, and checks that nothing was lost or done twice. A step added
later without a point here, or a point the walk cannot reach, fails that test.

``CONVEYOR_FAULT`` names one or more points (comma separated); when the process reaches one it
appends ``"<point> <subject>"`` to the file named by ``CONVEYOR_FAULT_FILE`` (if set) and then
sleeps for good, holding whatever it held at that step, until the test kills it. A name that is
not a point is refused (ValueError) rather than ignored: a typo would otherwise disable the
crash it meant to cause and the test would pass for the wrong reason. Without
``CONVEYOR_FAULT`` a point costs one environment lookup.
"""

from __future__ import annotations

import enum
import logging
import os
import time

log = logging.getLogger("conveyor.faults")


class Point(str, enum.Enum):
    """One durable step; its value is the name ``CONVEYOR_FAULT`` uses, ``meaning`` what holds
    when a process stops there."""

    meaning: str

    def __new__(cls, name: str, meaning: str) -> "Point":
        point = str.__new__(cls, name)
        point._value_ = name
        point.meaning = meaning
        return point

    # submit paths
    SUBMITTED = "submitted", "the job is in the store (Queued); the scheduler was not woken"
    ARRAY_SUBMITTED = "array-submitted", "the array and all its tasks are in the store; the scheduler was not woken"
    BATCH_WRITING = "batch-writing", "a batch submit's rows are all written in its open transaction; none committed"
    BATCH_SUBMITTED = "batch-submitted", "a batch submit's jobs are all in the store; the scheduler was not woken"
    # the launch, in its order
    IMAGE_READY = "image-ready", "the job's image is present (pulled if it had to be); nothing made yet"
    INPUTS_STAGED = "inputs-staged", "the job's inputs are staged for its mount; no container yet"
    AFTER_CREATE = "after-create", "the container exists, its id is not in the store, the job is still Queued"
    PROVENANCE_RECORDED = "provenance-recorded", "the attempt's provenance is stored, the container id is not"
    AFTER_CLAIM = "after-claim", "the job is claimed (Running) but its container is not started"
    AFTER_START = "after-start", "the engine started the container; its timeout and waiters were not told"
    RETIRED = "retired", "a retried job's last attempt: its logs kept aside and its container removed, the store not told"
    DEPENDENCY_FAILED = "dependency-failed", "a job whose dependency failed is recorded Failed; waiters not told"
    # control verbs
    PAUSED = "paused", "the engine froze the container; the store still says Running"
    UNPAUSED = "unpaused", "the engine thawed the container; the store still says Suspended"
    SIGNALLED = "signalled", "a signal was sent to the job's processes; nothing recorded"
    STOP_REQUESTED = "stop-requested", "why the job is stopped (cancel, timeout) is recorded; no signal sent yet"
    CONTAINER_REMOVED = "container-removed", "rm: the job's container is gone; its logs and record are not"
    # the finish, in its order
    AFTER_LOGS = "after-logs", "the finished job's logs are saved, its final state is not yet recorded"
    AFTER_OUTPUTS = "after-outputs", "its outputs are captured into the content store, its final state is not yet recorded"
    AFTER_RECORD = "after-record", "the final state is recorded, the container (auto_remove) is not yet removed"
    # retention, the content store and the agent's own files
    PRUNE_DECIDED = "prune-decided", "prune: the jobs it removes are written down; no record, container or log is gone yet"
    PRUNE_FORGOTTEN = "prune-forgotten", "prune: the jobs' records are gone; their containers and saved logs are not yet"
    BLOB_DELETED = "blob-deleted", "gc removed an unreferenced blob and goes on to the next"
    TOKEN_POLICY_WRITTEN = "token-policy-written", "token create: its inline policy file is written, the token is not"
    TOKEN_REVOKED = "token-revoked", "token revoke: the token is gone, its inline policy file is not"


def armed() -> frozenset[Point]:
    """The points ``CONVEYOR_FAULT`` names; ValueError naming any that is not a point."""
    wanted = os.environ.get("CONVEYOR_FAULT")
    if not wanted:
        return frozenset()
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in Point._value2member_map_]
    if unknown:
        raise ValueError(f"CONVEYOR_FAULT names no fault point {', '.join(unknown)}; the points are: "
                         + ", ".join(p.value for p in Point))
    return frozenset(Point(n) for n in names)


def reached(point: Point, subject: str) -> None:
    """Stop here for good if ``point`` is armed (``subject``: the job, blob or token)."""
    if not isinstance(point, Point):
        raise TypeError(f"fault point {point!r} is not a faults.Point")
    if not os.environ.get("CONVEYOR_FAULT") or point not in armed():
        return
    log.warning("fault point %s reached for %s; stopping here until killed", point.value, subject)
    marker = os.environ.get("CONVEYOR_FAULT_FILE")
    if marker:
        with open(marker, "a") as f:
            f.write(f"{point.value} {subject}\n")
    while True:
        time.sleep(3600)
