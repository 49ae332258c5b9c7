"""The :class:`Store` itself: the SQLite connection (WAL mode, or read-only), the lock that
serialises its use, transactions and migration. What it can do comes from one mixin per concern
(jobs, transitions, arrays, data), as the docker SDK builds its APIClient."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

from .arrays import ArraysMixin
from .data import DataMixin
from .jobs import JobsMixin
from .migrations import MIGRATIONS
from .transitions import TransitionsMixin


class Store(JobsMixin, TransitionsMixin, ArraysMixin, DataMixin):
    """Jobs, arrays, filesets and images in one SQLite database. ``readonly`` opens it for a
    reader (an events stream, say) that must never write, migrate or wait for the writer."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            self._open_readonly()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the executor's few threads; the lock serialises use.
        # Other processes (a CLI reading `ps`) open their own and WAL keeps readers unblocked.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _open_readonly(self) -> None:
        # Its own connection, so its reads never queue behind the writer's lock (WAL lets
        # readers run beside the writer), and mode=ro, so no migration, no pragma change, and
        # any write through it fails. The path is quoted: '?' or '#' in it would end it early.
        self._db = sqlite3.connect(
            f"file:{quote(str(self.path))}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- plumbing

    def _migrate(self) -> None:
        with self._tx():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self):
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, exc, tb):
                try:
                    store._db.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    store._lock.release()

        return _Tx()

    def close(self) -> None:
        with self._lock:
            self._db.close()
