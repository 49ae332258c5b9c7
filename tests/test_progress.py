"""Progress on a terminal: `wait` on an array (done/running/queued), `pull` (each layer),
`run` of a missing image (its pull), `gc`; and none of it when the output is not a terminal or
with --json. The console script under a real pseudo-terminal, the real engine and registry.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from helpers import CONVEYOR, in_terminal, untag

ESCAPE = b"\x1b["
BAR = "━".encode()  # rich's bar


@pytest.fixture
def cli(fresh_cli):
    return fresh_cli


@pytest.fixture
def layered(docker_client, test_image, registry):
    """An image with a layer of its own (3 MB of random bytes on the test image) pushed to the
    local registry as REPO:1 and removed here, layer and all, so that a pull downloads and
    extracts a layer (an image whose layers the engine has already shows no layer at all);
    yields (REPO:1, its digest)."""
    repo = f"{registry}/conveyor-layered-{uuid.uuid4().hex[:8]}"
    box = docker_client.containers.run(test_image, ["sh", "-c", "head -c 3000000 /dev/urandom > /blob"],
                                       detach=True, network_mode="none")
    try:
        assert box.wait(timeout=60)["StatusCode"] == 0
        box.commit(repo, "1")
    finally:
        box.remove(force=True)
    digest = None
    for line in docker_client.images.push(repo, tag="1", stream=True, decode=True):
        assert "error" not in line, line
        digest = (line.get("aux") or {}).get("Digest", digest)
    untag(docker_client, repo)
    yield f"{repo}:1", digest
    untag(docker_client, repo)


def lines(out: bytes) -> list[str]:
    return out.decode().splitlines()


def plain(out: bytes) -> bytes:
    """What is left of a terminal's bytes without its escape sequences."""
    return re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", out)


def test_wait_on_an_array_counts_on_a_terminal_and_prints_plain_lines_elsewhere(cli, test_image):
    """Prevents a silent terminal while an array runs (no idea how far it is), and the opposite
    failure: bars and escape sequences in a pipe, a file or --json, which break the scripts
    that read `wait`'s lines."""
    array = cli.ok("submit", "--network", "none", "--array", "1-4", "--max-parallel", "2", test_image,
                   "sh", "-c", "sleep 2").strip()
    code, out = in_terminal([CONVEYOR, "wait", array], cli.env())
    assert code == 0, out
    text = out.decode()
    assert ESCAPE in out and BAR in out
    assert "running 2  queued 2" in text or "running 2  queued 1" in text, text[-3000:]
    assert re.search(r"done 4  running 0  queued 0 .*4/4", text), text[-3000:]
    tasks = [t["id"] for t in json.loads(cli.ok("ps", "-a", "--json"))]
    assert sorted(re.findall(r"([0-9a-f]{12})  0  Done\r\n", text)) == sorted(tasks)

    # the same wait into a pipe: one plain line per task, nothing else
    piped = cli.run("wait", array)
    assert piped.returncode == 0 and ESCAPE not in piped.stdout + piped.stderr
    assert sorted(lines(piped.stdout)) == sorted(f"{t}  0  Done" for t in tasks)

    # --json on a terminal: the JSON lines alone, no bar
    code, out = in_terminal([CONVEYOR, "wait", "--json", array], cli.env())
    assert code == 0 and ESCAPE not in out and BAR not in out, out
    assert sorted(json.loads(line)["id"] for line in lines(out)) == sorted(tasks)


