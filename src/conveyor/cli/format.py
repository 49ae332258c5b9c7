"""Go templates as docker's ``--format`` reads them: ``.A.B``, ``$x``, pipelines, ``:=``,
if/else if/else, range, with, trim markers; docker's functions (json, split, join,
title, lower, upper, pad, truncate) and Go's (and, or, not, len, index, eq, ne, lt, le, gt, ge,
print, printf); ``table`` (a header row, aligned columns), ``json`` and ``\\t``/``\\n`` as docker
reads them. A dict is a Go map (a missing key prints ``<no value>``), :class:`Fields` a Go
struct such as docker's ps row (a missing field is an error naming the fields). Stdlib only:
the docker stand-in uses it without click.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator, Mapping


class TemplateError(ValueError):
    """A template that does not parse or does not apply to the data: says which and why."""

    def __init__(self, template: str, problem: str):
        self.template, self.problem = template, problem
        super().__init__(f"template {template!r}: {problem}")


class _Problem(Exception):
    """Raised by the engine; Template turns it into a TemplateError naming the template."""


class Fields(Mapping):
    """A struct: fields computed by their getters when first used; a getter returning a
    function makes a method (``{{.Label "k"}}``)."""

    def __init__(self, source: Any, getters: Mapping[str, Callable[[Any], Any]]):
        self._source, self._getters, self._values = source, getters, {}

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> "Fields":
        return cls(values, {name: (lambda source, name=name: source[name]) for name in values})

    def __getitem__(self, name: str) -> Any:
        if name not in self._values:
            self._values[name] = self._getters[name](self._source)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._getters)

    def __len__(self) -> int:
        return len(self._getters)


class Template:
    """One ``--format`` value, parsed (a TemplateError if it does not parse)."""

    def __init__(self, text: str):
        self.text = text
        body = "{{json .}}" if text == "json" else text
        self.table = body.startswith("table")
        body = (body[len("table"):] if self.table else body).strip(" ").replace("\\t", "\t").replace("\\n", "\n")
        try:
            self._tree, stop = _Parser(body).nodes()
            if stop is not None:
                raise _Problem(f"unexpected {{{{{stop[0]}}}}}")
        except _Problem as exc:
            raise TemplateError(text, str(exc)) from None

    def execute(self, data: Any, header: bool = False) -> str:
        """The template applied to one value. ``header``: with docker's header functions, and
        as docker, an error ends the header row where it happened (the rows report it)."""
        out: list[str] = []
        try:
            _Run(data, header, out).walk(self._tree, data)
        except _Problem as exc:
            if not header:
                raise TemplateError(self.text, str(exc)) from None
        return "".join(out)

    def render(self, rows: Iterable[Any], headers: Mapping[str, Any] | None = None) -> str:
        """Each row's text and a newline; a table has the header row (``headers``: field ->
        title, or a function of a method's arguments) and aligned columns, as docker prints."""
        lines = "".join(self.execute(row) + "\n" for row in rows)
        if not self.table:
            return lines
        return tabwriter(self.execute(Fields.of(headers or {}), header=True) + "\n" + lines)


def tabwriter(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter as docker sets it up: cells end at tabs; adjacent lines with a cell
    in a column share its width (the widest cell + padding, at least minwidth)."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write(lo: int, hi: int) -> None:
        out.extend("".join(c + " " * (widths[j] - len(c)) if j < len(widths) else c for j, c in enumerate(cells))
                   for cells in lines[lo:hi])

    def block(lo: int, hi: int) -> None:  # Go's Writer.format, a column at a time
        column, this = len(widths), lo
        while this < hi:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(lo, this)
            lo, width = this, minwidth
            while this < hi and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            block(lo, this)
            widths.pop()
            lo = this
        write(lo, hi)

    block(0, len(lines))
    return "\n".join(out)


# ----------------------------------------------------------------------------- values, as Go prints them


def go_str(value: Any, top: bool = True) -> str:
    """``fmt.Print``'s text of a value (``top``: as an action prints it, nil as <no value>)."""
    if value is None:
        return "<no value>" if top else "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # the shortest digits, in exponent form below 1e-4 and from 1e6 on
        digits = len(repr(abs(value)).split("e")[0].replace(".", "").strip("0")) or 1
        mantissa, exp = f"{value:.{digits - 1}e}".split("e")
        return f"{value:.{max(0, digits - 1 - int(exp))}f}" if -4 <= int(exp) < 6 else f"{mantissa}e{exp}"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v, False) for v in value) + "]"
    if isinstance(value, Fields):
        return "{" + " ".join(go_str(value[k], False) for k in value if not callable(value[k])) + "}"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{go_str(k, False)}:{go_str(value[k], False)}" for k in sorted(value)) + "]"
    return str(value)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(text: str) -> str:
    """strconv.Quote: in double quotes, with Go's escapes for what is not printable."""
    return '"' + "".join(ch if ch.isprintable() and ch not in '"\\' else _ESCAPES.get(ch) or ch.encode("unicode_escape").decode()
                         for ch in text) + '"'


