"""How the CLI prints: plain aligned columns for lists (as docker does), JSON with --json, one
red line for errors. rich is loaded only by the commands that draw tables."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import EXIT_CONVEYOR_ERROR, ConveyorError, ImageNotFound, InvalidSpec


# rich and pydantic (through the spec) cost ~0.25 s of imports: only the commands that use
# them load them, so `conveyor --help` and the quick verbs start fast.
class _LazyConsole:
    def __init__(self, **options: Any):
        self._options, self._console = options, None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


def Console(**options: Any):  # noqa: N802 - stands in for rich's class
    from rich.console import Console as RichConsole

    return RichConsole(**options)


def Table(*args: Any, **kwargs: Any):  # noqa: N802 - stands in for rich's class
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


err_console = _LazyConsole(stderr=True, highlight=False)


def error_line(message: str) -> None:
    # escape(): messages quote user input ("[..." in a YAML error is no style tag)
    err_console.print(f"[bold red]conveyor:[/] {escape(message)}", soft_wrap=True)


def fail(message: str, code: int = EXIT_CONVEYOR_ERROR) -> None:
    error_line(message)
    sys.exit(code)


def report_error(exc: ConveyorError) -> None:
    """A ConveyorError as the CLI ends with it: one red line (a line per field for a bad
    spec, naming the flag), exit 125."""
    if isinstance(exc, InvalidSpec):
        from .jobspec import flag_for

        lines = []
        for field, value, hint in exc.problems:
            flag = flag_for(field)
            where = f"{field} ({flag})" if flag else field
            hint = " ".join(str(hint).split())  # one line per field, even for YAML parser errors
            lines.append(f"  {where}: {value!r} is not valid; {hint}")
        fail(f"invalid {exc.what}:\n" + "\n".join(lines))
    if isinstance(exc, ImageNotFound):
        fail(f"{exc} (IMAGE, --pull)")
    fail(str(exc))


def echo(text: str, nl: bool = True, err: bool = False) -> None:
    """click.echo's output without loading click (the hot verbs start without it): plain
    ASCII is written as click writes it; anything else (ANSI codes click strips off a
    non-terminal, text for a stream click re-encodes) goes through click.echo itself."""
    stream = sys.stderr if err else sys.stdout
    if not text.isascii() or "\x1b" in text:
        import click

        click.echo(text, nl=nl, err=err)
    elif stream is not None:
        stream.write(text + "\n" if nl else text)
        stream.flush()


def timestamp(value: float | None) -> str:
    from datetime import datetime  # here: `ps` and `run` start without it

    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def size(n: int | float) -> str:
    for unit, unit_size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= unit_size:
            return f"{n / unit_size:.1f} {unit}"
    return f"{n:g} B"


def state_label(job: dict) -> str:
    """``Failed/oom_killed``; a plain exit says only the state."""
    substate = job.get("substate")
    return job["state"] + (f"/{substate}" if substate and substate != "exited" else "")


def columns(rows: list[tuple[str, ...]]) -> str:
    """Plain aligned columns, as `docker ps` prints: rich's table layout took ~7 ms a row
    (20 s for 3,000 jobs), and a pipe into grep/awk wants whole values, not wrapped cells."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def print_jobs(jobs: list[dict], as_json: bool) -> None:
    if as_json:
        echo(json.dumps(jobs, indent=2))
        return
    for j in jobs:
        echo(f"{j['id']}  {state_label(j)}")


def print_array(summary: dict, as_json: bool) -> None:
    if as_json:
        echo(json.dumps(summary, indent=2))
        return
    counts = "  ".join(f"{state}={n}" for state, n in summary["states"].items()) or "no tasks"
    limit = summary.get("max_parallel") or "-"
    affected = f"  ({summary['affected']} affected)" if "affected" in summary else ""
    echo(
        f"{summary['id']}  tasks {summary['begin']}-{summary['end']}:{summary['step']}  "
        f"max-parallel {limit}  {counts}{affected}"
    )
