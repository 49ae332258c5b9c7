"""Hostile and broken input (issue 20): a corpus of bad requests for the REST API, the CLI and
the spec parser, a property test of the parser, and every route asked with bad tokens.

What a user (or an attacker) sends may be wrong in type, size, encoding or intent; the answer
is always a 4xx (the CLI: exit 125) that names the field, never a 5xx or a traceback, and
nothing is created.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor import Executor, JobSpec
from conveyor.errors import InvalidSpec
from helpers import CONVEYOR

IMAGE = "conveyor/busybox:latest"
BIG = "x" * (10 << 20)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (what, the request body as text): each must be refused with a 4xx naming what is wrong.
SUBMITS = [
    ("not JSON", "{"),
    ("a JSON array", "[]"),
    ("deeply nested JSON", '{"spec": {"image": "busybox", "labels": ' + nested(100_000) + "}}"),
    ("spec of the wrong type", '{"spec": 5}'),
    ("no image", '{"spec": {}}'),
    ("command of numbers", json.dumps({"spec": {"image": IMAGE, "command": [1, 2]}})),
    ("a 10 MB env value", json.dumps({"spec": {"image": IMAGE, "env": {"A": BIG}}})),
    ("100,000 labels", json.dumps({"spec": {"image": IMAGE, "labels": {f"k{i}": "v" for i in range(100_000)}}})),
    ("NUL in a label", json.dumps({"spec": {"image": IMAGE, "labels": {"a\x00b": "v"}}})),
    ("NUL in the name", json.dumps({"spec": {"image": IMAGE, "name": "a\x00b"}})),
    ("a path as the name", json.dumps({"spec": {"image": IMAGE, "name": "../../etc"}})),
    ("traversal in an output", json.dumps({"spec": {"image": IMAGE, "outputs": ["/out/../../etc"]}})),
    ("a relative input", json.dumps({"spec": {"image": IMAGE, "inputs": ["../../etc/passwd:/in"]}})),
    ("a huge memory", json.dumps({"spec": {"image": IMAGE, "resources": {"memory": 10**100}}})),
    ("negative CPUs", json.dumps({"spec": {"image": IMAGE, "resources": {"cpus": -1}}})),
    ("NUL in the env", json.dumps({"spec": {"image": IMAGE, "env": {"A\x00": "b"}}})),
    ("unicode in the image", json.dumps({"spec": {"image": "bus\u202eybox\U0001F600"}})),
    ("an unknown field", json.dumps({"spec": {"image": IMAGE, "rm": True}})),
    ("a float timeout of NaN", '{"spec": {"image": "%s", "timeout": NaN}}' % IMAGE),
]


@pytest.fixture
def api(agent):
    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {agent.token}"}, timeout=120) as client:
        yield client


def test_bad_submits_are_refused_by_name_and_create_nothing(api):
    """A bad submit must never be a 500 or a traceback, nor leave a job or container behind."""
    for what, body in SUBMITS:
        resp = api.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= resp.status_code < 500, (what, resp.status_code, resp.text[:500])
        error = resp.json()
        assert error.get("message") and "Traceback" not in resp.text, (what, error)
    assert api.get("/v1/jobs").json()["jobs"] == []


def test_bad_path_and_query_values_are_4xx(api):
    """Unicode, NUL bytes, traversal and huge numbers in routes' paths and query strings."""
    for path in ("/v1/jobs/%00", "/v1/jobs/..%2F..%2Fetc", "/v1/jobs/\u00e9\U0001F600", "/v1/jobs/" + "a" * 10_000,
                 "/v1/jobs?limit=-1", "/v1/jobs?limit=1e400", "/v1/jobs?state=nope", "/v1/jobs/x/logs?tail=abc",
                 "/v1/arrays/%00/tasks", "/v1/jobs/x/outputs/content?path=../../etc/passwd"):
        resp = api.get(path)
        assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text[:300])
    for path, params in (("/v1/jobs/x/cancel", {"grace": "1e400"}), ("/v1/jobs/x/signal", {"signal": "\x00"}),
                         ("/v1/data/gc", {"grace": "-5"})):
        resp = api.post(path, params=params)
        assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text[:300])


