"""The hot verbs' fast path (cli/fast.py): `conveyor run` and `conveyor ps` start without click,
read their flags exactly as click's commands read them (the same tables), and leave to click
every command line they would read differently, so every answer stays click's.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import CONVEYOR

from conveyor.cli import cli as click_group
from conveyor.cli.fast import main as fast_main
from conveyor.cli.flagtable import parse
from conveyor.cli.jobspec import JOB_FLAGS
from conveyor.cli.psview import PS_FLAGS
from conveyor.dockercli.flags import FlagProblem, FlagSet


def _imported(stderr: bytes) -> set[str]:
    """The modules ``python -X importtime`` reported."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.decode().splitlines() if line.startswith("import time:")}


def test_run_and_ps_start_without_click(cli):
    env = cli.env()
    for args, expected in ((["run", "--rm", "--network", "none", cli.image, "sh", "-c", "echo out; exit 3"], 3), (["ps", "-a"], 0)):
        proc = subprocess.run([sys.executable, "-X", "importtime", CONVEYOR, *args], capture_output=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=90)
        assert proc.returncode == expected, proc.stderr[-2000:]
        loaded = _imported(proc.stderr)
        assert "conveyor.cli.fast" in loaded
        assert not {"click", "pydantic", "docker", "fastapi"} & loaded, sorted({"click", "pydantic", "docker", "fastapi"} & loaded)
    assert b"out\n" in subprocess.run([CONVEYOR, "run", "--network", "none", cli.image, "echo", "out"], capture_output=True,
                                       env=env, stdin=subprocess.DEVNULL, timeout=90).stdout


def test_what_the_fast_path_does_not_read_goes_to_click(cli):
    """A usage error, --help or a pflag-only spelling: click's answer, click loaded."""
    env = cli.env()
    for args in (["run", "--rm=true", cli.image, "true"], ["run", "--help"], ["ps", "-n", "x"], ["ps", "extra"],
                 ["run", "--pull", "sometimes", cli.image, "true"], ["run"], ["--version"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", CONVEYOR, *args], capture_output=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=90)
        assert "click" in _imported(proc.stderr), args
        assert proc.returncode in (0, 125), (args, proc.returncode, proc.stderr[-2000:])


RUN_LINES = [
    ["IMAGE"],
    ["--rm", "--network", "none", "IMAGE", "true"],
    ["-it", "--rm", "IMAGE", "sh", "-c", "echo --rm"],
    ["-eA=1", "-e", "B", "--env=C=x=y", "-v", "/a:/b:ro", "-v/c:/d", "--net", "host", "-w/tmp", "IMAGE"],
    ["--pids-limit", "12", "--priority=-3", "--retries", "2", "--pull", "always", "--gpu-vendor", "amd", "--gpus", "1", "IMAGE"],
    ["--name", "a", "--name", "b", "-l", "k=v", "--label", "x", "IMAGE", "--", "-x"],
    ["--", "IMAGE", "cmd"],
    ["-i", "-t", "-u", "1000:1000", "--entrypoint", "", "IMAGE", "-", "--help"],
    [],
]
PS_LINES = [[], ["-a"], ["-aq"], ["-n", "3"], ["-n3", "--no-trunc"], ["--last=2", "-f", "status=exited", "--filter=name=x"],
            ["--state", "Running", "-l", "a=b", "--format", "{{.ID}}"], ["--json", "--latest"]]
REFUSED = [["--rm=true", "IMAGE"], ["-e=A=1", "IMAGE"], ["-t=false", "IMAGE"], ["--pids-limit", "x", "IMAGE"],
           ["--pull", "sometimes", "IMAGE"], ["--nope", "IMAGE"], ["--help"], ["-e"]]


@pytest.mark.parametrize("argv", RUN_LINES, ids=" ".join)
def test_run_flags_read_as_click_reads_them(argv):
    ctx = click_group.commands["run"].make_context("run", list(argv))
    options, positional = parse(FlagSet(JOB_FLAGS), argv, interspersed=False)
    assert {**options, "image": positional[0] if positional else None, "command": tuple(positional[1:])} == ctx.params


@pytest.mark.parametrize("argv", PS_LINES, ids=" ".join)
def test_ps_flags_read_as_click_reads_them(argv):
    ctx = click_group.commands["ps"].make_context("ps", list(argv))
    options, positional = parse(FlagSet(PS_FLAGS), argv)
    assert positional == [] and options == ctx.params


@pytest.mark.parametrize("argv", REFUSED, ids=" ".join)
def test_spellings_click_reads_otherwise_are_left_to_click(argv):
    with pytest.raises(FlagProblem):
        parse(FlagSet(JOB_FLAGS), argv, interspersed=False)
    assert fast_main(["run", *argv]) is None  # returned: click takes the command line


def test_other_verbs_and_group_flags_are_left_to_click():
    for argv in (["submit", "IMAGE"], ["--help"], ["--version"], ["--home"], ["logs", "x"], ["--nope", "ps"]):
        assert fast_main(argv) is None
