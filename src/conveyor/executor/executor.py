"""Executor: Conveyor's Python API, run in this process.

    from conveyor import Executor, JobSpec
    with Executor() as ex:
        job = ex.run(JobSpec(image="busybox", command=["echo", "hi"]))
        print(job.state, job.exit_code, job.stdout)

The class is assembled from one part per concern, the way the docker SDK assembles its
client: submitting (submit.py), control (control.py), commands inside jobs (execs.py), waiting (waiting.py), reading
(reading.py), the node (node.py) and data (data.py). Its interface is the one the remote
:class:`~conveyor.client.Client` has too (:class:`~conveyor.interface.ExecutorInterface`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

from ..backends.base import Backend, Capabilities
from ..backends.router import BackendRouter
from ..capacity import Capacity, Machine, SchedulingConfig, node_capacity
from ..daemon import SupervisorLock
from ..home import Home
from ..metrics import Meters
from ..operations import with_array_forms
from ..store import Store
from .control import ControlMixin
from .data import DataMixin
from .execs import ExecMixin
from .fsck import FsckMixin
from .leases import LeaseMixin
from .modes import Observing, Supervising
from .node import NodeMixin
from .reading import ReadMixin
from .retention import RetentionMixin
from .submit import SubmitMixin
from .usage import UsageMixin
from .waiters import Waiters
from .waiting import WaitMixin


@with_array_forms
class Executor(SubmitMixin, ControlMixin, ExecMixin, WaitMixin, ReadMixin, NodeMixin, DataMixin, UsageMixin, LeaseMixin,
               RetentionMixin, FsckMixin):
    """Runs jobs on this node. One Executor per state directory supervises its jobs (the one
    that got there first holds ``supervisor.lock``); any other observes: it queues work and
    reads the store, and the supervising process launches and watches.

    ``supervise=False`` always observes: a read-only view (list, info, logs of finished jobs)
    that does not need the engine until it is asked for something live.
    """

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        *,
        docker_url: str | None = None,
        backend: Backend | None = None,
        supervise: bool = True,
        scheduling: "dict | SchedulingConfig | None" = None,
    ):
        self.home = Home(home)
        # config.toml in the state directory, with ``scheduling`` laid over it (README: Scheduling)
        self.scheduling = SchedulingConfig.load(self.home.root, scheduling)
        self.store = Store(self.home.db)
        self.executor_id = self.home.executor_id()
        # The node's backends as one: its container engine (config.toml [engine]; ``backend``
        # replaces the engine's driver) and the process backend.
        self.backend = BackendRouter(
            self.executor_id, self.home.root, self.scheduling.engine.name,
            docker_url or self.scheduling.engine.url, nodes=self.scheduling.engine.nodes,
            shared_dir=self.scheduling.engine.shared_dir, engine_backend=backend,
        )
        self.meters = Meters(self)
        self.backend.meter = self.meters.counters.engine_call
        self._capacity: Capacity | None = None
        self._events_store: Store | None = None
        self._blobs = None
        self._closed = threading.Event()
        self._waiters = Waiters(self.store, self._job, self._closed)
        self._lock = SupervisorLock(self.home)
        self._observing = Observing(self.home, self.store, self._waiters, self.backend)
        self._set_mode(self._observing)
        if supervise:
            self._try_to_supervise()

    # ------------------------------------------------------------------ supervising or not

    def _try_to_supervise(self) -> bool:
        """Become the supervisor if no process is; True if this executor now is."""
        if not self._lock.acquire():
            return False
        from ..runtime import Runtime  # the supervising process's machinery only

        try:
            self.backend.connect()
            self._finish_pruning()  # before the reconcile, to which their containers would be orphans
            runtime = Runtime(
                self.store, self.backend, self.home, self.executor_id, self.scheduling, self.capacity,
                on_change=self._waiters.changed,
            )
            runtime.start()
        except BaseException:
            self._lock.release()
            raise
        self._set_mode(Supervising(runtime, self._lock))
        return True

    def _set_mode(self, mode: "Supervising | Observing") -> None:
        self._mode = mode
        self._waiters.poll_interval = mode.poll_interval

    @contextlib.contextmanager
    def _supervising_if_free(self) -> Iterator[None]:
        """Supervise for the duration of the block if no other process does (cleanup must
        record the jobs it ends, and someone has to)."""
        took_over = not self._mode.supervising and self._try_to_supervise()
        try:
            yield
        finally:
            if took_over:
                self._mode.close()
                self._set_mode(self._observing)

    @property
    def supervising(self) -> bool:
        """True when this executor holds the state directory's supervisor lock."""
        return self._mode.supervising

    # ------------------------------------------------------------------ plumbing

    def capabilities(self) -> Capabilities:
        """What this node's default backend (its container engine) can do."""
        return self.backend.capabilities

    @property
    def capacity(self) -> Capacity:
        """What jobs may use on this node (the machine minus the reserve, or configured)."""
        if self._capacity is None:
            self._capacity = node_capacity(self.scheduling, self._cluster_machine())
        return self._capacity

    def _cluster_machine(self) -> Machine | None:
        """What a multi-node engine (swarm, slurm) holds: its ready, active nodes' CPUs, memory
        and GPUs added up, so admission counts the cluster, not this machine. A GPU is named
        ``<node>/<id>``: admission counts them, the engine picks the node and the GPU."""
        if self.scheduling.engine.name not in ("swarm", "slurm"):
            return None
        nodes = [n for n in self.backend.nodes() or () if n["state"] == "ready" and n["availability"] == "active"]
        gpus: dict[str, list[str]] = {}
        for n in nodes:
            for vendor, ids in n.get("gpus", {}).items():
                gpus.setdefault(vendor, []).extend(f"{n['name']}/{i}" for i in ids)
        return Machine(cpus=sum(n["cpus"] for n in nodes), memory=sum(n["memory"] for n in nodes), gpus=gpus)

    def close(self) -> None:
        """Stop supervising. Running jobs keep running; a later Executor picks them up."""
        self._closed.set()
        self._mode.close()
        self._set_mode(self._observing)
        if self._events_store is not None:
            self._events_store.close()
        self.store.close()

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
