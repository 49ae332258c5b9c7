"""The job verbs, each declared once.

A :class:`Verb` says what a job-control verb is called, what it does (one summary, used as the
CLI's help, the REST route's summary and the Python method's docstring), in which states it
applies (anywhere else it is refused with InvalidState), its parameters and whether it has an
array form. From this table:

- the Python client gets its methods (``Client.hold``, ``Client.hold_array``, ...),
- the Executor gets its array forms (its job-level methods are the implementation),
- the agent gets its REST routes, and with them the OpenAPI document,
- the CLI gets its commands (``conveyor hold JOB...``, ``conveyor array hold ARRAY``).

Adding a verb is one entry here plus its implementation in ``executor/control.py``.

The other operations (submit, wait, logs, ...) have shapes of their own in each layer; their
names, summaries and routes are declared here too, in :data:`OPERATIONS`, so that every layer
says the same thing about them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from .state import FINAL_STATES, HELD_STATES, LIVE_STATES, RUNNABLE_STATES, JobState

if TYPE_CHECKING:
    import inspect


# NamedTuples, not dataclasses: the dataclasses module loads inspect (~10 ms), and the CLI
# loads this table on every command.
class Param(NamedTuple):
    """A parameter of a verb: a keyword argument, a query parameter and a CLI option."""

    name: str
    kind: type  # float, int, bool or str
    help: str
    default: Any = None
    ge: float | None = None  # bounds the REST API checks
    le: float | None = None
    flags: tuple[str, ...] = ()  # CLI option names; default --<name>
    duration: bool = False  # the CLI takes durations for it (30s, 5m, 1h)
    required: bool = False

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return self.flags or ("--" + self.name.replace("_", "-"),)

    @property
    def annotation(self) -> Any:
        return self.kind if self.kind is bool or self.required else self.kind | None


class Verb(NamedTuple):
    """One job-control verb."""

    name: str  # the Python method, the route's last word and (by default) the CLI command
    summary: str
    applies_to: frozenset[JobState]
    params: tuple[Param, ...] = ()
    array_summary: str | None = None  # the array form's summary; None: no array form
    method: str = "POST"
    path: str | None = None  # under /v1; default /jobs/{ref}/<name>
    command: str | None = ""  # the CLI command; "" means the name, None means none
    refusal: str | None = None  # how a refusal names the action: "cannot <refusal> job X: it is Done"
    returns_job: bool = True  # False: the route answers 204 and the Python method None
    ends_job: bool = False  # ends the job: the Python method waits for its end unless wait=False

    @property
    def route(self) -> str:
        return self.path or f"/jobs/{{ref}}/{self.name}"

    @property
    def array_route(self) -> str:
        return f"/arrays/{{ref}}/{self.name}"

    @property
    def cli_name(self) -> str | None:
        return self.name if self.command == "" else self.command

    @property
    def action(self) -> str:
        return self.refusal or self.name

    def allows(self, state: JobState) -> bool:
        return state in self.applies_to

    def signature(self, array: bool = False) -> "inspect.Signature":
        """The Python method's signature: ``(self, ref, <params>, *, wait=True)``."""
        import inspect  # ~10 ms: not on the CLI's start-up path

        P = inspect.Parameter
        params = [P("self", P.POSITIONAL_OR_KEYWORD), P("ref", P.POSITIONAL_OR_KEYWORD, annotation=str)]
        params += [
            P(p.name, P.POSITIONAL_OR_KEYWORD, default=P.empty if p.required else p.default, annotation=p.annotation)
            for p in self.params
        ]
        if self.ends_job and not array:
            params.append(P("wait", P.KEYWORD_ONLY, default=True, annotation=bool))
        result = dict if array else ("Job" if self.returns_job else None)
        return inspect.Signature(params, return_annotation=result)


GRACE = Param(
    "grace", float, "Seconds between SIGTERM and SIGKILL (default: the job's stop grace, --stop-timeout).",
    ge=0, le=86400, duration=True,
)
FORCE = Param("force", bool, "Cancel a job that has not ended first (SIGKILL).", default=False, flags=("-f", "--force"))