def test_pull_shows_each_layer_on_a_terminal_and_only_its_result_elsewhere(cli, layered, docker_client):
    """Prevents a pull that looks hung (minutes of nothing for a large image) on a terminal,
    and progress frames in a log file or pipe; a `run` of a missing image shows its pull too."""
    name, digest = layered
    repo = name.rsplit(":", 1)[0]
    code, out = in_terminal([CONVEYOR, "pull", name], cli.env())
    assert code == 0, out
    assert docker_client.images.get(name).attrs["RepoDigests"] == [f"{repo}@{digest}"]  # pulled
    assert ESCAPE in out and BAR in out
    own_layer = rb"[0-9a-f]{12}: "
    for step in (b"Downloading", b"Extracting", b"Pull complete", b"Already exists"):  # the base layer is here
        assert re.search(own_layer + step, out), (step, out[-3000:])
    assert re.search(rb"MB", out), out[-3000:]  # bytes, as they come
    summary = [f"1: Pulling from {repo.split('/', 1)[1]}", f"Digest: {digest}", f"Status: Downloaded newer image for {name}"]
    assert lines(plain(out))[-3:] == summary  # the bars are erased; these stay

    untag(docker_client, repo)
    piped = cli.run("pull", name)
    assert piped.returncode == 0 and ESCAPE not in piped.stdout + piped.stderr
    assert lines(piped.stdout) == summary

    untag(docker_client, repo)
    code, out = in_terminal([CONVEYOR, "run", "--network", "none", name, "echo", "pulled and ran"], cli.env())
    assert code == 0, out
    text = out.decode()
    assert f"Unable to find image '{name}' locally" in text and f"Digest: {digest}" in text
    assert text.rstrip().endswith("pulled and ran")
    for job in cli.jobs():
        cli.ok("rm", job["id"])  # its container holds the image
    untag(docker_client, repo)
    piped = cli.run("run", "--network", "none", name, "echo", "quietly")
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, b"quietly\n", b"")  # the agent pulled it, silently
    assert docker_client.images.get(name).attrs["RepoDigests"] == [f"{repo}@{digest}"]
    for job in cli.jobs():
        cli.ok("rm", job["id"])


def test_gc_spins_on_a_terminal_only(cli, test_image):
    """Prevents a gc of a large content store that says nothing until it ends, on a terminal,
    and a spinner in a pipe."""
    cli.ok("run", "--network", "none", test_image, "true")  # an agent and a store to collect
    code, out = in_terminal([CONVEYOR, "gc", "--grace", "0s"], cli.env())
    assert code == 0, out
    assert b"collecting garbage" in out and ESCAPE in out
    assert re.search(rb"removed \d+ blob\(s\), .*; kept \d+", out), out
    piped = cli.run("gc", "--grace", "0s")
    assert piped.returncode == 0 and ESCAPE not in piped.stdout and b"collecting" not in piped.stdout
    assert re.fullmatch(rb"removed \d+ blob\(s\), [^\n]*; kept \d+\n", piped.stdout), piped.stdout


def test_staging_inputs_and_restoring_outputs_show_progress_on_a_terminal_only(cli, test_image, tmp_path):
    """Prevents a submit that copies a large input, or a restore of large outputs, saying
    nothing on a terminal for as long as it takes; and their progress in a pipe."""
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.bin").write_bytes(b"x" * 2_000_000)
    args = ["submit", "--network", "none", "--input", f"{data}:/in", "--output", "/out", test_image,
            "sh", "-c", "mkdir -p /out && cp /in/a.bin /out/a.bin && echo small > /out/b.txt"]
    code, out = in_terminal([CONVEYOR, *args], cli.env())
    assert code == 0, out
    assert b"staging 1 input(s)" in out and ESCAPE in out
    job = lines(plain(out))[-1].strip()
    assert re.fullmatch(r"[0-9a-f]{12}", job), out
    piped = cli.run(*args)
    assert piped.returncode == 0 and ESCAPE not in piped.stdout and b"staging" not in piped.stdout + piped.stderr
    cli.ok("wait", job)

    code, out = in_terminal([CONVEYOR, "outputs", job, "--to", str(tmp_path / "back")], cli.env())
    assert code == 0, out
    assert b"restoring 2 file(s)" in out and BAR in out and re.search(rb"2\.0(/2\.0)? MB", out), out[-2000:]
    assert (tmp_path / "back" / "out" / "a.bin").read_bytes() == b"x" * 2_000_000
    piped = cli.run("outputs", job, "--to", str(tmp_path / "again"))
    assert (piped.returncode, piped.stdout) == (0, f"restored 2 file(s) under {tmp_path / 'again'}\n".encode())
