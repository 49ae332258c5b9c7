"""`conveyor ps` the way docker's scripts call `docker ps`: newest first, -n/--latest, --filter,
--format with docker's fields and `table`, --no-trunc, -q, against the real engine; and a
store of thousands of jobs where `ps -n 5` reads a page, not the store.

One state directory holds five jobs for the module (created in this order):

    web-1    Failed, exit 3   labels team=a tier=web   a long command
    web-2    Done, exit 0     label team=a             image spelled docker.io/...:latest
    db       QueuedHeld       labels team=b tier=db    publishes 8080:80
    sleeper  Running          label team=b
    napper   Suspended

The CLI talks to the state directory's agent (started by the first command); the filters
travel to it as query parameters. A test checks that the Client (the same path) and the
Executor (the store itself) select and order alike.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import docker.errors
import pytest
from click.testing import CliRunner

from conveyor.home import Home
from conveyor.spec import JobSpec
from conveyor.store import JobRecord, Store
from helpers import Cli

NAMES = ["web-1", "web-2", "db", "sleeper", "napper"]  # oldest first


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, docker_client, test_image):
    """The five jobs: name -> id; the Cli is jobs["cli"]."""
    from conveyor.daemon import stop_supervisor

    home = tmp_path_factory.mktemp("ps") / "home"
    home.mkdir()
    cli = Cli(home, docker_client, test_image)
    ids = {}
    try:
        for name, args in [
            ("web-1", ["--label", "team=a", "--label", "tier=web", test_image, "sh", "-c", "echo hello world; exit 3"]),
            ("web-2", ["--label", "team=a", "docker.io/" + test_image, "true"]),
        ]:
            assert cli.run("run", "--network", "none", "--name", name, *args).returncode in (0, 3)
            ids[name] = cli.info(name)["id"]
        ids["db"] = cli.ok("submit", "--hold", "--name", "db", "--label", "team=b", "--label", "tier=db",
                           "-p", "8080:80", test_image, "true").strip()
        ids["sleeper"] = cli.submit("--name", "sleeper", "--label", "team=b", test_image, "sleep", "300")
        ids["napper"] = cli.submit("--name", "napper", test_image, "sleep", "300")
        for name in ("sleeper", "napper"):
            cli.until(ids[name], "Running")
        cli.ok("suspend", ids["napper"])
        assert [cli.info(ids[n])["state"] for n in NAMES] == ["Failed", "Done", "QueuedHeld", "Running", "Suspended"]
        yield {**ids, "cli": cli}
    finally:
        stop_supervisor(Home(home))
        for container in cli.containers():
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass


def names(jobs, *args: str) -> list[str]:
    """`ps -q ARGS` as job names, in the order printed."""
    by_id = {v: k for k, v in jobs.items() if k != "cli"}
    return [by_id[i] for i in jobs["cli"].ok("ps", "-q", *args).split()]


def test_newest_first(jobs):
    """docker lists the most recent container first; a script taking `head -1` as the newest
    job got the oldest one."""
    assert names(jobs, "-a") == NAMES[::-1]
    assert names(jobs) == ["napper", "sleeper", "db"]  # without -a: the jobs that have not ended
    assert [j["name"] for j in json.loads(jobs["cli"].ok("ps", "-a", "--json"))] == NAMES[::-1]


def test_last_n_and_latest_are_the_newest_in_any_state(jobs):
    """`ps -n N` is docker's "last N created, any state"; `--latest` is docker's -l (here -l
    stays --label)."""
    assert names(jobs, "-n", "2") == ["napper", "sleeper"]
    assert names(jobs, "-n", "4") == ["napper", "sleeper", "db", "web-2"]  # web-2 has ended: -n implies -a
    assert names(jobs, "--latest") == ["napper"]
    assert names(jobs, "-n", "0") == names(jobs)  # as docker: 0 means no limit
    assert names(jobs, "--latest", "-f", "status=exited") == ["web-2"]


@pytest.mark.parametrize("args, expected", [
    (["-a", "-f", "name=web"], ["web-2", "web-1"]),  # a part of the name
    (["-f", "name=^/db$"], ["db"]),  # docker's exact-name idiom
    (["-a", "-f", "name=^web-1$"], ["web-1"]),
    (["-f", "name=per$"], ["napper", "sleeper"]),  # a regular expression
    (["-a", "-f", "name=web-1", "-f", "name=db"], ["db", "web-1"]),  # one key's values: any
    (["-a", "-f", "label=tier"], ["db", "web-1"]),  # the label is set
    (["-a", "-f", "label=tier=web"], ["web-1"]),
    (["-a", "-f", "label=team=a", "-f", "label=tier"], ["web-1"]),  # labels: all
    (["-l", "team=b", "-f", "label=tier"], ["db"]),
    (["-f", "status=exited"], ["web-2", "web-1"]),  # a status filter implies -a
    (["-f", "status=running"], ["sleeper"]),
    (["-f", "status=paused"], ["napper"]),
    (["-f", "status=created"], ["db"]),
    (["-f", "status=running", "-f", "status=paused"], ["napper", "sleeper"]),
    (["-f", "status=dead"], []),
    (["-f", "state=failed"], ["web-1"]),  # conveyor's states, any case
    (["-f", "state=QueuedHeld"], ["db"]),
    (["--state", "done"], ["web-2"]),
    (["-a", "-f", "exited=3"], ["web-1"]),
    (["-a", "-f", "exited=0", "-f", "exited=3"], ["web-2", "web-1"]),
    (["-f", "exited=3"], []),  # as docker: exited does not imply -a
    (["-a", "-f", "ancestor=conveyor/busybox"], NAMES[::-1]),  # busybox = busybox:latest = docker.io/...
    (["-a", "-f", "image=docker.io/conveyor/busybox:latest"], NAMES[::-1]),
    (["-a", "-f", "ancestor=busybox"], []),
    (["-a", "-f", "before=db"], ["web-2", "web-1"]),
    (["-a", "-f", "since=db"], ["napper", "sleeper"]),
    (["-a", "-f", "before=sleeper", "-f", "since=web-1"], ["db", "web-2"]),
    (["-a", "-f", "label=team=a", "-f", "status=exited", "-f", "exited=3"], ["web-1"]),
])
def test_filters(jobs, args, expected):
    """Each docker filter key a script may pass selects exactly the jobs docker would."""
    assert names(jobs, *args) == expected


def test_id_filters_take_prefixes_and_jobs_by_id(jobs):
    """`--filter id=` with an abbreviated id, `since=` with an id (as docker takes both)."""
    prefix = next(jobs["web-1"][:n] for n in range(3, 13) if not any(
        jobs[o].startswith(jobs["web-1"][:n]) for o in NAMES if o != "web-1"))
    assert names(jobs, "-a", "-f", f"id={prefix}") == ["web-1"]
    assert names(jobs, "-a", "-f", f"id={jobs['web-2']}", "-f", f"id={jobs['db']}") == ["db", "web-2"]
    assert names(jobs, "-f", f"since={jobs['web-2']}") == ["napper", "sleeper", "db"]


def formatted(jobs, template: str, *args: str) -> dict[str, str]:
    lines = jobs["cli"].ok("ps", "-a", "--format", "{{.Names}}|" + template, *args).splitlines()
    return dict(line.split("|", 1) for line in lines)


def test_format_fields_as_docker_names_them(jobs):
    """Scripts read docker's fields by name: .ID, .Names, .Image, .Command (quoted, cut at 20
    columns), .State, .Status, .Labels, .Label, .Ports, .CreatedAt, .RunningFor."""
    assert formatted(jobs, "{{.ID}}") == {n: jobs[n] for n in NAMES}
    assert formatted(jobs, "{{.State}}") == {"web-1": "exited", "web-2": "exited", "db": "created",
                                             "sleeper": "running", "napper": "paused"}
    status = formatted(jobs, "{{.Status}}")
    assert re.fullmatch(r"Exited \(3\) .+ ago", status["web-1"]) and re.fullmatch(r"Exited \(0\) .+ ago", status["web-2"])
    assert re.fullmatch(r"Up \S.*\S", status["sleeper"]) and "Paused" not in status["sleeper"]
    assert re.fullmatch(r"Up .+ \(Paused\)", status["napper"]) and status["db"] == "Queued (held)"
    command = formatted(jobs, "{{.Command}}")
    assert command["web-1"] == '"sh -c echo hello wo…"' and command["web-2"] == '"true"'
    assert formatted(jobs, "{{.Command}}", "--no-trunc")["web-1"] == '"sh -c echo hello world; exit 3"'
    assert formatted(jobs, "{{.Image}}")["web-2"] == "docker.io/" + jobs["cli"].image
    assert formatted(jobs, '{{.Labels}};{{.Label "tier"}}')["web-1"] == "team=a,tier=web;web"
    assert formatted(jobs, '{{.Labels}};{{.Label "tier"}}')["napper"] == ";"
    assert formatted(jobs, "{{.Ports}}")["db"] == "0.0.0.0:8080->80/tcp"
    created = {j["name"]: j["created_at"] for j in json.loads(jobs["cli"].ok("ps", "-a", "--json"))}
    for name, text in formatted(jobs, "{{.CreatedAt}}").items():  # Go's time.String()
        assert text == datetime.fromtimestamp(int(created[name])).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z")
    assert all(re.fullmatch(r"(\d+|About an?) \w+ ago", t) for t in formatted(jobs, "{{.RunningFor}}").values())


def test_format_has_conveyors_own_fields(jobs):
    """The job's own state, substate and exit code, next to docker's words for them."""
    got = formatted(jobs, "{{.JobState}} {{.Substate}} {{.ExitCode}}.")
    assert got["web-1"] == "Failed exited 3." and got["web-2"] == "Done exited 0."
    assert got["db"] == "QueuedHeld held ." and got["sleeper"].startswith("Running ")


def test_table_and_json_formats(jobs):
    """`table` prints docker's header and aligns the columns as docker's tabwriter; `json`
    prints one object a line with docker's keys."""
    text = jobs["cli"].ok("ps", "--format", r"table {{.ID}}\t{{.Names}}\t{{.Status}}")
    header, *rows = text.splitlines()
    assert header == "CONTAINER ID   NAMES     STATUS"  # 12 + 3; "sleeper" + 3 = the minimum, 10
    assert [r[:15] for r in rows] == [jobs[n] + "   " for n in ("napper", "sleeper", "db")]
    assert [r[15:25] for r in rows] == ["napper    ", "sleeper   ", "db        "]
    assert rows[2][25:] == "Queued (held)"
    objects = [json.loads(line) for line in jobs["cli"].ok("ps", "--format", "json").splitlines()]
    assert [o["Names"] for o in objects] == ["napper", "sleeper", "db"]
    assert {"ID", "Image", "Command", "CreatedAt", "RunningFor", "Ports", "State", "Status", "Names", "Labels"} <= set(objects[0])
    assert jobs["cli"].ok("ps", "--format", "table") == jobs["cli"].ok("ps")  # docker's "table" alone: the default


