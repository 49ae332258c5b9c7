"""Submitting through the agent as fast as the library (README: Growth, busy clients): a batch
validates each distinct spec once, `image_ready` means the same through the agent as in the
library, and what a submit answered survives a SIGKILL of the agent. End-to-end against the
real engine, through `conveyor serve`; the equivalence of the batch's validation is also
checked on the model itself, spec by spec."""

from __future__ import annotations

import json
import signal

import pytest
from pydantic import TypeAdapter, ValidationError

from conveyor import Client, Executor, JobSpec
from conveyor.agent.models import BatchSubmitRequest
from conveyor.errors import ImageNotFound, InvalidSpec
from helpers import AgentProcess, eventually, sh

MISSING = "conveyor/not-on-this-node:never"


def _decoded(items: list) -> list:
    """As the agent gets them: decoded from the request's JSON, one dict per spec."""
    return json.loads(json.dumps(items))


def test_a_batch_validated_once_per_distinct_spec_equals_validating_each():
    """The batch's specs are validated once per distinct text: the result must be what
    validating every spec gives, value and type, for repeats, interleaved repeats and specs
    that are equal in Python (1 == 1.0 == True) but not in JSON; and a bad spec anywhere must
    give exactly the errors of validating the whole list."""
    base = {"image": "busybox", "command": ["sh", "-c", "echo hi"], "labels": {"k": "v"}}
    variants = [base, {**base, "priority": 1}, {**base, "priority": 1.0}, {**base, "priority": True},
                {"command": ["true"], "backend": {"name": "process", "options": {"nice": 1}}},
                {"command": ["true"], "backend": {"name": "process", "options": {"nice": True}}},
                {**base, "command": ["echo", "1"]}, {**base, "command": ["echo", "1.0"]}]
    items = _decoded([variants[i % len(variants)] for i in range(200)] + [base] * 300)
    one_by_one = [TypeAdapter(JobSpec).validate_python(item) for item in _decoded(items)]
    batch = BatchSubmitRequest.model_validate({"specs": items})
    assert [s.model_dump() for s in batch.specs] == [s.model_dump() for s in one_by_one]
    assert [s.to_json() for s in batch.specs] == [s.to_json() for s in one_by_one]
    assert len({id(s) for s in batch.specs}) == len({json.dumps(v) for v in variants})  # one object per text

    bad = _decoded([base, {**base, "memory": "lots"}, base, {**base, "bogus": 1}, {**base, "memory": "lots"}])
    with pytest.raises(ValidationError) as got:
        BatchSubmitRequest.model_validate({"specs": bad})
    with pytest.raises(ValidationError) as each:
        TypeAdapter(list[JobSpec]).validate_python(bad)
    assert [(e["loc"][1:], e["msg"]) for e in got.value.errors()] == [(e["loc"], e["msg"]) for e in each.value.errors()]
    assert [e["loc"][:2] for e in got.value.errors()] == [("specs", 1), ("specs", 3), ("specs", 4)]
    with pytest.raises(ValidationError):  # the list's own limits still count every spec
        BatchSubmitRequest.model_validate({"specs": [base] * 100_001})


def test_a_batch_through_the_agent_stores_what_the_library_stores(agent, test_image):
    """10,000 jobs of one spec and a few others in one request: every job stored with its
    own spec, as the library stores the same batch; a refused spec is named by its index and
    nothing is recorded."""
    spec = sh(test_image, "echo same", network="none", labels={"batch": "big"})
    others = [sh(test_image, f"echo {i}", network="none", priority=i) for i in range(5)]
    specs = [spec] * 5_000 + others + [spec] * 4_995
    with Client(agent.home) as c:
        ids = c.submit_many(specs, hold=True, image_ready=True)
        assert len(ids) == len(set(ids)) == 10_000
        stored = {j.id: j.spec for j in c.list(states=["QueuedHeld"])}
        assert [stored[i].to_json() for i in ids] == [s.to_json() for s in specs]
        with pytest.raises(InvalidSpec) as err:
            c.submit_many([spec, spec, sh(test_image, "true", resources={"cpus": 1000})], hold=True)
        assert err.value.field.startswith("specs[2].resources"), err.value.problems
        assert c.count() == 10_000
    with Executor(agent.home) as ex:  # the library, beside the agent, on the same store
        lib = ex.submit_many(specs[4_998:5_007], hold=True, image_ready=True)
        assert [ex.info(i).spec.to_json() for i in lib] == [stored[i].to_json() for i in ids[4_998:5_007]]


@pytest.mark.parametrize("via", ["library", "agent"])
def test_image_ready_means_the_same_through_the_agent_as_in_the_library(via, agent, test_image):
    """``image_ready=True`` skips the submit's check with the engine on every path (before,
    the Client dropped it and asked the engine anyway); without it a missing image is refused
    at submit with nothing recorded. A job submitted ready whose image is missing fails at
    launch, the same way on both paths."""
    missing = JobSpec(image=MISSING, command=["true"], pull="never", network="none")
    handle = Client(agent.home) if via == "agent" else Executor(agent.home)
    with handle as h:
        with pytest.raises(ImageNotFound):
            h.submit(missing, hold=True)
        with pytest.raises(ImageNotFound):
            h.submit_many([missing], hold=True)
        assert h.count() == 0
        held = h.submit(missing, hold=True, image_ready=True)
        [batched] = h.submit_many([missing], hold=True, image_ready=True)
        array = h.submit_array(missing, 1, 2, hold=True, image_ready=True)
        assert h.count() == 4  # two jobs and an array of two tasks
        h.cancel_array(array)
    with Client(agent.home) as c:
        for job_id in (held, batched):
            c.release(job_id)
            job = c.wait(job_id, timeout=120)
            assert (job.state.value, job.substate) == ("Failed", "image_missing"), job
            assert MISSING in (job.message or ""), job.message


def test_what_a_submit_answered_survives_a_sigkill_of_the_agent(state_dir, test_image):
    """Durability did not move: every id a single or batch submit returned is in the store
    after the agent is SIGKILLed right after answering."""
    agent = AgentProcess(state_dir).start()
    try:
        spec = sh(test_image, "true", network="none")
        with Client(state_dir) as c:
            ids = [c.submit(spec, hold=True, image_ready=True) for _ in range(50)]
            ids += c.submit_many([spec] * 2_000, hold=True, image_ready=True)
        agent.stop(signal.SIGKILL)
        agent = AgentProcess(state_dir).start()
        with Client(state_dir) as c:
            kept = eventually("the jobs after the restart", lambda: {j.id for j in c.list(states=["QueuedHeld"])})
            assert kept == set(ids)
    finally:
        agent.stop()
        with Executor(state_dir) as ex:
            ex.cleanup()