CLI_FLAGS = [
    (["--memory", "lots"], "memory"),
    (["--cpus", "-3"], "cpus"),
    (["--name", "a/../b"], "name"),
    (["--label", "\x01=x"], "label"),
    (["--output", "../x"], "output"),
    (["--timeout", "forever"], "timeout"),
    (["--env", "=x"], "env"),
]


def test_bad_cli_flags_exit_125_naming_the_field(state_dir):
    """A bad flag: exit 125, the field and its flag named, no traceback, no job made."""
    try:
        for args, field in CLI_FLAGS:
            proc = subprocess.run([CONVEYOR, "--home", str(state_dir), "submit", *args, IMAGE, "true"],
                                  capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            assert proc.returncode == 125, (args, proc.returncode, proc.stdout, proc.stderr)
            assert field in proc.stderr.lower() and args[0] in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        with Executor(state_dir, supervise=False) as ex:
            assert ex.list() == []
    finally:  # the CLI starts an agent before it reads the spec
        subprocess.run([CONVEYOR, "--home", str(state_dir), "serve", "--stop"], capture_output=True, timeout=60)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELDS = list(JobSpec.model_fields)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), JSONISH, max_size=6), st.booleans())
def test_the_spec_parser_accepts_or_names_the_field(fields, with_image):
    """Whatever a job file or a request holds, the parser answers a JobSpec or an InvalidSpec
    naming a field of the spec: never another exception (a 500 at the agent, a traceback at
    the CLI)."""
    data = {**fields, **({"image": IMAGE} if with_image else {})}
    try:
        JobSpec.model_validate(data)
    except InvalidSpec as exc:
        named = {re.split(r"[.\[]", field)[0] for field, _, _ in exc.problems}
        assert exc.problems and named <= set(FIELDS), (named, exc)


# ----------------------------------------------------------------------------- authentication


def _routes(api, raw: bool = False) -> list[tuple[str, str]]:
    """Every (method, path) of the agent's OpenAPI document; its {ref} and {name} as "x" unless ``raw``."""
    doc = api.get("/openapi.json").json()
    out = []
    for path, methods in doc["paths"].items():
        for method in methods:
            out.append((method.upper(), path if raw else path.replace("{ref}", "x").replace("{name}", "x")))
    return out


OPEN = {("GET", "/v1/ping")}  # liveness needs no token


def test_every_route_refuses_wrong_empty_and_revoked_tokens(agent, api):
    """Every route, the event and log streams included, answers 401 to a missing, empty,
    wrong or revoked token before doing anything; a named token is refused (403) on the
    owner's routes."""
    made = api.post("/v1/tokens", json={"name": "gone"}).json()["token"]
    assert api.delete("/v1/tokens/gone").status_code == 204
    other = api.post("/v1/tokens", json={"name": "other"}).json()["token"]
    routes = [r for r in _routes(api) if r not in OPEN]
    assert ("GET", "/v1/events") in routes and ("GET", "/v1/jobs/x/logs") in routes
    bad = {"missing": {}, "empty": {"Authorization": "Bearer"}, "wrong": {"Authorization": "Bearer nope"},
           "revoked": {"Authorization": f"Bearer {made}"}, "not bearer": {"Authorization": f"Basic {agent.token}"}}
    with httpx.Client(base_url=agent.url, timeout=30) as raw:
        for method, path in routes:
            for what, headers in bad.items():
                resp = raw.request(method, path, headers=headers, params={"follow": "true"})
                assert resp.status_code == 401, (what, method, path, resp.status_code, resp.text[:200])
        for method, path in (("GET", "/v1/tokens"), ("POST", "/v1/tokens"), ("POST", "/v1/fsck"), ("GET", "/v1/leases")):
            resp = raw.request(method, path, headers={"Authorization": f"Bearer {other}"}, json={"name": "z"})
            assert resp.status_code == 403, (method, path, resp.status_code, resp.text[:200])
    # The WebSockets (exec, port-forward) are not in the document's paths as sockets: every
    # one the app mounts, with the same tokens on the upgrade itself.
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from conveyor.agent.app import SOCKET_ROUTERS

    host = agent.url.removeprefix("http://")
    sockets = [f"/v1{r.path}".replace("{ref}", "x") for m in SOCKET_ROUTERS for r in m.websockets.routes]
    assert {"/v1/jobs/x/exec", "/v1/jobs/x/port-forward"} <= set(sockets)
    for socket_path in sockets:
        for what, headers in bad.items():
            with pytest.raises(InvalidStatus) as refused:
                connect(f"ws://{host}{socket_path}", additional_headers=headers, open_timeout=30, proxy=None).close()
            assert refused.value.response.status_code == 401, (what, socket_path, refused.value.response.body)


