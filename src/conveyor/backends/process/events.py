"""A process job's events: one append-only log (``events.log``) that the shims and the
backend write a JSON line to (O_APPEND: each short write lands whole), followed by polling."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Iterator

from ..base import EngineEvent, EngineUnavailable

POLL = 0.2  # an idle events() wakes 5 times a second: one read of the event log
LIVENESS_EVERY = 10  # ... and every 2 s looks for shims that died without a word


class EventsMixin:
    """Part of ProcessBackend: needs ``events_log``, ``runs``, ``inspect``, ``_meta``,
    ``_closers`` and ``_lock``."""

    def events(self, since: float | None = None) -> Iterator[EngineEvent]:
        """Events from the event log: subscribed on return (the log's end is taken now; with
        ``since``, earlier lines from that time are replayed first)."""
        try:
            f = open(self.events_log, "rb")
        except OSError as exc:  # the state directory went away under us
            raise EngineUnavailable(f"cannot read the process backend's event log: {exc}") from None
        if since is None:
            f.seek(0, os.SEEK_END)
        closed = threading.Event()
        with self._lock:
            self._closers.add(closed)
        return self._read_events(f, since, closed)

    def _read_events(self, f, since: float | None, closed: threading.Event) -> Iterator[EngineEvent]:
        rest, polls = b"", 0
        try:
            while not closed.is_set():
                data = f.read()
                if data:
                    *lines, rest = (rest + data).split(b"\n")
                    for line in lines:
                        ev = _parse_event(line)
                        if ev is not None and (since is None or ev.time >= since):
                            yield ev
                    continue
                polls += 1
                if polls % LIVENESS_EVERY == 0:
                    self._notice_dead_shims()
                closed.wait(POLL)
            raise EngineUnavailable("the process backend's event stream was closed")
        finally:
            f.close()
            with self._lock:
                self._closers.discard(closed)

    def _notice_dead_shims(self) -> None:
        """inspect() of a started run whose shim is gone records it dead (and a die event)."""
        for d in self.runs.iterdir():
            if not d.name.startswith(".") and (d / "shim.json").exists() and not (d / "exit.json").exists():
                self.inspect(d.name)

    def close_events(self) -> None:
        with self._lock:
            for closed in self._closers:
                closed.set()

    def _event(self, action: str, handle: str, job_id: str | None = None) -> None:
        if job_id is None:
            meta = self._meta(handle)
            job_id = meta["job_id"] if meta else None
        line = json.dumps({"t": time.time(), "a": action, "h": handle, "j": job_id}) + "\n"
        fd = os.open(self.events_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _parse_event(line: bytes) -> EngineEvent | None:
    try:
        ev = json.loads(line)
        return EngineEvent(action=ev["a"], container_id=ev["h"], job_id=ev.get("j"), time=ev["t"])
    except (ValueError, KeyError, TypeError):
        return None
