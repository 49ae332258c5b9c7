"""The node: the queue as the scheduler sees it, the machine and its capacity, cleanup, the
containers the engine has that the store does not know, and the engine's own documents (its
images, itself, a job's stats) passed through as it wrote them."""

from __future__ import annotations

import os
import platform
import time
from typing import Iterator

from ..arguments import IMAGE, job_ref
from ..backends.base import LABEL_JOB, ContainerNotFound, ContainerStatus
from ..capacity import Request
from ..errors import ConveyorError, ImageNotFound, JobNotFound
from ..provenance import host_facts
from ..runtime.planner import Planner, in_use
from ..state import ACTIVE_STATES, FINAL_STATES, HELD_STATES, LIVE_STATES, WAITING_STATES, JobState, Substate, sql_in
from ..store import JobRecord
from .base import ExecutorBase


class NodeMixin(ExecutorBase):
    def _planner(self) -> Planner:
        return Planner(self.store, self.executor_id, self.scheduling, self.capacity)

    def queue(self, limit: int | None = None) -> dict:
        """The queue as the scheduler sees it: counts per priority, and for each waiting job
        (in the order they will be considered, ``limit`` of them) what it waits for:
        resources, dependency, hold, cap, backoff or backfill."""
        plan = self._planner().plan(explain=True, explain_limit=limit)
        reasons = dict(plan.reasons)
        for job_id, substate, message in plan.failures:
            reasons[job_id] = f"{substate}: {message} (failing)"
        by_priority: dict[int, dict[str, int]] = {}
        for priority, state, n in self.store.query(
            # the live states by name, so the state index reads the live jobs, not the whole history
            f"SELECT priority, state, COUNT(*) FROM jobs WHERE executor_id=? AND {sql_in(LIVE_STATES)} "
            "GROUP BY priority, state",
            (self.executor_id,),
        ):
            row = by_priority.setdefault(priority, {"running": 0, "queued": 0, "held": 0})
            state = JobState(state)
            row["running" if state in ACTIVE_STATES else "held" if state in HELD_STATES else "queued"] += n
        sql = (
            "SELECT id, name, state, priority, created_at, array_id, array_index, req_cpus, req_memory, req_gpus, "
            "substate, message "
            f"FROM jobs WHERE executor_id=? AND {sql_in(WAITING_STATES)} ORDER BY priority DESC, created_at, rowid"
        )
        jobs = []
        for job_id, name, state, priority, created, array_id, index, cpus, memory, gpus, substate, message in self.store.query(
            sql + (" LIMIT ?" if limit is not None else ""), (self.executor_id, *([limit] if limit is not None else []))
        ):
            if substate == Substate.ENGINE_QUEUED:
                why = f"engine: {message}"
            else:
                why = "hold" if JobState(state) in HELD_STATES else reasons.get(job_id, "starting")
            jobs.append({
                "id": job_id, "name": name, "state": state, "priority": priority, "created_at": created,
                "array_id": array_id, "array_index": index,
                "request": Request.from_columns(cpus, memory, gpus).describe(),
                "waits_for": why.split(":", 1)[0], "reason": why,
            })
        return {
            "capacity": self.capacity.to_dict(),
            "in_use": in_use(plan.ledger, plan.leases) if plan.ledger else {},
            "priorities": {str(k): v for k, v in sorted(by_priority.items(), reverse=True)},
            "waiting": sum(v["queued"] + v["held"] for v in by_priority.values()),
            "blocker": plan.blocker,
            "jobs": jobs,
            "leases": self._live_leases(plan.leases),
        }

    def metrics(self) -> str:
        """Metrics in the Prometheus text format (conveyor/metrics.py): the store's figures now,
        and what this process counted (engine calls, submissions)."""
        return self.meters.exposition()

    def machine(self) -> dict:
        """This node: host, OS, CPUs, memory, GPUs, load, engine version, and the capacity
        jobs may use with what is in use now."""
        host = host_facts()
        engine: dict = {"name": self.backend.engine_name, "version": None, "runtimes": {}}
        try:
            if self.backend.engine_name != "none":
                engine["version"] = self.backend.container_engine().version().get("version")
                engine["runtimes"] = {name: r.get("path") for name, r in self.backend.runtimes().items()}
        except ConveyorError:  # the view still answers without the engine
            pass
        cap = self.capacity
        ledger, leases = self._planner().lease_ledgers()
        used = in_use(ledger, leases)
        return {
            "hostname": host["hostname"],
            "os": f"{host['os']} {platform.release()}",
            "kernel": host["kernel"],
            "arch": host["arch"],
            "cpu_model": host["cpu_model"],
            "cpus": host["cpus"],
            "memory": host["memory"],
            "gpus": host["gpus"],
            "load": list(os.getloadavg()),
            "engine": engine,
            "backends": self.backend.members(),
            "nodes": self._nodes(),
            "capacity": {
                **cap.to_dict(),
                "reserve": {"cpus": cap.reserve[0], "memory": cap.reserve[1]},
                "gpu_sharing": cap.gpu_sharing,
            },
            "in_use": used,
            "free": {"cpus": (cap.cpus_m - used["cpus"] * 1000) / 1000, "memory": cap.memory - used["memory"]},
            "leases": self._live_leases(leases),
        }

    def _nodes(self) -> list[dict] | None:
        try:
            return self.backend.nodes()
        except ConveyorError:  # the view still answers without the engine
            return None

    def backends(self) -> list[dict]:
        """Every backend Conveyor has: whether this node runs it (``available``, or the
        ``error`` that says why not), whether it is the default, what it can do, and the
        options a job may give it (``backend: {name, options}``)."""
        from ..backends import BACKENDS, backend_class
        from ..spec.backend import OPTIONS

        members = self.backend.members()
        out = []
        for name in BACKENDS:
            entry: dict = {"name": name, "default": name == self.backend.name, "available": False, "error": None}
            caps = backend_class(name).capabilities  # what it can do; a running one, as configured
            if name not in members:
                entry["error"] = (f"this node's container engine is {self.backend.engine_name}"
                                  if self.backend.engine_name != "none" else "this node has no container engine")
            else:
                try:
                    member = self.backend.process() if name == "process" else self.backend.container_engine()
                    member.version()
                    entry["available"] = True
                    caps = member.capabilities
                except ConveyorError as exc:
                    entry["error"] = str(exc)
            entry["capabilities"] = caps.to_dict()
            entry["options"] = {
                key: {"default": f.default if f.default_factory is None else f.default_factory(), "description": f.description}
                for key, f in OPTIONS[name].model_fields.items()
            }
            out.append(entry)
        return out

    # ------------------------------------------------------------------ the engine's own documents
    # For callers that speak the engine's language (a docker stand-in): nothing here reads them.

    def images(self) -> list[dict]:
        """The engine's image summaries, as its API lists them (Docker: GET /images/json)."""
        self.backend.require(None, "images", "list images")
        return self.backend.images()

    def image_inspect(self, name: str) -> dict:
        """One image as the engine describes it (Docker: GET /images/{name}/json);
        ImageNotFound when it has none."""
        job_ref("image_inspect", name, IMAGE)
        self.backend.require(None, "images", "inspect images")
        found = self.backend.image_inspect(name)
        if found is None:
            raise ImageNotFound(name, "no such image on this node")
        return found

    def pull(self, name: str) -> Iterator[dict]:
        """Pull an image (no tag: latest; a digest reference works too): the engine's progress
        messages as they come; ImageNotFound or EngineError, in the engine's words, if it fails."""
        job_ref("pull", name, IMAGE)
        self.backend.require(None, "images", "pull images")
        return self.backend.pull(name)

    def engine(self) -> dict:
        """The engine as it describes itself: {"version": ..., "info": ...} (Docker: GET
        /version and GET /info)."""
        return self.backend.engine()

    def stats(self, ref: str) -> dict:
        """One sample of a job's resource usage: {"job": id, "stats": the engine's document}, or
        stats None unless the job is running or suspended and its container is there."""
        job_ref("stats", ref)
        rec = self._record(ref)
        self.backend.require(rec.spec, "stats", "report a job's resource usage")
        sample = None
        if rec.state in (JobState.RUNNING, JobState.SUSPENDED) and rec.container_id:
            try:
                sample = self.backend.stats(rec.container_id)
            except ContainerNotFound:
                pass  # it ended and was removed meanwhile
        return {"job": rec.id, "stats": sample}

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> dict[str, int]:
        """Remove every container, volume and network that carries this executor's label,
        and nothing else. Live jobs are cancelled first and their logs saved: by this
        executor when it supervises, or when no process does (it supervises meanwhile);
        otherwise by the supervising process, which this one waits for."""
        with self._supervising_if_free():  # see Executor
            removed = 0
            for status in self.backend.list():
                job_id = status.labels.get(LABEL_JOB)
                try:
                    rec = self.store.get(job_id) if job_id else None
                except JobNotFound:
                    rec = None
                if rec is not None and not rec.state.is_final:
                    self._end_for_cleanup(rec, status)
                self.backend.remove(status.id)
                removed += 1
            return {"containers": removed, **self.backend.cleanup()}

    def _end_for_cleanup(self, rec: JobRecord, status: ContainerStatus) -> None:
        """Give a live job a final state (its logs saved) before its container goes."""
        if not status.alive and not status.finished:
            # Created but never started: there is no output to keep.
            if self.store.transition(
                rec.id, JobState.FAILED, Substate.CANCELLED, reason="cleanup",
                message="removed by cleanup before it started", finished_at=time.time(),
            ):
                self._changed(rec.id)
            return
        self._mode.end_for_cleanup(rec, status)
        self.wait(rec.id, timeout=60)

    @property
    def orphans(self) -> list[str]:
        """Ids of containers with this executor's label whose job the store does not know.

        Asked of the engine each time, so an observing Executor sees them too. They are
        reported (here and in the supervisor's log), never adopted and never removed, except
        by ``cleanup``."""
        out = []
        for status in self.backend.list():
            job_id = status.labels.get(LABEL_JOB)
            try:
                if job_id:
                    self.store.get(job_id)
                    continue
            except JobNotFound:
                pass
            out.append(status.id)
        return sorted(out)
