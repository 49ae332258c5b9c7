"""The dashboard with a big store: how long its jobs list takes to load with ``--ui-jobs``
(default 100,000) jobs stored, through a `conveyor serve` on its unix socket.

The store is filled directly (an array of held tasks, and a few hundred named jobs with labels
on top), so nothing starts. Measured, each as the wall time of the HTTP requests:

- first_page: the jobs page as a browser loads it, the page itself and its first page of rows
  (``/ui/jobs`` then ``/ui/data/jobs``, which carries the counts per state); target < 300 ms;
- filtered: the first page of one state's jobs, and a search by name;
- deep: a page 1,000 pages down (halfway down a smaller store; keyset: it costs what the first does).

Baseline: the API's own list as `conveyor ps -n 50` asks it (``/v1/jobs?limit=50&newest_first``,
with its total count). Ratio: first_page over it.
"""

from __future__ import annotations

import time

from .common import Context, Serve, interleaved, ratio, summary

PAGE = 50


def add_arguments(parser) -> None:
    parser.add_argument("--ui-jobs", type=int, default=100_000, help="ui: jobs in the store (default 100000)")


def _fill(home: str, ctx: Context, n: int) -> float:
    from conveyor import Executor

    t = time.perf_counter()
    with Executor(home, supervise=False) as ex:
        spec = ctx.spec(["true"])
        named = min(500, n // 10)
        ex.submit_array(spec, 1, n - named, hold=True)
        for i in range(named):
            ex.submit(ctx.spec(["true"], name=f"job-{i}", labels={"team": f"t{i % 7}"}), hold=True)
    return time.perf_counter() - t


def ui(ctx: Context) -> dict:
    import httpx

    n = ctx.args.ui_jobs
    home = ctx.home("ui")
    fill_s = _fill(home, ctx, n)
    serve = Serve(home)
    try:
        token = open(f"{home}/agent.token").read().strip()
        http = httpx.Client(transport=httpx.HTTPTransport(uds=f"{home}/agent.sock"), base_url="http://agent",
                            cookies={"conveyor_session": token}, timeout=60)
        deep_cursor = _cursor_after(http, max(1, min(1000, n // PAGE // 2)))

        def get(path: str, **params) -> None:
            r = http.get(path, params=params)
            r.raise_for_status()

        samples = interleaved({
            "first_page": lambda: (get("/ui/jobs"), get("/ui/data/jobs", limit=PAGE)),
            "filtered_state": lambda: get("/ui/data/jobs", limit=PAGE, state="QueuedHeld"),
            "search_name": lambda: get("/ui/data/jobs", limit=PAGE, q="job-42"),
            "deep_page": lambda: get("/ui/data/jobs", limit=PAGE, after=deep_cursor),
            "api_list": lambda: get("/v1/jobs", limit=PAGE, newest_first="true"),
        }, ctx.repeat, ctx.warmup)
        http.close()
    finally:
        serve.stop()
    figures = {name: summary(s) for name, s in samples.items()}
    return {
        "unit": "s",
        "jobs": n,
        "fill_s": fill_s,
        "target_first_page_s": 0.3,
        "conveyor": {k: v for k, v in figures.items() if k != "api_list"},
        "baseline": {"api_list": figures["api_list"]},
        "ratio": ratio(figures["first_page"]["median"], figures["api_list"]["median"]),
    }


def _cursor_after(http, pages: int) -> str | None:
    """The cursor of the page ``pages`` down, found a few big pages at a time."""
    cursor = None
    for _ in range(pages):
        params = {"limit": PAGE, **({"after": cursor} if cursor else {})}
        cursor = http.get("/ui/data/jobs", params=params).json()["next"]
        if cursor is None:
            break
    return cursor


BENCHMARKS = {"ui": ui}
