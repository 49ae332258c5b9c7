"""`conveyor docker-shim DIR`: install the docker stand-in as DIR/docker, and `conveyor docker
...`, the stand-in under Conveyor's own name (see conveyor.dockercli)."""

from __future__ import annotations

import os
import shutil
import sys

import click

from .app import cli, fail


@cli.command("docker-shim")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Replace a DIR/docker that is not the stand-in.")
def docker_shim(directory: str, force: bool) -> None:
    """Write DIR/docker, a link to this conveyor that answers as docker: put DIR first on
    PATH and every container a tool starts with `docker run` is a Conveyor job.

    \b
    conveyor docker-shim ~/.local/share/conveyor/bin
    PATH=~/.local/share/conveyor/bin:$PATH cwltool workflow.cwl inputs.yml
    """
    target = _conveyor_executable()
    link = os.path.join(os.path.abspath(os.path.expanduser(directory)), "docker")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(target):
            click.echo(link)
            return
        if not force:
            fail(f"{link} exists and is not the stand-in; remove it, or pass --force to replace it")
        os.remove(link)
    os.symlink(target, link)
    click.echo(link)


@cli.command("docker", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                         "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def docker(args: tuple[str, ...]) -> None:
    """The docker stand-in under Conveyor's name: `conveyor docker run ...` is `docker run ...`
    through DIR/docker."""
    from ..dockercli import main

    sys.exit(main(list(args)))


def _conveyor_executable() -> str:
    """The `conveyor` console script this process runs as (the stand-in must be the same
    installation), else the one on PATH."""
    here = os.path.abspath(sys.argv[0])
    if os.path.basename(here) == "conveyor" and os.access(here, os.X_OK):
        return here
    found = shutil.which("conveyor")
    if found is None:
        fail("cannot find the conveyor executable to link to; install conveyor so that `conveyor` is on PATH")
    return os.path.abspath(found)
