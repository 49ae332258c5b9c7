"""The Docker driver on its own, against the real engine: every call answers in Conveyor's
engine-neutral terms (base.py), never with a docker SDK, requests or urllib3 exception.

Each test builds a DockerBackend with a fresh executor id; everything labelled with that id is
removed at the end.
"""

from __future__ import annotations

import inspect
import io
import os
import socket
import stat
import tarfile
import time
import uuid

import pytest

from conveyor import JobSpec
from conveyor.backends.base import (
    LABEL_EXECUTOR,
    Backend,
    Capabilities,
    ContainerNotFound,
    EngineConflict,
    EngineError,
    EngineUnavailable,
    ExecResult,
    ImageNotFound,
    collect,
)
from conveyor.backends.docker import DockerBackend
from conveyor.spec import ExecSpec


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def backend(docker_client, test_image):
    """A driver with its own executor id; its containers, volumes and networks go afterwards."""
    driver = DockerBackend(f"test-driver-{_uid()}")
    try:
        yield driver
    finally:
        label = {"label": f"{LABEL_EXECUTOR}={driver.executor_id}"}
        for c in docker_client.api.containers(all=True, filters=label):
            docker_client.api.remove_container(c["Id"], force=True, v=True)
        driver.cleanup()
        assert docker_client.api.containers(all=True, filters=label) == []


def _spec(image: str, command: list[str], **fields) -> JobSpec:
    return JobSpec(image=image, command=command, **fields)


def _wait_finished(backend: DockerBackend, handle: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        status = backend.inspect(handle)
        if status is not None and status.finished:
            return status
        assert time.monotonic() < deadline, f"container did not finish: {status}"
        time.sleep(0.05)


# --------------------------------------------------------------------------- the interface itself


def _exec(backend, handle: str, command: list[str], **options) -> ExecResult:
    """A command run to its end through the driver's one exec call."""
    return collect(backend.open_exec(handle, ExecSpec(command=command, **options)))


def test_driver_has_every_call_of_the_interface():
    """The executor, scheduler and supervisor call the driver only through Backend: a call
    renamed or with other parameters on one side would fail a user's job at run time."""
    from conveyor.backends import BACKENDS, backend_class
    from conveyor.backends.router import BackendRouter

    calls = [n for n, v in vars(Backend).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert {"create", "open_exec", "attach_stdin", "save_logs", "read_archive", "cleanup", "version", "check"} <= set(calls)
    for driver in [*(backend_class(n) for n in BACKENDS), BackendRouter]:  # every driver, and the router
        for name in calls:
            ours, theirs = inspect.signature(getattr(driver, name)), inspect.signature(getattr(Backend, name))
            assert list(ours.parameters) == list(theirs.parameters), (driver.__name__, name)


def test_version_and_capabilities(backend, docker_client):
    """`conveyor machine` and the agent report the engine and what it can do; a wrong version
    or a capability declared but missing would send users to features that fail."""
    engine = docker_client.version()
    assert backend.version() == {"name": "docker", "version": engine["Version"], "api_version": engine["ApiVersion"]}
    assert backend.name == "docker"
    assert backend.capabilities == Capabilities(
        pause=True, exec=True, gpus=frozenset({"nvidia", "amd", "intel"}), ports=True, stdin=True,
        recover=True, files=True, image_load=True, stats=True, usage=True, top=True, tty=True, images=True, signals=True,
        oom=True,
    )


def test_unreachable_engine_names_the_fix():
    """With dockerd down or DOCKER_HOST wrong, the user gets one clear error saying what to
    do, not a requests/urllib3 traceback."""
    with pytest.raises(EngineUnavailable, match="start dockerd or set DOCKER_HOST"):
        DockerBackend(f"test-driver-{_uid()}", base_url="unix:///nonexistent.sock")


# --------------------------------------------------------------------------- create


def test_create_twice_is_a_conflict_that_finds_the_first(backend, test_image):
    """A scheduler that crashed after create but before recording the container creates
    again on restart: it must learn "exists already" (and adopt that container by its name),
    not fail the job with an engine error."""
    job_id = f"j{_uid()}"
    first = backend.create(job_id, _spec(test_image, ["true"]))
    with pytest.raises(EngineConflict, match="already in use"):
        backend.create(job_id, _spec(test_image, ["true"]))
    assert backend.find(job_id).id == first
    assert backend.find(f"j{_uid()}") is None


def test_create_with_missing_image_is_image_not_found(backend):
    """A job whose image is gone fails as image_missing (with the image named), not as a
    generic start failure, and leaves no container behind."""
    image = f"conveyor/no-such-image-{_uid()}:latest"
    with pytest.raises(ImageNotFound) as caught:
        backend.create(f"j{_uid()}", _spec(image, ["true"]))
    assert caught.value.image == image
    assert backend.list() == []


# --------------------------------------------------------------------------- a container that is gone


@pytest.mark.parametrize(
    "call",
    [
        lambda b, h: b.signal(h, "SIGTERM"),
        lambda b, h: b.pause(h),
        lambda b, h: b.unpause(h),
        lambda b, h: b.start(h),
        lambda b, h: b.stop(h, 0),
        lambda b, h: _exec(b, h, ["true"]),
        lambda b, h: b.attach_stdin(h, io.BytesIO(b"x")),
        lambda b, h: b.stats(h),
    ],
    ids=["signal", "pause", "unpause", "start", "stop", "exec", "attach_stdin", "stats"],
)
def test_calls_on_a_removed_container_are_container_not_found(backend, test_image, call):
    """A container removed behind Conveyor's back (docker rm, a crash) must read as "gone",
    which callers handle (container_lost), not as an unknown engine failure."""
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["true"]))
    backend.remove(handle)
    with pytest.raises(ContainerNotFound, match="No such container"):
        call(backend, handle)