def test_quiet_with_filters_and_with_a_format(jobs):
    """`ps -q -f ...` feeds `xargs conveyor rm`: ids only, one a line; -q wins over --format
    with docker's warning."""
    proc = jobs["cli"].run("ps", "-q", "-f", "label=team=b", "--format", "{{.Names}}")
    assert proc.returncode == 0 and proc.stdout.decode() == f"{jobs['sleeper']}\n{jobs['db']}\n"
    assert proc.stderr.decode() == "WARNING: Ignoring custom format, because both --format and --quiet are set.\n"


@pytest.mark.parametrize("args, problem", [
    (["-f", "bogus=1"], "--filter 'bogus=1': unknown filter 'bogus'; use id, name, label, status"),
    (["-f", "status"], "--filter 'status': use KEY=VALUE"),
    (["-f", "status=sleeping"], "'sleeping' is not a status; use one of created, restarting, running"),
    (["-f", "exited=x"], "--filter 'exited=x': 'x' is not an exit code"),
    (["-f", "name=("], "--filter 'name=(': not a regular expression"),
    (["-f", "before=nosuch"], "no such job: nosuch"),
    (["-a", "--format", "{{.Nmaes}}"], "--format: template '{{.Nmaes}}': at <.Nmaes>: can't evaluate field Nmaes; "
                                       "the fields are ID, Image, Command"),
    (["--format", "{{.ID"], "--format: template '{{.ID': unclosed action"),
    (["--json", "--format", "json"], "--json and --format: use one"),
])
def test_bad_filters_and_templates_exit_125_with_one_line(jobs, args, problem):
    """A typo in a filter or template must stop the script (exit 125, as docker's errors)
    with one line that says what is wrong, not a traceback or an unfiltered list."""
    proc = jobs["cli"].run("ps", *args)
    err = proc.stderr.decode()
    assert (proc.returncode, proc.stdout) == (125, b""), err
    assert err.count("\n") == 1 and problem in err, err


