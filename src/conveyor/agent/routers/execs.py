"""Commands inside a running job (`conveyor exec`), over a WebSocket at ``/v1/jobs/{ref}/exec``.

The exchange (a plain GET of the route answers 426 and documents it):

- the client opens the socket with its bearer token (refused before the upgrade, 401/403 as
  JSON like any route), then sends one JSON text message, the command (an ExecSpec:
  ``{"command": [...], "stdin", "tty", "env", "user", "workdir", "console_size": [rows, cols]}``);
- the agent checks the token's policy (rule ``exec``) and the job's state, starts the command
  and answers ``{"started": {"job": id}}``, or ``{"error": {...}}`` and closes;
- then binary frames carry bytes: from the agent, one byte for the stream (1 stdout, 2 stderr;
  a terminal's output is all 1) and the output; from the client, the command's stdin. Text
  frames from the client: ``{"resize": [rows, cols]}``, ``{"close_stdin": true}``;
- at the end the agent sends ``{"exit": code}`` and closes. A client that goes away first lets
  go of the command (as docker exec does, it is not killed; a terminal's hang-up may end it).
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from ...errors import ConveyorError
from ...operations import OPERATIONS
from ...spec import ExecSpec
from .. import sockets

router = APIRouter()  # the documented GET
websockets = APIRouter()  # the socket itself: its token is checked by sockets.accept

STREAM_IDS = {"stdout": 1, "stderr": 2}

sockets.document(router, "exec", __doc__.split("\n", 2)[2])


@websockets.websocket(OPERATIONS["exec"].path)
async def exec_socket(websocket: WebSocket, ref: str):
    opened = await sockets.open_session(websocket, ref, "exec", _start)
    if opened is None:
        return
    job, session = opened
    await websocket.send_json({"started": {"job": job}})

    def produce(put) -> None:
        while (item := session.read()) is not None:
            put(bytes([STREAM_IDS[item[0]]]) + item[1])
        if not session.recorded:  # else its caller let go of it first
            put({"exit": session.wait()})

    def control(message: dict) -> None:
        if message.get("close_stdin"):
            session.close_stdin()
        elif isinstance(message.get("resize"), list) and len(message["resize"]) == 2:
            try:
                session.resize(*(int(n) for n in message["resize"]))
            except (ConveyorError, ValueError, TypeError):
                pass  # it ended meanwhile, or a size the engine refused: the terminal keeps its size

    await sockets.relay(websocket, produce, session.write, control, session.close)


def _start(ex, job: str, body: dict, who: str):
    return ex.start_exec(job, ExecSpec.model_validate(body), who)