def test_inspect_of_missing_is_none_and_remove_is_idempotent(backend, test_image):
    """Reconciliation asks about containers that may be gone; and cancel, cleanup and
    auto-remove may all remove the same one: none of that may raise."""
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["true"]))
    backend.remove(handle)
    assert backend.inspect(handle) is None
    backend.remove(handle)
    backend.remove(f"conveyor-never-made-{_uid()}")


def test_following_the_log_of_a_removed_container_ends(backend, test_image):
    """`conveyor logs -f` of a job whose container was just removed ends quietly (the stored
    copy has the rest) instead of failing."""
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["true"]))
    backend.remove(handle)
    assert list(backend.follow_logs(handle, ("stdout", "stderr"), None, False)) == []


# --------------------------------------------------------------------------- exec


def test_exec_keeps_stdout_stderr_and_exit_code_apart(backend, test_image):
    """`conveyor exec` must give the command's own exit code and must not mix its error
    output into its data output."""
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["sleep", "60"]))
    backend.start(handle)
    result = _exec(backend, handle, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    result = _exec(backend, handle, ["sh", "-c", 'echo "$FOO $(id -u) $(pwd)"'], user="1000", workdir="/tmp", env={"FOO": "bar"})
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"bar 1000 /tmp\n", b"")


def test_exec_into_a_stopped_container_is_an_engine_error(backend, test_image):
    """exec into a job that has ended must say so in the engine's words, not hang or raise
    an SDK exception."""
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["true"]))
    backend.start(handle)
    _wait_finished(backend, handle)
    with pytest.raises(EngineError, match="is not running"):
        _exec(backend, handle, ["true"])


# --------------------------------------------------------------------------- stdin, files, logs


def test_attach_stdin_feeds_the_job_and_closes_its_stdin(backend, test_image, tmp_path):
    """`conveyor run -i` must deliver every byte to the job and then close its stdin, or a
    `cat` job would wait for input forever."""
    # Text, more than a pipe buffer: the engine's json-file log keeps invalid UTF-8 as U+FFFD.
    data = b"".join(b"line %d of the caller's stdin\n" % i for i in range(20000))
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["cat"], stdin_open=True))
    backend.attach_stdin(handle, io.BytesIO(data))
    backend.start(handle)
    status = _wait_finished(backend, handle)
    assert status.exit_code == 0
    saved = backend.save_logs(handle, {"stdout": tmp_path / "stdout", "stderr": tmp_path / "stderr"})
    assert saved == {"stdout": len(data), "stderr": 0}
    assert (tmp_path / "stdout").read_bytes() == data


def test_save_logs_of_a_missing_container_leaves_no_partial_files(backend, test_image, tmp_path):
    """A failed log save must say the container is gone and leave no half-written log that
    a later read would take for the job's output."""
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["true"]))
    backend.remove(handle)
    with pytest.raises(ContainerNotFound):
        backend.save_logs(handle, {"stdout": tmp_path / "stdout", "stderr": tmp_path / "stderr"})
    assert os.listdir(tmp_path) == []


def test_read_archive_of_missing_path_is_none_and_of_a_file_its_tar(backend, test_image):
    """An output path the job never created is recorded as absent, not as a failed capture;
    one it did create comes back byte for byte."""
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["sh", "-c", "echo captured > /tmp/out.txt"]))
    backend.start(handle)
    _wait_finished(backend, handle)
    assert backend.read_archive(handle, f"/no/such/path-{_uid()}") is None
    stream = backend.read_archive(handle, "/tmp/out.txt")
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            member = tar.next()
            assert member.name == "out.txt"
            assert tar.extractfile(member).read() == b"captured\n"
    finally:
        stream.close()