def test_client_and_executor_select_and_order_alike(jobs):
    """The Client sends list()'s filters to the agent as query parameters, the Executor reads
    the store: a filter lost or renamed on the way would list other jobs through the agent."""
    from conveyor import Client, Executor

    cases = [{}, {"newest_first": True, "limit": 3}, {"labels": {"tier": None}, "names": ["e"]},
             {"states": ["Done", "Failed"], "exit_codes": [0]}, {"since": "web-1", "before": "napper", "newest_first": True},
             {"images": ["conveyor/busybox"], "offset": 1, "limit": 2}, {"ids": [jobs["db"][:8], jobs["napper"]]},
             {"labels": {"team": "a", "tier": None}}, {"exit_codes": []}, {"states": []}]
    with Executor(jobs["cli"].home, supervise=False) as ex, Client(jobs["cli"].home) as client:
        for kw in cases:
            listed = [j.id for j in ex.list(**kw)]
            assert [j.id for j in client.list(**kw)] == listed, kw
            counted = {k: v for k, v in kw.items() if k not in ("newest_first", "limit", "offset")}
            assert client.count(**counted) == ex.count(**counted) >= len(listed), kw
        assert [j.name for j in ex.list(labels={"tier": None})] == ["web-1", "db"]  # the cases select something


# ----------------------------------------------------------------------------- thousands of jobs


