"""docker's command-line syntax (spf13/pflag, as the docker CLI uses it), stdlib only.

What tools that shell out to docker write, and click does not read the same way:
``--rm=true``/``--read-only=false`` (a bool flag takes ``=value`` but never a separate word),
``-it`` and ``-ePATH=x`` (short flags grouped, a value glued on), ``--env=K=V``, and for
``docker run`` the first positional word ends the flags (the image; everything after it is the
job's command). Errors are pflag's words; the caller prints them in docker's shape.

The `conveyor` command's hot verbs (cli/fast.py) parse with the same FlagSet, ``strict``: the
flag tables there are also made into click options (cli/flagtable.py), one table per command.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

BOOL, VALUE, LIST = "bool", "value", "list"

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # Go's strconv.ParseBool
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
UNSET: Any = object()  # a Flag's default when none is declared (click: False for a bool, None else)


class Flag(NamedTuple):  # not a dataclass: the dataclasses module loads inspect (~10 ms)
    """One flag: ``--long`` (and ``-s``), its kind and where its value goes.

    ``unsupported`` names why the stand-in refuses a flag that docker has: such a flag parses
    (so the error is about the flag, not a confusing "unknown flag") and is then refused."""

    long: str
    short: str | None = None
    kind: str = VALUE
    dest: str | None = None
    unsupported: str | None = None
    help: str = ""
    aliases: tuple[str, ...] = ()  # other long names (--net for --network)
    metavar: str | None = None
    type: type | None = None  # int: the value is converted (click's INTEGER)
    choices: tuple[str, ...] = ()
    path: str | None = None  # "file" or "dir": a path that must not be the other kind (click.Path)
    default: Any = UNSET
    envvar: str | None = None  # read when the flag is not given (click's envvar: an empty value is none)

    @property
    def key(self) -> str:
        return self.dest or self.long.replace("-", "_")


class FlagProblem(Exception):
    """pflag's complaint about the command line, in pflag's words."""


class FlagSet:
    def __init__(self, flags: Iterable[Flag]):
        self.flags = tuple(flags)
        self.by_long = {name: f for f in self.flags for name in (f.long, *f.aliases)}
        self.by_short = {f.short: f for f in self.flags if f.short}
        self.strict = False

    def defaults(self) -> dict[str, Any]:
        return {f.key: [] if f.kind == LIST else None for f in self.flags}

    def parse(self, argv: list[str], interspersed: bool = True, strict: bool = False) -> tuple[dict[str, Any], list[str], list[Flag]]:
        """(values by key, positional words, flags given). With ``interspersed=False`` the
        first positional word ends the flags, as for ``docker run IMAGE CMD -x``. ``strict``
        refuses the spellings only pflag reads (``--rm=true``, ``-e=X``): what is left,
        click reads the same way."""
        self.strict = strict
        values, positional, given = self.defaults(), [], []
        i = 0
        while i < len(argv):
            word = argv[i]
            i += 1
            if word == "--":
                positional.extend(argv[i:])
                break
            if word.startswith("--") and len(word) > 2:
                i = self._long(word[2:], argv, i, values, given)
            elif word.startswith("-") and len(word) > 1:
                i = self._shorts(word[1:], argv, i, values, given)
            else:
                positional.append(word)
                if not interspersed:
                    positional.extend(argv[i:])
                    break
        return values, positional, given

    def _long(self, text: str, argv: list[str], i: int, values: dict, given: list) -> int:
        name, eq, inline = text.partition("=")
        flag = self.by_long.get(name)
        if flag is None:
            raise FlagProblem(f"unknown flag: --{name}")
        if flag.kind == BOOL:
            if eq and self.strict:
                raise FlagProblem(f"--{name} takes no value")
            self._set(flag, _bool(inline, f"--{name}") if eq else True, values, given)
            return i
        if eq:
            value = inline
        elif i < len(argv):
            value, i = argv[i], i + 1
        else:
            raise FlagProblem(f"flag needs an argument: --{name}")
        self._set(flag, value, values, given)
        return i

    def _shorts(self, group: str, argv: list[str], i: int, values: dict, given: list) -> int:
        j = 0
        while j < len(group):
            letter = group[j]
            flag = self.by_short.get(letter)
            if flag is None:
                raise FlagProblem(f"unknown shorthand flag: {letter!r} in -{group}")
            rest = group[j + 1:]
            if self.strict and rest.startswith("="):
                raise FlagProblem(f"-{letter}=: click reads the '=' as part of the value")
            if flag.kind == BOOL:
                if rest.startswith("="):
                    self._set(flag, _bool(rest[1:], f"-{letter}"), values, given)
                    return i
                self._set(flag, True, values, given)
                j += 1
                continue
            if rest:  # -ePATH=x, -e=PATH=x: the rest of the word is the value
                self._set(flag, rest[1:] if rest.startswith("=") else rest, values, given)
            elif i < len(argv):
                self._set(flag, argv[i], values, given)
                i += 1
            else:
                raise FlagProblem(f"flag needs an argument: {letter!r} in -{letter}")
            return i
        return i

    @staticmethod
    def _set(flag: Flag, value: Any, values: dict, given: list) -> None:
        if flag.kind == LIST:
            values[flag.key].append(value)
        else:
            values[flag.key] = value
        given.append(flag)


def _bool(text: str, flag: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FlagProblem(f'invalid argument "{text}" for "{flag}" flag: strconv.ParseBool: parsing "{text}": invalid syntax')
