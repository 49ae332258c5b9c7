"""Progress on a terminal for long work: image pulls, input staging, `wait` on many jobs, gc,
restoring outputs.

Shown only when both stdout and stderr are terminals and the command was not asked for
``--json``: a pipe, a file or a program reading the output gets the plain lines alone, never
a bar or an escape sequence. Drawn with rich (loaded only when a bar is drawn), on stdout, where
lines printed meanwhile (``wait``'s one line per ended job) appear above it; the bar is erased
when the work ends.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    from rich.progress import Progress


def wanted(as_json: bool = False) -> bool:
    """Whether to draw progress: on a terminal (stdout and stderr both), without --json."""
    return not as_json and sys.stdout.isatty() and sys.stderr.isatty()


def bar(*, counts: bool = True, transfer: bool = False) -> "Progress":
    """A rich Progress on stdout: a spinner, the description, a bar, and done/total (items) or
    bytes and speed (``transfer``), and the time elapsed."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if transfer:
        columns += [DownloadColumn(), TransferSpeedColumn()]
    elif counts:
        columns.append(MofNCompleteColumn())
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=Console(file=sys.stdout, highlight=False), transient=True)


# The statuses after which a layer needs nothing more (the engine's words).
LAYER_DONE = ("Pull complete", "Already exists")


@contextlib.contextmanager
def spinner(text: str, enabled: bool) -> Iterator[None]:
    """A spinner and the time elapsed while one long call runs (gc, a submit that stages
    inputs): the agent reports no steps, so no bar pretends to know how far it is."""
    if not enabled:
        yield
        return
    with bar(counts=False) as progress:
        progress.add_task(text, total=None)
        yield


def pull(messages: Iterable[dict], enabled: bool) -> list[str]:
    """Follow a pull's engine messages: one bar per layer (downloading, then extracting) when
    ``enabled``; the lines about the whole image ("1: Pulling from ...", "Digest: ...",
    "Status: ...") are returned."""
    summary: list[str] = []
    if not enabled:
        return [line for line in map(_about_image, messages) if line]
    with bar(transfer=True) as progress:
        layers: dict[str, Any] = {}  # layer id -> its task
        sizes: dict[str, int] = {}  # layer id -> bytes, once the engine said
        said: dict[str, str] = {}  # layer id -> its last status
        for m in messages:
            layer, status = m.get("id"), m.get("status", "")
            line = _about_image(m)
            if line is not None:
                summary.append(line)
                continue
            if not layer:
                continue
            if layer not in layers:
                layers[layer] = progress.add_task(f"{layer}: {status}", total=None)
            detail = m.get("progressDetail") or {}
            if detail.get("total"):
                sizes[layer] = detail["total"]
            if status in LAYER_DONE:  # a finished layer's bar is full, whatever was last said
                full = sizes.get(layer, 1)
                progress.update(layers[layer], description=f"{layer}: {status}", total=full, completed=full)
            else:
                progress.update(layers[layer], description=f"{layer}: {status}",
                                completed=detail.get("current"), total=detail.get("total") or None)
            if said.get(layer) != status:  # each step of a layer is drawn, however fast it went
                said[layer] = status
                progress.refresh()
    return summary


def _about_image(message: dict) -> str | None:
    """A message about the whole image as docker prints it, or None for a layer's."""
    status, tag = message.get("status"), message.get("id")
    if status and (not tag or status.startswith("Pulling from")):  # (that one's id is the tag)
        return f"{tag}: {status}" if tag else status
    return None


def pull_first(api: Any, spec: dict) -> None:
    """On a terminal, pull a job's missing image here, with its progress, before the submit
    (which pulls it in the agent, silently). Nothing is pulled twice: the agent then finds it
    present. An engine that cannot say whether it has the image leaves the pull to the agent."""
    from ..errors import ConveyorError, ImageNotFound

    image, policy = spec.get("image"), spec.get("pull") or "if-missing"
    if not image or policy == "never":  # (a process job has no image)
        return
    if policy != "always":
        try:
            api.image_inspect(image)
            return
        except ImageNotFound:
            pass
        except ConveyorError:
            return
    print(f"Unable to find image '{image}' locally" if policy != "always" else f"Pulling {image}", file=sys.stderr)
    for line in pull(api.pull(image), enabled=True):
        print(line, file=sys.stderr, flush=True)  # as docker run: stdout is the job's


class WaitMeter:
    """`wait` on several jobs: one bar of the jobs ended, with how many of the rest run and how
    many still wait. An array's counts come from its summary, the other jobs' from one listing
    of them: a request per array and one more, at most every TICK seconds."""

    TICK = 0.5

    def __init__(self, api: Any, arrays: list[str], jobs: list[str], total: int):
        self.api, self.arrays, self.jobs, self.total = api, arrays, jobs, total
        self.done = 0
        self.progress = bar()
        self.task = None

    def __enter__(self) -> "WaitMeter":
        self.progress.__enter__()
        self.task = self.progress.add_task(self._describe(), total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def ended(self, line: str) -> None:
        """A job ended: its line above the bar, and the bar one further."""
        self.done += 1
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self.refresh()

    def refresh(self) -> None:
        self.progress.update(self.task, completed=self.done, description=self._describe())

    def _describe(self) -> str:
        from ..state import ACTIVE_STATES, WAITING_STATES

        states: list[str] = []
        for ref in self.arrays:
            for state, n in self.api.array(ref)["states"].items():
                states += [state] * n
        if self.jobs:
            from ..client.api import list_query

            states += [j["state"] for j in self.api.list_all(list_query(ids=self.jobs))]
        running = sum(1 for s in states if s in {x.value for x in ACTIVE_STATES})
        queued = sum(1 for s in states if s in {x.value for x in WAITING_STATES})
        return f"done {self.done}  running {running}  queued {queued}"
