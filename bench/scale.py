"""Growth curves (issue 19): what Conveyor's own commands cost as its history grows.

For each size in ``--scale-sizes`` (1,000, 10,000, 100,000) a fresh state directory is filled
directly (bulk SQL in one transaction, and a log file per job, as the finisher leaves them)
with that many ended jobs (three transitions each, a saved stdout) plus ``--scale-queued``
(10,000) queued jobs that ask for more CPUs than the node has (so they wait, and the scheduler
looks at them at every pass). Then, under a `conveyor serve` of that directory:

- through the API (a :class:`conveyor.Client` on one kept-alive connection): ``ps`` first page
  (newest 20), ``ps -a`` with a label filter that matches 0.1% of the history, ``inspect``,
  ``logs``, ``queue`` (first 50), ``events --since 10m`` (the last ten minutes hold as many
  transitions at every size) and a held submit;
- the same interactive commands as `conveyor` command lines (wall time, Python start included);
- one scheduler pass (the Planner, in this process, over the store);
- agent start (clean stop, then start) and recovery (SIGKILL, then start), each until it says
  it supervises.

The figure that matters is the slope: ``slope[k]`` is the cost at one size over the cost at
the size before it (10k/1k and 100k/10k for the defaults). Flat is 1; linear in history is 10.
There is no engine baseline for a history (docker keeps none), so the "baseline" is the
smallest size: each figure's ratio is its cost at the largest size over that.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

from .common import CONVEYOR, Context, Serve, run_measured, summary

SPREAD_S = 10.0  # seconds between two ended jobs' creation: "the last 10 minutes" holds 60 of them
PAGE = 20


def add_arguments(parser) -> None:
    parser.add_argument("--scale-sizes", default="1000,10000,100000",
                        help="scale: ended jobs in the history, one state directory each (default 1000,10000,100000)")
    parser.add_argument("--scale-queued", type=int, default=10_000, help="scale: queued jobs beside them (default 10000)")
    parser.add_argument("--scale-restarts", type=int, help="scale: agent restarts (clean, and after SIGKILL) measured "
                        "per size (default --repeat; 0: only the first start)")
    parser.add_argument("--scale-no-cli", action="store_true", help="scale: skip the command-line figures (the API's stay)")


def _sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def fill(home: str, spec_json: str, ended: int, queued: int) -> dict:
    """``ended`` Done jobs (3 transitions, a saved stdout each) and ``queued`` Queued jobs asking
    for 10,000 CPUs, written directly in one transaction. Returns a few ids to look at."""
    from conveyor import Executor

    with Executor(home, supervise=False) as ex:  # the schema and the executor id
        executor_id = ex.executor_id
    now = time.time()
    start = now - ended * SPREAD_S
    logs = os.path.join(home, "logs")
    jobs, transitions, labels = [], [], []
    for i in range(ended + queued):
        job_id = f"{i:012x}"
        done = i < ended
        created = start + i * SPREAD_S if done else now - 1 + i * 1e-6
        state = "Done" if done else "Queued"
        jobs.append((job_id, executor_id, f"job-{i}", spec_json, state, "exited" if done else None, 0 if done else None,
                     created, created + 1 if done else None, created + 2 if done else None, 1 if done else 0,
                     None if done else 10000.0))
        labels.append((job_id, "batch", str(i % 1000)))
        transitions.append((job_id, created, None, "Queued", None, "submitted"))
        if done:
            transitions += [(job_id, created + 1, "Queued", "Running", None, None),
                            (job_id, created + 2, "Running", "Done", "exited", None)]
            os.makedirs(os.path.join(logs, job_id))
            with open(os.path.join(logs, job_id, "stdout"), "w") as f:
                f.write(f"job {i}: hello\n")
    db = sqlite3.connect(os.path.join(home, "conveyor.db"), isolation_level=None)
    db.execute("BEGIN")
    db.executemany("INSERT INTO jobs (id, executor_id, name, spec, state, substate, exit_code, created_at, started_at, "
                   "finished_at, attempt, req_cpus) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", jobs)
    db.executemany("INSERT INTO transitions (job_id, at, from_state, to_state, substate, reason) VALUES (?,?,?,?,?,?)",
                   sorted(transitions, key=lambda t: t[1]))
    db.executemany("INSERT INTO job_labels (job_id, key, value) VALUES (?,?,?)", labels)
    db.execute("COMMIT")
    db.close()
    return {"newest_ended": f"{ended - 1:012x}", "oldest": f"{0:012x}", "middle": f"{ended // 2:012x}"}


def _timed(fn, repeat: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return summary([s * 1000 for s in samples])


def _api_figures(ctx: Context, home: str, ids: dict) -> dict:
    from conveyor import Client

    spec = ctx.spec(["true"])
    with Client(home) as c:
        c.submit(spec, hold=True, image_ready=True)  # warm: the agent's first request
        calls = {
            "ps_first_page": lambda: c.list(newest_first=True, limit=PAGE),
            "ps_a_label_filter": lambda: c.list(labels={"batch": "7"}, newest_first=True),
            "inspect": lambda: c.info(ids["middle"]),
            "logs": lambda: b"".join(chunk for _, chunk in c.logs(ids["middle"])),
            "queue": lambda: c.queue(limit=50),
            "events_since_10m": lambda: _events_since(c, time.time() - 600),
            "submit_held": lambda: c.submit(spec, hold=True, image_ready=True),
        }
        return {f"{name}_ms": _timed(fn, ctx.repeat, ctx.warmup) for name, fn in calls.items()}


def _events_since(client, at: float) -> list:
    """The transitions from time ``at`` on, as `conveyor events --since` reads them."""
    try:
        found = client.events(since_time=at, follow=False)
    except TypeError:  # the code under test predates since_time (a before/after run): the old way
        found = client.events(since=0, follow=False)
    return [t for t in found if t.at >= at]


def _cli_figures(ctx: Context, home: str, ids: dict) -> dict:
    env = {**os.environ, "CONVEYOR_HOME": home}
    commands = {
        "ps_first_page": [CONVEYOR, "ps", "-n", str(PAGE)],
        "ps_a_label_filter": [CONVEYOR, "ps", "-a", "--filter", "label=batch=7"],
        "inspect": [CONVEYOR, "inspect", ids["middle"]],
        "logs": [CONVEYOR, "logs", ids["middle"]],
        "queue": [CONVEYOR, "queue"],
        "events_since_10m": [CONVEYOR, "events", "--since", "10m"],
    }
    return {f"{name}_ms": _timed(lambda cmd=cmd: run_measured(cmd, env), ctx.repeat, ctx.warmup)
            for name, cmd in commands.items()}


def _planner_pass(ctx: Context, home: str) -> dict:
    from conveyor import Executor
    from conveyor.capacity import SchedulingConfig, node_capacity
    from conveyor.scheduler import Planner

    with Executor(home, supervise=False) as ex:
        settings = SchedulingConfig()
        planner = Planner(ex.store, ex.executor_id, settings, node_capacity(settings))
        return _timed(planner.plan, ctx.repeat, ctx.warmup)


def _restarts(ctx: Context, home: str, serve: Serve, start: list[float]) -> tuple[dict, dict | None, Serve]:
    """Agent start (``start``: the first; then after clean stops) and recovery (after SIGKILL), in ms."""
    recover: list[float] = []
    restarts = ctx.repeat if ctx.args.scale_restarts is None else ctx.args.scale_restarts
    for _ in range(restarts):
        serve.stop()
        serve = _started(home, start)
        serve.kill()
        serve = _started(home, recover)
    return summary(start), summary(recover) if recover else None, serve


def _started(home: str, samples: list) -> Serve:
    """A `conveyor serve` of ``home``, its start time added to ``samples``. One that does not
    start is recorded (its words, in the result) and started again: a figure of the run is
    not lost to it."""
    for attempt in range(3):
        try:
            serve = Serve(home)
            break
        except RuntimeError as exc:
            FAILED_STARTS.setdefault(home, []).append(str(exc)[-300:])
            if attempt == 2:
                raise
    samples.append(serve.started_in * 1000)
    return serve


FAILED_STARTS: dict[str, list[str]] = {}


def one_size(ctx: Context, ended: int, queued: int) -> dict:
    home = ctx.home(f"scale-{ended}")
    t = time.perf_counter()
    ids = fill(home, ctx.spec(["echo", "hello"]).to_json(), ended, queued)
    fill_s = time.perf_counter() - t
    serve = _started(home, first := [])
    try:
        figures = {"api": _api_figures(ctx, home, ids)}
        if not ctx.args.scale_no_cli:
            figures["cli"] = _cli_figures(ctx, home, ids)
        figures["scheduler_pass_ms"] = _planner_pass(ctx, home)
        figures["agent_start_ms"], recovery, serve = _restarts(ctx, home, serve, first)
        if recovery is not None:
            figures["recovery_ms"] = recovery
        figures["agent"] = serve.status()
    finally:
        serve.stop()
    figures["fill_s"] = fill_s
    figures["failed_starts"] = FAILED_STARTS.get(home, [])
    figures["state_dir_mb"] = _du(home) / 1e6
    return figures


def _du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass  # an agent file removed meanwhile
    return total


def _medians(figures: dict, prefix: str = "") -> dict[str, float]:
    """Every timed figure's median, by a flat name (api.ps_first_page_ms, ...)."""
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict) and "median" in value:
            out[prefix + key] = value["median"]
        elif isinstance(value, dict) and key != "agent":
            out.update(_medians(value, f"{prefix}{key}."))
    return out


