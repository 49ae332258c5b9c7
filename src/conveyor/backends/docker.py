"""The Docker backend: JobSpec -> Engine API calls, through the docker SDK's low-level client.

`container_config()` and `host_config()` are pure mappings (unit-testable without an engine);
`DockerBackend` does the I/O. Nothing outside this module knows the Engine API.
"""

from __future__ import annotations

import glob
import io
import grp
import os
import queue
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest
from docker.types import Mount as DockerMount
from docker.types import Ulimit as DockerUlimit

from ..errors import ConveyorError, EngineUnavailable, ImageNotFound, InvalidSpec
from ..spec import GpuRequest, GpuVendor, JobSpec, PullPolicy
from ..logtimes import TimesWriter, times_path
from .base import LABEL_EXECUTOR, LABEL_JOB, LABEL_MANAGED, LABEL_NAME, ContainerStatus, EngineEvent

_CONNECTION_ERRORS = (requests.exceptions.ConnectionError, ConnectionError, docker.errors.DockerException)

# ----------------------------------------------------------------------------- pure mapping


def conveyor_labels(executor_id: str, job_id: str | None = None, name: str | None = None) -> dict[str, str]:
    labels = {LABEL_MANAGED: "true", LABEL_EXECUTOR: executor_id}
    if job_id:
        labels[LABEL_JOB] = job_id
    if name:
        labels[LABEL_NAME] = name
    return labels


