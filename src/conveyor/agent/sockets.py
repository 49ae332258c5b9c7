"""The agent's WebSocket routes share this: who may open one (the token, checked before the
upgrade: a refusal is the same JSON error answer as on every other route), errors once it is
open (one ``{"error": {...}}`` text frame, then the close), and the relay between the socket
and a blocking source (an exec's output, a job's TCP port) read by a thread of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any, Callable

from fastapi import APIRouter, Depends, WebSocket
from starlette.concurrency import run_in_threadpool

from ..errors import ConveyorError
from .dependencies import caller_of, check_reach, job_id
from .errors import ApiError, error_for, error_response
from .models import error_doc
from .routers import operation

log = logging.getLogger("conveyor.agent")

_END = object()
OUTBOX = 32  # frames in flight to a slow client: a command or port that writes faster waits
# What the documented GET of a WebSocket route answers.
SOCKET_DOC = {101: {"description": "Switching Protocols: the WebSocket session"},
              426: error_doc("not a WebSocket handshake (this route is one)")}
UPGRADE_REQUIRED = ApiError(
    426, "upgrade_required",
    "this route is a WebSocket: connect with 'Upgrade: websocket' (conveyor exec, conveyor port-forward, or the "
    "Python Client do)",
)


def document(router: APIRouter, name: str, description: str) -> None:
    """The plain GET of the WebSocket route of operation ``name``: documented in the OpenAPI
    document (with ``description``, the exchange), it answers 426."""

    async def upgrade_required(job: str = Depends(job_id)):
        raise UPGRADE_REQUIRED

    upgrade_required.__name__ = f"{name}_route"  # FastAPI's operationId is made from it
    operation(router, name, status_code=101, responses=SOCKET_DOC, description=description)(upgrade_required)


async def open_session(websocket: WebSocket, ref: str, rule: str, start: Callable[..., Any]) -> tuple[str, Any] | None:
    """Accept ``websocket``, read its first message, check the caller's policy ``rule`` on job
    ``ref``, and ``start(executor, job_id, message, caller_name)`` in a thread: the job's id
    and what ``start`` gave; None when it was refused (the client was told why)."""
    who = await accept(websocket)
    if who is None:
        return None
    ex = websocket.app.state.agent.executor
    try:
        body = await first_message(websocket)
        job = await run_in_threadpool(ex.info, ref)
        who.rules.check_inside(rule, job.spec)
        await run_in_threadpool(check_reach, ex, who, job.id, "control", rule.replace("_", "-"))
        return job.id, await run_in_threadpool(start, ex, job.id, body, who.name)
    except (ConveyorError, ApiError) as exc:
        await fail(websocket, exc)
        return None


async def accept(websocket: WebSocket):
    """The caller the socket's token names, with the socket accepted; None when the token is
    refused (answered as HTTP, before the upgrade)."""
    try:
        who = caller_of(websocket)
    except ApiError as err:
        await websocket.send_denial_response(error_response(err))
        return None
    await websocket.accept()
    return who


async def first_message(websocket: WebSocket) -> dict:
    """The JSON object a client opens a session with."""
    text = await websocket.receive_text()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "the first message must be a JSON object (the session's request)", "request")
    return body


def error_frame(exc: ConveyorError | ApiError) -> dict:
    err = error_for(exc) if isinstance(exc, ConveyorError) else exc
    return {"error": {"code": err.code, "message": err.message, "field": err.field, "details": err.details}}


async def fail(websocket: WebSocket, exc: ConveyorError | ApiError) -> None:
    await websocket.send_json(error_frame(exc))
    await websocket.close()


async def relay(
    websocket: WebSocket,
    produce: Callable[[Callable[[Any], None]], None],
    on_bytes: Callable[[bytes], None],
    on_text: Callable[[dict], None],
    release: Callable[[], None],
) -> None:
    """Relay until ``produce`` returns: it runs in a thread and calls ``put(bytes)`` for a
    binary frame, ``put(dict)`` for a JSON one. The client's binary frames go to
    ``on_bytes``, its JSON ones to ``on_text`` (both in threads: they may block). ``release``
    is called however it ends, the client going away first included: it must make
    ``produce`` return (close what it reads)."""
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue = asyncio.Queue(maxsize=OUTBOX)

    def put(item: Any) -> None:
        asyncio.run_coroutine_threadsafe(outbox.put(item), loop).result()

    def pump() -> None:
        try:
            produce(put)
        except (ConveyorError, ApiError) as exc:
            put(error_frame(exc))
        except Exception as exc:  # noqa: BLE001 - the client gets an error frame, not a cut stream
            log.exception("a WebSocket session failed")
            put(error_frame(ApiError(500, "internal", f"{type(exc).__name__}: {exc}")))
        finally:
            put(_END)

    threading.Thread(target=pump, daemon=True, name="conveyor-socket").start()
    receiver = asyncio.create_task(_receive(websocket, on_bytes, on_text, release))
    sending = True
    try:
        while (item := await outbox.get()) is not _END:
            if not sending:
                continue  # the client went away: drain until the pump has ended
            try:
                await (websocket.send_bytes(item) if isinstance(item, bytes) else websocket.send_json(item))
            except Exception:  # noqa: BLE001 - the client went away mid-send
                sending = False
                await run_in_threadpool(release)
        if sending:
            await websocket.close()
    except Exception:  # noqa: BLE001 - closing a socket the client closed first
        pass
    finally:
        receiver.cancel()
        await run_in_threadpool(release)


async def _receive(websocket: WebSocket, on_bytes, on_text, release) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                await run_in_threadpool(on_bytes, message["bytes"])
            elif message.get("text") is not None:
                try:
                    control = json.loads(message["text"])
                except ValueError:
                    continue  # not ours to act on
                if isinstance(control, dict):
                    await run_in_threadpool(on_text, control)
    except Exception:  # noqa: BLE001 - the socket broke: the same as the client leaving
        pass
    finally:
        await run_in_threadpool(release)
