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

from .job import Job
from .spec import JobSpec

JOB_ID = "a job id (str)"
ARRAY_ID = "an array id (str)"


def job_ref(method: str, ref: object, takes: str = JOB_ID) -> str:
    """``ref`` when it is a non-empty string; otherwise the error that says so."""
    if not isinstance(ref, str):
        raise TypeError(f"{method}() takes {takes}: {_given(ref)}{_hint(ref)}")
    if not ref.strip():
        raise ValueError(f"{method}() takes {takes}: an empty string was given")
    return ref


def job_refs(method: str, refs: object) -> list[str]:
    """Several job references (a list, tuple, set...), each checked as by :func:`job_ref`."""
    if isinstance(refs, (str, bytes, JobSpec, Job)) or not isinstance(refs, Iterable):
        raise TypeError(f"{method}() takes job ids (a list of str): {_given(refs)}; put the ids in a list")
    return [job_ref(method, ref) for ref in refs]


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