def container_config(spec: JobSpec, labels: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_container`` (without host_config)."""
    entrypoint = spec.entrypoint
    if entrypoint == []:
        entrypoint = [""]  # the Engine API's way of saying "clear the image's entrypoint"
    return {
        "image": spec.image,
        "command": spec.full_command,
        "entrypoint": entrypoint,
        "environment": [f"{k}={v}" for k, v in spec.env.items()],
        "working_dir": spec.workdir,
        "user": spec.user or "",
        "hostname": spec.hostname,
        "labels": {**spec.labels, **labels},
        "tty": spec.tty,
        "stdin_open": spec.stdin_open,
        "ports": [(p.container_port, p.protocol) for p in spec.ports] or None,
    }


def host_config(spec: JobSpec) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_host_config``. Never sets auto_remove:
    Conveyor removes containers itself, after their results are stored."""
    res = spec.resources
    cfg: dict[str, Any] = {
        "mounts": [_mount(m) for m in spec.mounts],
        "port_bindings": _port_bindings(spec),
        "network_mode": spec.network or "bridge",
        "ipc_mode": spec.ipc_mode or None,
        "uts_mode": spec.uts_mode or None,
        "pid_mode": spec.pid_mode or None,
        "privileged": spec.privileged,
        "shm_size": spec.shm_size,
        "ulimits": [DockerUlimit(name=u.name, soft=u.soft, hard=u.hard) for u in spec.ulimits] or None,
        "restart_policy": (
            {"Name": spec.restart.name, "MaximumRetryCount": spec.restart.max_retries}
            if spec.restart.name != "no"
            else None
        ),
        "nano_cpus": int(res.cpus * 1e9) if res.cpus else None,
        "mem_limit": res.memory,
        "memswap_limit": res.memory_swap,
        "pids_limit": res.pids_limit,
    }
    if res.gpus is not None:
        cfg.update(gpu_host_config(res.gpus))
    return {k: v for k, v in cfg.items() if v not in (None, [], {})}


def _mount(m) -> DockerMount:
    if m.type == "tmpfs":
        return DockerMount(target=m.target, source=None, type="tmpfs", read_only=m.read_only, tmpfs_size=m.size)
    return DockerMount(target=m.target, source=m.source, type=m.type, read_only=m.read_only)


def _port_bindings(spec: JobSpec) -> dict[str, Any]:
    bindings: dict[str, Any] = {}
    for p in spec.ports:
        host = (p.host_ip, p.host_port) if p.host_ip else p.host_port
        bindings.setdefault(f"{p.container_port}/{p.protocol}", []).append(host)
    return bindings


def gpu_host_config(gpus: GpuRequest, dri_root: str = "/dev/dri") -> dict[str, Any]:
    """GPUs by vendor: NVIDIA through device requests (the NVIDIA container toolkit does the
    rest); AMD and Intel by passing device nodes, as their container guides prescribe."""
    if gpus.vendor is GpuVendor.NVIDIA:
        request = DeviceRequest(
            driver="nvidia",
            count=-1 if gpus.all else (gpus.count or 0),
            device_ids=gpus.device_ids or None,
            capabilities=[["gpu"]],
        )
        return {"device_requests": [request]}
    if gpus.all:
        nodes = [dri_root]
    elif gpus.device_ids:
        nodes = [_render_node(d, dri_root) for d in gpus.device_ids]
    else:
        present = sorted(glob.glob(os.path.join(dri_root, "renderD*")))
        if len(present) < (gpus.count or 0):
            raise InvalidSpec.single(
                "resources.gpus.count",
                gpus.count,
                f"this host has {len(present)} {gpus.vendor.value} GPU render node(s) in {dri_root}; "
                "ask for fewer, or for 'all'",
            )
        nodes = present[: gpus.count]
    if gpus.vendor is GpuVendor.AMD:
        # ROCm needs the compute interface /dev/kfd next to the render nodes, and the
        # job's user in the group owning them.
        return {
            "devices": [f"/dev/kfd:/dev/kfd:rwm", *(f"{n}:{n}:rwm" for n in nodes)],
            "group_add": _host_groups("video", "render"),
        }
    return {"devices": [f"{n}:{n}:rwm" for n in nodes]}


def _render_node(device_id: str, dri_root: str) -> str:
    if device_id.startswith("/dev/"):
        return device_id
    if device_id.isdigit():
        return os.path.join(dri_root, f"renderD{128 + int(device_id)}")
    raise InvalidSpec.single(
        "resources.gpus.device_ids", device_id, "for AMD/Intel use a GPU index (0, 1, ...) or a /dev/dri/renderD* path"
    )


def _host_groups(*names: str) -> list[str]:
    """Numeric ids of the host groups that own GPU device nodes (the image may not know the
    names); 'video' by name when the host has no such group."""
    out = []
    for name in names:
        try:
            out.append(str(grp.getgrnam(name).gr_gid))
        except KeyError:
            if name == "video":
                out.append("video")
    return out


def _engine_time(text: str | None) -> float | None:
    if not text or text.startswith("0001-01-01"):
        return None
    # Engine times carry nanoseconds; Python parses up to microseconds.
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


def _status(attrs: dict) -> ContainerStatus:
    state = attrs.get("State") or {}
    status = state.get("Status", "unknown")
    finished = _engine_time(state.get("FinishedAt"))
    return ContainerStatus(
        id=attrs["Id"],
        status=status,
        # A container that failed to start stays "created" but carries 126/127 like a shell.
        exit_code=state.get("ExitCode") if status in ("exited", "dead") or state.get("ExitCode") else None,
        oom_killed=bool(state.get("OOMKilled")),
        started_at=_engine_time(state.get("StartedAt")),
        finished_at=finished if status in ("exited", "dead") else None,
        error=state.get("Error") or None,
        labels=(attrs.get("Config") or {}).get("Labels") or {},
    )


# ----------------------------------------------------------------------------- the driver


class DockerBackend:
    name = "docker"

    def __init__(self, executor_id: str, base_url: str | None = None, timeout: int = 120):
        self.executor_id = executor_id
        try:
            if base_url:
                self.api = docker.APIClient(base_url=base_url, version="auto", timeout=timeout)
            else:
                self.api = docker.from_env(version="auto", timeout=timeout).api
            self.api.ping()
        except _CONNECTION_ERRORS as exc:
            raise EngineUnavailable(
                f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
            ) from None
        self._events_stream = None
        self._events_lock = threading.Lock()

    # ------------------------------------------------------------------ images

    def ensure_image(self, spec: JobSpec, refresh: bool = True) -> None:
        """Make the image present as the pull policy says. ``refresh=False`` does not pull
        again an image that is present (the submitter already honoured ``always``)."""
        present = self._image_present(spec.image)
        if spec.pull is PullPolicy.NEVER and not present:
            raise ImageNotFound(spec.image, "not present on this node and the pull policy is 'never'")
        if (spec.pull is PullPolicy.ALWAYS and refresh) or not present:
            repo, tag = _split_reference(spec.image)
            try:
                self.api.pull(repo, tag=tag)
            except docker.errors.APIError as exc:
                raise ImageNotFound(spec.image, f"pull failed: {exc.explanation or exc}") from None

    def _image_present(self, image: str) -> bool:
        try:
            self.api.inspect_image(image)
            return True
        except docker.errors.NotFound:
            return False

    # ------------------------------------------------------------------ lifecycle

    def create(self, job_id: str, spec: JobSpec) -> str:
        labels = conveyor_labels(self.executor_id, job_id, spec.name)
        hc = host_config(spec)
        self._prepare_mounts(spec)
        self._prepare_network(spec)
        created = self.api.create_container(
            **container_config(spec, labels),
            host_config=self.api.create_host_config(**hc),
            name=f"conveyor-{job_id}",
        )
        return created["Id"]

    def _prepare_mounts(self, spec: JobSpec) -> None:
        uid, gid = _numeric_user(spec.user)
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

    def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; blocks until the container stopped."""
        self.api.stop(container_id, timeout=max(0, int(round(grace))))

    def attach_stdin(self, container_id: str):
        """A socket whose writes reach the container's stdin (attach before start)."""
        return self.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})

    def start(self, container_id: str) -> None:
        self.api.start(container_id)

    def signal(self, container_id: str, signal: str) -> None:
        self.api.kill(container_id, signal=signal)

    def pause(self, container_id: str) -> None:
        self.api.pause(container_id)

    def unpause(self, container_id: str) -> None:
        self.api.unpause(container_id)

    def inspect(self, container_id: str) -> ContainerStatus | None:
        """The container's status, or None when the engine says it does not exist."""
        try:
            return _status(self.api.inspect_container(container_id))
        except docker.errors.NotFound:
            return None

    def stats(self, container_id: str) -> dict:
        return self.api.stats(container_id, stream=False)

    def remove(self, container_id: str) -> None:
        try:
            self.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise

    def get_archive(self, container_id: str, path: str):
        """A tar stream (file object) of ``path`` in the container, running or stopped; None
        when the path does not exist there."""
        # The raw response, not the SDK's get_archive: its chunk iterator hands out the
        # HTTP chunks (~32 KB) one by one, a third of the capture time for a large output.
        res = self.api._get(self.api._url("/containers/{0}/archive", container_id), params={"path": path}, stream=True,
                         headers={"Accept-Encoding": "identity"})  # a tar of the job's files: no gzip round trip
        try:
            self.api._raise_for_status(res)
        except docker.errors.NotFound:
            res.close()
            return None
        res.raw.decode_content = True
        return io.BufferedReader(res.raw, buffer_size=1 << 20)

    def load_image(self, stream) -> list[str]:
        """Load an image tarball (``docker save`` format) into the engine; the image ids it
        holds (sha256:...)."""
        ids: list[str] = []
        for msg in self.api.load_image(stream):
            if "error" in msg:
                raise ConveyorError(f"image load failed: {msg['error']}")
            text = msg.get("stream", "")
            for prefix in ("Loaded image ID: ", "Loaded image: "):
                if text.startswith(prefix):
                    ref = text[len(prefix):].strip()
                    ids.append(self.api.inspect_image(ref)["Id"])
        return list(dict.fromkeys(ids))

    def image_tags(self, image_id: str) -> list[str]:
        return self.api.inspect_image(image_id).get("RepoTags") or []

    def list(self) -> list[ContainerStatus]:
        """Every container this executor made, alive or not."""
        found = self.api.containers(all=True, filters={"label": f"{LABEL_EXECUTOR}={self.executor_id}"})
        out = []
        for summary in found:
            status = self.inspect(summary["Id"])
            if status is not None:
                out.append(status)
        return out

    # ------------------------------------------------------------------ logs

    def save_logs(self, container_id: str, stream: str, path: Path) -> int:
        """Save one stream of the engine's log; see save_all_logs."""
        return self.save_all_logs(container_id, {stream: path})[stream]

    def save_all_logs(self, container_id: str, paths: dict[str, Path]) -> dict[str, int]:
        """Copy the engine's log of each stream in ``paths`` ("stdout", "stderr") to its path,
        and when each message was written to ``<path>.times`` (see logtimes), all atomically
        (temp file + rename). The plain files are exactly the job's bytes. One engine read
        for both streams. Returns the bytes saved per stream."""
        tty = bool(self.api.inspect_container(container_id)["Config"].get("Tty"))
        files = {name: _AtomicLog(path) for name, path in paths.items()}
        try:
            if tty:
                # Raw stream: message bounds are only the line ends, so the plain copy is
                # taken on its own and only the index comes from the timestamped stream.
                for name, log in files.items():
                    log.written = _copy_raw(self._log_response(container_id, (name,), timestamps=False), log.out)
                    for ts, payload in _timestamped_lines(self._log_response(container_id, (name,), timestamps=True)):
                        log.times.add(len(payload), ts)
            else:
                by_fd = {_STREAM_FD[name]: log for name, log in files.items()}
                _save_frames(self._log_response(container_id, tuple(files), timestamps=True), by_fd)
            for log in files.values():
                log.commit()
        finally:
            for log in files.values():
                log.discard()
        return {name: log.written for name, log in files.items()}

    def _log_response(self, container_id: str, streams: tuple[str, ...], timestamps: bool):
        """The engine's /logs response, read raw in big blocks below: the SDK's iterator
        makes two reads per frame (one byte per read for TTY jobs), which dominates saving."""
        params = {"stdout": int("stdout" in streams), "stderr": int("stderr" in streams), "timestamps": int(timestamps), "follow": 0}
        res = self.api._get(self.api._url("/containers/{0}/logs", container_id), params=params, stream=True)
        self.api._raise_for_status(res)
        return res

    def follow_logs(
        self,
        container_id: str,
        streams: tuple[str, ...],
        tail: int | None = None,
        follow: bool = True,
        timestamps: bool = False,
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, chunk)`` from the engine's log, stdout and stderr kept apart.

        The engine's log driver records from the first byte, so following after start
        loses nothing. One reader thread per stream while the caller iterates. With
        ``timestamps`` every chunk is one whole message, b"<RFC3339Nano time> <bytes>"."""
        chunks: queue.Queue = queue.Queue(maxsize=256)
        # A TTY job's stream is raw bytes: regroup it into whole lines so every chunk carries
        # its own time (a multiplexed stream already gives one frame per message).
        by_line = timestamps and bool(self.api.inspect_container(container_id)["Config"].get("Tty"))
        handles = []
        done = object()

        def pump(name: str) -> None:
            try:
                handle = self.api.logs(
                    container_id,
                    stdout=name == "stdout",
                    stderr=name == "stderr",
                    stream=True,
                    follow=follow,
                    tail="all" if tail is None else tail,
                    timestamps=timestamps,
                )
                handles.append(handle)
                for chunk in _whole_lines(handle) if by_line else handle:
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
            for handle in handles:
                try:
                    handle.close()
                except Exception:  # noqa: BLE001 - closing a dead stream
                    pass
        if error is not None and not isinstance(error, docker.errors.NotFound):
            raise ConveyorError(f"log stream failed: {error}")

    # ------------------------------------------------------------------ events

    def events(self, since: float | None = None) -> Iterator[EngineEvent]:
        """Container events for this executor's containers. The subscription is live when
        this returns; iterate the result to consume it."""
        try:
            stream = self.api.events(
                since=since,
                filters={"type": "container", "label": f"{LABEL_EXECUTOR}={self.executor_id}"},
                decode=True,
            )
        except _CONNECTION_ERRORS as exc:
            raise EngineUnavailable(f"event stream: {exc}") from None
        with self._events_lock:
            self._events_stream = stream
        return self._decode_events(stream)

    @staticmethod
    def _decode_events(stream) -> Iterator[EngineEvent]:
        try:
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
        except _CONNECTION_ERRORS + (AttributeError, ValueError) as exc:
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

    def remove_volumes_and_networks(self) -> dict[str, int]:
        label = {"label": f"{LABEL_EXECUTOR}={self.executor_id}"}
        volumes = (self.api.volumes(filters=label) or {}).get("Volumes") or []
        for v in volumes:
            self.api.remove_volume(v["Name"], force=True)
        networks = self.api.networks(filters=label)
        for n in networks:
            self.api.remove_network(n["Id"])
        return {"volumes": len(volumes), "networks": len(networks)}


# ----------------------------------------------------------------------------- log streams

_BLOCK = 1 << 20
_STREAM_FD = {"stdout": 1, "stderr": 2}


def _body_blocks(res) -> Iterator[bytes]:
    """The body of a streamed engine response in blocks of up to 1 MiB.

    The engine sends its log as one HTTP chunk per message; http.client decodes those one
    at a time with several calls each, which was 60% of the time spent saving a big log.
    So when the body is chunked and untouched, the chunk framing is taken apart here, a
    block at a time. The connection is closed afterwards, never reused."""
    inner = getattr(res.raw, "_fp", None)
    fp = getattr(inner, "fp", None)
    if not (getattr(inner, "chunked", False) and inner.chunk_left is None and hasattr(fp, "read1")):
        while block := res.raw.read(_BLOCK):
            yield block
        return
    try:
        buf, pos = b"", 0
        while True:
            more = fp.read1(_BLOCK)
            buf = buf[pos:] + more if pos < len(buf) else more
            pos, out = 0, []
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
                if size == 0:
                    if out:
                        yield b"".join(out)
                    return
                start, end = eol + 2, eol + 2 + size
                if end + 2 > len(buf):
                    break
                out.append(buf[start:end])
                pos = end + 2
            if out:
                yield b"".join(out)
            if not more:
                raise ConveyorError("the engine's log stream ended in the middle of a chunk")
    finally:
        res.close()


def _copy_raw(res, out) -> int:
    written = 0
    for block in _body_blocks(res):
        out.write(block)
        written += len(block)
    return written


def _split_time(message: bytes | memoryview) -> tuple[bytes, bytes | memoryview]:
    """b"<time> <payload>" -> (time, payload); the time is at most ~35 bytes."""
    space = bytes(message[:40]).find(b" ")
    if space < 0:
        return b"", message
    return bytes(message[:space]), message[space + 1 :]


def _save_frames(res, by_fd: dict[int, "_AtomicLog"]) -> None:
    """Split a multiplexed, timestamped log stream (8-byte header: fd, 0, 0, 0, big-endian
    length; then b"<time> <payload>") into each stream's file and times index.

    This loop runs once per log message (a million for 100 MB of short lines), so it is
    written flat: payloads are views into a 1 MiB block, written together per block."""
    buf = b""
    pending: dict[int, list] = {fd: [] for fd in by_fd}
    for block in _body_blocks(res):
        buf = buf + block if buf else block
        view, pos, size, find = memoryview(buf), 0, len(buf), buf.find
        while pos + 8 <= size:
            start = pos + 8
            end = start + int.from_bytes(buf[pos + 4 : start], "big")
            if end > size:
                break
            fd = buf[pos]
            if fd in pending:  # else a stream that was not asked for
                space = find(b" ", start, min(start + 48, end))
                ts = buf[start:space] if space >= 0 else b""
                first = space + 1 if space >= 0 else start
                pending[fd].append(view[first:end])
                by_fd[fd].times.add(end - first, ts)
            pos = end
        for fd, views in pending.items():
            if views:
                log = by_fd[fd]
                log.out.writelines(views)
                log.written += sum(map(len, views))
                views.clear()
        view.release()
        buf = buf[pos:]


class _AtomicLog:
    """A log file and its times index, written to temp files and renamed into place."""

    def __init__(self, path: Path):
        self.path, self.times_path = path, times_path(path)
        self.tmp = path.with_name(f".{path.name}.partial")
        self.times_tmp = self.times_path.with_name(f".{self.times_path.name}.partial")
        self.out = open(self.tmp, "wb")
        self._index = open(self.times_tmp, "wb")
        self.times = TimesWriter(self._index)
        self.written = 0

    def commit(self) -> None:
        self.times.flush()
        for f in (self.out, self._index):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        os.replace(self.times_tmp, self.times_path)  # the index first: a saved log always has its times
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        for f in (self.out, self._index):
            f.close()
        for tmp in (self.tmp, self.times_tmp):
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _timestamped_lines(res) -> Iterator[tuple[bytes, bytes]]:
    """Messages of a raw (TTY) log stream: each line starts with its time."""
    rest = b""
    for block in _body_blocks(res):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield _split_time(line + b"\n")
    if rest:
        yield _split_time(rest)


def _whole_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        if b"\n" in chunk:
            *lines, rest = rest.split(b"\n")
            yield from (line + b"\n" for line in lines)
    if rest:
        yield rest


def _split_reference(image: str) -> tuple[str, str | None]:
    """``host:5000/name:tag`` -> (``host:5000/name``, ``tag``); digests stay whole."""
    if "@" in image:
        return image, None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def _numeric_user(user: str | None) -> tuple[int | None, int | None]:
    if not user:
        return None, None
    uid, _, gid = user.partition(":")
    return (int(uid) if uid.isdigit() else None, int(gid) if gid.isdigit() else None)
