"""Data: content-addressed inputs and outputs (README: Data).

End-to-end against the real engine: inputs frozen at submit, outputs captured (also of a
failing job), chaining through a fileset digest, dedup, verify, gc, path safety, image load.
Plus unit tests of the path rules and of restore's refusal to write outside its target.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from conveyor import Executor, InvalidSpec, JobSpec, JobState
from conveyor.cas import BlobStore, CasError, CorruptBlob, Entry, Fileset, UnsafePath, check_path
from helpers import CONVEYOR, AgentProcess, SupervisorProcess, eventually, sh

WAIT = 60


def stdout(ex: Executor, job_id: str) -> str:
    return b"".join(chunk for _, chunk in ex.logs(job_id, "stdout")).decode()


def blob_count(state_dir: Path) -> int:
    return sum(1 for p in (state_dir / "cas" / "blobs").rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- unit: paths


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", ".", "..", "a\0b", "a\\b"])
def test_check_path_refuses(bad):
    with pytest.raises(UnsafePath):
        check_path(bad)


@pytest.mark.parametrize("good", ["a", "a/b/c.txt", ".hidden", "a..b", "x/..y"])
def test_check_path_accepts(good):
    assert check_path(good) == good


def _evil_manifest(blobs: BlobStore, path: str) -> str:
    digest = blobs.put_bytes(b"evil")
    doc = {"conveyor": "fileset/1", "entries": {path: {"digest": digest, "size": 4, "mode": 0o644}}}
    return blobs.put_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


@pytest.mark.parametrize("path", ["../escape.txt", "/abs/escape.txt", "sub/../../escape.txt"])
def test_restore_refuses_traversal_in_manifest(tmp_path, path):
    blobs = BlobStore(tmp_path / "cas")
    digest = _evil_manifest(blobs, path)
    target = tmp_path / "out" / "target"
    with pytest.raises(CasError):
        blobs.restore(digest, target)
    assert not (tmp_path / "out" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/abs/escape.txt").exists()
    assert not target.exists() or not any(target.rglob("*"))


def test_restore_does_not_follow_symlink_planted_in_target(tmp_path):
    blobs = BlobStore(tmp_path / "cas")
    d = blobs.put_bytes(b"payload")
    fs_digest = blobs.put_fileset(Fileset({"sub/f.txt": Entry("sub/f.txt", d, 7, 0o644)}))
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "sub")  # target/sub -> outside
    with pytest.raises(UnsafePath):
        blobs.restore(fs_digest, target)
    assert list(outside.iterdir()) == []


def test_blob_write_is_atomic_and_deduplicated_and_reads_verify(tmp_path):
    blobs = BlobStore(tmp_path / "cas")
    a = blobs.put_bytes(b"hello")
    assert blobs.put_bytes(b"hello") == a
    assert blobs.read(a) == b"hello"
    assert list((tmp_path / "cas" / "tmp").iterdir()) == []  # no temp file left behind
    path = blobs.path(a)
    os.chmod(path, 0o644)
    path.write_bytes(b"hellO")
    with pytest.raises(CorruptBlob):
        blobs.read(a)
    with pytest.raises(CorruptBlob):
        blobs.copy_to(a, io.BytesIO())


def test_capture_tar_refuses_links_and_traversal(tmp_path):
    blobs = BlobStore(tmp_path / "cas")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, kind, data in [("out", tarfile.DIRTYPE, b""), ("out/ok.txt", tarfile.REGTYPE, b"ok"),
                                 ("out/../../etc/x", tarfile.REGTYPE, b"x"), ("out/link", tarfile.SYMTYPE, b"")]:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
            tar.addfile(info, io.BytesIO(data) if data else None)
    raw.seek(0)
    fs = blobs.capture_tar(raw)
    assert list(fs.entries) == ["ok.txt"]
    reasons = {s["path"]: s["reason"] for s in fs.skipped}
    assert "out/../../etc/x" in reasons and "link" in reasons


def _tar_of(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_capture_tar_reads_ahead_files_larger_than_its_buffer(tmp_path):
    """Capture reads the archive ahead in a thread (8 blocks of 1 MiB): a file bigger than
    all of it, and small files around it, come out whole and hashed, and the thread ends."""
    big = os.urandom(9 * (1 << 20) + 12345)
    files = {"out/a.bin": b"a" * 700, "out/big.bin": big, "out/sub/c.bin": os.urandom(3 * (1 << 20))}
    files.update({f"out/many/{i}.txt": str(i).encode() * i for i in range(200)})
    blobs = BlobStore(tmp_path / "cas")
    fs = blobs.capture_tar(io.BytesIO(_tar_of(files)))
    assert set(fs.entries) == {name[4:] for name in files}
    for name, data in files.items():
        entry = fs.entries[name[4:]]
        assert entry.size == len(data) and blobs.read(entry.digest) == data
    assert not [t for t in threading.enumerate() if t.name.startswith("conveyor-capture-")]
    assert list((tmp_path / "cas" / "tmp").iterdir()) == []


def test_capture_tar_stream_broken_midway_raises_and_leaves_nothing(tmp_path):
    """The engine's stream breaking in the middle of a big file (read in the read-ahead
    thread) fails the capture with that error: no fileset, no temp file, no thread left."""
    from conveyor.backends.base import EngineUnavailable

    data = _tar_of({"out/big.bin": os.urandom(6 * (1 << 20)), "out/after.bin": b"x"})

    class Broken(io.RawIOBase):
        def __init__(self):
            self.src = io.BytesIO(data[: 4 * (1 << 20)])

        def readable(self):
            return True

        def readinto(self, buffer):
            n = self.src.readinto(buffer)
            if not n:
                raise EngineUnavailable("the connection broke")
            return n

    blobs = BlobStore(tmp_path / "cas")
    with pytest.raises(EngineUnavailable, match="connection broke"):
        blobs.capture_tar(io.BufferedReader(Broken()))
    assert not [t for t in threading.enumerate() if t.name.startswith("conveyor-capture-")]
    assert list((tmp_path / "cas" / "tmp").iterdir()) == []


def test_capture_tar_write_failure_raises_and_leaves_nothing(tmp_path, monkeypatch):
    """A blob file that cannot be written (here: its prefix directory cannot be made, as on a
    full or broken disk) fails the capture with that error, from the writer thread to the
    caller: no temp file, no thread left, and the blobs before it are whole."""
    blobs = BlobStore(tmp_path / "cas")
    good, bad = b"first", b"\x07" * (3 * (1 << 20))  # fixed: their prefixes differ
    bad_prefix = blobs.path(BlobStore(tmp_path / "other").put_bytes(bad)).parent.name
    assert blobs.path(BlobStore(tmp_path / "other").put_bytes(good)).parent.name != bad_prefix
    (blobs.blobs / bad_prefix).write_bytes(b"in the way")  # a file where the directory must go
    with pytest.raises(OSError):
        blobs.capture_tar(io.BytesIO(_tar_of({"out/a.txt": good, "out/b.bin": bad, "out/c.txt": b"after"})))
    assert not [t for t in threading.enumerate() if t.name.startswith("conveyor-capture-")]
    assert list((tmp_path / "cas" / "tmp").iterdir()) == []
    assert blobs.read(BlobStore(tmp_path / "other").put_bytes(good)) == good


def test_spec_validates_inputs_and_outputs():
    with pytest.raises(InvalidSpec) as err:
        JobSpec(image="busybox", outputs=["relative/out"])
    assert "outputs[0]" in str(err.value)
    with pytest.raises(InvalidSpec) as err:
        JobSpec(image="busybox", inputs=["sha256:abc:/data"])
    assert "inputs[0].source" in str(err.value)
    with pytest.raises(InvalidSpec):
        JobSpec(image="busybox", inputs=["/tmp:/data"], outputs=["/data"])


# ----------------------------------------------------------------------------- end to end


def test_input_frozen_at_submit(ex, test_image, tmp_path, state_dir):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("old content\n")
    (data / "sub" / "b.txt").write_text("bee\n")
    single = tmp_path / "single.txt"
    single.write_text("single old\n")
    job_id = ex.submit(sh(test_image, "cat /in/a.txt /in/sub/b.txt /one.txt; echo x > /in/new 2>/dev/null || echo readonly",
                          inputs=[f"{data}:/in", f"{single}:/one.txt"], network="none"), hold=True)
    stored = ex.info(job_id).spec
    assert all(i.source.startswith("sha256:") for i in stored.inputs), stored.inputs  # never a host path
    (data / "a.txt").write_text("NEW content\n")
    single.write_text("single NEW\n")
    ex.release(job_id)
    job = ex.wait(job_id, timeout=WAIT)
    assert job.state is JobState.DONE, (job.state, job.message, stdout(ex, job_id))
    assert stdout(ex, job_id) == "old content\nbee\nsingle old\nreadonly\n"
    assert not (state_dir / "staging" / job_id).exists()  # staging removed after the end


def test_output_of_failing_job_captured_and_restored(ex, test_image, tmp_path, docker_client):
    job_id = ex.submit(sh(test_image, "mkdir -p /out/d && echo result > /out/r.txt && printf 'deep' > /out/d/x.bin "
                                      "&& ln -s /etc/passwd /out/link && exit 3",
                          outputs=["/out"], auto_remove=True, network="none"))
    job = ex.wait(job_id, timeout=WAIT)
    assert job.state is JobState.FAILED and job.exit_code == 3
    files = {f["path"]: f for f in ex.outputs(job_id)}
    assert set(files) == {"/out/r.txt", "/out/d/x.bin"}  # the symlink is not captured
    assert files["/out/r.txt"]["size"] == 7
    assert ex.read_output(job_id, "/out/d/x.bin") == b"deep"
    dest = tmp_path / "restored"
    ex.restore_outputs(job_id, dest)
    assert (dest / "out" / "r.txt").read_text() == "result\n"
    assert (dest / "out" / "d" / "x.bin").read_bytes() == b"deep"
    assert not (dest / "out" / "link").exists()
    # the container goes (auto_remove, right after the result is recorded), the outputs stay
    eventually("the container removed", lambda: not docker_client.containers.list(all=True, sparse=True, filters={"name": f"conveyor-{job_id}"}))
    assert ex.read_output(job_id, "/out/d/x.bin") == b"deep"


def test_chained_jobs_and_dedup(ex, test_image, state_dir):
    first = ex.submit(sh(test_image, "mkdir -p /out && echo same > /out/a && echo same > /out/b && echo 42 > /out/n",
                         outputs=["/out"], network="none"))
    assert ex.wait(first, timeout=WAIT).state is JobState.DONE
    digest = ex.filesets(first)["/out"]
    # same content stored once: a, b and n -> 2 file blobs + 1 manifest
    assert blob_count(state_dir) == 3
    second = ex.submit(sh(test_image, "cat /prev/n; cat /prev/a", inputs=[f"{digest}:/prev"], network="none"))
    job = ex.wait(second, timeout=WAIT)
    assert job.state is JobState.DONE, job.message
    assert stdout(ex, second) == "42\nsame\n"
    assert blob_count(state_dir) == 3  # chaining copied nothing


def test_verify_catches_flipped_byte_and_deleted_blob(cli, test_image, state_dir):
    """A blob that rots on disk is reported (with the jobs that use it) and never served."""
    job_id = cli.submit("--output", "/out", test_image, "sh", "-c", "mkdir -p /out && echo aaaa > /out/one && echo bbbb > /out/two")
    cli.ok("wait", job_id)
    ex = Executor(state_dir, supervise=False)  # the agent supervises; this one reads the store
    assert ex.verify(job_id)["bad"] == []
    files = {f["path"]: f["digest"] for f in ex.outputs(job_id)}
    one = ex.blobs.path(files["/out/one"])
    os.chmod(one, 0o644)
    data = bytearray(one.read_bytes())
    data[0] ^= 0x01
    one.write_bytes(bytes(data))
    ex.blobs.path(files["/out/two"]).unlink()
    report = ex.verify()
    bad = {b["digest"]: b for b in report["bad"]}
    assert bad[files["/out/one"]]["problem"] == "corrupt" and bad[files["/out/one"]]["jobs"] == [job_id]
    assert bad[files["/out/two"]]["problem"] == "missing" and bad[files["/out/two"]]["jobs"] == [job_id]
    with pytest.raises(CorruptBlob):  # never served as good data
        ex.read_output(job_id, "/out/one")
    ex.close()
    proc = cli.run("verify", "--all")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert b"corrupt" in proc.stdout and b"missing" in proc.stdout and job_id.encode() in proc.stdout


def test_gc_keeps_what_a_queued_job_needs(ex, test_image, tmp_path, state_dir):
    data = tmp_path / "in"
    data.mkdir()
    (data / "f").write_text("needed\n")
    ex.blobs.put_bytes(b"garbage nobody references")
    held = ex.submit(sh(test_image, "cat /in/f", inputs=[f"{data}:/in"], network="none"), hold=True)
    result = ex.gc(grace=0)
    assert result["removed"] == 1
    assert ex.verify(held)["bad"] == []
    ex.release(held)
    job = ex.wait(held, timeout=WAIT)
    assert job.state is JobState.DONE and stdout(ex, held) == "needed\n"


def test_input_symlink_escaping_and_evil_fileset_refused(ex, test_image, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    (data / "ok").write_text("ok")
    os.symlink("/etc/passwd", data / "escape")
    with pytest.raises(InvalidSpec) as err:
        ex.submit(sh(test_image, "true", inputs=[f"{data}:/in"], network="none"))
    assert "inputs[0].source" in str(err.value)
    evil = _evil_manifest(ex.blobs, "../../etc/evil")
    with pytest.raises(InvalidSpec):
        ex.submit(sh(test_image, "true", inputs=[f"{evil}:/in"], network="none"))
    assert ex.list() == []


def test_cli_outputs_cat_and_restore(cli, test_image, tmp_path):
    job_id = cli.submit("--output", "/out", test_image, "sh", "-c", "mkdir -p /out && echo from-cli > /out/hello.txt")
    cli.ok("wait", job_id)
    assert "/out/hello.txt\t9\tsha256:" in cli.ok("outputs", job_id)
    assert cli.ok("cat", job_id, "/out/hello.txt") == "from-cli\n"
    cli.ok("outputs", job_id, "--to", str(tmp_path / "r"))
    assert (tmp_path / "r" / "out" / "hello.txt").read_text() == "from-cli\n"


def test_image_load_from_tarball(ex, docker_client, test_image, tmp_path):
    tag = f"conveyor-test/loaded:{os.getpid()}"
    docker_client.images.get(test_image).tag(tag)
    tar = tmp_path / "image.tar"
    try:
        with open(tar, "wb") as f:
            for chunk in docker_client.api.get_image(tag):
                f.write(chunk)
        docker_client.images.remove(tag)
        result = ex.load_image(tar)
        assert result["file_digest"].startswith("sha256:")
        assert any(tag in img["tags"] for img in result["images"]), result
        recorded = ex.store.images()
        assert recorded and recorded[0]["file_digest"] == result["file_digest"]
        job = ex.run(JobSpec(image=tag, command=["echo", "loaded"], network="none", pull="never"), timeout=WAIT)
        assert job.state is JobState.DONE and stdout(ex, job.id) == "loaded\n"
    finally:
        try:
            docker_client.images.remove(tag)
        except Exception:  # noqa: BLE001
            pass


def test_sigkill_between_capture_record_and_remove_loses_no_output(state_dir, tmp_path, docker_client, test_image):
    (state_dir / "config.toml").write_text("[defaults]\ncpus = 0\n")
    sup = SupervisorProcess(state_dir, tmp_path)
    client = Executor(state_dir, supervise=False)
    try:
        sup.start(fault="after-outputs")
        job_id = client.submit(sh(test_image, "mkdir -p /out && echo kept > /out/k.txt; exit 4", outputs=["/out"], auto_remove=True, network="none"))
        sup.wait_fault("after-outputs", job_id)
        sup.kill()
        first = client.filesets(job_id)
        assert client.info(job_id).state is JobState.RUNNING  # captured, not yet recorded
        cid = client.store.get(job_id).container_id
        assert docker_client.api.inspect_container(cid)["State"]["Status"] == "exited"
        sup.start()  # finalizes again: captures again (same digest), records, then removes
        eventually("job recorded and container removed",
                   lambda: client.info(job_id).state.is_final
                   and not docker_client.containers.list(all=True, sparse=True, filters={"name": f"conveyor-{job_id}"}))
        job = client.info(job_id)
        assert (job.state, job.exit_code) == (JobState.FAILED, 4)
        assert client.filesets(job_id) == first
        assert client.read_output(job_id, "/out/k.txt") == b"kept\n"
    finally:
        sup.stop()
        client.close()
        with Executor(state_dir) as ex:
            ex.cleanup()


def test_through_the_agent_cli_inputs_and_outputs(state_dir, tmp_path, test_image):
    """With an agent running, the CLI freezes local inputs itself and reads outputs through
    the API (Client.outputs / read_output / verify)."""
    from conveyor import Client

    env = {**os.environ, "CONVEYOR_HOME": str(state_dir)}
    data = tmp_path / "in.txt"
    data.write_text("through the agent\n")
    agent = AgentProcess(state_dir).start()
    try:
        out = subprocess.run([CONVEYOR, "submit", "--network", "none", "--input", f"{data}:/in.txt", "--output", "/out",
                              test_image, "sh", "-c", "mkdir -p /out && cp /in.txt /out/copy.txt"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        job_id = out.stdout.strip()
        data.write_text("changed after submit\n")
        c = Client(state_dir)
        job = c.wait(job_id, timeout=WAIT)
        assert job.state is JobState.DONE, job.message
        assert [f["path"] for f in c.outputs(job_id)] == ["/out/copy.txt"]
        assert c.read_output(job_id, "/out/copy.txt") == b"through the agent\n"
        assert c.verify(job_id)["bad"] == []
        cat = subprocess.run([CONVEYOR, "cat", job_id, "/out/copy.txt"], capture_output=True, text=True, env=env, timeout=60)
        assert cat.stdout == "through the agent\n", cat.stderr
    finally:
        agent.stop()
        with Executor(state_dir) as ex:
            ex.cleanup()


def test_outputs_restore_and_image_load_through_a_remote_agent(state_dir, tmp_path, docker_client, test_image):
    """`outputs --to` and `image load` used to run on the local state directory only and were
    refused through CONVEYOR_HOST. Through the agent's API they work from anywhere: the files
    are streamed, verified by the agent, and land only under the target directory."""
    from conveyor import Client

    agent = AgentProcess(state_dir).start()  # also on TCP: the remote path
    remote = {**os.environ, "CONVEYOR_HOST": agent.url, "CONVEYOR_TOKEN": agent.token,
              "CONVEYOR_HOME": str(tmp_path / "elsewhere")}
    tag = f"conveyor-test/remote-load:{os.getpid()}"
    try:
        c = Client(url=agent.url, token=agent.token)
        job = c.run(sh(test_image, "mkdir -p /out/sub && echo one > /out/a.txt && echo two > /out/sub/b.txt",
                       outputs=["/out"], network="none"), timeout=WAIT)
        assert job.state is JobState.DONE, job.message
        written = c.restore_outputs(job.id, tmp_path / "lib")
        assert sorted(Path(p).relative_to(tmp_path / "lib").as_posix() for p in written) == ["out/a.txt", "out/sub/b.txt"]
        assert (tmp_path / "lib" / "out" / "sub" / "b.txt").read_text() == "two\n"
        out = subprocess.run([CONVEYOR, "outputs", job.id, "--to", str(tmp_path / "cli")],
                             capture_output=True, text=True, env=remote, timeout=120)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "cli" / "out" / "a.txt").read_text() == "one\n"
        assert not (tmp_path / "elsewhere" / "conveyor.db").exists()  # nothing local was used

        docker_client.images.get(test_image).tag(tag)
        tar = tmp_path / "image.tar"
        with open(tar, "wb") as f:
            for chunk in docker_client.api.get_image(tag):
                f.write(chunk)
        docker_client.images.remove(tag)
        loaded = subprocess.run([CONVEYOR, "image", "load", "--json", str(tar)],
                                capture_output=True, text=True, env=remote, timeout=120)
        assert loaded.returncode == 0, loaded.stderr
        result = json.loads(loaded.stdout)
        assert result["file_digest"].startswith("sha256:")
        assert any(tag in img["tags"] for img in result["images"]), result
        job = c.run(JobSpec(image=tag, command=["echo", "loaded"], network="none", pull="never"), timeout=WAIT)
        assert job.state is JobState.DONE and job.stdout == "loaded\n"
        with Executor(state_dir, supervise=False) as view:  # recorded by the agent, with the file's name
            assert [i["file_name"] for i in view.store.images()] == ["image.tar"]
    finally:
        agent.stop()
        with Executor(state_dir) as ex:
            ex.cleanup()
        try:
            docker_client.images.remove(tag)
        except Exception:  # noqa: BLE001 - not loaded (the test failed before)
            pass