def _type(value: Any) -> str:
    names = {type(None): "nil", str: "string", bool: "bool", int: "int", float: "float64", list: "slice", dict: "map"}
    return "struct" if isinstance(value, Fields) else names.get(type(value), type(value).__name__)


def _truth(value: Any) -> bool:  # Go's: false, 0, nil and empty are false
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) > 0
    return value is not None and (type(value) not in (bool, int, float) or value != 0)


# ----------------------------------------------------------------------------- functions


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, dict):
            item = item.get(key)
        elif isinstance(item, (list, tuple)) and type(key) is int and 0 <= key < len(item):
            item = item[key]
        else:
            why = "out of range" if isinstance(item, (list, tuple)) and type(key) is int else f"for {_type(item)}"
            raise _Problem(f"error calling index: index {go_str(key, False)} {why}")
    return item


def _compare(op: Callable[[Any, Any], bool], ordered: bool) -> Callable[..., bool]:
    """eq (a equals any of the others), ne, lt, le, gt, ge: basic values of one kind only."""
    def compare(a: Any, *others: Any) -> bool:
        for b in others or _problem("missing argument for comparison"):
            if not (type(a) is type(b) or {type(a), type(b)} == {int, float}):
                raise _Problem(f"incompatible types for comparison: {_type(a)} and {_type(b)}")
            if ordered and type(a) not in (int, float, str):
                raise _Problem(f"invalid type for comparison: {_type(a)}")
        return any(op(a, b) for b in others)

    return compare


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def _printf(fmt: str, *args: Any) -> str:
    """fmt.Sprintf for the verbs templates use: %s %v %q %d %t %f %e %g %x %X %o %c %%."""
    queue = list(args)

    def one(m: re.Match) -> str:
        flags, width, precision, verb = m.groups()
        if verb == "%" or not queue:
            return "%" if verb == "%" else f"%!{verb}(MISSING)"
        arg, spec = queue.pop(0), "%" + flags + (width or "") + (f".{precision}" if precision else "")
        if verb in "svq" or verb == "t" and type(arg) is bool:  # %q quotes each string of a list
            quoted = "[" + " ".join(map(go_quote, map(str, arg))) + "]" if type(arg) is list else go_quote(go_str(arg, False))
            return (spec + "s") % (quoted if verb == "q" else go_str(arg, False))
        if verb in "xX" and type(arg) is str:
            return arg.encode().hex().upper() if verb == "X" else arg.encode().hex()
        if type(arg) is int and verb in "dxXoc" or type(arg) in (int, float) and verb in "feEgG":
            return (spec + verb) % arg
        return f"%!{verb}({_type(arg)}={go_str(arg, False)})"

    return _VERB.sub(one, fmt) + ("%!(EXTRA " + ", ".join(f"{_type(a)}={go_str(a, False)}" for a in queue) + ")") * bool(queue)


