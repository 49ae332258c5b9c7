"""Data through the agent (README: Data): captured outputs, verified by the agent as they are
read; integrity checks, garbage collection, and image tarballs sent to the agent's engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from ..arguments import job_ref
from .base import ClientBase, route

LONG = 3600.0  # requests that may hash the whole content store or load a large image


class DataMixin(ClientBase):
    def filesets(self, ref: str, role: str = "output") -> dict[str, str]:
        job_ref("filesets", ref)
        if role != "output":
            return {i.target: i.source for i in self.info(ref).spec.inputs}
        return self._http.call("GET", route("outputs", ref))["filesets"]

    def outputs(self, ref: str) -> list[dict]:
        job_ref("outputs", ref)
        return self._http.call("GET", route("outputs", ref))["files"]

    def read_output(self, ref: str, path: str, out: BinaryIO | None = None) -> bytes | int:
        job_ref("read_output", ref)
        resp = self._http.stream(route("read_output", ref), {"path": path})
        try:
            if out is None:
                return resp.read()
            n = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                n += len(chunk)
            return n
        finally:
            self._http.close_stream(resp)

    def restore_outputs(self, ref: str, target: str | os.PathLike) -> list[str]:
        """Write every output file under ``target`` (output /out lands in target/out), each
        verified by the agent as it is read. Nothing is written outside ``target``."""
        job_ref("restore_outputs", ref)
        from ..cas import check_path

        written = []
        for f in self.outputs(ref):
            dest = Path(target, check_path(f["path"].lstrip("/")))
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(f".{dest.name}.partial")
            with open(partial, "wb") as out:
                self.read_output(ref, f["path"], out=out)
            os.chmod(partial, f["mode"] & 0o7777)
            os.replace(partial, dest)
            written.append(str(dest))
        return written

    def verify(self, ref: str | None = None) -> dict:
        if ref is not None:
            job_ref("verify", ref)
        return self._http.call("POST", route("verify"), {"job": ref}, timeout=max(self._http.timeout, LONG))

    def gc(self, dry_run: bool = False, grace: float = 600.0) -> dict:
        return self._http.call("POST", route("gc"), {"dry_run": dry_run, "grace": grace}, timeout=max(self._http.timeout, LONG))

    def load_image(self, path: str | os.PathLike) -> dict:
        """Send an image tarball (docker save) to the agent, which loads it into its engine."""
        with open(path, "rb") as f:
            result = self._http.call("POST", route("load_image"), {"name": os.path.basename(str(path))},
                                     upload=f, timeout=max(self._http.timeout, LONG))
        return {**result, "file": str(path)}
