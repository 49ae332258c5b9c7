"""The owner's bearer token: generated at first start, kept in ``agent.token`` (mode 0600),
rotatable while the agent runs (it re-reads the file when it changes). Whoever holds it can
read the state directory, so it has the engine's full power; named tokens with less are in
:mod:`.tokens`."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from . import TOKEN_NAME


def token_path(root: Path) -> Path:
    return root / TOKEN_NAME


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, mode 0600 from the first byte: a reader sees
    the old file or the new one, never a half-written one, and no one else ever sees it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_token(root: Path) -> str:
    """Write a fresh token atomically (0600 from the first byte) and return it."""
    import secrets  # here, as hmac below: the CLI reads the token on every command

    token = secrets.token_urlsafe(32)
    write_private(token_path(root), token + "\n")
    return token


def read_token(root: Path) -> str | None:
    try:
        return token_path(root).read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_token(root: Path) -> str:
    """The current token, created on first use. A token file readable by others is tightened."""
    path = token_path(root)
    token = read_token(root)
    if token is None:
        return write_token(root)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return token


class TokenCheck:
    """Checks bearer tokens against the file, re-reading it only when it changed (rotation)."""

    def __init__(self, root: Path):
        self.root = root
        self._path = token_path(root)
        self._stamp: tuple[int, int] | None = None
        self._token = ensure_token(root).encode()
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = self._path.stat()
        except FileNotFoundError:  # deleted: keep the last one rather than open the door
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            token = read_token(self.root)
            if token:
                self._token = token.encode()
            self._stamp = stamp

    def is_owner(self, given: str) -> bool:
        """Whether ``given`` is the owner's token (compared in constant time)."""
        import hmac

        self._refresh()
        return hmac.compare_digest(given.encode(), self._token)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for anything else."""
    if not authorization:
        return None
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return given.strip()
