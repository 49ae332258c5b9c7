"""The `conveyor` command line, shaped like docker's.

One module per group of commands: running jobs (run.py, following a job with foreground.py),
commands and ports inside running jobs (execs.py, ports.py),
controlling them (control.py, made from the operations table), looking at them and the node
(views.py), provenance (provenance.py), data (data.py), the agent (serve.py), tokens (tokens.py).
They register on the one group in app.py. Called by the name ``docker``, the same executable is the docker stand-in
(``conveyor.dockercli``), which starts without click.

Nothing is imported here at import time: the stand-in uses this package's click-free modules
(foreground, jobspec's build_spec, format) without loading the click commands, and so do the
hot verbs `run` and `ps` (fast.py), which start without click.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def main() -> None:
    if os.path.basename(sys.argv[0]) == "docker":
        from ..dockercli import main as docker_main

        sys.exit(docker_main(sys.argv[1:]))
    from .fast import main as fast_main

    fast_main(sys.argv[1:])  # `run` and `ps` without click; it returns if click is to answer
    _group()(prog_name="conveyor")


def _group():
    from . import control, data, execs, leases, ports, provenance, run, serve, shim, tokens, usage, views  # noqa: F401 - each registers its commands
    from .app import cli

    return cli


def __getattr__(name: str) -> Any:
    if name == "cli":  # `from conveyor.cli import cli`: the group with every command on it
        return _group()
    raise AttributeError(name)


__all__ = ["cli", "main"]
