"""Part of the slurm driver: a Conveyor array as one Slurm job array.

The array's first task to be created submits the whole array (``sbatch --array=FIRST-LAST:STEP%MAX
--hold``) with one batch script that runs the step in ``tasks/$SLURM_ARRAY_TASK_ID``, a link each
task's create makes to the task's own directory. Each task is then the element
``<array job id>_<index>``: released by its start, cancelled, suspended and looked at as one job,
while Slurm keeps no more than max-parallel of them running (pending ones say JobArrayTaskLimit).
A retry cannot run an element twice: it is a job of its own. Once every task has ended in
Conveyor, ``close_array`` cancels the elements that were never released (tasks cancelled while
they waited in Conveyor's queue).
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from ...spec import JobSpec
from ...spec.backend import SlurmOptions
from ..base import LABEL_ARRAY, LABEL_ARRAY_MAX, LABEL_TASK
from . import mapping


class ArrayMixin:
    """Part of SlurmBackend: needs ``slurm``, ``arrays_dir``, ``_arrays_lock``, ``executor_id``,
    ``_dir`` and ``_job_labels``."""

    def _slurm_name(self, job_id: str, slurm_id: str) -> str:
        """The name Slurm knows the job by: its own, or its array's for an array element."""
        if "_" in slurm_id:
            return mapping.array_name(self._job_labels(job_id).get(LABEL_ARRAY, ""))
        return mapping.job_name(job_id)

    def _array_element(self, job_id: str, spec: JobSpec, options: SlurmOptions) -> str | None:
        """The element of the task's Slurm job array (``ARRAYID_INDEX``), the array submitted
        (held, with ``%max-parallel``) by its first task's create; None when this index's
        element was used by an earlier attempt (a retry is a job of its own)."""
        array_id, index = spec.labels[LABEL_ARRAY], spec.labels[LABEL_TASK]
        array_dir = self.arrays_dir / array_id
        used = array_dir / "used" / index
        with self._arrays_lock:
            if used.exists():
                return None
            array_slurm_id = self._array_job(array_dir, array_id, spec, options)
            (array_dir / "tasks").mkdir(exist_ok=True)
            link = array_dir / "tasks" / index
            link.unlink(missing_ok=True)
            link.symlink_to(self._dir(job_id))
            used.touch()
        return f"{array_slurm_id}_{index}"

    def _array_job(self, array_dir: Path, array_id: str, spec: JobSpec, options: SlurmOptions) -> str:
        """The array's Slurm job id: submitted once, or found again by name after a crash."""
        id_file = array_dir / "slurm-id"
        if id_file.exists():
            return id_file.read_text().strip()
        (array_dir / "used").mkdir(parents=True, exist_ok=True)
        slurm_id = self.slurm.find(mapping.array_name(array_id), alive=True)
        if slurm_id is None:
            script = array_dir / "step.sh"
            script.write_text(mapping.step_script(shlex.quote(str(array_dir / "tasks")) + '/"$SLURM_ARRAY_TASK_ID"'))
            script.chmod(0o755)
            expression = mapping.array_expression(spec.env, int(spec.labels[LABEL_ARRAY_MAX]))
            args = mapping.sbatch_args(spec, options, self.executor_id, "", str(array_dir), (array_id, expression))
            slurm_id = self.slurm.submit(args, script)
        id_file.write_text(slurm_id)
        return slurm_id

    def close_array(self, array_id: str) -> None:
        """Every task of the array has ended in Conveyor: cancel the elements it never released
        (tasks cancelled while queued, indices whose retries ran as jobs of their own) and
        forget the array."""
        array_dir = self.arrays_dir / array_id
        try:
            slurm_id = (array_dir / "slurm-id").read_text().strip()
        except FileNotFoundError:
            slurm_id = self.slurm.find(mapping.array_name(array_id), alive=True)
        if slurm_id:
            self.slurm.cancel_pending(slurm_id)
        shutil.rmtree(array_dir, ignore_errors=True)
