"""Reading jobs through the agent: records, lists, attempts, arrays, logs (NDJSON frames)
and the transition log (Server-Sent Events)."""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable, Iterator

from ..errors import AgentError, ConveyorError
from ..job import Job, Transition
from ..state import JobState
from .base import ClientBase, route

STREAMS = ("stdout", "stderr")


class ReadMixin(ClientBase):
    def info(self, ref: str) -> Job:
        return self._job(self._http.call("GET", route("info", ref)))

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
        params = _list_params(states, labels, ids, names, images, exit_codes, before, since)
        if params is None:
            return []
        jobs: dict[str, Job] = {}
        params.update(offset=offset, newest_first=newest_first or None)
        while limit is None or len(jobs) < limit:
            params["limit"] = 1000 if limit is None else min(1000, limit - len(jobs))
            got = self._http.call("GET", route("list"), params)
            # newest first, a job submitted between two pages shifts the next one: its first
            # job is the one already last on this page, so keep each job once
            jobs.update((j["id"], self._job(j)) for j in got["jobs"] if j["id"] not in jobs)
            if got["next_offset"] is None:
                break
            params["offset"] = got["next_offset"]
        return list(jobs.values())

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
        params = _list_params(states, labels, ids, names, images, exit_codes, before, since)
        return 0 if params is None else self._http.call("GET", route("list"), {**params, "limit": 1, "offset": 0})["total"]

    def attempts(self, ref: str) -> list[dict]:
        return self._http.call("GET", route("attempts", ref))

    def array(self, ref: str) -> dict:
        return self._http.call("GET", route("array", ref))

    def array_tasks(self, ref: str) -> list[tuple[str, int, JobState]]:
        return [(t["id"], t["index"], JobState(t["state"])) for t in self._http.call("GET", route("array_tasks", ref))]

    def logs(
        self, ref: str, stream: str = "all", *, tail: int | None = None, follow: bool = False, timestamps: bool = False
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` pairs, stdout and stderr kept apart (streamed over HTTP)."""
        if stream not in (*STREAMS, "all"):
            raise ValueError("stream must be 'stdout', 'stderr' or 'all'")
        params = {"stream": stream, "tail": tail, "follow": follow, "timestamps": timestamps or None}
        return self._frames(self._http.stream(route("logs", ref), params))

    def _frames(self, resp) -> Iterator[tuple[str, bytes]]:
        try:
            ended = False
            while line := resp.readline():
                frame = json.loads(line)
                if "data" in frame:
                    yield frame["stream"], base64.b64decode(frame["data"])
                elif "error" in frame:
                    raise ConveyorError(frame["error"].get("message", "log stream failed"))
                elif frame.get("end"):
                    ended = True
                    break
            if not ended:
                raise AgentError("the agent closed the log stream before its end")
        finally:
            self._http.close_stream(resp)

    def events(self, job: str | None = None, *, since: int | None = None, follow: bool = True) -> Iterator[Transition]:
        """State transitions in commit order (Server-Sent Events): from now on, or after ``since``
        (a transition's seq; 0 for the whole history). ``follow=False`` ends at the present."""
        return self._events(self._http.stream(route("events"), {"job": job, "since": since, "follow": follow}))

    def _events(self, resp) -> Iterator[Transition]:
        try:
            data: list[str] = []
            while line := resp.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith("data:"):
                    data.append(text[5:].lstrip())
                elif not text and data:
                    yield Transition.from_dict(json.loads("\n".join(data)))
                    data = []
        finally:
            self._http.close_stream(resp)


def _list_params(states, labels, ids, names, images, exit_codes, before, since) -> dict[str, Any] | None:
    """Query parameters of GET /jobs; None when a filter was given no value (nothing matches:
    an empty list cannot be said in a query string, where it reads as "no filter")."""
    params: dict[str, Any] = {
        "state": None if states is None else [JobState(s).value for s in states],
        "label": [k if v is None else f"{k}={v}" for k, v in labels.items()] if labels else None,
        "id": _listed(ids),
        "name": _listed(names),
        "image": _listed(images),
        "exit_code": _listed(exit_codes),
        "before": before,
        "since": since,
    }
    if any(v == [] for v in params.values()):
        return None
    return {k: v for k, v in params.items() if v is not None}


def _listed(values: Iterable | None) -> list | None:
    return None if values is None else list(values)