def _json(value: Any) -> str:
    import json  # docker's json: compact, no HTML escaping; a map's keys sorted, as Go's

    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: plain(v[k]) for k in v if not callable(v[k])}
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
            return int(v)  # Go writes 3.0 as 3
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    return json.dumps(plain(value), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _text(fn: Callable[..., Any]) -> Callable[..., Any]:  # a string function that takes any value as Go prints it
    return lambda value, *rest: fn(value if isinstance(value, str) else go_str(value, False), *rest)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "not": lambda value: not _truth(value), "index": _index,
    "len": lambda item: len(item.encode() if isinstance(item, str) else item) if isinstance(item, (str, list, tuple, dict))
    else _problem(f"error calling len: len of type {_type(item)}"),  # Go counts a string's bytes
    "eq": _compare(lambda a, b: a == b, False), "ne": lambda a, b: not _compare(lambda x, y: x == y, False)(a, b),
    "lt": _compare(lambda a, b: a < b, True), "le": _compare(lambda a, b: a <= b, True),
    "gt": _compare(lambda a, b: a > b, True), "ge": _compare(lambda a, b: a >= b, True),
    "print": lambda *args: "".join(  # fmt.Sprint: a space between operands when neither is a string
        (" " if i and str not in (type(a), type(args[i - 1])) else "") + go_str(a, False) for i, a in enumerate(args)),
    "println": lambda *args: " ".join(go_str(a, False) for a in args) + "\n", "printf": _printf, "json": _json,
    "title": _text(lambda s: re.sub(r"(?:^|(?<=\W))(\w)", lambda m: m.group(1).upper(), s)),  # strings.Title
    "lower": _text(str.lower), "upper": _text(str.upper),
    "split": _text(lambda text, sep: text.split(sep) if sep else list(text)),
    "join": lambda items, sep: sep.join(go_str(x, False) for x in items),
    "pad": _text(lambda text, left, right: text and " " * left + text + " " * right),
    "truncate": _text(lambda text, length: text.encode()[:length].decode(errors="ignore")),  # bytes, as Go
}
_SHORT_CIRCUIT = ("and", "or")  # the engine evaluates their arguments only as far as needed
HEADER_FUNCTIONS = ("json", "split", "join", "title", "lower", "upper", "truncate", "pad")  # pass titles through


def _problem(message: str) -> Any:
    raise _Problem(message)


