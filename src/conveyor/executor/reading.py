"""Reading jobs: records, lists, attempts, arrays, logs and the transition history.

All of it comes from the store and the saved log files, except the output of a running job,
which the engine streams.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator

from ..arguments import ARRAY_ID, job_ref
from ..errors import ConveyorError, InvalidSpec, InvalidState, JobNotFound
from ..job import Job, Transition
from ..logfiles import STREAMS, saved_after, saved_logs
from ..state import WAITING_STATES, JobState
from ..store import ArrayRecord, Store
from .base import ExecutorBase

EVENTS_PAGE = 500
EVENTS_POLL = 0.25  # seconds between looks at the transition log while following


class ReadMixin(ExecutorBase):
    _events_store: Store | None

    def list(
        self,
        states: Iterable[JobState | str] | None = None,
        labels: dict[str, str | None] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
        ids: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        images: Iterable[str] | None = None,
        exit_codes: Iterable[int] | None = None,
        before: str | None = None,
        since: str | None = None,
    ) -> list[Job]:
        """Jobs oldest first (``newest_first``: the most recent first, as ``docker ps``); only
        those every given filter matches (see :meth:`conveyor.store.Store.list`): ``states``,
        ``labels`` (KEY: VALUE, or KEY: None for "has the label"), id prefixes, name patterns,
        images, exit codes, created ``before``/``since`` a job. ``limit``/``offset`` page."""
        records = self.store.list(
            _states(states), labels, limit=limit, offset=offset, newest_first=newest_first, ids=ids, names=names,
            images=images, exit_codes=exit_codes, before=before, since=since,
        )
        return [self._job(r) for r in records]

    def page(self, limit: int, cursor: str | None = None, *, newest_first: bool = False,
             states: Iterable[JobState | str] | None = None, **filters) -> tuple[list[Job], str | None]:
        """One page of list() after ``cursor`` and the next page's cursor (None: the last);
        ``filters`` as list()'s. See :meth:`conveyor.store.Store.page`."""
        records, nxt = self.store.page(limit, cursor, newest_first=newest_first, states=_states(states), **filters)
        return [self._job(r) for r in records], nxt

    def count(
        self,
        states: Iterable[JobState | str] | None = None,
        labels: dict[str, str | None] | None = None,
        *,
        ids: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        images: Iterable[str] | None = None,
        exit_codes: Iterable[int] | None = None,
        before: str | None = None,
        since: str | None = None,
    ) -> int:
        """How many jobs list() would return without a limit."""
        return self.store.count(
            _states(states), labels, ids=ids, names=names, images=images, exit_codes=exit_codes, before=before,
            since=since,
        )

    def attempts(self, ref: str) -> list[dict]:
        """Every attempt of a job run with retries: state, exit code, times and where its
        logs are (logs/<job>/attempt-N for earlier ones; the last one's are the job's own)."""
        job_ref("attempts", ref)
        rec = self._record(ref)
        out = self.store.attempts(rec.id)
        for a in out:
            kept = self.home.job_logs(rec.id) / f"attempt-{a['attempt']}"
            a["logs_dir"] = str(kept if kept.exists() else self.home.job_logs(rec.id))
        return out

    # ------------------------------------------------------------------ provenance

    def provenance(self, ref: str, attempt: int | None = None) -> dict:
        """Where and how one attempt of a job ran (the last by default): the host, the engine
        and its runtime, the image by content, the spec as run and its digest, the Conveyor
        version and the token that submitted it (README: Provenance)."""
        job_ref("provenance", ref)
        rec = self._record(ref)
        docs = [json.loads(d) for d in self.store.provenance(rec.id)]
        if not docs:
            raise InvalidState(rec.id, rec.state.value, "show the provenance (recorded when its container is made) of")
        if attempt is None:
            return {"job": rec.id, "node": rec.node, **docs[-1]}
        for doc in docs:
            if doc["attempt"] == attempt:
                return {"job": rec.id, "node": rec.node, **doc}
        have = ", ".join(str(d["attempt"]) for d in docs)
        raise InvalidSpec.single("attempt", attempt, f"job {rec.id} has the provenance of attempt {have}; give one of those")

    def provenance_diff(self, a: str, b: str) -> dict:
        """What differs between the provenance of two jobs' last attempts, field by field
        (the attempt numbers and times aside, which always do)."""
        from ..provenance import diff

        first, second = self.provenance(a), self.provenance(b)
        return {"a": first["job"], "b": second["job"], "differences": diff(first, second)}

    # ------------------------------------------------------------------ arrays

    def array(self, ref: str) -> dict:
        """An array's summary: its range, max-parallel and how many tasks are in each state."""
        job_ref("array", ref, ARRAY_ID)
        array = self._array_record(ref)
        counts = self.store.array_counts(array.id)
        return {
            "id": array.id,
            "begin": array.first,
            "end": array.last,
            "step": array.step,
            "max_parallel": array.max_parallel,
            "tasks": sum(counts.values()),
            "states": {s.value: counts.get(s.value, 0) for s in JobState if counts.get(s.value)},
            "created_at": array.created_at,
        }

    def array_tasks(self, ref: str) -> list[tuple[str, int, JobState]]:
        """(job id, index, state) of each task of an array, in index order."""
        job_ref("array_tasks", ref, ARRAY_ID)
        return self.store.array_tasks(self._array_record(ref).id)

    def _array_record(self, ref: str) -> ArrayRecord:
        array_id = self.store.resolve_array(ref)
        if array_id is None:
            raise JobNotFound(ref, "no such array")
        return self.store.get_array(array_id)

    # ------------------------------------------------------------------ logs

    def logs(
        self,
        ref: str,
        stream: str = "all",
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` pairs of a job's output, stdout and stderr kept apart.

        Finished jobs are read from the store; running ones from the engine. With ``follow``
        the stream goes on until the job ends and includes every byte it wrote. With
        ``timestamps`` each line starts with the RFC3339Nano time it was written and a space,
        as ``docker logs --timestamps`` prints it (for finished jobs, the times saved with
        the logs)."""
        job_ref("logs", ref)  # here, not in the generator: a wrong argument fails at the call
        return self._logs(ref, stream, tail, follow, timestamps)

    def _logs(self, ref: str, stream: str, tail: int | None, follow: bool, timestamps: bool) -> Iterator[tuple[str, bytes]]:
        if stream not in (*STREAMS, "all"):
            raise ValueError("stream must be 'stdout', 'stderr' or 'all'")
        streams = STREAMS if stream == "all" else (stream,)
        job_id = self.store.resolve(ref)
        logs_dir = self.home.job_logs(job_id)
        rec = self.store.get(job_id)
        if follow and rec.state in WAITING_STATES:
            self.wait_started(job_id)  # woken by the transition itself, not a poll
            rec = self.store.get(job_id)
        if rec.state.is_final or rec.container_id is None:
            yield from saved_logs(logs_dir, streams, tail, timestamps)
            return
        sent = dict.fromkeys(streams, 0)  # bytes of the job's output, without the time prefixes
        terminal = self._mode.terminal(job_id) if follow and tail is None and not timestamps and "stdout" in streams else None
        try:
            if terminal is not None:  # a tty job followed from its first byte, prompts included
                for chunk in terminal:
                    sent["stdout"] += len(chunk)
                    yield "stdout", chunk
            else:
                for name, chunk in self.backend.follow_logs(rec.container_id, streams, tail, follow, timestamps=timestamps):
                    sent[name] += len(chunk) - (chunk.find(b" ", 0, 40) + 1 if timestamps else 0)
                    yield name, chunk
        except ConveyorError:
            pass  # the container went away mid-stream; the saved copy has the rest
        if follow and tail is None:
            # Whatever the engine stream missed (it ends at exit, or broke) is in the store.
            self.wait(job_id)
            yield from saved_after(logs_dir, streams, sent, timestamps)

    # ------------------------------------------------------------------ the transition log

    def events(self, job: str | None = None, *, since: int | None = None, follow: bool = True,
               since_time: float | None = None) -> Iterator[Transition]:
        """State transitions in commit order: those after seq ``since`` (0: the whole history;
        None: from now on), or with ``since_time`` those from that time (Unix seconds) on,
        then with ``follow`` each new one as it is committed, until the executor is closed.
        The append-only table is polled by seq: one small query a tick."""
        if job is not None:
            job_ref("events", job)
        return self._events(job, since, follow, since_time)

    def _events(self, job: str | None, since: int | None, follow: bool, since_time: float | None) -> Iterator[Transition]:
        job_id = self.store.resolve(job) if job is not None else None
        last = self.event_start(since, since_time)
        while True:
            page = self.transitions(last, job_id)
            for t in page:
                last = t.seq
                yield t
            if len(page) == EVENTS_PAGE:
                continue
            if not follow or self._closed.wait(EVENTS_POLL):
                return

    def transitions(self, since: int, job_id: str | None = None, limit: int = EVENTS_PAGE) -> list[Transition]:
        """One page of the transition log after seq ``since`` (a job's, or all). Read on a
        connection of its own, so event readers never queue behind the writer."""
        return self._reader.transitions(job_id, since_seq=since, limit=limit)

    def event_start(self, since: int | None, since_time: float | None) -> int:
        """The seq an events reader starts after: ``since``, else the first transition at or
        after ``since_time`` (found in an index, not by reading the history), else now."""
        if since is not None:
            return since
        return self._reader.seq_before(since_time) if since_time is not None else self.last_seq()

    def last_seq(self) -> int:
        """The seq of the newest transition (0 for none): where "from now on" starts."""
        return self._reader.last_seq()

    @property
    def _reader(self) -> Store:
        if self._events_store is None:
            self._events_store = Store(self.home.db, readonly=True)
        return self._events_store


def _states(states: Iterable[JobState | str] | None) -> list[JobState] | None:
    return None if states is None else [JobState(s) for s in states]
