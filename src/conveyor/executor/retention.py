"""Retention (README: Retention): prune the ended jobs the node's ``[retention]`` rules let go,
their records, transitions, containers and saved logs, and keep the saved logs of all jobs to
``logs_total_bytes``. Blobs are left to ``gc``, which keeps any a live job needs."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

from .. import faults
from ..backends.base import ContainerNotFound
from ..backends.hostfiles import write_json
from ..errors import ConveyorError, InvalidSpec
from ..faults import Point
from ..logfiles import drop
from .base import ExecutorBase

log = logging.getLogger("conveyor.retention")
DAY = 86400.0
# A job that ended this recently is never pruned: its finisher may still be removing its
# container or staging directory, and would find no record.
SETTLING_S = 60.0
_IN_PROGRESS: set[Path] = set()  # this process's prunes under way (their intent files)


class RetentionMixin(ExecutorBase):
    def prune(self, dry_run: bool = False, until: float | None = None) -> dict:
        """Remove the ended jobs the ``[retention]`` rules let go (``until``: also every ended job
        that ended before this time, Unix seconds), with their transitions, containers and
        saved logs; then, over ``logs_total_bytes``, the saved logs of the oldest ended jobs.
        Never a live job, nor one a live job depends on. ``dry_run``: only say what it would do."""
        rules = self.scheduling.retention
        if until is not None and not (0 <= until <= time.time() + DAY * 36500):
            raise InvalidSpec.single("until", until, "give a time (Unix seconds, or 2026-01-02, or 30d back from now)")
        cutoffs = [c for c in (until, time.time() - rules.keep_days * DAY if rules.keep_days else None) if c is not None]
        ruled = bool(cutoffs) or rules.keep_last is not None
        settled = time.time() - SETTLING_S
        ended_before = min([*cutoffs, settled])
        if not dry_run:
            self._finish_pruning()  # one a process that died left
        doomed = self.store.prunable(ended_before, rules.keep_last) if ruled else []
        removed = 0 if dry_run else self._forget(doomed)
        logs = self._cap_total_logs(rules.logs_total_bytes, dry_run, {job_id for job_id, _ in doomed})
        return {
            "dry_run": dry_run,
            "jobs": len(doomed) if dry_run else removed,
            "ids": [job_id for job_id, _ in doomed],
            **logs,
            "rules": {**rules.model_dump(), "until": until},
        }

    def _forget(self, doomed: list[tuple[str, str | None]]) -> int:
        """Remove each job whole or not at all, whenever the process dies: the jobs are written
        down first (an intent file), then their records go (a batch a transaction), and only
        then their containers, saved logs and staging; a job is never left with its record and
        part of its files. What a crash cut short, the next supervisor (or prune) finishes."""
        if not doomed:
            return 0
        intent = self._pruning / f"{os.getpid()}-{secrets.token_hex(4)}.json"
        self._pruning.mkdir(exist_ok=True)
        _IN_PROGRESS.add(intent)
        try:
            write_json(intent, {"jobs": doomed})
            faults.reached(Point.PRUNE_DECIDED, doomed[0][0])
            removed = self.store.prune_jobs([job_id for job_id, _ in doomed])
            faults.reached(Point.PRUNE_FORGOTTEN, doomed[0][0])
            self._finish_prune(intent)
        finally:
            _IN_PROGRESS.discard(intent)
        return removed

    @property
    def _pruning(self) -> Path:
        return self.home.root / "pruning"

    def _finish_pruning(self) -> None:
        """Finish every prune a dead process left (the supervisor does at start, before it
        reconciles: their containers would look like orphans)."""
        for intent in sorted(self._pruning.glob("*.json")) if self._pruning.is_dir() else []:
            pid = intent.name.split("-", 1)[0]
            if intent in _IN_PROGRESS or (pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid))):
                continue  # a prune in progress, here or in another process
            self._finish_prune(intent)

    def _finish_prune(self, intent: Path) -> None:
        """Remove the files of the intent's jobs whose records are gone; a job still in the
        store (a crash before its record went, or it is no longer ended) keeps everything."""
        try:
            doomed = json.loads(intent.read_text())["jobs"]
        except (OSError, ValueError, KeyError, TypeError):
            intent.unlink(missing_ok=True)  # cut while being written: nothing was removed yet
            return
        gone = set(self.store.missing([job_id for job_id, _ in doomed]))
        for job_id, container_id in doomed:
            if job_id not in gone:
                continue
            if container_id:
                try:
                    self.backend.remove(container_id)
                except ContainerNotFound:
                    pass
                except ConveyorError as exc:  # its engine is away: the next start tries again
                    log.warning("prune: container %s of pruned job %s not removed yet: %s", container_id[:12], job_id, exc)
                    return
            shutil.rmtree(self.home.job_logs(job_id), ignore_errors=True)
            shutil.rmtree(self.backend.staging_dir(job_id), ignore_errors=True)
        intent.unlink(missing_ok=True)

    def _cap_total_logs(self, total: int | None, dry_run: bool, gone: set[str]) -> dict:
        """Drop the saved logs of the oldest ended jobs (their records stay, and their log says
        so) until all saved logs take at most ``total`` bytes."""
        if total is None:
            return {"log_bytes": 0, "logs_dropped": 0}
        sizes = _dir_sizes(self.home.logs)
        used = sum(size for job_id, (size, _) in sizes.items() if job_id not in gone)  # (a dry run: still there)
        freed, dropped = 0, 0
        for (job_id, _) in self.store.prunable(None, None):
            if used - freed <= total:
                break
            size, dirs = sizes.get(job_id, (0, 1))
            if job_id in gone or size <= 256 * dirs:
                continue  # pruned above, or its logs are already only the notes (one per attempt)
            freed += size
            dropped += 1
            if not dry_run:
                drop(self.home.job_logs(job_id), f"retention keeps all saved logs to logs_total_bytes = {total}")
        return {"log_bytes": freed, "logs_dropped": dropped}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dir_sizes(logs: os.PathLike) -> dict[str, tuple[int, int]]:
    """Bytes of each job's saved logs, its earlier attempts' (attempt-N/) included, and how
    many log directories they are in, by job id."""
    out: dict[str, tuple[int, int]] = {}
    try:
        entries = list(os.scandir(logs))
    except FileNotFoundError:
        return out
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            dirs = [entry.path, *(a.path for a in os.scandir(entry.path)
                                  if a.is_dir(follow_symlinks=False) and a.name.startswith("attempt-"))]
            size = sum(f.stat().st_size for d in dirs for f in os.scandir(d) if f.is_file(follow_symlinks=False))
            out[entry.name] = (size, len(dirs))
    return out
