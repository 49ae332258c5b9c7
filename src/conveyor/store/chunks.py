"""Reading a file in chunks from an offset, for the logs a caller streams."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator


def iter_chunks(path: Path, offset: int = 0, size: int = 1 << 16) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(size):
            yield chunk
