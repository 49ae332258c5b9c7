"""The data part of :class:`~conveyor.store.Store`: each job's input and output filesets (by
digest) and the images loaded from tarballs."""

from __future__ import annotations

import time


class DataMixin:
    def set_filesets(self, job_id: str, role: str, items: dict[str, str]) -> None:
        """Replace a job's filesets of one role ('input' or 'output'): target -> digest."""
        with self._tx():
            self._db.execute("DELETE FROM job_filesets WHERE job_id=? AND role=?", (job_id, role))
            self._db.executemany(
                "INSERT INTO job_filesets (job_id, role, target, digest) VALUES (?,?,?,?)",
                [(job_id, role, t, d) for t, d in items.items()],
            )

    def filesets(self, job_id: str | None = None, role: str | None = None) -> list[tuple[str, str, str, str]]:
        """(job id, role, target, digest) rows."""
        sql, params = "SELECT job_id, role, target, digest FROM job_filesets WHERE 1=1", []
        if job_id is not None:
            sql += " AND job_id=?"
            params.append(job_id)
        if role is not None:
            sql += " AND role=?"
            params.append(role)
        with self._lock:
            return self._db.execute(sql + " ORDER BY job_id, role, target", params).fetchall()

    def record_image(self, image_id: str, tags: list[str], file_digest: str, file_name: str | None) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO images (image_id, tags, file_digest, file_name, loaded_at) VALUES (?,?,?,?,?)",
                (image_id, ",".join(tags), file_digest, file_name, time.time()),
            )

    def images(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT image_id, tags, file_digest, file_name, loaded_at FROM images ORDER BY loaded_at"
            ).fetchall()
        return [
            {"image_id": i, "tags": [t for t in (tags or "").split(",") if t], "file_digest": d, "file_name": n, "loaded_at": at}
            for i, tags, d, n, at in rows
        ]
