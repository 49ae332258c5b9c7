"""The `conveyor` command line, shaped like docker's.

One module per group of commands: running jobs (run.py), controlling them (control.py, made
from the operations table), looking at them and the node (views.py), data (data.py), the agent
(serve.py). They register on the one group in app.py.
"""

from . import control, data, run, serve, tokens, views  # noqa: F401 - each registers its commands
from .app import cli


def main() -> None:
    cli(prog_name="conveyor")


__all__ = ["cli", "main"]
