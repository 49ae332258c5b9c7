"""The Python API's checks of its arguments, one place for the Executor and the Client.

A wrong argument stops at the door with an error that names the method, what it takes, what it
was given and what to do: ``future() takes a job id (str): a JobSpec was given; submit it
first``. Without it, a JobSpec passed as a job reference surfaced as an AttributeError from
deep inside the store (or, through the Client, as a 404 for the spec's repr).

An empty or blank reference is a ValueError: it has the right type, and as an id prefix it
would match every job.
"""

from __future__ import annotations

from typing import Iterable

from .errors import InvalidSpec
from .job import Job
from .spec import JobSpec

JOB_ID = "a job id (str)"
LEASE_ID = "a lease id (str)"
ARRAY_ID = "an array id (str)"
IMAGE = "an image reference (str), e.g. busybox:1.36"

# The signal names a Linux container knows (the kernel in the container decides, not the
# caller's), as docker spells them; RTMIN+n and RTMAX-n are checked apart. Numbers are kept as
# numbers: a name looked up on the caller's system could mean another signal in the container.
SIGNALS = frozenset(
    "ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV STKFLT "
    "STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ RTMIN RTMAX".split()
)
MAX_SIGNAL = 64


def job_ref(method: str, ref: object, takes: str = JOB_ID) -> str:
    """``ref`` when it is a non-empty string; otherwise the error that says so."""
    if not isinstance(ref, str):
        raise TypeError(f"{method}() takes {takes}: {_given(ref)}{_hint(ref) if takes != LEASE_ID else ''}")
    if not ref.strip():
        raise ValueError(f"{method}() takes {takes}: an empty string was given")
    return ref


def job_refs(method: str, refs: object) -> list[str]:
    """Several job references (a list, tuple, set...), each checked as by :func:`job_ref`."""
    if isinstance(refs, (str, bytes, JobSpec, Job)) or not isinstance(refs, Iterable):
        raise TypeError(f"{method}() takes job ids (a list of str): {_given(refs)}; put the ids in a list")
    return [job_ref(method, ref) for ref in refs]


def signal_name(value: object) -> str:
    """A signal as the engine takes it: ``SIGKILL`` for KILL, kill, SIGKILL; ``9`` for 9. None
    means the default, KILL. Anything else is a ValueError that names the parameter and says
    what it takes."""
    if value is None:
        return "SIGKILL"
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if text.isascii() and text.isdigit() and len(text) <= 3:
        if 1 <= int(text) <= MAX_SIGNAL:
            return str(int(text))
    elif text.isascii():
        name = text.upper().removeprefix("SIG")
        base, sep, offset = name.partition("+" if "+" in name else "-")
        realtime = (base, sep) in (("RTMIN", "+"), ("RTMAX", "-")) and offset in {str(n) for n in range(1, 16)}
        if name in SIGNALS or realtime:
            return "SIG" + name
    raise ValueError(
        f"signal {value if not isinstance(value, str) else value[:40]!r} is not valid: give a signal name (KILL, TERM, HUP, INT, USR1, ...; "
        f"with or without SIG, any case) or a number from 1 to {MAX_SIGNAL}"
    )


def tcp_port(value: object) -> int:
    """A TCP port of a job (``open_port``); InvalidSpec naming ``port`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidSpec.single("port", value, "a TCP port of the job: a number from 1 to 65535")
    return value


def job_spec(method: str, spec: object) -> JobSpec:
    """``spec`` when it is a JobSpec; otherwise the error that says how to make one."""
    if not isinstance(spec, JobSpec):
        raise TypeError(f"{method}() takes a JobSpec: {_given(spec)}; build one with JobSpec(...) or JobSpec.from_file()")
    return spec


def _given(value: object) -> str:
    if value is None:
        return "None was given"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name} was given"


def _hint(value: object) -> str:
    if isinstance(value, JobSpec):
        return "; submit it first"
    if isinstance(value, Job):
        return f"; pass its id ({value.id!r})"
    return ""
