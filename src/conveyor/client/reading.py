"""Reading jobs through the agent: records, lists, attempts, arrays, logs (NDJSON frames)
and the transition log (Server-Sent Events)."""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable, Iterator

from ..arguments import ARRAY_ID, job_ref
from ..errors import AgentError, ConveyorError
from ..job import Job, Transition
from ..state import JobState
from .base import ClientBase, route

STREAMS = ("stdout", "stderr")


class ReadMixin(ClientBase):
    def info(self, ref: str) -> Job:
        job_ref("info", ref)
        return self._job(self._http.call("GET", route("info", ref)))

    def list(
        self,
        states: Iterable[JobState | str] | None = None,
        labels: dict[str, str] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Job]:
        params = _list_params(states, labels)
        if params is None:
            return []
        jobs: list[Job] = []
        params["offset"] = offset
        while limit is None or len(jobs) < limit:
            params["limit"] = 1000 if limit is None else min(1000, limit - len(jobs))
            got = self._http.call("GET", route("list"), params)
            jobs += [self._job(j) for j in got["jobs"]]
            if got["next_offset"] is None:
                break
            params["offset"] = got["next_offset"]
        return jobs

    def count(self, states: Iterable[JobState | str] | None = None, labels: dict[str, str] | None = None) -> int:
        params = _list_params(states, labels)
        return 0 if params is None else self._http.call("GET", route("list"), {**params, "limit": 1, "offset": 0})["total"]

    def attempts(self, ref: str) -> list[dict]:
        job_ref("attempts", ref)
        return self._http.call("GET", route("attempts", ref))

    def array(self, ref: str) -> dict:
        job_ref("array", ref, ARRAY_ID)
        return self._http.call("GET", route("array", ref))

    def array_tasks(self, ref: str) -> list[tuple[str, int, JobState]]:
        job_ref("array_tasks", ref, ARRAY_ID)
        return [(t["id"], t["index"], JobState(t["state"])) for t in self._http.call("GET", route("array_tasks", ref))]

    def logs(
        self, ref: str, stream: str = "all", *, tail: int | None = None, follow: bool = False, timestamps: bool = False
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` pairs, stdout and stderr kept apart (streamed over HTTP)."""
        job_ref("logs", ref)
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
        if job is not None:
            job_ref("events", job)
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


def _list_params(states, labels) -> dict[str, Any] | None:
    """Query parameters of GET /jobs; None when no state was asked for (nothing matches)."""
    params: dict[str, Any] = {}
    if states is not None:
        params["state"] = [JobState(s).value for s in states]
        if not params["state"]:
            return None
    if labels:
        params["label"] = [f"{k}={v}" for k, v in labels.items()]
    return params
