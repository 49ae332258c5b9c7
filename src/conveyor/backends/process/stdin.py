"""Feeding a process job's stdin: one connection to its shim's stdin socket (see shim.Stdin)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import BinaryIO

from ..base import EngineConflict, EngineError
from .shim import STDIN_ACK, socket_address

ACK_TIMEOUT = 10.0


def attach(rundir: Path, handle: str, source: BinaryIO) -> None:
    """Connect to the shim and wait for its ack (the attach is then ours, the only one), then
    copy ``source`` in a daemon thread. EngineConflict when the shim takes no attach: its job
    ended, or its stdin was attached already."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ACK_TIMEOUT)
    try:
        dir_fd = os.open(rundir, os.O_PATH | os.O_DIRECTORY)
        try:
            sock.connect(socket_address(dir_fd))
        finally:
            os.close(dir_fd)
        ack = sock.recv(1)
    except TimeoutError:
        sock.close()
        raise EngineError(f"the process job {handle}'s supervisor did not take its stdin within {ACK_TIMEOUT:g} s") from None
    except OSError:  # no socket (taken, or the job ended), refused, reset
        ack = b""
    if ack != STDIN_ACK:
        sock.close()
        raise EngineConflict(f"the process job {handle}'s stdin cannot be attached: it was attached already, "
                             "or the job has ended")
    sock.settimeout(None)
    threading.Thread(target=_pump, args=(source, sock), daemon=True, name="conveyor-stdin").start()


def _pump(source: BinaryIO, sock: socket.socket) -> None:
    """Copy until ``source`` ends or fails, or the shim drops the connection (the job closed
    its stdin or ended); then shut the sending side: the job sees EOF."""
    try:
        while chunk := (source.read1(1 << 16) if hasattr(source, "read1") else source.read(1 << 16)):
            sock.sendall(chunk, socket.MSG_NOSIGNAL)
    except Exception:  # noqa: BLE001, S110 - any failure ends the copy, as the interface says
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()
