"""Job files: a YAML (or JSON, which is YAML) mapping of job fields, read as plain data.

The CLI reads them and sends the data to the agent, which validates it as a JobSpec; so this
module needs neither pydantic nor the job model (``JobSpec.from_file`` validates on top).
"""

from __future__ import annotations

from pathlib import Path

from .errors import InvalidSpec


def read_job_file(path: str | Path) -> dict:
    import yaml  # only when a file is read: keeps CLI start-up short

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidSpec.single("file", str(path), f"cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidSpec.single("file", str(path), f"not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidSpec.single("file", str(path), "the file must hold a mapping of job fields (image: ...)")
    return data