HOLD = Verb(
    "hold", "Keep a queued job from starting (Queued -> QueuedHeld)", RUNNABLE_STATES,
    array_summary="Hold every task of an array that has not started",
)
RELEASE = Verb(
    "release", "Let a held job start (QueuedHeld -> Queued)", HELD_STATES,
    array_summary="Release every held task of an array",
)
SUSPEND = Verb(
    "suspend", "Freeze a running job's processes (Running -> Suspended; the engine's pause)",
    frozenset({JobState.RUNNING}), array_summary="Suspend every running task of an array",
)
RESUME = Verb(
    "resume", "Let a suspended job run on (Suspended -> Running)", frozenset({JobState.SUSPENDED}),
    array_summary="Resume every suspended task of an array",
)
CANCEL = Verb(
    "cancel", "Terminate a job: SIGTERM, then SIGKILL after the grace period; a waiting job ends at once",
    LIVE_STATES, params=(GRACE,), array_summary="Cancel every task of an array that has not ended",
    ends_job=True,
)
REMOVE = Verb(
    "remove", "Forget a finished job: its container, saved logs and record (force: cancel it first)",
    FINAL_STATES, params=(FORCE,), method="DELETE", path="/jobs/{ref}", command="rm",
    refusal="remove (cancel it first, or force)", returns_job=False,
)
DISCARD_CONTAINER = Verb(
    "discard_container", "Remove a finished job's container; its record, logs and exit code stay",
    FINAL_STATES, method="DELETE", path="/jobs/{ref}/container", command=None,
    refusal="remove the container of", returns_job=False,
)

RESIZE = Verb(
    "resize", "Set the size of a job's terminal (rows, columns), as its user's window changes",
    frozenset({JobState.RUNNING, JobState.SUSPENDED}),
    params=(
        Param("height", int, "Rows.", ge=1, le=10000, required=True),
        Param("width", int, "Columns.", ge=1, le=10000, required=True),
    ),
    command=None, refusal="resize the terminal of", returns_job=False,
)

# No array form: `cancel_array` ends a whole array; a signal fanned out to its tasks would report
# only how many were sent one, not what it did to them (docker kill has none either).
SIGNAL = Verb(
    "signal", "Send a signal to a running job's processes (default SIGKILL), as `docker kill` does",
    frozenset({JobState.RUNNING, JobState.SUSPENDED}),
    params=(Param("signal", str, "The signal: a name (KILL, TERM, HUP, USR1, ...; SIG optional) or a number.",
                  default="KILL", flags=("-s", "--signal")),),
    command="kill", refusal="send a signal to",
)

VERBS: tuple[Verb, ...] = (HOLD, RELEASE, SUSPEND, RESUME, CANCEL, REMOVE, DISCARD_CONTAINER, RESIZE, SIGNAL)
ARRAY_VERBS: tuple[Verb, ...] = tuple(v for v in VERBS if v.array_summary)


class Operation(NamedTuple):
    """Any other operation: its name, summary and route, said the same way by every layer."""

    name: str
    summary: str
    method: str
    path: str
    command: str | None = None  # the CLI command that offers it, if any
    tags: tuple[str, ...] = ("jobs",)
    # a POST that changes nothing (its arguments are a body): a read-only token may make it
    reads_only: bool = False


def _ops(*ops: Operation) -> dict[str, Operation]:
    return {op.name: op for op in ops}


