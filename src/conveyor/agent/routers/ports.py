"""A running job's TCP port (`conveyor port-forward`), over a WebSocket at
``/v1/jobs/{ref}/port-forward``: one socket per TCP connection.

The exchange (a plain GET of the route answers 426 and documents it):

- the client opens the socket with its bearer token (refused before the upgrade, 401/403 as
  JSON like any route), then sends one JSON text message: ``{"port": N}``;
- the agent checks the token's policy (rule ``port_forward``) and the job (running, on a
  network), connects to the port from its machine and answers ``{"connected": {"job": id}}``,
  or ``{"error": {...}}`` and closes;
- then binary frames carry the connection's bytes both ways; the client's text frame
  ``{"close_write": true}`` ends what it sends (a TCP half-close). When the job's side
  closes, the agent closes the socket.
"""

from __future__ import annotations

import socket

from fastapi import APIRouter, WebSocket

from ...operations import OPERATIONS
from .. import sockets

router = APIRouter()  # the documented GET
websockets = APIRouter()  # the socket itself: its token is checked by sockets.accept

sockets.document(router, "port_forward", __doc__.split("\n", 3)[3])


@websockets.websocket(OPERATIONS["port_forward"].path)
async def port_forward_socket(websocket: WebSocket, ref: str):
    opened = await sockets.open_session(websocket, ref, "port_forward",
                                        lambda ex, job, body, who: ex.open_port(job, body.get("port")))
    if opened is None:
        return
    job, conn = opened
    await websocket.send_json({"connected": {"job": job}})

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
