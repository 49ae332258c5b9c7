"""The docker stand-in: Conveyor answering as `docker`, for tools that shell out to docker.

Installed as ``docker`` (``conveyor docker-shim DIR`` writes the link; the ``conveyor``
executable behaves as docker when called by that name), every container such a tool starts is
a Conveyor job: admitted against the node's capacity, supervised, logged, kept across crashes,
listed by ``conveyor ps`` with the label ``conveyor.client=<the calling tool>``.

docker's flags, output formats and exit codes are the contract here: the flags parse as the
docker CLI parses them (flags.py), a command's output is docker's, and errors have docker's
shape and exit code (125 for `run`'s own failures, the job's code otherwise, 1 for the other
verbs). A flag or verb the stand-in does not support is refused in that shape, naming it.

The verbs: run (run.py); pull, images, load, version, info (images.py); inspect, ps, stats,
kill, stop, rm, wait, logs (containers.py); also under ``docker image ...`` and ``docker
container ...``. commands.py declares, finds and runs them; flags.py parses their flags.
Stdlib only, like the Conveyor client it speaks through: a workflow step pays no import of
click, pydantic or the docker SDK.
"""

from __future__ import annotations



def main(argv: list[str]) -> int:
    # The verbs are loaded here, not when the package is: `conveyor` itself reads its hot
    # verbs' flags with flags.py and needs none of them.
    from . import containers, images, run  # noqa: F401 - each registers its commands
    from .commands import main as docker_main

    return docker_main(argv)


__all__ = ["main"]