@pytest.fixture
def big_home(tmp_path):
    """A state directory with 3,000 jobs (no engine needed: they are only listed)."""
    home = Home(tmp_path / "home")
    store = Store(home.db)
    spec = JobSpec(image="busybox", command=["sh", "-c", "echo hello"], labels={"n": "x"})
    ids = [store.insert(JobRecord(id=f"{i:012x}", executor_id="ex", spec=spec, created_at=1e9 + i)).id for i in range(3000)]
    store.close()
    return home, ids


@pytest.fixture
def parsed(monkeypatch) -> list[str]:
    """The ids of the job rows the store turns into records (each costs a spec parse)."""
    seen: list[str] = []
    original = JobRecord._from_row.__func__

    def counting(cls, row):
        seen.append(row[0])
        return original(cls, row)

    monkeypatch.setattr(JobRecord, "_from_row", classmethod(counting))
    return seen


def test_a_page_of_the_newest_costs_a_page(big_home, parsed):
    """With 100,000 jobs stored, `ps -n 5` must not read and parse every job to print five."""
    home, ids = big_home
    store = Store(home.db)
    try:
        assert [r.id for r in store.list(limit=5, newest_first=True)] == ids[::-1][:5]
        assert parsed == ids[::-1][:5]
        parsed.clear()
        assert [r.id for r in store.list(limit=3, newest_first=True, before=ids[100], labels={"n": None})] == ids[97:100][::-1]
        assert [r.id for r in store.list(limit=2, offset=1, since=ids[2990])] == ids[2992:2994]  # oldest first, paged
        assert len(parsed) == 5
        assert store.count(since=ids[2990]) == 9 and store.count(names=["x"]) == 0
    finally:
        store.close()