# ----------------------------------------------------------------------------- whose jobs

# The job routes that show a job's state and not its contents: a token may use them on any job.
# Every other route of a job reads its logs, outputs or processes (GET) or changes it.
SEEING = {("GET", "/v1/jobs/{ref}"), ("GET", "/v1/jobs/{ref}/attempts"), ("GET", "/v1/jobs/{ref}/wait"),
          ("GET", "/v1/jobs/{ref}/stats"), ("GET", "/v1/jobs/{ref}/provenance"), ("GET", "/v1/arrays/{ref}"),
          ("GET", "/v1/arrays/{ref}/tasks")}


def _made(api, name: str, policy: str | None = None) -> str:
    resp = api.post("/v1/tokens", json={"name": name, **({"policy": policy} if policy else {})})
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


def test_a_token_reaches_the_jobs_it_did_not_submit_only_as_its_policy_says(agent, api, test_image):
    """Without this, any named token could read the logs of, cancel, signal, exec into or remove
    another token's (or the owner's) jobs. Every route of a job, taken from the OpenAPI
    document so a new one cannot escape, is tried by a token that did not submit the job: the
    routes that only show its state answer, every other is refused 403 naming the rule
    ``others_jobs`` and the token, and the job is untouched; ``others_jobs: read`` reads it,
    ``others_jobs: control`` controls it, the token that submitted it does both."""
    from conveyor import Client, JobState
    from conveyor.errors import PolicyRefused

    alice = _made(api, "alice", "exec: true\n")
    bob = _made(api, "bob", "exec: true\n")  # may exec, but only into jobs of its own
    reader = _made(api, "reader", "others_jobs: read\n")
    boss = _made(api, "boss", "others_jobs: control\nexec: true\n")
    spec = {"image": test_image, "command": ["sh", "-c", "mkdir /out; touch /out/name-$((6*7)); echo secret-of-alice; sleep 120"],
            "network": "none", "outputs": ["/out"]}
    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {alice}"}, timeout=60) as a:
        job = a.post("/v1/jobs", json={"spec": spec}).json()["id"]
        array = a.post("/v1/arrays", json={"spec": {**spec, "command": ["true"]}, "begin": 0, "end": 1, "hold": True})
        assert array.status_code == 201, array.text
        array = array.json()["id"]
        assert a.get(f"/v1/jobs/{job}/wait", params={"until": "started", "timeout": 60}).status_code == 200
    owners = api.post("/v1/jobs", json={"spec": spec}).json()["id"]

    routes = [(m, p) for m, p in _routes(api, raw=True) if "{ref}" in p and p.split("/")[2] in ("jobs", "arrays")]
    assert len(routes) > 25 and ("GET", "/v1/jobs/{ref}/logs") in routes and ("POST", "/v1/jobs/{ref}/cancel") in routes
    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {bob}"}, timeout=60) as b:
        for method, path in routes:
            for target in ((array,) if path.startswith("/v1/arrays/") else (job, owners)):
                url = path.replace("{ref}", target)
                resp = b.request(method, url, params={"follow": "true", "path": "/x", "timeout": 1, "until": "started",
                                                      "signal": "KILL", "height": 5, "width": 5})
                if (method, path) in SEEING:
                    assert resp.status_code < 400 or resp.json()["code"] != "policy_refused", (method, url, resp.text[:300])
                    continue
                assert resp.status_code == 403, (method, url, resp.status_code, resp.text[:300])
                error = resp.json()
                assert (error["details"]["rule"], error["details"]["token"]) == ("others_jobs", "bob"), error
                whose = "the owner" if target == owners else "token 'alice'"
                assert f"{target} (submitted by {whose}): this policy lets its tokens only see" in error["message"], error
        assert b.get("/v1/jobs", params={"limit": 1000}).status_code == 200  # seeing: the node's list
        resp = b.get(f"/ui/jobs/{job}/logs.txt")  # the dashboard's download, outside the document
        assert (resp.status_code, resp.json()["details"]["rule"]) == (403, "others_jobs"), resp.text[:300]
        for name in ("cleanup", "prune", "data/gc"):  # the routes over every token's jobs
            resp = b.post(f"/v1/{name}")
            assert (resp.status_code, resp.json()["details"]["rule"]) == (403, "others_jobs"), (name, resp.text)
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_HOME"}
    follow = subprocess.run([CONVEYOR, "logs", "--follow", job], capture_output=True, text=True, timeout=60,
                            env={**env, "CONVEYOR_HOST": agent.url, "CONVEYOR_TOKEN": bob}, stdin=subprocess.DEVNULL)
    assert follow.returncode == 125 and "policy rule 'others_jobs' of token 'bob'" in follow.stderr, follow.stderr
    assert "secret-of-alice" not in follow.stdout
    with pytest.raises(PolicyRefused) as refused:  # the exec WebSocket: bob may exec, not into alice's job
        Client(url=agent.url, token=bob).exec(job, ["true"])
    assert (refused.value.rule, refused.value.token) == ("others_jobs", "bob")
    assert Client(agent.home).info(job).state is JobState.RUNNING  # nothing bob tried happened
    assert Client(agent.home).info(owners).state is JobState.RUNNING
    assert {t["state"] for t in api.get(f"/v1/arrays/{array}/tasks").json()} == {"QueuedHeld"}

    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {reader}"}, timeout=60) as r:
        logs = [json.loads(line) for line in r.get(f"/v1/jobs/{job}/logs").text.splitlines()]
        assert base64.b64decode(logs[0]["data"]) == b"secret-of-alice\n" and logs[-1] == {"end": True}
        resp = r.post(f"/v1/jobs/{job}/cancel")
        assert (resp.status_code, resp.json()["details"]["rule"]) == (403, "others_jobs"), resp.text
    assert Client(url=agent.url, token=alice).exec(job, ["true"]).exit_code == 0  # its own job
    assert Client(url=agent.url, token=boss).exec(job, ["sh", "-c", "exit 4"]).exit_code == 4
    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {boss}"}, timeout=60) as boss_http:
        assert boss_http.post(f"/v1/jobs/{job}/cancel", params={"grace": 1}).status_code == 200
        assert boss_http.post(f"/v1/jobs/{owners}/cancel", params={"grace": 1}).status_code == 200
    assert Client(agent.home).wait(job, timeout=60).state is JobState.FAILED
    for token, shown in ((bob, False), (reader, True)):  # the dashboard's page: its outputs' names are contents
        page = httpx.get(f"{agent.url}/ui/jobs/{job}", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert page.status_code == 200 and ("name-42" in page.text) is shown, page.text[:300]
