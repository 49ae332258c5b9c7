"""One table of flags per command, read two ways: as click options (the `conveyor` group, its
help and its errors) and by the click-free parser of the hot verbs (fast.py), which is the
docker stand-in's (dockercli.flags) in strict mode. Stdlib only until click is asked for.

The fast reading gives the values click would give (a tuple for a repeatable flag, an int for
an int flag, a flag's declared default when absent) or raises FlagProblem for anything it does
not decide exactly as click would (a bad int or choice, a path of the wrong kind, an unknown
flag, --help): the caller then hands the whole command line to click, which answers it.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Callable

from ..dockercli.flags import BOOL, LIST, UNSET, VALUE, Flag, FlagProblem, FlagSet

# The `conveyor` group's own flag (--help and --version are click's).
HOME = Flag("home", kind=VALUE, path="dir", envvar="CONVEYOR_HOME",
            help="State directory (default ~/.local/share/conveyor, or $CONVEYOR_HOME).")


def click_options(flags: tuple[Flag, ...]) -> Callable:
    """A decorator adding ``flags`` to a click command, in the table's order."""
    import click

    def option(flag: Flag):
        names = [*([f"-{flag.short}"] if flag.short else []), f"--{flag.long}", *(f"--{a}" for a in flag.aliases), flag.key]
        kwargs: dict[str, Any] = {"help": flag.help}
        if flag.kind == BOOL:
            kwargs["is_flag"] = True
        if flag.kind == LIST:
            kwargs["multiple"] = True
        if flag.default is not UNSET:
            kwargs["default"] = flag.default
        if flag.metavar:
            kwargs["metavar"] = flag.metavar
        if flag.type is not None:
            kwargs["type"] = flag.type
        if flag.choices:
            kwargs["type"] = click.Choice(list(flag.choices))
        if flag.path:
            kwargs["type"] = click.Path(dir_okay=flag.path == "dir", file_okay=flag.path == "file")
        if flag.envvar:
            kwargs["envvar"] = flag.envvar
        return click.option(*names, **kwargs)

    def decorate(fn):
        for flag in reversed(flags):
            fn = option(flag)(fn)
        return fn

    return decorate


def parse(flags: FlagSet, argv: list[str], interspersed: bool = True) -> tuple[dict[str, Any], list[str]]:
    """``argv`` read as click reads it for these flags: (values by key, positional words)."""
    values, positional, _ = flags.parse(argv, interspersed=interspersed, strict=True)
    out = {}
    for flag in flags.flags:
        value = values[flag.key]
        if value is None and flag.envvar:
            value = os.environ.get(flag.envvar) or None
        if flag.kind == LIST:
            out[flag.key] = tuple(checked(flag, v) for v in value)
        elif value is None:
            out[flag.key] = (False if flag.kind == BOOL else None) if flag.default is UNSET else flag.default
        else:
            out[flag.key] = value if flag.kind == BOOL else checked(flag, value)
    return out, positional


def checked(flag: Flag, value: str) -> Any:
    """A flag's value as click converts it; FlagProblem where click would refuse it."""
    if flag.type is int:
        try:
            return int(value)
        except ValueError:
            raise FlagProblem(f"--{flag.long}: not an int") from None
    if flag.choices and value not in flag.choices:
        raise FlagProblem(f"--{flag.long}: not one of {flag.choices}")
    if flag.path:  # click.Path: an existing path must be of the right kind, and readable
        try:
            st = os.stat(value)
        except OSError:
            return value
        wrong = stat.S_ISDIR(st.st_mode) if flag.path == "file" else stat.S_ISREG(st.st_mode)
        if wrong or not os.access(value, os.R_OK):
            raise FlagProblem(f"--{flag.long}: {value!r} is not a readable {flag.path}")
    return value
