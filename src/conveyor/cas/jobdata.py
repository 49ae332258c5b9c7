"""A job's data, the glue the executor, scheduler and supervisor use. Kept in one module so the
data rules live in one place: inputs frozen at submit (:func:`freeze_inputs`), staged read-only
at launch (:func:`stage_inputs`), outputs captured at the end (:func:`capture_outputs`, through
the backend's ``read_archive``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .blobs import BlobStore
from .checks import CasError, UnsafePath
from .fileset import Fileset


def freeze_inputs(spec, blobs: BlobStore):
    """Return ``spec`` with every host-path input replaced by the digest of its frozen copy.
    A digest input must name a fileset whose blobs are all present."""
    from ..spec import Input
    from ..errors import InvalidSpec

    if not spec.inputs:
        return spec
    frozen = []
    for i, item in enumerate(spec.inputs):
        field = f"inputs[{i}].source"
        if item.frozen:
            try:
                fs = blobs.fileset(item.source)
            except CasError as exc:
                raise InvalidSpec.single(field, item.source, f"not a stored fileset ({exc}); use an output digest from 'conveyor outputs ID --json'") from None
            missing = [p for p, e in fs.entries.items() if not blobs.has(e.digest)]
            if missing:
                raise InvalidSpec.single(field, item.source, f"the fileset's blobs for {missing[:3]} are missing; run 'conveyor verify --all'")
            if item.file and len(fs.entries) != 1:
                raise InvalidSpec.single(field, item.source, "file=true needs a fileset with exactly one file")
            frozen.append(item)
            continue
        try:
            digest, is_file = blobs.freeze(item.source)
        except FileNotFoundError:
            raise InvalidSpec.single(field, item.source, "no such file or directory on this host") from None
        except PermissionError:
            raise InvalidSpec.single(field, item.source, "not readable by Conveyor") from None
        except UnsafePath as exc:
            raise InvalidSpec.single(field, item.source, f"{exc}; copy the data into a plain directory") from None
        except OSError as exc:
            raise InvalidSpec.single(field, item.source, f"cannot read it: {exc.strerror or exc}") from None
        frozen.append(Input(source=digest, target=item.target, file=is_file))
    return spec.model_copy(update={"inputs": frozen})


def stage_inputs(spec, blobs: BlobStore, staging: Path) -> list:
    """Materialise a job's input filesets under ``staging`` (hard links from the store where
    the mode allows, else verified copies) and return the read-only bind mounts for them.
    Built in a temp directory and renamed: a crash mid-way leaves nothing half-staged."""
    from ..spec import Mount

    mounts = []
    for n, item in enumerate(spec.inputs):
        dest = staging / str(n)
        if not dest.exists():
            tmp = staging / f".{n}.tmp-{os.getpid()}-{time.monotonic_ns()}"
            try:
                blobs.restore(item.source, tmp, link=True)
                os.chmod(tmp, 0o755)
                os.rename(tmp, dest)
            except BaseException:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
                raise
        source = dest
        if item.file:
            (name,) = blobs.fileset(item.source).entries
            source = dest / name
        mounts.append(Mount(type="bind", source=str(source), target=item.target, read_only=True))
    return mounts


def capture_outputs(backend, handle: str, outputs: list[str], blobs: BlobStore) -> dict[str, str]:
    """Read each output path out of the (stopped) container into the store: target -> fileset
    digest. A path the job did not create is recorded as an empty fileset with a note."""
    result = {}
    for target in outputs:
        stream = backend.read_archive(handle, target)
        if stream is None:
            fs = Fileset({}, [{"path": target, "reason": "not present in the container when the job ended"}])
        else:
            try:
                fs = blobs.capture_tar(stream)
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
        result[target] = blobs.put_fileset(fs)
    return result
