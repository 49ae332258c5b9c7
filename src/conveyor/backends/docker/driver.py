"""The Docker driver: the Backend interface on the docker SDK's low-level client.

Every engine call runs inside `engine_errors` (translate.py), so callers see only Conveyor's
engine-neutral errors, never ``docker``, ``requests`` or ``urllib3`` exceptions.
"""

from __future__ import annotations

import io
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import docker
import docker.errors

from ...errors import ConveyorError
from ...spec import JobSpec, PullPolicy
from ..base import (
    LABEL_EXECUTOR,
    LABEL_JOB,
    Capabilities,
    ContainerNotFound,
    ContainerStatus,
    EngineError,
    EngineEvent,
    EngineUnavailable,
    ExecResult,
    ImageNotFound,
)
from .translate import engine_errors
from .logs import STREAM_FD, AtomicLog, copy_raw, save_frames, timestamped_lines, whole_lines
from .mapping import container_config, container_status, conveyor_labels, host_config, numeric_user, split_reference

# ----------------------------------------------------------------------------- the driver


class DockerBackend:
    """The Backend for a Docker engine (local socket, DOCKER_HOST, or ``base_url``)."""

    name = "docker"
    capabilities = Capabilities(
        pause=True,
        exec=True,
        gpus=frozenset({"nvidia", "amd", "intel"}),
        ports=True,
        stdin=True,
        recover=True,
        files=True,
        image_load=True,
        stats=True,
    )

    def __init__(self, executor_id: str, base_url: str | None = None, timeout: int = 120):
        self.executor_id = executor_id
        with engine_errors():
            if base_url:
                self.api = docker.APIClient(base_url=base_url, version="auto", timeout=timeout)
            else:
                self.api = docker.from_env(version="auto", timeout=timeout).api
            self.api.ping()
        self._events_stream = None
        self._events_lock = threading.Lock()

    def version(self) -> dict:
        with engine_errors():
            v = self.api.version()
        return {"name": self.name, "version": v.get("Version"), "api_version": v.get("ApiVersion")}

    # ------------------------------------------------------------------ images

    def ensure_image(self, spec: JobSpec, refresh: bool = True) -> None:
        """Make the image present as the pull policy says. ``refresh=False`` does not pull
        again an image that is present (the submitter already honoured ``always``)."""
        present = self._image_present(spec.image)
        if spec.pull is PullPolicy.NEVER and not present:
            raise ImageNotFound(spec.image, "not present on this node and the pull policy is 'never'")
        if (spec.pull is PullPolicy.ALWAYS and refresh) or not present:
            repo, tag = split_reference(spec.image)
            try:
                with engine_errors(image=spec.image):
                    self.api.pull(repo, tag=tag)
            except EngineError as exc:
                raise ImageNotFound(spec.image, f"pull failed: {exc}") from None

    def _image_present(self, image: str) -> bool:
        try:
            with engine_errors(image=image):
                self.api.inspect_image(image)
            return True
        except ImageNotFound:
            return False

    def load_image(self, chunks: Iterable[bytes]) -> list[str]:
        """Load an image tarball (``docker save`` format) into the engine; the image ids it
        holds (sha256:...)."""
        ids: list[str] = []
        with engine_errors():
            for msg in self.api.load_image(chunks):
                if "error" in msg:
                    raise EngineError(f"image load failed: {msg['error']}")
                text = msg.get("stream", "")
                for prefix in ("Loaded image ID: ", "Loaded image: "):
                    if text.startswith(prefix):
                        ids.append(self.api.inspect_image(text[len(prefix) :].strip())["Id"])
        return list(dict.fromkeys(ids))

    def image_tags(self, image_id: str) -> list[str]:
        with engine_errors(image=image_id):
            return self.api.inspect_image(image_id).get("RepoTags") or []

    # ------------------------------------------------------------------ lifecycle

    def create(self, job_id: str, spec: JobSpec) -> str:
        """Create the job's container, named ``conveyor-<job id>``: EngineConflict when that
        name is taken (the caller adopts its own container made before a crash)."""
        labels = conveyor_labels(self.executor_id, job_id, spec.name)
        hc = host_config(spec)
        with engine_errors(image=spec.image):
            self._prepare_mounts(spec)
            self._prepare_network(spec)
            created = self.api.create_container(
                **container_config(spec, labels),
                host_config=self.api.create_host_config(**hc),
                name=f"conveyor-{job_id}",
            )
        return created["Id"]

    def _prepare_mounts(self, spec: JobSpec) -> None:
        uid, gid = numeric_user(spec.user)
        for m in spec.mounts:
            if m.type == "bind" and not os.path.exists(m.source):
                # Create the source ourselves: the engine would make it root-owned, which a
                # job running as --user could then not write to.
                os.makedirs(m.source, exist_ok=True)
                if uid is not None:
                    os.chown(m.source, uid, gid if gid is not None else -1)
            elif m.type == "volume" and m.source:
                try:
                    self.api.inspect_volume(m.source)
                except docker.errors.NotFound:
                    self.api.create_volume(m.source, labels=conveyor_labels(self.executor_id))

    def _prepare_network(self, spec: JobSpec) -> None:
        net = spec.network
        if not net or net in ("bridge", "none", "host") or net.startswith("container:"):
            return
        if not self.api.networks(names=[net]):
            self.api.create_network(net, labels=conveyor_labels(self.executor_id))

    def start(self, handle: str) -> None:
        with engine_errors():
            self.api.start(handle)

    def stop(self, handle: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; blocks until the container stopped."""
        with engine_errors():
            self.api.stop(handle, timeout=max(0, int(round(grace))))

    def signal(self, handle: str, signal: str) -> None:
        with engine_errors():
            self.api.kill(handle, signal=signal)

    def pause(self, handle: str) -> None:
        with engine_errors():
            self.api.pause(handle)

    def unpause(self, handle: str) -> None:
        with engine_errors():
            self.api.unpause(handle)

    def inspect(self, handle: str) -> ContainerStatus | None:
        """The container's status, or None when the engine says it does not exist."""
        try:
            with engine_errors():
                return container_status(self.api.inspect_container(handle))
        except ContainerNotFound:
            return None

    def remove(self, handle: str) -> None:
        """Remove the container and its anonymous volumes; one already gone (or going) is fine."""
        try:
            with engine_errors():
                self.api.remove_container(handle, force=True, v=True)
        except ContainerNotFound:
            pass
        except EngineError as exc:
            if "already in progress" not in str(exc):
                raise

    def stats(self, handle: str) -> dict:
        with engine_errors():
            return self.api.stats(handle, stream=False)

    def exec(
        self,
        handle: str,
        command: list[str],
        *,
        user: str | None = None,
        workdir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run ``command`` in the running container, without a TTY or stdin, and wait for it.
        EngineError (EngineConflict: "... is not running") when the container is not running."""
        with engine_errors():
            exec_id = self.api.exec_create(
                handle, command, stdout=True, stderr=True, user=user or "", workdir=workdir, environment=env
            )["Id"]
            stdout, stderr = self.api.exec_start(exec_id, demux=True)
            exit_code = self._exec_exit_code(exec_id)
        return ExecResult(exit_code=exit_code, stdout=stdout or b"", stderr=stderr or b"")

    def _exec_exit_code(self, exec_id: str, settle: float = 5.0) -> int:
        """The exec's exit code once it has ended: its output can end first (the command
        closed it), and the engine records the code just after the process is reaped."""
        pause, deadline = 0.01, time.monotonic() + settle
        while True:
            info = self.api.exec_inspect(exec_id)
            if info.get("ExitCode") is not None and not info.get("Running"):
                return info["ExitCode"]
            if not info.get("Running") and time.monotonic() > deadline:
                raise EngineError(f"exec {exec_id[:12]} ended without an exit code")
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    # ------------------------------------------------------------------ input and files

    def attach_stdin(self, handle: str, source: BinaryIO) -> None:
        """Copy ``source`` into the container's stdin in a daemon thread; its stdin is closed
        at EOF. Attach before start and the job misses none of it."""
        with engine_errors():
            attached = self.api.attach_socket(handle, params={"stdin": 1, "stream": 1})
        threading.Thread(target=_pump_stdin, args=(source, attached), daemon=True, name="conveyor-stdin").start()

    def read_archive(self, handle: str, path: str) -> BinaryIO | None:
        """A tar stream (file object) of ``path`` in the container, running or stopped; None
        when the engine answers 404 (no such path there). Reading it raises EngineUnavailable
        if the connection breaks."""
        # The raw response, not the SDK's get_archive: its chunk iterator hands out the
        # HTTP chunks (~32 KB) one by one, a third of the capture time for a large output.
        with engine_errors():
            res = self.api._get(
                self.api._url("/containers/{0}/archive", handle),
                params={"path": path},
                stream=True,
                headers={"Accept-Encoding": "identity"},  # a tar of the job's files: no gzip round trip
            )
        try:
            with engine_errors():
                self.api._raise_for_status(res)
        except EngineError as exc:
            res.close()
            if isinstance(exc, ContainerNotFound):
                return None  # the engine's 404: no such path (or no such container)
            raise
        res.raw.decode_content = True
        return io.BufferedReader(_EngineStream(res), buffer_size=1 << 20)

    # ------------------------------------------------------------------ logs

    def save_logs(self, handle: str, paths: dict[str, Path]) -> dict[str, int]:
        """Copy the engine's log of each stream in ``paths`` ("stdout", "stderr") to its path,
        and when each message was written to ``<path>.times`` (see logtimes), all atomically
        (temp file + rename). The plain files are exactly the job's bytes. One engine read
        for both streams. Returns the bytes saved per stream."""
        with engine_errors():
            tty = bool(self.api.inspect_container(handle)["Config"].get("Tty"))
            files = {name: AtomicLog(path) for name, path in paths.items()}
            try:
                if tty:
                    # Raw stream: message bounds are only the line ends, so the plain copy is
                    # taken on its own and only the index comes from the timestamped stream.
                    for name, log in files.items():
                        log.written = copy_raw(self._log_response(handle, (name,), timestamps=False), log.out)
                        for ts, payload in timestamped_lines(self._log_response(handle, (name,), timestamps=True)):
                            log.times.add(len(payload), ts)
                else:
                    by_fd = {STREAM_FD[name]: log for name, log in files.items()}
                    save_frames(self._log_response(handle, tuple(files), timestamps=True), by_fd)
                for log in files.values():
                    log.commit()
            finally:
                for log in files.values():
                    log.discard()
        return {name: log.written for name, log in files.items()}

    def _log_response(self, handle: str, streams: tuple[str, ...], timestamps: bool):
        """The engine's /logs response, read raw in big blocks (logs.py): the SDK's iterator
        makes two reads per frame (one byte per read for TTY jobs), which dominates saving."""
        params = {"stdout": int("stdout" in streams), "stderr": int("stderr" in streams), "timestamps": int(timestamps), "follow": 0}
        res = self.api._get(self.api._url("/containers/{0}/logs", handle), params=params, stream=True)
        self.api._raise_for_status(res)
        return res

    def follow_logs(
        self,
        handle: str,
        streams: tuple[str, ...],
        tail: int | None = None,
        follow: bool = True,
        timestamps: bool = False,
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` from the engine's log, stdout and stderr kept apart.

        The engine's log driver records from the first byte, so following after start
        loses nothing. One reader thread per stream while the caller iterates. With
        ``timestamps`` every chunk is one whole message, b"<RFC3339Nano time> <bytes>".
        The container going away ends the stream; other failures raise after what was read."""
        chunks: queue.Queue = queue.Queue(maxsize=256)
        # A TTY job's stream is raw bytes: regroup it into whole lines so every chunk carries
        # its own time (a multiplexed stream already gives one frame per message).
        with engine_errors():
            by_line = timestamps and bool(self.api.inspect_container(handle)["Config"].get("Tty"))
        handles = []
        done = object()

        def pump(name: str) -> None:
            try:
                with engine_errors():
                    stream = self.api.logs(
                        handle,
                        stdout=name == "stdout",
                        stderr=name == "stderr",
                        stream=True,
                        follow=follow,
                        tail="all" if tail is None else tail,
                        timestamps=timestamps,
                    )
                    handles.append(stream)
                    for chunk in whole_lines(stream) if by_line else stream:
                        chunks.put((name, chunk))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer below
                chunks.put((name, exc))
            finally:
                chunks.put((name, done))

        readers = [threading.Thread(target=pump, args=(s,), daemon=True, name=f"logs-{s}") for s in streams]
        for r in readers:
            r.start()
        open_streams = len(readers)
        error: Exception | None = None
        try:
            while open_streams:
                name, item = chunks.get()
                if item is done:
                    open_streams -= 1
                elif isinstance(item, Exception):
                    error = error or item
                else:
                    yield name, item
        finally:
            for stream in handles:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001 - closing a dead stream
                    pass
        if isinstance(error, ContainerNotFound):
            return  # removed while followed: its log ends here
        if isinstance(error, ConveyorError):
            raise error
        if error is not None:
            raise EngineError(f"log stream failed: {error}") from error

    # ------------------------------------------------------------------ recover and watch

    def list(self) -> list[ContainerStatus]:
        """Every container this executor made, alive or not."""
        with engine_errors():
            found = self.api.containers(all=True, filters={"label": f"{LABEL_EXECUTOR}={self.executor_id}"})
        statuses = (self.inspect(summary["Id"]) for summary in found)
        return [s for s in statuses if s is not None]  # None: removed since the listing

    def events(self, since: float | None = None) -> Iterator[EngineEvent]:
        """Container events for this executor's containers. The subscription is live when
        this returns; iterate the result to consume it."""
        with engine_errors():
            stream = self.api.events(
                since=since,
                filters={"type": "container", "label": f"{LABEL_EXECUTOR}={self.executor_id}"},
                decode=True,
            )
        with self._events_lock:
            self._events_stream = stream
        return self._decode_events(stream)

    @staticmethod
    def _decode_events(stream) -> Iterator[EngineEvent]:
        try:
            with engine_errors():
                for ev in stream:
                    actor = ev.get("Actor") or {}
                    attrs = actor.get("Attributes") or {}
                    action = (ev.get("Action") or ev.get("status") or "").split(":")[0]
                    yield EngineEvent(
                        action=action,
                        container_id=actor.get("ID") or ev.get("id", ""),
                        job_id=attrs.get(LABEL_JOB),
                        time=ev.get("timeNano", 0) / 1e9 or float(ev.get("time", 0)),
                    )
        except (AttributeError, ValueError) as exc:  # close_events closed it under the reader
            raise EngineUnavailable(f"event stream broke: {exc}") from None

    def close_events(self) -> None:
        with self._events_lock:
            stream, self._events_stream = self._events_stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - already closed
                pass

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> dict[str, int]:
        """Remove the volumes and networks this executor made: counts by kind."""
        label = {"label": f"{LABEL_EXECUTOR}={self.executor_id}"}
        with engine_errors():
            volumes = (self.api.volumes(filters=label) or {}).get("Volumes") or []
            for v in volumes:
                self.api.remove_volume(v["Name"], force=True)
            networks = self.api.networks(filters=label)
            for n in networks:
                self.api.remove_network(n["Id"])
        return {"volumes": len(volumes), "networks": len(networks)}


# ----------------------------------------------------------------------------- streams


class _EngineStream(io.RawIOBase):
    """A streamed engine response as a raw file whose reads raise EngineUnavailable, not
    urllib3's errors, when the connection breaks. A BufferedReader goes on top: this is
    called once per 1 MiB, never per tar header."""

    def __init__(self, res):
        self._res = res

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with engine_errors():
            return self._res.raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._res.close()
        super().close()


def _pump_stdin(source: BinaryIO, attached) -> None:
    """Copy the caller's stdin into the container, then close the container's stdin."""
    sock = getattr(attached, "_sock", attached)
    try:
        while chunk := (source.read1(65536) if hasattr(source, "read1") else source.read(65536)):
            sock.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
