"""A running job's TCP port (`conveyor port-forward`), over a WebSocket at
``/v1/jobs/{ref}/port-forward``: one socket per TCP connection.

The exchange (a plain GET of the route answers 426 and documents it):

- the client opens the socket with its bearer token (refused before the upgrade, 401/403 as
  JSON like any route), then sends one JSON text message: ``{"port": N}``;
- the agent checks the token's policy (rule ``port_forward``) and the job (running, on a
  network), connects to the port from its machine and answers ``{"connected": {"job": id,
  "port": N}}``, or ``{"error": {...}}`` and closes;
- then binary frames carry the connection's bytes both ways; the client's text frame
  ``{"close_write": true}`` ends what it sends (a TCP half-close). When the job's side
  closes, the agent closes the socket.
"""

from __future__ import annotations

import socket

from fastapi import APIRouter, Depends, WebSocket
from starlette.concurrency import run_in_threadpool

from ...errors import ConveyorError
from ...operations import OPERATIONS
from ..dependencies import job_id
from ..errors import ApiError
from .. import sockets
from . import operation

router = APIRouter()  # the documented GET
websockets = APIRouter()  # the socket itself: its token is checked by sockets.accept


@operation(router, "port_forward", status_code=101, responses=sockets.SOCKET_DOC, description=__doc__.split("\n", 3)[3])
async def port_forward_route(job: str = Depends(job_id)):
    raise sockets.UPGRADE_REQUIRED


@websockets.websocket(OPERATIONS["port_forward"].path)
async def port_forward_socket(websocket: WebSocket, ref: str):
    who = await sockets.accept(websocket)
    if who is None:
        return
    ex = websocket.app.state.agent.executor
    try:
        port = (await sockets.first_message(websocket)).get("port")
        job = await run_in_threadpool(ex.info, ref)
        who.rules.check_inside("port_forward", job.spec)
        conn = await run_in_threadpool(ex.open_port, job.id, port)
    except (ConveyorError, ApiError, ValueError) as exc:
        await sockets.fail(websocket, exc if not isinstance(exc, ValueError) else ApiError(422, "invalid_request", str(exc), "port"))
        return
    await websocket.send_json({"connected": {"job": job.id, "port": port}})

    def produce(put) -> None:
        try:
            while data := conn.recv(65536):
                put(data)
        except OSError:
            pass  # closed (the client went away, release() ran) or reset by the job

    def control(message: dict) -> None:
        if message.get("close_write"):
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def release() -> None:
        try:
            conn.shutdown(socket.SHUT_RDWR)  # wakes the reader; close alone may not
        except OSError:
            pass
        conn.close()

    await sockets.relay(websocket, produce, conn.sendall, control, release)
