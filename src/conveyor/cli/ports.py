"""`conveyor port-forward JOB [LOCAL:]REMOTE...`: a running job's TCP ports on this machine, as
`kubectl port-forward` gives a pod's. It listens on 127.0.0.1 (``--address`` to change), and
each connection it accepts becomes one WebSocket through the agent to the job's port
(client/streams.py). Each port is tried once before listening, so a job that cannot be
reached (not running, network none, refused by the token's policy, nothing listening) is said
at once, exit 125. Ctrl-C ends it.
"""

from __future__ import annotations

import socket
import threading

import click

from ..errors import ConveyorError
from .app import cli, connect
from .render import error_line


@cli.command("port-forward")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Listen on this address (0.0.0.0: every interface, reachable by others).")
@click.argument("job")
@click.argument("ports", nargs=-1, required=True, metavar="[LOCAL:]REMOTE...")
@click.pass_context
def port_forward(ctx: click.Context, job: str, ports: tuple[str, ...], address: str) -> None:
    """Reach TCP ports of a running job from this machine, as kubectl port-forward does.

    \b
    conveyor port-forward JOB 8080            # localhost:8080 -> the job's 8080
    conveyor port-forward JOB 9000:80 :5432   # 9000 -> 80, a free port -> 5432
    """
    api = connect(ctx)
    pairs = [_pair(text) for text in ports]
    job_id = api.info(job)["id"]
    for _, remote in pairs:
        api.open_port(job_id, remote).close()  # raises why it cannot be reached
    for local, remote in pairs:
        try:
            listener = socket.create_server((address, local))
        except OSError as exc:
            raise click.BadParameter(f"cannot listen on {address}:{local}: {exc.strerror}", param_hint="LOCAL") from None
        click.echo(f"Forwarding from {address}:{listener.getsockname()[1]} -> {remote}")
        threading.Thread(target=_accept, args=(listener, api, job_id, remote), daemon=True).start()
    threading.Event().wait()  # until Ctrl-C


def _pair(text: str) -> tuple[int, int]:
    """``[LOCAL:]REMOTE``: LOCAL defaults to REMOTE; empty or 0, a free port."""
    local, sep, remote = text.rpartition(":")
    try:
        remote_port = int(remote)
        local_port = int(local) if local else (0 if sep else remote_port)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use [LOCAL:]REMOTE, e.g. 8080 or 9000:80", param_hint="PORTS") from None
    if not 1 <= remote_port <= 65535 or not 0 <= local_port <= 65535:
        raise click.BadParameter(f"{text!r}: ports are from 1 to 65535 (LOCAL 0: a free one)", param_hint="PORTS")
    return local_port, remote_port


def _accept(listener: socket.socket, api, job: str, port: int) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_forward, args=(conn, api, job, port), daemon=True).start()


def _forward(conn: socket.socket, api, job: str, port: int) -> None:
    """One accepted connection, to its end: bytes both ways, each side's end passed on."""
    try:
        remote = api.open_port(job, port)
    except ConveyorError as exc:
        error_line(f"error forwarding port {port}: {exc}")
        conn.close()
        return
    threading.Thread(target=_copy, args=(conn.recv, remote.sendall, remote.shutdown), daemon=True).start()
    _copy(remote.recv, conn.sendall, conn.shutdown)
    remote.close()
    conn.close()


def _copy(recv, sendall, shutdown) -> None:
    try:
        while data := recv(65536):
            sendall(data)
    except (OSError, ConveyorError):
        pass  # either side went away: the end of this connection
    try:
        shutdown(socket.SHUT_WR)
    except (OSError, ConveyorError):
        pass
