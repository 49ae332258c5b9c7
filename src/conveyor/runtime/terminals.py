"""The output of jobs with a terminal, as the terminal writes it.

The engine's log records a tty job's output line by line: a shell's prompt, which ends without
a newline, stays in the engine's buffer until the next newline, so a follower of the log never
sees it and an interactive `conveyor run -it IMAGE sh` would wait at an invisible prompt. So the
launcher attaches to a tty job's output before it starts the job (``docker run -it`` does the
same) and keeps what it reads here: followers (the foreground run) get every byte from the
first, then each new one as it comes. The engine's log still records everything, for the saved
copy and for followers that come after this process (an agent restarted).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import BinaryIO, Iterator

log = logging.getLogger("conveyor.supervisor")

HISTORY_LIMIT = 1 << 20  # bytes kept for followers that come later; past that they read the log


class TerminalOutput:
    """One tty job's output: a reader thread fills the history and every follower's queue."""

    def __init__(self, job_id: str, stream: BinaryIO, on_end):
        self.job_id = job_id
        self._stream, self._on_end = stream, on_end
        self._lock = threading.Lock()
        self._history: list[bytes] = []
        self._size = 0
        self._overflowed = False
        self._ended = False
        self._followers: list[queue.Queue] = []
        threading.Thread(target=self._read, name=f"conveyor-tty-{job_id}", daemon=True).start()

    def follow(self) -> Iterator[bytes] | None:
        """Every byte from the first, then each new one, until the job's terminal closes; None
        when the history no longer holds the beginning (read the engine's log instead)."""
        with self._lock:
            if self._overflowed:
                return None
            chunks: queue.Queue = queue.Queue()
            for chunk in self._history:
                chunks.put(chunk)
            if self._ended:
                chunks.put(None)
            else:
                self._followers.append(chunks)
        return iter(chunks.get, None)

    def _read(self) -> None:
        try:
            while chunk := self._stream.read(65536):  # as it comes (a raw stream: no waiting for a full block)
                with self._lock:
                    if not self._overflowed:
                        self._size += len(chunk)
                        if self._size > HISTORY_LIMIT:
                            self._overflowed, self._history = True, []
                        else:
                            self._history.append(chunk)
                    for follower in self._followers:
                        follower.put(chunk)
        except OSError as exc:
            log.info("terminal output of job %s broke off: %s", self.job_id, exc)
        finally:
            with self._lock:
                self._ended = True
                for follower in self._followers:
                    follower.put(None)
                self._followers = []
            self._stream.close()
            self._on_end(self)


class Terminals:
    """The tty jobs of this process whose output is being read, by job id."""

    def __init__(self) -> None:
        self._by_job: dict[str, TerminalOutput] = {}
        self._lock = threading.Lock()

    def open(self, job_id: str, stream: BinaryIO) -> None:
        with self._lock:
            self._by_job[job_id] = TerminalOutput(job_id, stream, self._ended)

    def follow(self, job_id: str) -> Iterator[bytes] | None:
        with self._lock:
            output = self._by_job.get(job_id)
        return None if output is None else output.follow()

    def _ended(self, output: TerminalOutput) -> None:
        with self._lock:
            if self._by_job.get(output.job_id) is output:
                del self._by_job[output.job_id]
