"""Provenance: where and how each attempt of a job ran, recorded when its container is made.

One document per attempt (the store's ``provenance`` table), in a form two runs can be
compared by (:func:`diff`):

    {"attempt": 1, "recorded_at": ..., "conveyor": {"version"},
     "host": {"hostname", "kernel", "os", "arch", "cpu_model", "cpus", "memory", "gpus"},
     "engine": {"name", "version", "runtime"},
     "image": {"reference", "id", "repo_digests"},
     "spec": {the spec as run: with the task's environment and the GPUs given; inputs by digest},
     "spec_digest": "sha256:...", "submitted_digest": "sha256:...", "submitted_by": {"token"}}

``spec_digest`` is the digest of the spec as run, which may hold the job's own id (a retried
job's CONVEYOR_JOB_ID, an array task's CONVEYOR_ARRAY_ID); ``submitted_digest`` is the digest of
the spec as submitted (inputs by their content digest), equal for identical submissions.

On an engine that places jobs on several machines (swarm, slurm) the host is the one that
handed the job over; the job's ``node`` says where it ran.

What does not change while a process lives (the host, the engine's version) is read once.
"""

from __future__ import annotations

import functools
import platform
import socket
import threading
import time
from typing import Any, Callable

from . import __version__
from .machine import discover

# Keys whose values differ between any two runs by nature: a diff that listed them would hide
# what matters.
UNCOMPARED = ("job", "attempt", "recorded_at")


@functools.lru_cache(maxsize=1)
def host_facts() -> dict:
    """This machine, as a job's provenance names it (cached for the process: none of it changes
    while it runs, and the GPU probe is not free)."""
    m = discover()
    return {
        "hostname": socket.gethostname(),
        "kernel": f"{platform.release()} {platform.version()}",
        "os": platform.system(),
        "arch": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpus": m.cpus,
        "memory": m.memory,
        "gpus": {vendor: list(ids) for vendor, ids in m.gpus.items()},
    }


def _cpu_model() -> str | None:
    """The CPU's model name as /proc/cpuinfo gives it (x86's "model name", ARM's "Model")."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


class Recorder:
    """Builds an attempt's provenance document for the launcher: one engine call per job (the
    container's inspect). Each driver's engine version is asked once per process (an engine
    upgraded under a running agent is recorded with its old version until the agent restarts),
    and an image's registry digests once per image id (an id names content, which never
    changes; a digest the image gains later, by a push, is not seen)."""

    def __init__(self) -> None:
        self._versions: dict[str, dict] = {}
        self._digests: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def _cached(self, table: dict, key: str, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in table:
                return table[key]
        value = compute()  # outside the lock: an engine call
        with self._lock:
            table[key] = value
        return value

    def _repo_digests(self, backend: Any, image_id: str | None) -> list[str]:
        if not image_id:
            return []
        return self._cached(self._digests, image_id,
                            lambda: sorted((backend.image_inspect(image_id) or {}).get("RepoDigests") or []))

    def document(self, backend: Any, handle: str, spec: Any, submitted: Any, attempt: int,
                 submitted_by: str | None) -> dict:
        """The provenance of the attempt about to run ``spec`` (made from the ``submitted``
        spec) in the created ``handle`` (``backend``: the node's BackendRouter)."""
        driver = backend.for_job(spec)
        # An engine with a queue of its own (swarm, slurm) makes the container later, on its
        # node: nothing to read yet, and its inspect is not free (a service's tasks, scontrol).
        made = None if driver.capabilities.queues else backend.inspect(handle)
        image_id, runtime = (made.image_id, made.runtime) if made is not None else (None, None)
        version = self._cached(self._versions, driver.name, driver.version)
        return {
            "attempt": attempt,
            "recorded_at": time.time(),
            "conveyor": {"version": __version__},
            "host": host_facts(),
            "engine": {"name": version.get("name"), "version": version.get("version"), "runtime": runtime},
            "image": {"reference": spec.image, "id": image_id,
                      "repo_digests": self._repo_digests(backend, image_id)},
            "spec": spec.model_dump(mode="json", exclude_defaults=True),
            "spec_digest": spec.digest(),
            "submitted_digest": submitted.digest(),
            "submitted_by": {"token": submitted_by},
        }


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole values (an env list or a
    command differs as one)."""
    if not isinstance(doc, dict) or (prefix and not doc):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def diff(a: dict, b: dict) -> list[dict]:
    """What differs between two provenance documents, field by dotted field:
    ``[{"field": "image.id", "a": ..., "b": ...}, ...]`` in field order (absent: None)."""
    fa, fb = flatten(a), flatten(b)
    fields = sorted(set(fa) | set(fb))
    return [
        {"field": f, "a": fa.get(f), "b": fb.get(f)}
        for f in fields
        if f not in UNCOMPARED and fa.get(f) != fb.get(f)
    ]
