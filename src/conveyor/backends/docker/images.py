"""Images: present for jobs as the pull policy says, loaded from a tarball, and the engine's
own documents about them (list, inspect, pull) passed through."""

from __future__ import annotations

import time
from typing import Iterable, Iterator

from ...spec import JobSpec, PullPolicy
from ..base import EngineError, ImageNotFound
from .mapping import is_reference, split_reference
from .translate import engine_errors, pull_failure


# An image the engine showed us this recently is taken as present when a job is launched (the
# submit just checked it): a burst of launches of one image costs no engine call each. If one
# is removed meanwhile, create finds it missing and asks again, so the pull policy decides as
# it would have.
SEEN_S = 30.0


class ImagesMixin:
    """Part of DockerBackend: needs ``self.api`` and ``self._images_seen``."""

    _images_seen: dict[str, float]

    def ensure_image(self, spec: JobSpec, refresh: bool = True) -> None:
        """Make the image present as the pull policy says. ``refresh=False`` (at launch) does
        not pull again an image that is present (the submitter already honoured ``always``) and
        takes one seen in the last SEEN_S seconds as present."""
        seen = self._images_seen.get(spec.image)
        if not refresh and seen is not None and time.monotonic() - seen < SEEN_S:
            return
        present = self._image_present(spec.image)
        if spec.pull is PullPolicy.NEVER and not present:
            raise ImageNotFound(spec.image, "not present on this node and the pull policy is 'never'")
        if (spec.pull is PullPolicy.ALWAYS and refresh) or not present:
            repo, tag = split_reference(spec.image)
            try:
                with engine_errors(image=spec.image):
                    self.api.pull(repo, tag=tag)
            except EngineError as exc:
                raise ImageNotFound(spec.image, f"pull failed: {exc}") from None
        self._images_seen[spec.image] = time.monotonic()

    def _image_present(self, image: str) -> bool:
        try:
            with engine_errors(image=image):
                self.api.inspect_image(image)
            return True
        except ImageNotFound:
            return False

    def load_image(self, chunks: Iterable[bytes]) -> list[str]:
        """Load an image tarball (``docker save`` format) into the engine; the image ids it
        holds (sha256:...)."""
        ids: list[str] = []
        with engine_errors():
            for msg in self.api.load_image(chunks):
                if "error" in msg:
                    raise EngineError(f"image load failed: {msg['error']}")
                text = msg.get("stream", "")
                for prefix in ("Loaded image ID: ", "Loaded image: "):
                    if text.startswith(prefix):
                        ids.append(self.api.inspect_image(text[len(prefix) :].strip())["Id"])
        return list(dict.fromkeys(ids))

    def image_tags(self, image_id: str) -> list[str]:
        with engine_errors(image=image_id):
            return self.api.inspect_image(image_id).get("RepoTags") or []

    # ------------------------------------------------------------------ the engine's documents

    def images(self) -> list[dict]:
        with engine_errors():
            return self.api.images()

    def image_inspect(self, name: str) -> dict | None:
        """GET /images/{name}/json; None when the engine has no such image (or ``name`` is no
        reference, which goes into the URL's path and could name another endpoint)."""
        if not is_reference(name):
            return None
        try:
            with engine_errors(image=name):
                return self.api.inspect_image(name)
        except ImageNotFound:
            return None

    def pull(self, name: str) -> Iterator[dict]:
        """The engine's progress messages as it pulls ``name``; an ``error`` message becomes
        ImageNotFound or EngineError (translate.pull_failure) and ends the pull."""
        repo, tag = split_reference(name)
        with engine_errors(image=name, pulling=True):
            for message in self.api.pull(repo, tag=tag, stream=True, decode=True):
                if "error" in message:
                    detail = message.get("errorDetail") or {}
                    raise pull_failure(name, detail.get("message") or str(message["error"]))
                yield message

    def engine(self) -> dict:
        with engine_errors():
            return {"version": self.api.version(), "info": self.api.info()}
