"""Podman through its Docker-compatible API (``podman system service``): the Docker driver with
only what differs overridden. Checked against rootful podman 4.3.1 (Debian 12, cgroup v1,
cgroupfs, runc, netavark), set up by scripts/ensure-podman:

- Image names: podman stores an image loaded from a ``docker save`` archive (or imported) as
  ``localhost/NAME:TAG``; the compat API resolves the short ``NAME:TAG`` to it for create,
  inspect and remove, so jobs use the same names as on Docker. ``image_tags`` gives the short
  names back. Pulls of short names go to docker.io, as Docker's do.
- Log driver: podman refuses ``local`` ("invalid log driver"); ``k8s-file`` keeps the output
  until the container is removed, and gives the job's bytes back exactly (non-UTF-8 too).
  Its timestamps have whole seconds only.
- Events: the label filter and ``since`` work; the actions are docker's (create, start, die,
  pause, unpause, kill, stop, exec_died) plus podman's own (init, cleanup), except that a removed
  container says ``remove`` where docker says ``destroy`` (translated here) and there is no
  ``oom`` event: ``die`` comes after the exit code and OOMKilled are recorded.
- OOMKilled: set only with the conmon wrapper scripts/ensure-podman installs (conmon 2.1.6
  writes its oom file into its working directory, podman 4.3 looks in the bundle).
- Conflicts: a container name in use, or a state that does not allow the call ("container
  state improper": pause of a paused one, exec or kill of a stopped one) is HTTP 500 where
  dockerd says 409; translate.py makes both EngineConflict by podman's words.
- TTY logs: podman calls them text/plain; charset=utf-8, so the SDK decodes a followed TTY
  log (logs.py turns it back into bytes; bytes that are not UTF-8 become U+FFFD there; the
  saved log is read raw and stays exact).
- Times: StartedAt is taken when the runtime's start returns, so a short job can finish
  "before" it started by a few ms; the start is clamped to the finish.
- Pause under cgroup v1: works (the freezer). Stop with grace, exit codes, separate
  stdout/stderr, archives, exec, stats and list by label work as on Docker.
- Runtime: the compat API ignores ``HostConfig.Runtime`` (the container runs under runc and
  inspect says "oci"), so a job asking for one (gVisor) is refused here rather than run
  unsandboxed.
- Ports: the service runs in a network namespace of its own (conveyor-podman), so a published
  port is reachable there, not on the host: ``ports`` is declared False.
- GPUs: podman 4.3's compat API has no device requests (NVIDIA goes through CDI); device nodes
  were not tried (no GPU here): none declared.

Rootless podman needs: a per-user service socket ($XDG_RUNTIME_DIR/podman/podman.sock),
subuid/subgid ranges for the user, slirp4netns or pasta for networking, fuse-overlayfs (or a
kernel with rootless overlay), and cgroup v2 with delegation for any resource limit or pause
(on cgroup v1, rootless containers get no limits and cannot be paused).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from ...errors import InvalidSpec
from ...spec import JobSpec
from ..base import ContainerStatus, EngineEvent, EngineUnavailable
from .driver import DockerBackend
from .mapping import host_config

DEFAULT_URL = "unix:///run/conveyor-podman/podman.sock"

# k8s-file: a file per container, kept until it is removed; the bytes as written.
PODMAN_LOG_CONFIG = {"type": "k8s-file", "config": {}}

# podman's event actions by docker's name for them (the rest are the same words).
_ACTIONS = {"remove": "destroy"}


class PodmanBackend(DockerBackend):
    """The Backend for a rootful Podman's Docker-compatible API (default: Conveyor's service
    socket from scripts/ensure-podman; ``base_url`` for another)."""

    name = "podman"
    # Docker's, less ports (reachable only in the service's network namespace) and GPUs (no
    # device requests in podman 4.3's compat API).
    capabilities = dataclasses.replace(DockerBackend.capabilities, gpus=frozenset(), ports=False)

    def __init__(self, executor_id: str, base_url: str | None = None, timeout: int = 120):
        url = base_url or DEFAULT_URL
        try:
            super().__init__(executor_id, base_url=url, timeout=timeout)
        except EngineUnavailable as exc:
            cause = exc.__cause__ or exc
            raise EngineUnavailable(
                f"cannot reach podman's Docker-compatible API at {url} ({cause}); "
                "start it with scripts/ensure-podman, or give the backend another url"
            ) from None

    def version(self) -> dict:
        info = super().version()
        info["name"] = self.name
        return info

    def check(self, spec: JobSpec) -> None:
        runtime = spec.backend.options.get("runtime") if spec.backend is not None else None
        if runtime:
            # The compat API would ignore it and run the job under runc: refused, not unsandboxed.
            raise InvalidSpec.single(
                "backend.options.runtime",
                runtime,
                "podman's Docker-compatible API ignores the runtime (the job would run under runc); "
                "run it on the docker backend, whose engine lists its runtimes in 'conveyor machine'",
            )

    def _host_config(self, spec: JobSpec) -> dict:
        self.check(spec)  # a create without a submit (the driver used on its own) is refused too
        hc = host_config(spec)
        hc["log_config"] = PODMAN_LOG_CONFIG
        return hc

    def inspect(self, handle: str) -> ContainerStatus | None:
        """As on Docker, except that a job never ends before it started: podman records
        StartedAt when the runtime's start returns, FinishedAt from the exit file, so a short
        job can show FinishedAt a few ms before StartedAt."""
        status = super().inspect(handle)
        if status is not None and status.finished_at is not None and status.started_at is not None:
            if status.finished_at < status.started_at:
                status = dataclasses.replace(status, started_at=status.finished_at)
        return status

    @staticmethod
    def _decode_events(stream) -> Iterator[EngineEvent]:
        for ev in DockerBackend._decode_events(stream):
            action = _ACTIONS.get(ev.action)
            yield ev if action is None else EngineEvent(action=action, container_id=ev.container_id, job_id=ev.job_id, time=ev.time)

    def image_tags(self, image_id: str) -> list[str]:
        """The image's names as jobs use them: podman's ``localhost/`` prefix dropped."""
        return [t.removeprefix("localhost/") for t in super().image_tags(image_id)]