OPERATIONS: dict[str, Operation] = _ops(
    Operation("ping", "Liveness; needs no token", "GET", "/ping", tags=("agent",)),
    Operation("agent_info", "The agent: version, pid, state directory, policy", "GET", "/info", tags=("agent",)),
    Operation("submit", "Submit a job (queued, or held with hold=true)", "POST", "/jobs", "submit"),
    Operation("submit_many", "Submit many jobs in one request: all of them, or (one spec refused, named by its "
              "index) none; their ids in order", "POST", "/jobs:batch"),
    Operation("run", "Submit a job and follow it on this connection: its output as it is written, then its end "
              "(a foreground job: cancelled if the connection goes away first)", "POST", "/run", "run"),
    Operation("attach", "Follow a job again on this connection, from given byte offsets of its output, to its end "
              "(after a broken run; bound to this connection like run)", "GET", "/jobs/{ref}/attach", tags=("logs",)),
    Operation("stdin", "Stream the request body to a running job's stdin (the job sees EOF at its end)", "POST",
              "/jobs/{ref}/stdin"),
    Operation("exec", "Run a command in a running job, as docker exec does: a WebSocket carrying its stdin, stdout, "
              "stderr, terminal resizes and exit code (allowed for a named token by its policy's exec rule)", "GET",
              "/jobs/{ref}/exec", "exec"),
    Operation("port_forward", "Reach a TCP port of a running job, as kubectl port-forward does: a WebSocket per "
              "connection carrying its bytes both ways (allowed for a named token by its policy's port_forward rule)",
              "GET", "/jobs/{ref}/port-forward", "port-forward"),
    Operation("ensure_image", "Make a spec's image present on this node (pull per its pull policy)", "POST", "/images/ensure"),
    Operation("load_image", "Load an image tarball (docker save) into the engine and record its digests", "POST",
              "/images/load", "image load"),
    Operation("list", "List jobs, filtered and paged (oldest first)", "GET", "/jobs", "ps"),
    Operation("info", "One job (id, unique id prefix or name)", "GET", "/jobs/{ref}", "inspect"),
    Operation("attempts", "Every attempt of a job run with retries", "GET", "/jobs/{ref}/attempts"),
    Operation("provenance", "Where and how a job's attempt ran (the last by default): host, engine, runtime, image "
              "digests, the spec as run and its digest, Conveyor's version, the submitting token", "GET",
              "/jobs/{ref}/provenance", "provenance"),
    Operation("provenance_diff", "What differs between the provenance of two jobs, field by field", "GET",
              "/provenance/diff", "provenance diff"),
    Operation("wait", "Long-poll until the job has finished (or started, with until=started)", "GET",
              "/jobs/{ref}/wait", "wait", tags=("wait",)),
    Operation("wait_any", "Long-poll until the first of several jobs has finished", "POST", "/wait-any", tags=("wait",),
              reads_only=True),
    Operation("logs", "A job's output, stdout and stderr kept apart; follow streams until the job ends", "GET",
              "/jobs/{ref}/logs", "logs", tags=("logs",)),
    Operation("events", "State transitions as Server-Sent Events, in commit order", "GET", "/events", "events",
              tags=("events",)),
    Operation("submit_array", "Submit a job array: one task per index begin..end by step", "POST", "/arrays",
              tags=("arrays",)),
    Operation("array", "An array's range, max-parallel and task counts per state", "GET", "/arrays/{ref}",
              "array show", tags=("arrays",)),
    Operation("array_tasks", "Each task of an array: job id, index, state", "GET", "/arrays/{ref}/tasks", tags=("arrays",)),
    Operation("outputs", "A job's captured output filesets and files (path, size, digest)", "GET",
              "/jobs/{ref}/outputs", "outputs", tags=("data",)),
    Operation("read_output", "One captured output file, verified against its digest", "GET",
              "/jobs/{ref}/outputs/content", "cat", tags=("data",)),
    Operation("verify", "Re-hash stored blobs (one job's, or all); report corrupt and missing ones", "POST",
              "/data/verify", "verify", tags=("data",), reads_only=True),
    Operation("fsck", "Check the store against the engine and the content store: jobs without the container they "
              "should have, containers without a job, missing or corrupt blobs, logs shorter than the engine's, "
              "half-finished transitions; each problem says what repair does, and repair=true does it", "POST",
              "/fsck", "fsck", tags=("data",)),
    Operation("gc", "Remove blobs no job references (never one a queued or running job needs)", "POST", "/data/gc",
              "gc", tags=("data",)),
    Operation("prune", "Remove the ended jobs the [retention] rules (or until) let go: records, transitions, "
              "containers, saved logs; then keep all saved logs to logs_total_bytes (never a live job, nor one a "
              "live job depends on)", "POST", "/prune", "prune", tags=("data",)),
    Operation("images", "The engine's images, as its API lists them (Docker: GET /images/json)", "GET", "/images",
              tags=("images",)),
    Operation("image_inspect", "One image as the engine describes it (Docker: GET /images/{name}/json); 404 when it "
              "has none", "GET", "/images/inspect", tags=("images",)),
    Operation("pull", "Pull an image (no tag: latest; a digest works too), streaming the engine's progress "
              "messages as they come", "POST", "/images/pull", "pull", tags=("images",)),
    Operation("stats", "One sample of a running job's resource usage, the engine's own document (null once it "
              "is not running)", "GET", "/jobs/{ref}/stats"),
    Operation("usage", "Resource usage of jobs (default: every running one): a sample read now, the totals in "
              "the job's record (peak memory, CPU seconds, IO bytes, OOM margin) and, with series, the samples kept",
              "GET", "/usage", "stats"),
    Operation("top", "The processes running in a job, as docker top lists them", "GET", "/jobs/{ref}/top", "top"),
    Operation("queue", "The queue as the scheduler sees it, and what each waiting job waits for", "GET", "/queue",
              "queue", tags=("agent",)),
    Operation("machine", "This node: CPUs, memory, GPUs, load, engine, capacity in use", "GET", "/machine",
              "machine", tags=("agent",)),
    Operation("metrics", "Metrics in the Prometheus text format: jobs by state, the queue, capacity, starts, ends, "
              "durations, engine calls, submissions, disk bytes (open without a token when [agent] open_metrics)",
              "GET", "/metrics", "metrics", tags=("agent",)),
    Operation("backends", "Every backend: whether this node runs it (and which is its default), what it can do, "
              "and the options a job may give it", "GET", "/backends", "backends", tags=("agent",)),
    Operation("engine", "The engine as it describes itself: its version and info documents", "GET", "/engine",
              tags=("agent",)),
    Operation("cleanup", "Remove every container, volume and network this executor made", "POST", "/cleanup",
              "cleanup", tags=("control",)),
    Operation("lease_create", "Reserve a share of the node (CPUs, memory, GPUs) for a holder that keeps it alive; refused, "
              "saying what is missing, when it does not fit in what is free", "POST", "/leases", "lease create",
              tags=("leases",)),
    Operation("lease_list", "Leases: live ones (all: ended ones too), each with its share and what its jobs hold", "GET",
              "/leases", "lease list", tags=("leases",)),
    Operation("lease_info", "One lease: its share, state, deadline, what its jobs hold, and its jobs", "GET",
              "/leases/{ref}", "lease inspect", tags=("leases",)),
    Operation("lease_renew", "Keep a lease alive: its deadline becomes now + its keepalive", "POST", "/leases/{ref}/renew",
              "lease renew", tags=("leases",)),
    Operation("lease_resize", "Resize an active lease's share: it grows only into what the node has free, and shrinks "
              "no lower than what its jobs hold now", "POST", "/leases/{ref}/resize", "lease resize", tags=("leases",)),
    Operation("lease_release", "Release a lease: its jobs are cancelled (running ones with their grace period), or with "
              "drain it ends once they have", "POST", "/leases/{ref}/release", "lease release", tags=("leases",)),
    Operation("token_create", "Create a named token bound to a policy; the answer holds the token, shown only once (owner only)",
              "POST", "/tokens", "token create", tags=("tokens",)),
    Operation("token_list", "Named tokens: name, policy, created, last used; never the tokens (owner only)", "GET",
              "/tokens", "token list", tags=("tokens",)),
    Operation("token_revoke", "Revoke a named token: it stops working at once (owner only)", "DELETE",
              "/tokens/{name}", "token revoke", tags=("tokens",)),
)


