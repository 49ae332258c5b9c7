"""One interface, one table: the embedded Executor, the remote Client, the REST routes and the
CLI all say the same thing about every operation. No engine needed: these read the code's own
declarations (signatures, routes, commands) and compare them.

They prevent the drift the issue found: a verb added in one layer and forgotten in another, a
parameter that exists in the library but not over HTTP, two words for one field, an error
that comes back from the agent as a different exception than the library raises.
"""

from __future__ import annotations

import inspect
import re

import click
import pytest

from conveyor.agent.app import create_app
from conveyor.agent.errors import error_for
from conveyor.agent.models import JobOut
from conveyor.cli import cli
from conveyor.client import Client
from conveyor.errors import ERRORS_BY_CODE, ConveyorError, error_from_wire
from conveyor.executor import Executor
from conveyor.interface import ExecutorInterface
from conveyor.job import Job, Transition
from conveyor.operations import ARRAY_VERBS, OPERATIONS, VERBS
from conveyor.spec import JobSpec
from conveyor.state import JobState

PROTOCOL_METHODS = sorted(
    name for name, value in vars(ExecutorInterface).items()
    if callable(value) and (not name.startswith("_") or name in ("__enter__", "__exit__"))
)


def _shape(fn) -> list[tuple[str, object, object]]:
    """Parameter names, kinds and defaults: what a caller relies on (annotations aside)."""
    sig = fn if isinstance(fn, inspect.Signature) else inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("cls", [Executor, Client], ids=["Executor", "Client"])
@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_executor_and_client_have_every_method_of_the_interface(cls, name):
    assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
    assert _shape(getattr(cls, name)) == _shape(getattr(ExecutorInterface, name)), (
        f"{cls.__name__}.{name}{inspect.signature(getattr(cls, name))} differs from the interface's "
        f"{inspect.signature(getattr(ExecutorInterface, name))}"
    )


def test_interface_attributes_exist_on_both(tmp_path):
    ex = Executor(tmp_path / "home", supervise=False)
    try:
        client = Client(tmp_path / "home")
        for name in ExecutorInterface.__annotations__:
            assert hasattr(ex, name) and hasattr(Client, name), name
        assert ex.supervising is False and client.supervising is False
    finally:
        ex.close()


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v.name)
def test_every_verb_has_the_tables_signature_everywhere(verb):
    expected = _shape(verb.signature())
    assert _shape(getattr(Executor, verb.name)) == expected
    assert _shape(getattr(Client, verb.name)) == expected
    assert _shape(getattr(ExecutorInterface, verb.name)) == expected
    if verb.array_summary:
        expected = _shape(verb.signature(array=True))
        for cls in (Executor, Client, ExecutorInterface):
            assert _shape(getattr(cls, f"{verb.name}_array")) == expected, cls


def _routes() -> dict[tuple[str, str], dict]:
    """The served API as its OpenAPI document describes it: (METHOD, path) -> operation."""
    doc = create_app(None).openapi()
    return {(method.upper(), path): op for path, ops in doc["paths"].items() for method, op in ops.items()}


def _query(op: dict) -> set[str]:
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v.name)
def test_every_verb_has_its_rest_route_with_its_summary_and_parameters(verb):
    routes = _routes()
    route = routes[(verb.method, "/v1" + verb.route)]
    assert route["summary"] == verb.summary
    assert _query(route) == {p.name for p in verb.params}
    if verb.array_summary:
        array_route = routes[("POST", "/v1" + verb.array_route)]
        assert array_route["summary"] == verb.array_summary
        assert _query(array_route) == {p.name for p in verb.params}


@pytest.mark.parametrize("op", OPERATIONS.values(), ids=lambda o: o.name)
def test_every_operation_is_routed_as_declared(op):
    route = _routes()[(op.method, "/v1" + op.path)]
    assert route["summary"] == op.summary
    assert route["tags"] == list(op.tags)


def test_the_document_covers_exactly_the_table():
    """No route the table does not declare: a route added by hand would bypass the table."""
    declared = {(op.method, "/v1" + op.path) for op in OPERATIONS.values()}
    declared |= {(v.method, "/v1" + v.route) for v in VERBS}
    declared |= {("POST", "/v1" + v.array_route) for v in ARRAY_VERBS}
    assert set(_routes()) == declared


def _command(path: str) -> click.Command:
    cmd: click.Command = cli
    for word in path.split():
        cmd = cmd.commands[word]  # type: ignore[attr-defined]
    return cmd


@pytest.mark.parametrize("verb", [v for v in VERBS if v.cli_name], ids=lambda v: v.name)
def test_every_verb_has_its_cli_command_and_options(verb):
    for path, summary in [(verb.cli_name, verb.summary)] + (
        [(f"array {verb.name}", verb.array_summary)] if verb.array_summary else []
    ):
        cmd = _command(path)
        assert cmd.help == summary
        options = {opt for p in cmd.params for opt in p.opts}
        for param in verb.params:
            assert set(param.cli_flags) <= options, (path, param.cli_flags)


def test_job_answer_and_its_documented_shape_agree(tmp_path):
    job = Job(
        id="abc", name=None, state=JobState.DONE, substate="exited", exit_code=0, message=None,
        spec=JobSpec(image="busybox"), container_id=None, created_at=1.0, started_at=None, finished_at=None,
        logs_dir=tmp_path,
    )
    data = job.to_dict()
    assert set(data) == set(JobOut.model_fields)
    assert Job.from_dict(data) == job


def test_transition_has_one_wire_form():
    t = Transition(7, "abc", 12.5, JobState.QUEUED, JobState.RUNNING, None, "started")
    assert Transition.from_dict(t.to_dict()) == t
    assert set(t.to_dict()) == {"seq", "job_id", "at", "from_state", "to_state", "substate", "reason"}


def _example(cls: type[ConveyorError]) -> ConveyorError:
    from conveyor import errors

    examples = {
        errors.InvalidSpec: lambda: errors.InvalidSpec([("resources.memory", "12x", "use a size")]),
        errors.PolicyRefused: lambda: errors.PolicyRefused("privileged", "privileged", "not allowed here"),
        errors.JobNotFound: lambda: errors.JobNotFound("abc", "the prefix is ambiguous"),
        errors.InvalidState: lambda: errors.InvalidState("abc", "Done", "hold"),
        errors.WaitTimeout: lambda: errors.WaitTimeout("abc", "finished", 3),
        errors.ImageNotFound: lambda: errors.ImageNotFound("nope:1", "pull failed", "abc"),
    }
    return examples.get(cls, lambda: cls("something went wrong"))()


@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
def test_every_error_code_comes_back_as_the_same_exception(code):
    original = _example(ERRORS_BY_CODE[code])
    answer = error_for(original)
    assert answer.code == code
    again = error_from_wire(answer.status, answer.code, answer.message, answer.field, answer.details or {})
    assert type(again) is type(original)
    assert str(again) == str(original)
    assert again.details() == original.details()


def test_agent_only_codes_come_back_as_agent_errors():
    from conveyor.errors import AgentError

    err = error_from_wire(401, "unauthorized", "a valid token is required", "Authorization", {})
    assert isinstance(err, AgentError) and err.code == "unauthorized" and err.status == 401


def test_cli_help_and_rest_summary_of_a_verb_are_one_text():
    """The issue's example: suspend's help was worded five ways."""
    texts = {
        _command("suspend").help,
        _routes()[("POST", "/v1/jobs/{ref}/suspend")]["summary"],
        Client.suspend.__doc__,
        Executor.suspend.__doc__,
    }
    assert len(texts) == 1, texts
    assert re.search(r"Suspended", texts.pop())
