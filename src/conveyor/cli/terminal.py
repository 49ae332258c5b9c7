"""The caller's terminal, for what runs in a job with -it (`conveyor run -it`, `conveyor exec
-it`): its size, raw mode and back, and writes that finish. Stdlib only: the docker stand-in
uses it without click."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def terminal_size() -> tuple[int, int] | None:
    """(rows, columns) of the terminal the CLI writes to, if it writes to one."""
    for fd in (1, 0, 2):
        try:
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
        except OSError:
            continue
    return None


class RawTerminal:
    """The caller's terminal in raw mode for `-it` (every key goes to the job or the command),
    restored on every exit."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and os.isatty(0)
        self.saved = None

    def __enter__(self):
        if self.enabled:
            import termios
            import tty

            self.saved = termios.tcgetattr(0)
            tty.setraw(0, termios.TCSANOW)  # keep what was typed ahead: it is for the job
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
