"""A run's files and its processes' identity: a pid is taken for a recorded process only
when its start time (``/proc/PID/stat`` field 22) matches too, since pids are reused."""

from __future__ import annotations

import json
from pathlib import Path

from .shim import proc_start_time


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:  # written by rename, so never torn; a stray file is not ours
        return None


def same_process(pid: int, start: int | None) -> bool:
    """The process ``pid`` is the one recorded: same pid AND same start time (pids are reused)."""
    return start is not None and proc_start_time(pid) == start and not zombie(pid)


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