def array_form(verb: Verb) -> Callable[..., dict]:
    """``<verb>_array(ref, <params>)``: the verb applied to every task of an array in a state it
    allows; both the Executor and the Client get theirs from here, and differ only in their
    ``_apply_to_array``."""
    sig = verb.signature(array=True)

    def method(self, *args: Any, **kwargs: Any) -> dict:
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        return self._apply_to_array(verb, values.pop("ref"), values)

    return _named(method, f"{verb.name}_array", verb.array_summary or "", sig)


def job_form(verb: Verb) -> Callable[..., Any]:
    """``<verb>(ref, <params>[, wait])`` for a class that performs verbs generically (the
    Client): it calls ``self._perform(verb, ref, params, wait)``."""
    sig = verb.signature()

    def method(self, *args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        ref, wait = values.pop("ref"), values.pop("wait", False)
        return self._perform(verb, ref, values, wait)

    return _named(method, verb.name, verb.summary, sig)


def _named(fn: Callable, name: str, doc: str, sig: "inspect.Signature") -> Callable:
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    fn.__signature__ = sig  # type: ignore[attr-defined]
    return fn


def with_array_forms(cls: type) -> type:
    """Class decorator: give ``cls`` the array form of every verb that has one, and its verb
    methods the table's summary as their docstring where they have none."""
    for verb in VERBS:
        method = getattr(cls, verb.name, None)
        if method is not None and not method.__doc__:
            method.__doc__ = verb.summary
    for verb in ARRAY_VERBS:
        setattr(cls, f"{verb.name}_array", array_form(verb))
    return cls


def with_verbs(cls: type) -> type:
    """Class decorator: give ``cls`` every verb and its array form, performed generically."""
    for verb in VERBS:
        setattr(cls, verb.name, job_form(verb))
    return with_array_forms(cls)
