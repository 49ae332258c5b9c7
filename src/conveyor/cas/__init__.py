"""Content-addressed storage: blobs by sha256, filesets as manifests stored as blobs.

Layout under the state directory::

    cas/blobs/ab/cdef...   one file per blob, named by its sha256 (read-only, 0444)
    cas/tmp/               partial writes; renamed into blobs/ only when complete and synced

A blob is written to a temp file while it is hashed, fsynced, then renamed to its digest:
a crash leaves either no blob or a whole one, and the same content is stored once. Every
read hashes what it reads; a blob whose bytes do not match its name raises
:class:`CorruptBlob` and is never handed out as good data.

A fileset is ``{"conveyor": "fileset/1", "entries": {path: {"digest", "size", "mode"}}}`` in
canonical JSON (sorted keys, no spaces), stored as a blob; its digest names it. Paths are
relative, normalised, without ``..``: :func:`check_path` is the one gate, applied when a
manifest is built, when one is read, and again when it is restored.

The store lives in submodules by concern (``checks``: errors, digest and path checks;
``fileset``: the manifest; ``blobs``: the BlobStore; ``jobdata``: freezing, staging and
capturing a job's data); every name is re-exported here.
"""

from .blobs import CHUNK, BlobStore
from .checks import DIGEST_RE, CasError, CorruptBlob, MissingBlob, UnsafePath, check_digest, check_path
from .fileset import FILESET_KIND, Entry, Fileset
from .jobdata import capture_outputs, freeze_inputs, stage_inputs

__all__ = [
    "CHUNK",
    "DIGEST_RE",
    "FILESET_KIND",
    "BlobStore",
    "CasError",
    "CorruptBlob",
    "Entry",
    "Fileset",
    "MissingBlob",
    "UnsafePath",
    "capture_outputs",
    "check_digest",
    "check_path",
    "freeze_inputs",
    "stage_inputs",
]