def scale(ctx: Context) -> dict:
    sizes, queued = _sizes(ctx.args.scale_sizes), ctx.args.scale_queued
    per_size = {str(n): one_size(ctx, n, queued) for n in sizes}
    medians = {n: _medians(f) for n, f in per_size.items()}
    names = list(medians[str(sizes[0])])
    slopes = {
        f"{b}/{a}": {name: medians[str(b)][name] / medians[str(a)][name] for name in names
                     if medians[str(a)][name] and name in medians[str(b)]}
        for a, b in zip(sizes, sizes[1:])
    }
    first, last = str(sizes[0]), str(sizes[-1])
    return {
        "unit": f"ms per call (median) with N ended jobs and {queued} queued in the store; slope: cost at one size over the size before",
        "sizes": sizes,
        "queued": queued,
        "conveyor": per_size,
        "baseline": {"note": f"the same figures at the smallest size ({first} ended jobs): docker keeps no history",
                     "medians": medians[first]},
        "slope": slopes,
        "ratio": {name: medians[last][name] / medians[first][name] for name in names
                  if medians[first][name] and name in medians[last]},
        "table": {name: {n: round(medians[n][name], 1) for n in medians if name in medians[n]} for name in names},
    }


def print_table(doc: dict) -> str:
    """The growth-curve table (Markdown) of one scale result, as the README shows it."""
    sizes = doc["sizes"]
    head = "| what (ms, median) | " + " | ".join(f"{n:,} ended" for n in sizes) + " | " + " | ".join(doc["slope"]) + " |"
    lines = [head, "|---" * (1 + len(sizes) + len(doc["slope"])) + "|"]
    for name, by_size in doc["table"].items():
        cells = [f"{by_size[str(n)]:g}" if str(n) in by_size else "—" for n in sizes] + [f"{s.get(name, 0):.2f}" for s in doc["slope"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BENCHMARKS = {"scale": scale}

if __name__ == "__main__":  # python -m bench.scale < result.json: the table of a saved run
    import sys

    print(print_table(json.load(sys.stdin)["benchmarks"]["scale"]))
