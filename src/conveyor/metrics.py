"""Metrics in the Prometheus text format, made with prometheus-client.

Two sources, one registry per executor:

- what the store says at the moment of the scrape (:class:`StoreCollector`): jobs by state, the
  queue's depth and oldest wait, capacity used and free, starts and ends, job durations and
  queue waits as histograms, the bytes of saved logs and of the content store. Every process
  that opens the state directory gives the same figures, and nothing is lost when the agent
  restarts;
- what this process counted (:class:`Counters`): engine calls (latency, errors) and submissions
  (accepted, refused and why), from the agent's start.

``GET /v1/metrics`` on the agent, ``Executor.metrics()``, ``Client.metrics()`` and
``conveyor metrics`` all answer with :meth:`Meters.exposition`.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .state import FINAL_STATES, RUNNABLE_STATES, JobState, sql_in
from .store.leases import LEASE_STATES, LIVE_LEASES_SQL

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
ENGINE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BYTES_TTL_S = 300.0  # saved logs and the content store are walked at most this often (a walk reads every file)


class Counters:
    """What this process counts as it goes (reset when it starts, as Prometheus expects).
    Plain numbers under a lock: prometheus-client (about 150 ms of imports) is loaded only
    when someone scrapes, never at an executor's start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.engine: dict[str, list] = {}  # call -> [count, sum, count per ENGINE_BUCKETS bound]
        self.engine_errors: dict[tuple[str, str], int] = {}  # (call, error) -> count
        self.submissions: dict[tuple[str, str], int] = {}  # (result, reason) -> count

    @contextmanager
    def engine_call(self, call: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        except Exception as exc:
            with self._lock:
                key = (call, type(exc).__name__)
                self.engine_errors[key] = self.engine_errors.get(key, 0) + 1
            raise
        finally:
            took = time.perf_counter() - began
            with self._lock:
                row = self.engine.setdefault(call, [0, 0.0, [0] * len(ENGINE_BUCKETS)])
                row[0] += 1
                row[1] += took
                for i, bound in enumerate(ENGINE_BUCKETS):
                    if took <= bound:
                        row[2][i] += 1

    def refused(self, code: str) -> None:
        self._count(("refused", code))

    def accepted(self) -> None:
        self._count(("accepted", ""))

    def _count(self, key: tuple[str, str]) -> None:
        with self._lock:
            self.submissions[key] = self.submissions.get(key, 0) + 1

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        with self._lock:
            engine = {call: (n, total, list(buckets)) for call, (n, total, buckets) in self.engine.items()}
            errors, submissions = dict(self.engine_errors), dict(self.submissions)
        seconds = HistogramMetricFamily("conveyor_engine_call_seconds",
                                        "Time of each call to a backend (the engine's API, Slurm's commands)", labels=["call"])
        for call, (n, total, buckets) in sorted(engine.items()):
            seconds.add_metric([call], [(str(float(b)), c) for b, c in zip(ENGINE_BUCKETS, buckets)] + [("+Inf", n)], total)
        yield seconds
        failed = CounterMetricFamily("conveyor_engine_call_errors", "Backend calls that failed, by call and error",
                                     labels=["call", "error"])
        for key, n in sorted(errors.items()):
            failed.add_metric(list(key), n)
        yield failed
        submitted = CounterMetricFamily("conveyor_submissions",
                                        "Jobs submitted here: accepted, or refused (reason: the error's code)",
                                        labels=["result", "reason"])
        for key, n in sorted(submissions.items()):
            submitted.add_metric(list(key), n)
        yield submitted


class Meters:
    """An executor's metrics: its counters and the store's figures, as one exposition.
    (``ex``: the Executor; not imported here, which the executor's own modules do.)"""

    def __init__(self, ex: Any):
        self.counters = Counters()
        self.store = StoreCollector(ex)

    def exposition(self) -> str:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.store)
        registry.register(self.counters)
        return generate_latest(registry).decode()


