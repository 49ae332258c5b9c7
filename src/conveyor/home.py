"""The state directory: where the store, logs and the executor's identity live."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEFAULT_HOME = "~/.local/share/conveyor"


class Home:
    """Paths inside one state directory (``CONVEYOR_HOME`` or ``~/.local/share/conveyor``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        chosen = root or os.environ.get("CONVEYOR_HOME") or DEFAULT_HOME
        self.root = Path(chosen).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)

    @property
    def db(self) -> Path:
        return self.root / "conveyor.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def job_logs(self, job_id: str) -> Path:
        return self.logs / job_id

    @property
    def cas(self) -> Path:
        """The content store (README: Data): blobs by sha256."""
        return self.root / "cas"

    def staging(self, job_id: str) -> Path:
        """A job's inputs, materialised from the content store and mounted read-only."""
        return self.root / "staging" / job_id

    def executor_id(self) -> str:
        """Persistent identity: the same after every restart, so labels keep finding our
        containers. Created once, atomically, so two processes agree on it."""
        path = self.root / "executor-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        tmp = self.root / f".executor-id.{os.getpid()}"
        tmp.write_text(secrets.token_hex(8) + "\n")
        try:
            os.link(tmp, path)  # fails if another process won the race
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text().strip()