def test_ps_last_five_of_thousands_reads_five(big_home, parsed, monkeypatch):
    """The same through the CLI's ps: one request for a page of five, five rows parsed by the
    agent's route, the five newest printed. (Everything but the HTTP transport is the real
    thing: ps, the query, the pager, the route, the Executor, the store.)"""
    from conveyor import Executor
    from conveyor.agent.routers.jobs import list_jobs
    from conveyor.cli import cli, views
    from conveyor.client.api import AgentAPI

    home, ids = big_home
    requests = []

    class Agent:  # AgentAPI with the route called in this process instead of over HTTP
        list_all = AgentAPI.list_all

        def list(self, params: dict) -> dict:
            requests.append(dict(params))
            args = {k: params.get(k) for k in ("state", "label", "id", "name", "image", "exit_code", "before", "since")}
            answer = list_jobs(**args, limit=params["limit"], offset=params["offset"],
                               newest_first=params.get("newest_first", False), cursor=params.get("cursor"), ex=ex)
            return json.loads(answer.body)

    with Executor(home.root, supervise=False) as ex:
        monkeypatch.setattr(views, "connect", lambda ctx: Agent())
        result = CliRunner().invoke(cli, ["--home", str(home.root), "ps", "-n", "5", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.split() == ids[::-1][:5]
    assert requests == [{"newest_first": True, "limit": 5, "offset": 0}]
    assert sorted(parsed) == sorted(ids[-5:])


# ----------------------------------------------------------------------------- docker's words for a job


def test_age_reads_as_dockers():
    """.RunningFor and .Status say ages in go-units' words; a script matching "Up 5 seconds"
    or "About an hour ago" must see the same text."""
    from conveyor.cli.views import human_duration

    hour, day = 3600, 86400
    cases = {0.5: "Less than a second", 1: "1 second", 59.9: "59 seconds", 60: "About a minute",
             119: "About a minute", 120: "2 minutes", 3599: "59 minutes", hour: "About an hour",
             5399: "About an hour", 5400: "2 hours", 47 * hour: "47 hours", 48 * hour: "2 days",
             13 * day: "13 days", 14 * day: "2 weeks", 59 * day: "8 weeks", 60 * day: "2 months",
             729 * day: "24 months", 730 * day: "2 years", -5: "Less than a second"}
    assert {s: human_duration(s) for s in cases} == cases


@pytest.mark.parametrize("state, substate, exit_code, expected", [
    ("Failed", "cancelled", None, "Failed (cancelled) 2 minutes ago"),  # ended before it ran: no exit code
    ("Failed", "oom_killed", 137, "Exited (137) 2 minutes ago"),
    ("Done", "exited", 0, "Exited (0) 2 minutes ago"),
    ("Queued", None, None, "Queued"),
    ("QueuedHeld", "held", None, "Queued (held)"),
    ("Requeued", "retry", None, "Requeued (retry)"),
    ("RequeuedHeld", "held", None, "Requeued (held)"),
    ("Running", None, None, "Up 5 minutes"),
    ("Suspended", None, None, "Up 5 minutes (Paused)"),
    ("Undetermined", "container_lost", None, "Undetermined (container_lost)"),
])
def test_status_of_every_state_is_honest(state, substate, exit_code, expected):
    """docker's Status words where a container exists; a job without one says what it is
    instead of pretending ("Created" for a job that failed before it started would lie)."""
    from conveyor.cli.psview import _status

    now = 1e9
    job = {"state": state, "substate": substate, "exit_code": exit_code, "created_at": now - 600,
           "started_at": now - 300, "finished_at": now - 120}
    assert _status(job, now) == expected
