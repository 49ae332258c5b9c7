"""The node agent: `conveyor serve` runs the Executor and serves its API over HTTP.

This module stays light (stdlib only): the CLI imports it on every call to find out whether
an agent answers for its state directory. The server side (FastAPI, uvicorn) lives in
:mod:`conveyor.agent.app` and :mod:`conveyor.agent.server` and is imported only by `serve`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

SOCKET_NAME = "agent.sock"
TOKEN_NAME = "agent.token"
INFO_NAME = "agent.json"
POLICY_NAMES = ("policy.yaml", "policy.yml", "policy.json")
JOBS_AREA = "jobs"
API_PREFIX = "/v1"
# How answers, refusals and the job event log name the owner of the state directory (the
# token in agent.token, and an embedded Executor); no named token may take the name.
OWNER = "owner"


def home_root(home: str | os.PathLike | None = None) -> Path:
    """The state directory a client means, without creating it (see :class:`conveyor.home.Home`)."""
    from ..home import DEFAULT_HOME

    chosen = home or os.environ.get("CONVEYOR_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


def socket_path(root: Path) -> Path:
    return root / SOCKET_NAME


def socket_answers(path: Path, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the unix socket ``path``."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def agent_answers(home: str | os.PathLike | None = None) -> bool:
    return socket_answers(socket_path(home_root(home)))
