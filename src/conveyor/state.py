"""The DRMAA2 job state model: states, substates (reasons) and which moves are legal."""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    QUEUED = "Queued"
    QUEUED_HELD = "QueuedHeld"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    REQUEUED = "Requeued"
    REQUEUED_HELD = "RequeuedHeld"
    DONE = "Done"
    FAILED = "Failed"
    UNDETERMINED = "Undetermined"

    def __str__(self) -> str:  # so f-strings and tables show "Running", not "JobState.RUNNING"
        return self.value

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        """A container may exist and be alive for a job in this state (it holds node resources)."""
        return self in ACTIVE_STATES


# The state sets, defined once. Everything else (the scheduler's SQL, the verbs' rules, the CLI's
# filters) names one of these instead of listing states again.
FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED})
LIVE_STATES = frozenset(JobState) - FINAL_STATES
HELD_STATES = frozenset({JobState.QUEUED_HELD, JobState.REQUEUED_HELD})
RUNNABLE_STATES = frozenset({JobState.QUEUED, JobState.REQUEUED})  # waiting, not held: the scheduler may start it
WAITING_STATES = RUNNABLE_STATES | HELD_STATES  # not started (or not yet again)
# Started and not ended: a container may be alive and the job holds its share of the node.
# Undetermined belongs here: we lost track of a started job, so its container may still run.
ACTIVE_STATES = frozenset({JobState.RUNNING, JobState.SUSPENDED, JobState.UNDETERMINED})


def sql_in(states: frozenset[JobState], column: str = "state") -> str:
    """``state IN ('Queued', 'Requeued')``: literal values in the enum's order, which is the
    text of the store's partial indexes (SQLite uses such an index only for the same terms)."""
    return f"{column} IN ({', '.join(repr(s.value) for s in JobState if s in states)})"


class Substate:
    """Reasons recorded next to a state. Plain strings so the store and API stay readable."""

    EXITED = "exited"  # ran to completion; exit code says how it went
    OOM_KILLED = "oom_killed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    IMAGE_MISSING = "image_missing"
    START_FAILED = "start_failed"
    CONTAINER_LOST = "container_lost"  # the container vanished while we were not looking
    HELD = "held"
    DEPENDENCY_FAILED = "dependency_failed"  # a job it runs --after ended badly (or was removed)
    START_DEADLINE = "start_deadline"  # not started by its start deadline
    RETRY = "retry"  # Requeued after a failed attempt, waiting for its backoff and a slot
    # Its logs could not be saved: the state directory's disk is full. Its container stays
    # (auto_remove or not) so `conveyor fsck --repair` can save them once there is space.
    STORAGE_FULL = "storage_full"
    # Queued in the engine's own queue: handed to an engine that queues jobs itself (Slurm,
    # Swarm) and not yet running there. The engine's reason (Resources, Priority, "no suitable
    # node") is the job's message. Such a job holds its share like a running one, the
    # scheduler does not launch it again, and cancelling it goes through the engine.
    ENGINE_QUEUED = "engine_queued"
    # Stop reasons only (a job stopped for them ends Failed/cancelled, its message naming why):
    # its lease expired (a keepalive was missed) or was released.
    LEASE_EXPIRED = "lease_expired"
    LEASE_RELEASED = "lease_released"


# The failures a job with retries left is run again for. Not for what another try cannot
# change (cancelled, image missing, command not found, a failed dependency, a missed deadline).
RETRYABLE = frozenset({Substate.EXITED, Substate.OOM_KILLED, Substate.TIMEOUT, Substate.CONTAINER_LOST})


# Legal moves. Undetermined is reachable from anywhere (we lost track) and can be left
# once the truth is known again.
# Queued -> Queued and Requeued -> Queued: handed to an engine that queues it (ENGINE_QUEUED).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.QUEUED, JobState.QUEUED_HELD, JobState.RUNNING, JobState.FAILED}),
    JobState.QUEUED_HELD: frozenset({JobState.QUEUED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.SUSPENDED, JobState.DONE, JobState.FAILED, JobState.REQUEUED}
    ),
    JobState.SUSPENDED: frozenset({JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.REQUEUED}),
    JobState.REQUEUED: frozenset({JobState.QUEUED, JobState.REQUEUED_HELD, JobState.RUNNING, JobState.FAILED}),
    JobState.REQUEUED_HELD: frozenset({JobState.REQUEUED, JobState.FAILED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.UNDETERMINED: frozenset(
        {JobState.RUNNING, JobState.SUSPENDED, JobState.DONE, JobState.FAILED, JobState.REQUEUED}
    ),
}


def in_engine(state: JobState, substate: str | None) -> bool:
    """The engine has the job: it started (an active state) or its engine queues it."""
    return state in ACTIVE_STATES or (state is JobState.QUEUED and substate == Substate.ENGINE_QUEUED)


def in_engine_sql(table: str = "") -> str:
    """:func:`in_engine` in SQL (``table``: a prefix such as ``"j."``); both terms are indexed."""
    return f"({sql_in(ACTIVE_STATES, table + 'state')} OR {table}substate = '{Substate.ENGINE_QUEUED}')"


NOT_ENGINE_QUEUED_SQL = f"substate IS NOT '{Substate.ENGINE_QUEUED}'"


def can_move(src: JobState, dst: JobState) -> bool:
    if dst is JobState.UNDETERMINED:
        return not src.is_final
    return dst in TRANSITIONS[src]


# docker's status words: the job states each stands for (removing and dead: none ever is)
DOCKER_STATUS: dict[str, frozenset[JobState]] = {
    "created": frozenset({JobState.QUEUED, JobState.QUEUED_HELD}),
    "restarting": frozenset({JobState.REQUEUED, JobState.REQUEUED_HELD}),
    "running": frozenset({JobState.RUNNING}),
    "paused": frozenset({JobState.SUSPENDED}),
    "exited": FINAL_STATES,
    "removing": frozenset(),
    "dead": frozenset(),
}


def docker_status(state: JobState) -> str:
    """docker's State word (created, running, paused, restarting, exited) for a job state."""
    return next((word for word, states in DOCKER_STATUS.items() if state in states), state.value.lower())
