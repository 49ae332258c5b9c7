"""A process job's events: one append-only log (``events.log``) that the shims and the
backend write a JSON line to (O_APPEND: each short write lands whole), followed by a reader that
waits on the log's bell (a FIFO the writer rings after each line) and polls as a fallback."""

from __future__ import annotations

import json
import os
import select
import threading
from typing import Iterator

from ..base import EngineEvent, EngineUnavailable
from .shim import append_event, ring

POLL = 0.2  # an idle events() wakes 5 times a second even without a ring (a missed one, a second reader)
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

    @property
    def events_bell(self) -> str:
        return str(self.events_log) + ".bell"

    def _open_bell(self) -> int:
        try:
            os.mkfifo(self.events_bell, 0o600)
        except FileExistsError:
            pass
        # read-write: opening never blocks, and the reader never sees EOF when a writer leaves
        return os.open(self.events_bell, os.O_RDWR | os.O_NONBLOCK)

    def _read_events(self, f, since: float | None, closed: threading.Event) -> Iterator[EngineEvent]:
        rest, polls = b"", 0
        bell = self._open_bell()
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
                if select.select([bell], [], [], POLL)[0]:
                    try:
                        os.read(bell, 4096)
                    except BlockingIOError:
                        pass
            raise EngineUnavailable("the process backend's event stream was closed")
        finally:
            os.close(bell)
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
        ring(self.events_bell)

    def _event(self, action: str, handle: str, job_id: str | None = None) -> None:
        if job_id is None:
            meta = self._meta(handle)
            job_id = meta["job_id"] if meta else None
        append_event(str(self.events_log), action, handle, job_id)


def _parse_event(line: bytes) -> EngineEvent | None:
    try:
        ev = json.loads(line)
        return EngineEvent(action=ev["a"], container_id=ev["h"], job_id=ev.get("j"), time=ev["t"])
    except (ValueError, KeyError, TypeError):
        return None