# ----------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r"""(?P<space>[ \t\r\n]*)(?:
    (?P<str>"(?:[^"\\]|\\.)*") | (?P<raw>`[^`]*`)
  | (?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?))
  | (?P<field>(?:\.[^\W\d]\w*)+) | (?P<dot>\.) | (?P<var>\$\w*) | (?P<declare>:=)
  | (?P<pipe>\|) | (?P<open>\() | (?P<close>\)) | (?P<ident>[^\W\d]\w*) | (?P<comma>,))""", re.X | re.S)
_SPACE = " \t\r\n"
_KEYWORDS = ("if", "range", "with", "else", "end", "define", "template", "block", "break", "continue")


class _Parser:
    """A template's text -> its tree: ("text", str), ("action", pipeline) and
    (if|range|with, pipeline, body, else body); a pipeline is (declared names, commands)."""

    def __init__(self, src: str):
        self.items, self.i = self.scan(src), 0

    def scan(self, src: str) -> list[tuple]:
        """("text", str) and ("action", tokens) items, with the trim markers applied."""
        items: list[tuple] = []
        pos, trim = 0, False
        while True:
            start = src.find("{{", pos)
            text = (src[pos:] if start < 0 else src[pos:start]).lstrip(_SPACE if trim else "")
            left_trim = start >= 0 and src[start + 2:start + 3] == "-" and src[start + 3:start + 4] in tuple(_SPACE)
            items.append(("text", text.rstrip(_SPACE) if left_trim else text))
            if start < 0:
                return items
            tokens, pos, trim = self.lex(src, start + 2 + left_trim)
            items.append(("action", tokens or _problem("missing value for command")))

    @staticmethod
    def lex(src: str, pos: int) -> tuple[list, int, bool]:
        """An action's tokens (kind, text, spaced?), the end of its ``}}``, whether it trims."""
        tokens: list[tuple[str, str, bool]] = []
        while True:
            skipped = pos + len(src[pos:]) - len(src[pos:].lstrip(_SPACE))
            if src.startswith("}}", skipped) or src.startswith("-}}", skipped) and skipped > pos:
                return tokens, skipped + (2 if src[skipped] == "}" else 3), src[skipped] == "-"
            m = _TOKEN.match(src, pos)
            if skipped >= len(src):
                raise _Problem("unclosed action")
            if not m or m.lastgroup == "space":
                raise _Problem(f"unexpected {src[skipped]!r} in command")
            tokens.append((m.lastgroup, m.group(m.lastgroup), bool(m.group("space"))))
            pos = m.end()

    def nodes(self) -> tuple[list, tuple | None]:
        """Nodes up to an {{end}} or an {{else}} (``stop``: the word and the tokens after it)."""
        nodes: list = []
        while self.i < len(self.items):
            kind, value = self.items[self.i]
            self.i += 1
            word = value[0][1] if kind == "action" and value[0][0] == "ident" and value[0][1] in _KEYWORDS else ""
            if kind == "text":
                nodes += [("text", value)] if value else []
            elif word in ("end", "else"):
                return nodes, (word, value[1:])
            elif word in ("if", "range", "with"):
                nodes.append(self.block(word, value[1:]))
            elif word:
                raise _Problem(f"{{{{{word}}}}} is not supported")
            else:
                nodes.append(("action", self.pipeline(value)))
        return nodes, None

    def block(self, word: str, tokens: list) -> tuple:
        pipe = self.pipeline(tokens, word)
        body, stop = self.nodes()
        if stop and stop[0] == "else" and stop[1] and word != "range" and stop[1][0][1] == word:
            return word, pipe, body, [self.block(word, stop[1][1:])]  # {{else if}} shares the {{end}}
        otherwise, stop = self.nodes() if stop and stop[0] == "else" and not stop[1] else ([], stop)
        if stop is None or stop[0] != "end" or stop[1]:
            raise _Problem(f"{{{{{word}}}}} without {{{{end}}}}" if stop is None else f"{{{{{stop[0]}}}}} in {word}")
        return word, pipe, body, otherwise

    def pipeline(self, tokens: list, context: str = "") -> tuple:
        """(declared names, commands): ``$x := a | f``, and ``range $i, $v := ...``."""
        kinds, names = [t[0] for t in tokens], []
        for shape in (["var", "declare"], ["var", "comma", "var", "declare"]):
            if kinds[: len(shape)] == shape and (len(shape) == 2 or context == "range"):
                names, tokens = [t[1] for t in tokens[: len(shape) - 1: 2]], tokens[len(shape):]
        commands, depth = [[]], 0
        for tok in tokens:
            depth += (tok[0] == "open") - (tok[0] == "close")
            if depth < 0:
                raise _Problem("unexpected right paren")
            commands += [[]] if tok[0] == "pipe" and depth == 0 else []
            commands[-1] += [tok] if tok[0] != "pipe" or depth else []
        if depth or not all(commands):
            raise _Problem("unclosed left paren" if depth else f"missing value for {context or 'command'}")
        parsed = []
        for command in commands:
            operands, j = [], 0
            while j < len(command):
                node, j = self.operand(command, j)
                operands.append(node)
            parsed.append(operands)
        return names, parsed

    def operand(self, tokens: list, j: int) -> tuple[tuple, int]:
        kind, text, _ = tokens[j]
        if kind == "open":
            depth, k = 1, j + 1
            while depth:
                depth += (tokens[k][0] == "open") - (tokens[k][0] == "close")
                k += 1
            node, j = ("pipe", self.pipeline(tokens[j + 1:k - 1])), k
        elif kind in ("dot", "var"):
            node, j = (("dot",) if kind == "dot" else ("var", text)), j + 1
        elif kind == "field":
            return ("field", None, text[1:].split(".")), j + 1
        elif kind in ("str", "raw", "num"):
            return ("value", self.literal(kind, text)), j + 1
        elif kind == "ident" and text in ("true", "false", "nil"):
            return ("value", {"true": True, "false": False, "nil": None}[text]), j + 1
        elif kind == "ident":
            if text not in FUNCTIONS and text not in _SHORT_CIRCUIT:
                raise _Problem(f'function "{text}" not defined')
            return ("func", text), j + 1
        else:
            raise _Problem(f"unexpected {text!r} in operand")
        if j < len(tokens) and tokens[j][0] == "field" and not tokens[j][2]:  # $x.A, (pipeline).A
            return ("field", node, tokens[j][1][1:].split(".")), j + 1
        return node, j

    @staticmethod
    def literal(kind: str, text: str) -> Any:
        if kind != "num":  # a raw string as it is; Go's escapes in a quoted one are Python's
            return text[1:-1] if kind == "raw" else text[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        try:
            clean = text.replace("_", "")
            return int(clean, 0) if not re.search(r"[.eE]", clean) or "x" in clean.lower() else float(clean)
        except ValueError:
            raise _Problem(f"bad number syntax: {text!r}") from None


# ----------------------------------------------------------------------------- executing

_NOTHING = object()  # no value piped into a command


class _Run:
    def __init__(self, root: Any, header: bool, out: list[str]):
        self.vars: list[list] = [["$", root]]
        self.header, self.out = header, out

    def walk(self, nodes: list, dot: Any) -> None:
        mark = len(self.vars)  # variables live until the end of their block
        for node in nodes:
            if node[0] == "text":
                self.out.append(node[1])
            elif node[0] == "action":
                value = self.pipeline(node[1], dot)
                self.out.append("" if node[1][0] else go_str(value))
            elif node[0] == "range":
                self.range(node, dot)
            elif _truth(value := self.pipeline(node[1], dot)):
                self.walk(node[2], value if node[0] == "with" else dot)
            else:
                self.walk(node[3], dot)
        del self.vars[mark:]

    def range(self, node: tuple, dot: Any) -> None:
        names, items = node[1][0], self.pipeline(node[1], dot, declare=False)
        if isinstance(items, dict):
            pairs = [(k, items[k]) for k in sorted(items)]
        elif isinstance(items, (list, tuple)) or items is None:
            pairs = list(enumerate(items or ()))
        else:
            raise _Problem(f"range can't iterate over {go_str(items)}")
        for key, value in pairs:
            self.vars += [[n, v] for n, v in zip(names, [value] if len(names) == 1 else [key, value])]
            self.walk(node[2], value)
            del self.vars[len(self.vars) - len(names):]
        if not pairs:
            self.walk(node[3], dot)

    def pipeline(self, pipe: tuple, dot: Any, declare: bool = True) -> Any:
        names, commands = pipe
        value = _NOTHING
        for command in commands:
            value = self.command(command, dot, value)
        if names and declare:
            self.vars.append([names[0], value])
        return value

    def command(self, operands: list, dot: Any, final: Any) -> Any:
        first, rest = operands[0], operands[1:]
        if first[0] == "func":
            return self.call(first[1], rest, dot, final)
        if first[0] == "field":
            receiver = dot if first[1] is None else self.arg(first[1], dot)
            return self.fields(receiver, first[2], [self.arg(a, dot) for a in rest] + [final] * (final is not _NOTHING))
        if rest or final is not _NOTHING:
            shown = {"dot": ".", "var": str(first[-1])}.get(first[0], go_str(first[-1], False))
            raise _Problem(f"can't give argument to non-function {shown}")
        return self.arg(first, dot)

    def call(self, name: str, operands: list, dot: Any, final: Any) -> Any:
        args = [lambda a=a: self.arg(a, dot) for a in operands] + [lambda: final] * (final is not _NOTHING)
        if name in _SHORT_CIRCUIT:  # and: the first false argument or the last; or: the first true one
            value = None if args else _problem(f"wrong number of args for {name}: want at least 1 got 0")
            for get in args:
                if _truth(value := get()) == (name == "or"):
                    break
            return value
        values = [get() for get in args]
        if self.header and name in HEADER_FUNCTIONS and values:
            return values[0]
        try:
            return FUNCTIONS[name](*values)
        except TypeError:
            raise _Problem(f"wrong number of args for {name}: got {len(values)}") from None
        except (ValueError, AttributeError) as exc:
            raise _Problem(f"error calling {name}: {exc}") from None

    def arg(self, node: tuple, dot: Any) -> Any:
        kind = node[0]
        if kind in ("value", "dot"):
            return node[1] if kind == "value" else dot
        if kind == "var":
            found = [value for name, value in self.vars if name == node[1]]
            return found[-1] if found else _problem(f"undefined variable: {node[1]}")
        if kind == "pipe":
            return self.pipeline(node[1], dot)
        if kind == "func":
            return self.call(node[1], [], dot, _NOTHING)
        return self.fields(dot if node[1] is None else self.arg(node[1], dot), node[2], [])

    def fields(self, receiver: Any, names: list[str], args: list) -> Any:
        where = "." + ".".join(names)
        for n, name in enumerate(names):
            given = args if n == len(names) - 1 else []
            if not isinstance(receiver, Mapping) or isinstance(receiver, Fields) and name not in receiver._getters:
                listed = f"; the fields are {', '.join(receiver)}" if isinstance(receiver, Fields) else ""
                raise _Problem(f"at <{where}>: can't evaluate field {name}" + (listed or f" in type {_type(receiver)}"))
            receiver = receiver[name] if isinstance(receiver, Fields) else receiver.get(name)
            if callable(receiver):  # a method
                try:
                    receiver = receiver(*given)
                except TypeError:
                    raise _Problem(f"at <{where}>: wrong number of args for {name}: got {len(given)}") from None
            elif given:
                raise _Problem(f"at <{where}>: {name} is not a method but has arguments")
        return receiver
