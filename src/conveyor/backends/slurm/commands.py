"""Slurm's own commands (sbatch, scontrol, scancel, squeue), run with an argument list (never a
shell string), with the cluster's slurm.conf, and their failures as Conveyor's errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..base import EngineError, EngineUnavailable
from .mapping import element_ids, parse_record

TIMEOUT_S = 30  # a Slurm command that takes longer: slurmctld does not answer

# What Slurm says when the controller cannot be reached (vs. a refusal of the request).
_UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Connection refused",
                "Zero Bytes were transmitted", "slurm_load_jobs error: Unable to contact")


class Slurm:
    """The cluster's command-line tools. ``conf``: its slurm.conf (None: SLURM_CONF or the
    site's default)."""

    def __init__(self, conf: str | os.PathLike | None = None):
        self.env = {**os.environ, **({"SLURM_CONF": str(conf)} if conf else {})}
        missing = [c for c in ("sbatch", "scontrol", "scancel", "squeue") if shutil.which(c) is None]
        if missing:
            raise EngineUnavailable(f"Slurm's commands are not installed here ({', '.join(missing)} missing): "
                                    "install slurm-client (Debian: apt-get install slurm-client)")
        self._jobcomp: Path | None | bool = False  # not looked up yet

    def run(self, *args: str, input: str | None = None, ok_codes: tuple[int, ...] = (0,)) -> str:
        try:
            done = subprocess.run(list(args), env=self.env, input=input, capture_output=True, text=True,
                                  timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise EngineUnavailable(f"{args[0]} did not answer within {TIMEOUT_S}s (is slurmctld up?)") from None
        if done.returncode not in ok_codes:
            message = (done.stderr or done.stdout).strip() or f"{args[0]} exited with {done.returncode}"
            if any(s in message for s in _UNREACHABLE):
                raise EngineUnavailable(f"Slurm's controller cannot be reached: {message}")
            raise EngineError(f"{args[0]}: {message}")
        return done.stdout

    def ping(self) -> None:
        out = self.run("scontrol", "ping")
        if "is UP" not in out:
            raise EngineUnavailable(f"Slurm's controller is not up: {out.strip()}")

    def version(self) -> str:
        return self.run("sbatch", "--version").strip().removeprefix("slurm").strip().removeprefix("-wlm").strip()

    def submit(self, args: list[str], script: Path) -> str:
        """sbatch: the new job's id."""
        return self.run("sbatch", *args, str(script)).strip().split(";")[0]

    def job(self, slurm_id: str) -> dict[str, str] | None:
        """``scontrol show job`` of one job; None when slurmctld no longer (or never) knew it."""
        try:
            out = self.run("scontrol", "show", "job", "-o", slurm_id)
        except EngineError as exc:
            if "Invalid job id" in str(exc):
                return None
            raise
        line = out.strip().splitlines()[0] if out.strip() else ""
        return parse_record(line) if line.startswith("JobId=") else None

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job slurmctld knows (ended ones for MinJobAge), by job id, and each element
        of a job array also by ``ARRAYID_INDEX``."""
        out = self.run("scontrol", "show", "job", "-o")
        records = [parse_record(line) for line in out.splitlines() if line.startswith("JobId=")]
        by_id = {r["JobId"]: r for r in records}
        for r in records:
            by_id.update(dict.fromkeys(element_ids(r), r))
        return by_id

    def find(self, name: str, alive: bool = False) -> str | None:
        """The id of the newest job named ``name`` slurmctld knows (``alive``: pending or running)."""
        ids = self.run("squeue", "-h", *([] if alive else ["-t", "all"]), f"--name={name}", "-o", "%i").split()
        return max(ids, key=int) if ids else None

    def nodes(self) -> list[dict[str, str]]:
        return [parse_record(line) for line in self.run("scontrol", "show", "node", "-o").splitlines()
                if line.startswith("NodeName=")]

    def release(self, slurm_id: str) -> None:
        self.run("scontrol", "release", slurm_id)

    def cancel_pending(self, slurm_id: str) -> None:
        """scancel what of a job (array) is still pending: held elements no one will release.
        One that has ended (or that slurmctld forgot) is fine."""
        try:
            self.run("scancel", "--state=PENDING", slurm_id)
        except EngineError as exc:
            if "already completed" not in str(exc) and "Invalid job id" not in str(exc):
                raise

    def cancel(self, slurm_id: str) -> None:
        """scancel (Slurm's SIGTERM to the job's processes, SIGKILL after KillWait); one that
        has ended already is fine."""
        try:
            self.run("scancel", slurm_id)
        except EngineError as exc:
            if "already completed" not in str(exc) and "Invalid job id" not in str(exc):
                raise

    def completed(self, slurm_id: str, name: str) -> dict[str, str] | None:
        """The job-completion record (jobcomp/filetxt) of a job slurmctld has forgotten, where
        the cluster keeps one and this machine can read it; None otherwise. A site with
        accounting has ``sacct`` for this; the file is what a cluster without slurmdbd has."""
        if self._jobcomp is False:
            config = {k.strip(): v.strip() for k, _, v in
                      (line.partition("=") for line in self.run("scontrol", "show", "config").splitlines())}
            path = config.get("JobCompLoc")
            self._jobcomp = Path(path) if config.get("JobCompType") == "jobcomp/filetxt" and path else None
        if not self._jobcomp:
            return None
        try:
            lines = self._jobcomp.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            if line.startswith(f"JobId={slurm_id} ") and f" Name={name} " in line:
                return parse_record(line)
        return None
