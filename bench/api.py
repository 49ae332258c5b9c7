"""The agent's API: submit throughput and inspect latency under concurrent clients.

A `conveyor serve` supervises a fresh state directory; clients are :class:`conveyor.Client`
objects in this process talking HTTP over the agent's unix socket, one thread per client.
The baseline is the same calls through the library (a client :class:`conveyor.Executor` in
this process reading and writing the store directly), with the same threads.

- submit: ``--api-submits`` held jobs (held: nothing starts, so the engine is not measured)
  from 1 client and from ``--api-clients`` clients; jobs/s.
- inspect: ``--api-clients`` (50) clients each calling inspect ``--api-inspects`` times on
  random jobs; p50/p99 latency per call and calls/s.
- batch: ``--api-batch`` (10,000) held jobs in one ``submit_many`` call (one request), against
  the same call on the library; seconds for the batch.
"""

from __future__ import annotations

import random
import statistics
import threading
import time

from conveyor import Client, Executor

from .common import Context, Serve, ratio, stop_all


def add_arguments(parser) -> None:
    parser.add_argument("--api-clients", type=int, default=50, help="api: concurrent clients (default 50)")
    parser.add_argument("--api-submits", type=int, default=500, help="api: held jobs submitted per measurement (default 500)")
    parser.add_argument("--api-inspects", type=int, default=40, help="api: inspect calls per client (default 40)")
    parser.add_argument("--api-batch", type=int, default=10_000, help="api: held jobs in one batch submit (default 10000)")


def _parallel(n_threads: int, work) -> float:
    """Run ``work(i)`` in n threads started together; wall seconds until all finished."""
    barrier = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def _submit_rate(make, spec, total: int, clients: int) -> float:
    """Jobs per second for ``total`` held submissions spread over ``clients`` threads."""
    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    handles = [make() for _ in range(clients)]
    try:
        took = _parallel(clients, lambda i: [handles[i].submit(spec, hold=True, image_ready=True) for _ in range(per[i])])
    finally:
        for h in handles:
            h.close()
    return total / took


def _inspect_latency(make, ids: list[str], clients: int, calls: int) -> dict:
    handles = [make() for _ in range(clients)]
    lat: list[list[float]] = [[] for _ in range(clients)]

    def work(i: int) -> None:
        rng = random.Random(i)
        h, out = handles[i], lat[i]
        for _ in range(calls):
            t = time.perf_counter()
            h.info(rng.choice(ids))
            out.append(time.perf_counter() - t)

    try:
        took = _parallel(clients, work)
    finally:
        for h in handles:
            h.close()
    samples = sorted(x for per in lat for x in per)
    q = statistics.quantiles(samples, n=100)
    return {"p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "max_ms": samples[-1] * 1000,
            "calls_per_s": len(samples) / took, "n": len(samples)}


def _batch_seconds(make, spec, n: int) -> float | None:
    """Seconds to submit ``n`` held jobs in one submit_many call (None: the code under test has
    no batch submit, in a before/after run)."""
    with make() as handle:
        if not hasattr(handle, "submit_many"):
            return None
        t = time.perf_counter()
        ids = handle.submit_many([spec] * n, hold=True, image_ready=True)
        took = time.perf_counter() - t
    if len(ids) != n:
        raise RuntimeError(f"a batch of {n} submitted {len(ids)}")
    return took


def api(ctx: Context) -> dict:
    a = ctx.args
    home = ctx.home("api")
    serve = Serve(home)
    try:
        spec = ctx.spec(["true"])
        client = lambda: Client(home)  # noqa: E731
        library = lambda: Executor(home)  # noqa: E731 - a client Executor: the agent holds the lock
        with Client(home) as c:
            c.submit(spec, hold=True)  # warm-up: first request, image check
        rounds = {"api_1": [], "library_1": [], "api_n": [], "library_n": []}
        for _ in range(ctx.repeat):
            rounds["api_1"].append(_submit_rate(client, spec, a.api_submits // 5, 1))
            rounds["library_1"].append(_submit_rate(library, spec, a.api_submits // 5, 1))
            rounds["api_n"].append(_submit_rate(client, spec, a.api_submits, a.api_clients))
            rounds["library_n"].append(_submit_rate(library, spec, a.api_submits, a.api_clients))
        with Client(home) as c:
            ids = [j.id for j in c.list(states=["QueuedHeld"])]
        batch = {"api": [], "library": []}
        for _ in range(ctx.heavy_repeat):
            batch["api"].append(_batch_seconds(client, spec, a.api_batch))
            batch["library"].append(_batch_seconds(library, spec, a.api_batch))
        inspect = {"api": [], "library": []}
        for _ in range(ctx.heavy_repeat):
            inspect["api"].append(_inspect_latency(client, ids, a.api_clients, a.api_inspects))
            inspect["library"].append(_inspect_latency(library, ids, a.api_clients, a.api_inspects))
        agent = serve.status()
    finally:
        serve.stop()
        stop_all(home)

    def med(key: str) -> float:
        return statistics.median(rounds[key])

    def med_inspect(who: str, key: str) -> float:
        return statistics.median(r[key] for r in inspect[who])

    def med_batch(who: str) -> float | None:
        return None if None in batch[who] else statistics.median(batch[who])

    return {
        "unit": "submit: held jobs per second (median of rounds); inspect: ms per call and calls/s under concurrent clients",
        "clients": a.api_clients,
        "jobs_in_store": len(ids),
        "conveyor": {
            "submit_jobs_per_s_1_client": med("api_1"),
            f"submit_jobs_per_s_{a.api_clients}_clients": med("api_n"),
            "inspect_p50_ms": med_inspect("api", "p50_ms"),
            "inspect_p99_ms": med_inspect("api", "p99_ms"),
            "inspect_calls_per_s": med_inspect("api", "calls_per_s"),
            f"batch_submit_{a.api_batch}_s": med_batch("api"),
            "agent_rss_mb": agent["rss_mb"],
            "agent_threads": agent["threads"],
        },
        "baseline": {
            "what": "the same calls through the library: a client Executor in this process on the same store",
            "submit_jobs_per_s_1_client": med("library_1"),
            f"submit_jobs_per_s_{a.api_clients}_clients": med("library_n"),
            "inspect_p50_ms": med_inspect("library", "p50_ms"),
            "inspect_p99_ms": med_inspect("library", "p99_ms"),
            "inspect_calls_per_s": med_inspect("library", "calls_per_s"),
            f"batch_submit_{a.api_batch}_s": med_batch("library"),
        },
        "ratio": {
            # time per submitted job over the library's (> 1: the API is slower)
            "submit_1_client": ratio(med("library_1"), med("api_1")),
            f"submit_{a.api_clients}_clients": ratio(med("library_n"), med("api_n")),
            "inspect_p50": ratio(med_inspect("api", "p50_ms"), med_inspect("library", "p50_ms")),
            "inspect_p99": ratio(med_inspect("api", "p99_ms"), med_inspect("library", "p99_ms")),
            **({"batch_submit": ratio(med_batch("api"), med_batch("library"))} if med_batch("api") else {}),
        },
        "samples": {"submit": rounds, "inspect": inspect, "batch": batch},
    }


BENCHMARKS = {"api": api}
