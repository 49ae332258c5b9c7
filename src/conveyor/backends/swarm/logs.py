"""Part of the swarm driver: a job's logs, from the service logs (stdout and stderr fetched
apart, with timestamps, saved with the times index as for local jobs), or from the copy kept
while the job was being stopped (a stop deletes the task and its log)."""

from __future__ import annotations

import socket
import threading
import time
import types
from pathlib import Path
from typing import Iterator

from ..base import ContainerNotFound, EngineError, EngineUnavailable
from ..docker.logs import STREAM_FD, AtomicLog, _body_blocks, save_frames
from ..docker.translate import engine_errors


class LogsMixin:
    """Part of SwarmBackend: needs ``api``, ``inspect`` and ``_frames_path``."""

    def save_logs(self, handle: str, paths: dict[str, Path]) -> dict[str, int]:
        """Each stream from the service's log (fetched apart, timestamps on) or, for a stopped
        job, from what its stop kept; written atomically with its times index (logtimes)."""
        files = {name: AtomicLog(path) for name, path in paths.items()}
        try:
            sid = self._service_id(handle)
            kept = self._frames_path(sid)
            if kept.exists():
                with open(kept, "rb") as raw:
                    save_frames(types.SimpleNamespace(raw=raw), {STREAM_FD[n]: log for n, log in files.items()})
            else:
                for name, log in files.items():
                    with engine_errors():
                        res = self._log_response(sid, name, follow=False)
                    with engine_errors():
                        save_frames(res, {1: log, 2: log})  # one stream asked for: every frame is its
            for log in files.values():
                log.commit()
        finally:
            for log in files.values():
                log.discard()
        return {name: log.written for name, log in files.items()}

    def _service_id(self, handle: str) -> str:
        with engine_errors():
            return self.api.inspect_service(handle)["ID"]

    def _log_response(self, sid: str, stream: str, follow: bool, tail: int | None = None, timestamps: bool = True):
        params = {"stdout": int(stream == "stdout"), "stderr": int(stream == "stderr"),
                  "timestamps": int(timestamps), "follow": int(follow), "tail": "all" if tail is None else tail}
        res = self.api._get(self.api._url("/services/{0}/logs", sid), params=params, stream=True)
        self.api._raise_for_status(res)
        return res

    def follow_logs(self, handle: str, streams: tuple[str, ...], tail: int | None = None, follow: bool = True,
                    timestamps: bool = False) -> Iterator[tuple[str, bytes]]:
        """``(stream, message)`` from the service's log, one reader per stream; a followed log
        ends when the job has finished (Swarm keeps following a finished service)."""
        import queue

        sid = self._service_id(handle)
        chunks: queue.Queue = queue.Queue(maxsize=256)
        done = object()
        responses = []

        def pump(name: str) -> None:
            try:
                with engine_errors():
                    res = self._log_response(sid, name, follow, tail, timestamps)
                    responses.append(res)
                    buf = b""
                    for block in _body_blocks(res):
                        buf += block
                        pos = 0
                        while pos + 8 <= len(buf):
                            end = pos + 8 + int.from_bytes(buf[pos + 4:pos + 8], "big")
                            if end > len(buf):
                                break
                            chunks.put((name, buf[pos + 8:end]))
                            pos = end
                        buf = buf[pos:]
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                chunks.put((name, exc))
            finally:
                chunks.put((name, done))

        readers = [threading.Thread(target=pump, args=(s,), daemon=True) for s in streams]
        for r in readers:
            r.start()
        open_streams, error = len(readers), None
        try:
            while open_streams:
                try:
                    name, item = chunks.get(timeout=1.0)
                except queue.Empty:
                    if follow:
                        status = self.inspect(sid)
                        if status is None or status.finished:
                            time.sleep(0.5)
                            while not chunks.empty():
                                name, item = chunks.get()
                                if isinstance(item, bytes):
                                    yield name, item
                            return
                    continue
                if item is done:
                    open_streams -= 1
                elif isinstance(item, Exception):
                    error = error or item
                else:
                    yield name, item
        finally:
            for res in responses:
                hang_up(res)
        if error is not None and not isinstance(error, ContainerNotFound):
            raise error if isinstance(error, EngineError | EngineUnavailable) else EngineError(str(error))


def hang_up(res) -> None:
    """End a streamed response that another thread is reading: shutting its socket down makes
    that read return, where ``close()`` would wait for the reader's lock (Swarm never ends a
    followed service log)."""
    try:
        sock = res.raw._fp.fp.raw._sock
        sock.shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass
    try:
        res.close()
    except Exception:  # noqa: BLE001 - already closed
        pass
