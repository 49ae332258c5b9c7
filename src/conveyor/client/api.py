"""AgentAPI: the agent's REST API as plain data, one method per operation of the table.

This is the low-level client (as the docker SDK's APIClient is): JSON dicts in and out, the
standard library only, no pydantic. The CLI speaks it directly, so every `conveyor` command
starts without loading the job model; :class:`~conveyor.client.Client` wraps it into the
library's interface (JobSpec in, Job out).

Waiting and following survive an agent that goes away: a broken connection is retried, after
``recover()`` (the CLI passes one that starts the agent again), for at most ``RECONNECT_S``.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator

from ..agent import home_root, socket_path
from ..agent.auth import read_token
from ..errors import AgentError, AgentUnreachable, ConveyorError, WaitTimeout, error_from_wire
from .routes import JobUsage, LeaseRequests, Sessions, route
from .transport import Transport, quoted

if TYPE_CHECKING:
    from ..operations import Verb

POLL = 30.0  # seconds per long-poll request
LONG = 3600.0  # requests that may pull an image or hash the whole content store
RECONNECT_S = 60.0  # how long a wait or follow tries to reach an agent that went away


class EngineDocuments:
    """The engine's own documents, passed through by the agent as the engine wrote them
    (routers/engine.py): its images, itself, a job's resource usage. Part of AgentAPI: needs
    its ``call``, ``http`` and ``_frames``."""

    def images(self) -> list[dict]:
        return self.call("GET", route("images"))

    def image_inspect(self, name: str) -> dict:
        """The engine's document of one image; ImageNotFound when it has none."""
        return self.call("GET", route("image_inspect"), {"name": name})

    def pull(self, name: str) -> Iterator[dict]:
        """Pull an image: the engine's progress messages as they come. ImageNotFound,
        PolicyRefused or the engine's words (ConveyorError) when it fails, before or during."""
        stream = self.http.stream(route("pull"), {"name": name}, method="POST")
        return (message for message in self._frames(stream) if "end" not in message)

    def engine(self) -> dict:
        """{"version": ..., "info": ...}: the engine as it describes itself."""
        return self.call("GET", route("engine"))

    def stats(self, ref: str) -> dict:
        """{"job": id, "stats": one sample of its resource usage, or None unless it runs}."""
        return self.call("GET", route("stats", ref))


class Provenance:
    """Where and how jobs ran (routers/jobs.py). Part of AgentAPI: needs its ``call``."""

    def provenance(self, ref: str, attempt: int | None = None) -> dict:
        return self.call("GET", route("provenance", ref), {"attempt": attempt} if attempt is not None else None)

    def provenance_diff(self, a: str, b: str) -> dict:
        return self.call("GET", route("provenance_diff"), {"a": a, "b": b})


class OutputFiles:
    """A job's captured outputs: listed, read, restored to a directory. Part of AgentAPI: needs
    its ``call`` and ``http``."""

    def outputs(self, ref: str) -> dict:
        """{"filesets": {output path: digest}, "files": [...]}"""
        return self.call("GET", route("outputs", ref))

    def read_output(self, ref: str, path: str, out: BinaryIO | None = None) -> bytes | int:
        resp = self.http.stream(route("read_output", ref), {"path": path})
        try:
            if out is None:
                return resp.read()
            n = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                n += len(chunk)
            return n
        finally:
            resp.close()

    def restore_outputs(self, ref: str, target: str | os.PathLike, on_file: Callable[[dict], None] | None = None) -> list[str]:
        """Every output file of a job under ``target`` (output /out lands in target/out), each
        verified by the agent as it is read. Paths are checked before anything is written.
        ``on_file(file)`` after each one (the CLI's progress)."""
        from ..cas.checks import check_path

        written = []
        for f in self.outputs(ref)["files"]:
            dest = Path(target, check_path(f["path"].lstrip("/")))
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(f".{dest.name}.partial")
            with open(partial, "wb") as out:
                self.read_output(ref, f["path"], out=out)
            os.chmod(partial, f["mode"] & 0o7777)
            os.replace(partial, dest)
            written.append(str(dest))
            if on_file is not None:
                on_file(f)
        return written