def _socket_fds() -> set[int]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                found.add(int(name))
        except OSError:
            pass
    return found


def test_archive_stream_broken_mid_read_is_engine_unavailable(backend, test_image):
    """When the engine connection drops while outputs are read, the supervisor must see
    "engine unavailable" (and retry later) rather than an urllib3 error it has to guess at,
    which would record the job's outputs as not captured."""
    handle = backend.create(f"j{_uid()}", _spec(test_image, ["dd", "if=/dev/urandom", "of=/tmp/big", "bs=1M", "count=16"]))
    backend.start(handle)
    _wait_finished(backend, handle)
    before = _socket_fds()
    reader = DockerBackend(backend.executor_id)  # its connections are the only new sockets
    stream = reader.read_archive(handle, "/tmp/big")
    try:
        assert len(stream.read(1000)) == 1000
        for fd in _socket_fds() - before:
            with socket.socket(fileno=os.dup(fd)) as s:
                s.shutdown(socket.SHUT_RDWR)  # the connection breaks under the reader
        with pytest.raises(EngineUnavailable):
            while stream.read(1 << 20):
                pass
    finally:
        stream.close()


def _chunked_response(body: bytes, chunk_sizes, read_sizes):
    """A fake streamed engine response: ``body`` in HTTP chunks of the given sizes, read by
    ``_body_blocks`` in reads of the given sizes (as a socket hands out what has come)."""
    import random
    import types

    wire, pos = [], 0
    while pos < len(body):
        n = chunk_sizes()
        wire.append(b"%x\r\n" % len(body[pos : pos + n]) + body[pos : pos + n] + b"\r\n")
        pos += n
    raw = io.BytesIO(b"".join(wire) + b"0\r\n\r\n")

    class Reads(io.BytesIO):
        def read1(self, n=-1):
            return raw.read(min(n, read_sizes()))

    inner = types.SimpleNamespace(chunked=True, chunk_left=None, fp=Reads())
    return types.SimpleNamespace(raw=types.SimpleNamespace(_fp=inner), close=lambda: None), random


@pytest.mark.parametrize("reads", ["tiny", "big"])
def test_save_frames_splits_streams_and_times_across_every_boundary(tmp_path, reads):
    """The log splitter against a per-message reference: frames of every size (0 to 3 KB)
    on both streams, straddling HTTP chunks and socket reads at every offset, times in
    new seconds, in a shorter form, and missing (a message without a time shares the last)."""
    import random

    from conveyor.backends.docker.logs import AtomicLog, save_frames
    from conveyor.logtimes import TimesWriter, read_times

    rnd = random.Random(7)
    frames, expected = [], {1: [], 2: []}
    reference = {fd: TimesWriter(io.BytesIO()) for fd in (1, 2)}
    for i in range(3000):
        fd = rnd.choice((1, 2))
        payload = rnd.randbytes(rnd.choice((0, 1, 99, rnd.randrange(3000))))
        second, frac = 1_800_000_000 + i // 400, rnd.randrange(10**9)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        ts += b".%09dZ" % frac if i % 97 else b".5Z"
        message = ts + b" " + payload if i % 211 else b"x" * 60  # no space in its first 48 bytes: no time
        if i % 211:
            expected[fd].append(payload)
            reference[fd].add(len(payload), ts)
        else:
            expected[fd].append(message)
            reference[fd].add(len(message), b"")
        frames.append(bytes([fd, 0, 0, 0]) + len(message).to_bytes(4, "big") + message)
    sizes = (lambda: rnd.randrange(1, 40)) if reads == "tiny" else (lambda: 1 << 20)
    res, _ = _chunked_response(b"".join(frames), lambda: rnd.randrange(1, 5000), sizes)
    logs = {fd: AtomicLog(tmp_path / name) for fd, name in ((1, "stdout"), (2, "stderr"))}
    save_frames(res, logs)
    for fd, log in logs.items():
        log.commit()
        assert log.path.read_bytes() == b"".join(expected[fd]) and log.written == len(log.path.read_bytes())
        reference[fd].flush()
        ref_path = tmp_path / f"ref-{fd}.times"
        ref_path.write_bytes(reference[fd]._out.getvalue())
        assert read_times(log.times_path) == read_times(ref_path)
        assert log.times_path.read_bytes() == ref_path.read_bytes()