class StoreCollector:
    """The figures the store holds, read when scraped (a few aggregate queries)."""

    def __init__(self, ex: Any):
        self.ex = ex
        self._bytes: tuple[float, dict[str, int]] | None = None
        self._bytes_lock = threading.Lock()

    def describe(self):
        return []  # (no eager collect at registration: the store is read per scrape)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        q, executor_id = self.ex.store.query, self.ex.executor_id
        now = time.time()
        jobs = GaugeMetricFamily("conveyor_jobs", "Jobs of this executor by state", labels=["state"])
        counts = dict(q("SELECT state, COUNT(*) FROM jobs WHERE executor_id=? GROUP BY state", (executor_id,)))
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs

        depth, oldest = q(
            f"SELECT COUNT(*), MIN(created_at) FROM jobs WHERE {sql_in(RUNNABLE_STATES)} "
            "AND substate IS NOT 'engine_queued' AND executor_id=?", (executor_id,))[0]
        yield GaugeMetricFamily("conveyor_queue_depth", "Jobs waiting for Conveyor to start them", value=depth)
        yield GaugeMetricFamily("conveyor_queue_oldest_wait_seconds", "How long the longest-waiting queued job has waited",
                                value=max(0.0, now - oldest) if oldest else 0.0)

        capacity = GaugeMetricFamily("conveyor_capacity", "The node's capacity for jobs and what is in use",
                                     labels=["resource", "kind"])
        for resource, figures in _capacity(self.ex).items():
            for kind, value in figures.items():
                capacity.add_metric([resource, kind], value)
        yield capacity

        leases = GaugeMetricFamily("conveyor_leases", "Leases of this executor by state (README: Leases)", labels=["state"])
        counts = dict(q("SELECT state, COUNT(*) FROM leases WHERE executor_id=? GROUP BY state", (executor_id,)))
        for state in LEASE_STATES:
            leases.add_metric([state], counts.get(state, 0))
        yield leases
        reserved = GaugeMetricFamily("conveyor_lease_reserved", "What the live leases reserve", labels=["resource"])
        cpus, memory = q(f"SELECT TOTAL(cpus), TOTAL(memory) FROM leases WHERE {LIVE_LEASES_SQL} AND executor_id=?",
                         (executor_id,))[0]
        reserved.add_metric(["cpus"], cpus)
        reserved.add_metric(["memory_bytes"], memory)
        yield reserved

        (starts,) = q("SELECT COUNT(*) FROM transitions t JOIN jobs j ON j.id = t.job_id WHERE t.to_state = 'Running' "
                      f"AND t.from_state IN ('Queued', 'Requeued') AND j.executor_id=?", (executor_id,))[0]
        yield CounterMetricFamily("conveyor_job_starts", "Jobs started (each attempt), of the jobs in the store",
                                  value=starts)
        ended = CounterMetricFamily("conveyor_jobs_ended", "Jobs that ended, by state and substate",
                                    labels=["state", "substate"])
        for state, substate, n in q(f"SELECT state, coalesce(substate, ''), COUNT(*) FROM jobs WHERE "
                                    f"{sql_in(FINAL_STATES)} AND executor_id=? GROUP BY 1, 2", (executor_id,)):
            ended.add_metric([state, substate], n)
        yield ended

        yield _histogram(q, "conveyor_job_duration_seconds", "Run time of jobs that ended (start to end)",
                         "finished_at - started_at", f"{sql_in(FINAL_STATES)} AND started_at IS NOT NULL", executor_id)
        yield _histogram(q, "conveyor_job_queue_wait_seconds", "Time from submit to start, of jobs that started",
                         "started_at - created_at", "started_at IS NOT NULL", executor_id)

        sizes = GaugeMetricFamily("conveyor_disk_bytes", "Bytes on disk: saved logs, the content store",
                                  labels=["what"])
        for what, size in self._disk_bytes().items():
            sizes.add_metric([what], size)
        yield sizes

    def _disk_bytes(self) -> dict[str, int]:
        with self._bytes_lock:
            if self._bytes is None or time.monotonic() - self._bytes[0] > BYTES_TTL_S:
                home = self.ex.home
                self._bytes = (time.monotonic(), {"logs": _tree_bytes(home.logs), "content_store": _tree_bytes(home.cas)})
            return self._bytes[1]


def _histogram(q, name: str, doc: str, value: str, where: str, executor_id: str):
    """A histogram over the store's rows in one query: a count per bucket and the sum."""
    from prometheus_client.core import HistogramMetricFamily

    cases = ", ".join(f"SUM(CASE WHEN {value} <= {b} THEN 1 ELSE 0 END)" for b in DURATION_BUCKETS)
    row = q(f"SELECT {cases}, COUNT(*), coalesce(SUM({value}), 0) FROM jobs WHERE {where} AND executor_id=?",
            (executor_id,))[0]
    *per_bucket, count, total = row
    buckets = [(str(float(b)), n or 0) for b, n in zip(DURATION_BUCKETS, per_bucket)] + [("+Inf", count)]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


def _capacity(ex: Any) -> dict[str, dict[str, float]]:
    cap, used = ex.capacity, ex._planner().ledger().in_use()
    out = {}
    for resource, total, taken in (("cpus", cap.cpus, used["cpus"]), ("memory_bytes", cap.memory, used["memory"])):
        out[resource] = {"total": float(total), "used": float(taken), "free": max(0.0, float(total) - float(taken))}
    gpus = sum(len(ids) for ids in cap.gpus.values()) * cap.gpu_sharing
    gpus_taken = sum(used["gpus"].values())
    out["gpus"] = {"total": float(gpus), "used": float(gpus_taken), "free": float(max(0, gpus - gpus_taken))}
    return out


def _tree_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass  # removed meanwhile
    return total