class AgentAPI(EngineDocuments, Provenance, OutputFiles, Sessions, JobUsage, LeaseRequests):
    """Talks to the agent of ``home`` (its ``agent.sock``), or to ``url``
    (``http://HOST:PORT``, ``unix:///path/agent.sock``; default ``$CONVEYOR_HOST``).
    The token is ``token``, else ``$CONVEYOR_TOKEN``, else the state directory's agent.token."""

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        recover: Callable[[], None] | None = None,
    ):
        self.root = home_root(home)
        url = url or os.environ.get("CONVEYOR_HOST") or None
        token = token or os.environ.get("CONVEYOR_TOKEN") or read_token(self.root)
        self.http = Transport(url, str(socket_path(self.root)), token, timeout)
        self.url = self.http.url
        self.local = url is None  # the agent's files (logs) are readable here
        self._recover = recover

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, params: dict | None = None, body: Any = None, **kw: Any) -> Any:
        return self.http.call(method, path, params, body, **kw)

    # ------------------------------------------------------------------ reconnecting

    def patiently(self, request: Callable[[], Any]) -> Any:
        """``request()``, again after the agent went away (recovered if we can), for at most
        RECONNECT_S; then the last AgentUnreachable."""
        deadline = time.monotonic() + RECONNECT_S
        while True:
            try:
                return request()
            except AgentUnreachable:
                if time.monotonic() >= deadline:
                    raise
                self.close()
                if self._recover is not None:
                    try:
                        self._recover()
                    except ConveyorError:
                        pass  # not yet: try again until the deadline
                time.sleep(0.2)

    # ------------------------------------------------------------------ the agent

    def agent_info(self) -> dict:
        return self.call("GET", route("agent_info"))

    def ping(self) -> bool:
        try:
            return bool(self.call("GET", route("ping"), timeout=5).get("ok"))
        except AgentError:
            return False

    # ------------------------------------------------------------------ submit and run

    def ensure_image(self, spec: dict) -> None:
        self.call("POST", route("ensure_image"), body={"spec": spec}, timeout=max(self.http.timeout, LONG))

    def submit(self, spec: dict, *, hold: bool = False, idempotency_key: str | None = None, image_ready: bool = False) -> dict:
        body = _ready({"spec": spec, "hold": hold, "idempotency_key": idempotency_key}, image_ready)
        return self.call("POST", route("submit"), body=body, timeout=max(self.http.timeout, LONG))

    def submit_many(self, specs: list[dict], *, hold: bool = False, image_ready: bool = False) -> list[str]:
        body = _ready({"specs": specs, "hold": hold}, image_ready)
        return self.call("POST", route("submit_many"), body=body, timeout=max(self.http.timeout, LONG))["ids"]

    def submit_array(self, spec: dict, begin: int, end: int, step: int = 1, max_parallel: int | None = None,
                     *, hold: bool = False, image_ready: bool = False) -> dict:
        body = _ready({"spec": spec, "begin": begin, "end": end, "step": step, "max_parallel": max_parallel, "hold": hold},
                      image_ready)
        return self.call("POST", route("submit_array"), body=body, timeout=max(self.http.timeout, LONG))

    def run(self, spec: dict, *, console_size: tuple[int, int] | None = None) -> Iterator[dict]:
        """Submit a job and follow it on one connection: frames ``{"job": ...}`` (it is
        queued), ``{"stream", "data"}`` (its output, decoded here to bytes), then
        ``{"end": job}`` once its result and logs are stored. The agent cancels the job if
        this connection goes away before the end (a foreground job has no one else)."""
        body = {"spec": spec, "console_size": list(console_size) if console_size else None}
        return self._frames(self.http.stream(route("run"), method="POST", body=body))

    def attach(self, ref: str, sent: dict[str, int]) -> Iterator[dict]:
        """Follow a job again after a broken ``run``: its output past ``sent[stream]`` bytes,
        then its end; also bound to this connection (cancelled if it goes away)."""
        params = {"stdout_from": sent.get("stdout", 0), "stderr_from": sent.get("stderr", 0)}
        return self._frames(self.http.stream(route("attach", ref), params))

    def send_stdin(self, ref: str, source: Iterable[bytes] | BinaryIO) -> None:
        """Stream ``source`` to the job's stdin until it ends (then the job sees EOF)."""
        resp = self.http.stream(route("stdin", ref), method="POST", upload=source)
        resp.read()
        resp.close()

    # ------------------------------------------------------------------ verbs (operations.VERBS)

    def perform(self, verb: "Verb", ref: str, params: dict[str, Any]) -> dict | None:
        timeout = max(self.http.timeout, 120) if verb.method == "DELETE" else None
        return self.call(verb.method, verb.route.replace("{ref}", quoted(ref)), params, timeout=timeout)

    def perform_array(self, verb: "Verb", ref: str, params: dict[str, Any]) -> dict:
        return self.call("POST", verb.array_route.replace("{ref}", quoted(ref)), params, timeout=max(self.http.timeout, 600))

    # ------------------------------------------------------------------ reading

    def info(self, ref: str) -> dict:
        return self.call("GET", route("info", ref))

    def list(self, params: dict[str, Any]) -> dict:
        """One page of GET /jobs: {"jobs", "total", "offset", "limit", "next_offset", "next_cursor"}."""
        return self.call("GET", route("list"), params)

    def list_all(self, params: dict[str, Any], limit: int | None = None, offset: int = 0) -> list[dict]:
        """The jobs GET /jobs answers for ``params`` (see :func:`list_query`) from ``offset``, at
        most ``limit``: a request per 1,000 (by cursor from the start: each costs the same), or one for ``ps -n 5``."""
        jobs: dict[str, dict] = {}
        params = {**params, "offset": offset}
        while limit is None or len(jobs) < limit:
            params["limit"] = 1000 if limit is None else min(1000, limit - len(jobs))
            page = self.list(params)
            # by offset, newest first, a job submitted meanwhile shifts the next page: keep each job once
            jobs.update((j["id"], j) for j in page["jobs"] if j["id"] not in jobs)
            cursor = page.get("next_cursor")
            if cursor is None and (page["next_offset"] is None or "cursor" in params):
                break
            params = {**params, "cursor": cursor, "offset": 0} if cursor else {**params, "offset": page["next_offset"]}
        return list(jobs.values())

    def attempts(self, ref: str) -> list[dict]:
        return self.call("GET", route("attempts", ref))

    def array(self, ref: str) -> dict:
        return self.call("GET", route("array", ref))

    def array_tasks(self, ref: str) -> list[dict]:
        return self.call("GET", route("array_tasks", ref))

    def logs(self, ref: str, stream: str = "all", *, tail: int | None = None, follow: bool = False,
             timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
        """``(stream, chunk)`` pairs, stdout and stderr kept apart (NDJSON frames). A follow
        whose agent goes away is resumed where it broke off: asked again from the start, the
        bytes already given are skipped (the engine's log and the saved copy hold the same
        bytes; a tail or timestamps cannot be resumed that way, so those fail instead)."""
        params = {"stream": stream, "tail": tail, "follow": follow, "timestamps": timestamps or None}
        sent = {"stdout": 0, "stderr": 0}
        while True:
            seen = dict.fromkeys(sent, 0)
            try:
                for frame in self._frames(self.http.stream(route("logs", ref), params)):
                    if "data" not in frame:
                        continue
                    name, chunk = frame["stream"], frame["data"]
                    skip = max(0, sent[name] - seen[name])
                    seen[name] += len(chunk)
                    if skip < len(chunk):
                        sent[name] += len(chunk) - skip
                        yield name, chunk[skip:]
                return
            except AgentUnreachable:
                if not follow or tail is not None or timestamps:
                    raise
                self.patiently(lambda: self.info(ref))  # an agent again (bounded), then resume

    def events(self, job: str | None = None, *, since: int | None = None, follow: bool = True, since_time: float | None = None) -> Iterator[dict]:
        """Transitions as dicts (Server-Sent Events), in commit order."""
        resp = self.http.stream(route("events"), {"job": job, "since": since, "follow": follow, "since_time": since_time})
        try:
            data: list[str] = []
            while line := resp.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith("data:"):
                    data.append(text[5:].lstrip())
                elif not text and data:
                    yield json.loads("\n".join(data))
                    data = []
        finally:
            resp.close()

    # ------------------------------------------------------------------ waiting (long-polls)

    def _long_poll(self, request: Callable[[float], dict], what: str, timeout: float | None) -> dict:
        """``request(step)`` long-polls for at most ``step`` seconds; again until ``timeout``;
        an agent that went away meanwhile is waited for (see patiently)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
            try:
                return self.patiently(lambda: request(round(step, 3)))
            except WaitTimeout as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(exc.job_id, what, timeout or 0) from None

    def wait(self, ref: str, until: str = "finished", timeout: float | None = None) -> dict:
        def request(step: float) -> dict:
            return self.call("GET", route("wait", ref), {"timeout": step, "until": until}, timeout=step + 30)

        return self._long_poll(request, until, timeout)

    def wait_any(self, ids: list[str], timeout: float | None = None) -> dict:
        def request(step: float) -> dict:
            return self.call("POST", route("wait_any"), body={"ids": ids, "timeout": step}, timeout=step + 30)

        return self._long_poll(request, "finished", timeout)

    # ------------------------------------------------------------------ the node

    def queue(self, limit: int | None = None) -> dict:
        return self.call("GET", route("queue"), {"limit": limit})

    def machine(self) -> dict:
        return self.call("GET", route("machine"))

    def metrics(self) -> str:
        resp = self.http.stream(route("metrics"), {})
        try:
            return resp.read().decode()
        finally:
            resp.close()

    def backends(self) -> list[dict]:
        return self.call("GET", route("backends"))

    def cleanup(self) -> dict[str, int]:
        return self.call("POST", route("cleanup"), timeout=max(self.http.timeout, 600))

    # ------------------------------------------------------------------ data

    def verify(self, ref: str | None = None) -> dict:
        return self.call("POST", route("verify"), {"job": ref}, timeout=max(self.http.timeout, LONG))

    def fsck(self, repair: bool = False) -> dict:
        return self.call("POST", route("fsck"), {"repair": repair}, timeout=max(self.http.timeout, LONG))

    def gc(self, dry_run: bool = False, grace: float = 600.0) -> dict:
        return self.call("POST", route("gc"), {"dry_run": dry_run, "grace": grace}, timeout=max(self.http.timeout, LONG))

    def prune(self, dry_run: bool = False, until: float | None = None) -> dict:
        return self.call("POST", route("prune"), {"dry_run": dry_run, "until": until}, timeout=max(self.http.timeout, LONG))

    def load_image(self, path: str | os.PathLike) -> dict:
        with open(path, "rb") as f:
            result = self.call("POST", route("load_image"), {"name": os.path.basename(str(path))},
                               upload=f, timeout=max(self.http.timeout, LONG))
        return {**result, "file": str(path)}

    # ------------------------------------------------------------------ frames

    def _frames(self, resp) -> Iterator[dict]:
        """NDJSON frames of a streamed answer, output decoded to bytes. A stream that ends
        without its last frame raises AgentUnreachable (the agent went away)."""
        try:
            while line := resp.readline():
                frame = json.loads(line)
                if "data" in frame:
                    frame["data"] = base64.b64decode(frame["data"])
                    yield frame
                elif "error" in frame:
                    # the exception the agent would have answered with, had the stream not begun
                    error = frame["error"]
                    raise error_from_wire(500, error.get("code", ConveyorError.code),
                                          error.get("message", "the stream failed"),
                                          error.get("field"), error.get("details") or {})
                elif "end" in frame:
                    yield frame
                    return
                else:
                    yield frame
            raise AgentUnreachable(self.url, "the agent closed the stream before its end", self.http.remote)
        except OSError as exc:
            raise AgentUnreachable(self.url, f"the stream broke: {exc}", self.http.remote) from None
        finally:
            resp.close()


def list_query(
    states: Iterable[str] | None = None,
    labels: dict[str, str | None] | None = None,
    *,
    newest_first: bool = False,
    ids: Iterable[str] | None = None,
    names: Iterable[str] | None = None,
    images: Iterable[str] | None = None,
    exit_codes: Iterable[int] | None = None,
    before: str | None = None,
    since: str | None = None,
) -> dict[str, Any] | None:
    """GET /jobs's query parameters for list()'s filters (states by name; a label None: any
    value). None when a filter was given no value: nothing matches, and an empty list cannot
    be said in a query string, where it reads as "no filter"."""
    params: dict[str, Any] = {
        "state": states, "label": [k if v is None else f"{k}={v}" for k, v in labels.items()] if labels else None,
        "id": ids, "name": names, "image": images, "exit_code": exit_codes,
    }
    params = {k: None if v is None else list(v) for k, v in params.items()}
    if any(v == [] for v in params.values()):
        return None
    return {k: v for k, v in {**params, "before": before, "since": since, "newest_first": newest_first or None}.items()
            if v is not None}


def command_line_agent(home: str | os.PathLike | None) -> AgentAPI:
    """The agent a command line speaks to (`conveyor` and the docker stand-in alike): the
    agent of the state directory, started in the background when none runs (it stays, like
    dockerd), or the agent at $CONVEYOR_HOST. Every command goes through it, so a command
    gives the same answer whether an agent was running or not."""
    from ..daemon import ensure_agent

    if os.environ.get("CONVEYOR_HOST"):
        return AgentAPI(home)  # a remote agent supervises its own node
    root = home_root(home)
    ensure_agent(root)  # one started here inherits $CONVEYOR_ENGINE
    api = AgentAPI(root, recover=lambda: ensure_agent(root))
    wanted = os.environ.get("CONVEYOR_ENGINE")
    if wanted:
        running = api.agent_info().get("engine")
        if running != wanted:
            # Never run a job on another engine than the one asked for.
            raise ConveyorError(
                f"CONVEYOR_ENGINE={wanted}, but the agent of {root} runs with the engine {running}; "
                f"stop it ('conveyor serve --stop', its jobs keep running) to change engines, or unset CONVEYOR_ENGINE"
            )
    return api


def _ready(body: dict, image_ready: bool) -> dict:
    """A submit's body, saying ``image_ready`` only when true: an agent older than the field
    refuses any field it does not know."""
    return {**body, "image_ready": True} if image_ready else body
