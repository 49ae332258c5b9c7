"""The one place where the docker SDK's exceptions (and those of requests/urllib3 below it)
become Conveyor's engine-neutral errors. Every engine call of the driver runs inside
`engine_errors`; nothing outside this package imports ``docker`` or catches its exceptions.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

import docker.errors
import requests.exceptions
import urllib3.exceptions

from ...errors import ConveyorError, InvalidSpec
from ..base import ContainerNotFound, EngineConflict, EngineError, EngineUnavailable, ImageNotFound

# The connection failed (or never came up). APIError is a requests HTTPError too: it is told
# apart before these are looked at.
_UNREACHABLE = (
    requests.exceptions.RequestException,  # ConnectionError, Timeout, ChunkedEncodingError, ...
    urllib3.exceptions.HTTPError,  # ProtocolError, ReadTimeoutError: a streamed body broke
    ConnectionError,  # a raw socket (attach, the log reader) reset or refused
    TimeoutError,
    docker.errors.TLSParameterError,  # DOCKER_HOST / DOCKER_CERT_PATH unusable
)
_SDK_ERRORS = (docker.errors.DockerException, *_UNREACHABLE)


# How the engine says, in a pull's progress messages, that there is no such image to pull.
_NO_SUCH_IMAGE = ("not found", "does not exist", "manifest unknown", "no matching manifest", "does not match the specified platform")


@contextlib.contextmanager
def engine_errors(image: str | None = None, pulling: bool = False) -> Iterator[None]:
    """Raise Conveyor's engine errors for the SDK's in the block (see `translate`)."""
    try:
        yield
    except _SDK_ERRORS as exc:
        raise translate(exc, image, pulling) from exc


def translate(exc: Exception, image: str | None = None, pulling: bool = False) -> ConveyorError:
    """The engine-neutral error for one the SDK raised, with the engine's own words:

    ==========================================  =========================================
    HTTP 404                                    ContainerNotFound
    HTTP 404 in a call about ``image``          ImageNotFound(image) when the engine says
                                                the image is missing, else EngineError
    HTTP 404 of a pull of ``image``             ImageNotFound(image): the registry has no
                                                such repository, tag or digest
    the engine knows no such runtime (create)   InvalidSpec on backend.options.runtime,
                                                naming where the runtimes are listed
    HTTP 409, or podman's 500 with words of a   EngineConflict (name in use, not running,
    conflict                                    already paused, ...)
    any other APIError                          EngineError
    connection refused/reset/broken, timeout,   EngineUnavailable, naming the fix
    no API version (bare DockerException)
    any other DockerException (InvalidArgument) EngineError
    ==========================================  =========================================
    """
    if isinstance(exc, docker.errors.APIError):
        message = _explanation(exc)
        if runtime := _unknown_runtime(message):
            return InvalidSpec.single(
                "backend.options.runtime",
                runtime,
                f"the engine has no such runtime ({message}); use one of the engine's runtimes "
                "('conveyor machine' lists them), or leave the option out for its default",
            )
        if exc.status_code == 500 and image is None and message.endswith("no such container"):
            return ContainerNotFound(message)  # podman, for one removed while it answered
        if exc.status_code == 404:
            if image is None:
                return ContainerNotFound(message)
            if pulling or isinstance(exc, docker.errors.ImageNotFound):  # the SDK's reading of the message
                return ImageNotFound(image, message)
            return EngineError(message)  # e.g. create: a network of the spec is missing
        if exc.status_code == 409 or any(words in message for words in _PODMAN_CONFLICTS):
            return EngineConflict(message)
        return EngineError(message)
    # from_env/APIClient raise a bare DockerException when they cannot fetch the API version.
    if isinstance(exc, _UNREACHABLE) or type(exc) is docker.errors.DockerException:
        return EngineUnavailable(f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST")
    return EngineError(str(exc))  # the SDK refused the request itself


def pull_failure(image: str, message: str) -> ConveyorError:
    """The error for a pull that the engine failed mid-stream (an ``error`` message, after
    the answer's status was sent), with its words: ImageNotFound when it says there is no such
    image to pull, else EngineError."""
    if any(words in message.lower() for words in _NO_SUCH_IMAGE):
        return ImageNotFound(image, message)
    return EngineError(message)


# podman's compat API answers 500 where dockerd answers 409, with these words: a state that
# does not allow the call (not running, already paused, ...) and a container name in use.
_PODMAN_CONFLICTS = ("container state improper", "that name is already in use")

# How dockerd refuses a container whose HostConfig.Runtime it does not know: 20.10 says
# "Unknown runtime specified X", later versions "unknown or invalid runtime name: X".
_UNKNOWN_RUNTIME = re.compile(r"(?:unknown runtime specified|unknown or invalid runtime name:)\s*(\S+)", re.IGNORECASE)


def _unknown_runtime(message: str) -> str | None:
    """The runtime name when ``message`` is the engine refusing an unknown runtime."""
    found = _UNKNOWN_RUNTIME.search(message)
    return found.group(1) if found else None


def _explanation(exc: docker.errors.APIError) -> str:
    text = exc.explanation or str(exc)
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)
