"""The :class:`Store` itself: the SQLite connection (WAL mode, or read-only), the lock that
serialises its use, transactions and migration. What it can do comes from one mixin per concern
(jobs, transitions, arrays, data, usage), as the docker SDK builds its APIClient."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

from ..home import unusable, writing
from .arrays import ArraysMixin
from .data import DataMixin
from .jobs import JobsMixin
from .leases import LeasesMixin
from .migrations import MIGRATIONS
from .transitions import TransitionsMixin
from .usage import UsageMixin


class Store(JobsMixin, TransitionsMixin, ArraysMixin, DataMixin, UsageMixin, LeasesMixin):
    """Jobs, arrays, filesets and images in one SQLite database. ``readonly`` opens it for a
    reader (an events stream, say) that must never write, migrate or wait for the writer."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            self._open_readonly()
            return
        self._lock = threading.RLock()
        # An unwritable, full or read-only state directory fails here, before anything is
        # recorded, as StateDirUnusable (and so does any write below: see _tx).
        with writing(self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection shared by the executor's few threads; the lock serialises use.
            # Other processes (a CLI reading `ps`) open their own and WAL keeps readers unblocked.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
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

    def _tx(self) -> "_Tx":
        """A write transaction. A full disk or an unwritable directory (at BEGIN, any statement
        or COMMIT) rolls it back and raises StateDirUnusable: nothing of it is recorded."""
        return _Tx(self)

    def _writing(self):
        """Errors of writing the state directory as StateDirUnusable; a read-only store's refusal
        to write is its own (sqlite3's), a mistake of its caller."""
        return contextlib.nullcontext() if self.readonly else writing(self.path.parent)

    def _commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()  # a failed COMMIT (disk full) may leave the transaction open
            raise

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # SQLite rolled it back itself (after a full disk or an I/O error)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Tx:
    """Store._tx()'s context manager (one class, not one built per transaction: a submit makes
    several)."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> None:
        store = self.store
        store._lock.acquire()
        try:
            with store._writing():
                store._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            store._lock.release()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        store = self.store
        try:
            if exc_type is None:
                with store._writing():
                    store._commit()
                return
            store._rollback()
            error = None if store.readonly else unusable(store.path.parent, exc)
            if error is not None:
                raise error from exc
        finally:
            store._lock.release()
