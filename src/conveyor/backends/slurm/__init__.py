"""The slurm backend: a job as an ``sbatch`` submission on a Slurm cluster, run on its node by
Conveyor's step (step.py), the way Arvados dispatches crunch-run through Slurm.

**The job's directory** is ``<shared_dir>/<executor id>/slurm/<job id>`` on a filesystem every
node mounts at the same path (as Slurm sites have; ``[engine] shared_dir``, required). It holds
``job.json`` (the spec), ``step.sh`` (the batch script: ``python -m conveyor.backends.slurm.step
DIR``, so Conveyor must be installed at the same path on the nodes), ``slurm-id``, the job's
``stdout``/``stderr`` with their times, ``started.json`` and ``result.json`` from the step,
``slurm.out``/``slurm.err`` (the step's and Slurm's own messages), and ``outputs/<n>``: each
output path is bind-mounted from there, so the agent reads outputs wherever the job ran. Inputs
are staged on the shared directory too (the router's staging_dir). A handle is
``<slurm job id>-<job id>``.

**Create, then start.** ``create`` writes the directory and submits the job held (``sbatch
--hold --no-requeue --job-name conveyor-<job> --comment conveyor:<executor>:<job>``, with
--cpus-per-task, --mem, --gres=gpu:N, --time as a backstop to Conveyor's own timeout, and the
job's backend options: partition, account, qos, constraint, reservation, nice). ``start``
releases it (``scontrol release``). Conveyor's scheduler admits jobs against the cluster's
capacity (its nodes' CPUs and memory, from ``scontrol show node``); Slurm places them, and may
still queue them (other users' work).

**States** (mapping.job_status): the step's ``result.json`` is the job's end (the container's
exit code and OOM flag, from the node's engine). Without it: held -> created; pending after
release -> running with no start time and Slurm's reason in ``error`` ("pending in Slurm
(Resources): ..."); running before the step started the container -> the same, "starting on
n1"; running -> running; ended in Slurm without a result -> exited with Slurm's ExitCode
(TIMEOUT, CANCELLED, OUT_OF_MEMORY named), or dead with no code when its node failed
(NODE_FAIL). Slurm's record comes from ``scontrol show job`` while slurmctld keeps it
(MinJobAge), then from the job-completion file (jobcomp/filetxt) when the cluster has one.

**Events** are polled (backends/polling.py) from ``list()``: the job directories, and one
``scontrol show job`` for all of them, every 0.25 s.

**Stop.** The step is asked for SIGTERM and SIGKILL through files in the job's directory
(``term``, ``kill``; ``grace`` holds a stop's grace): it passes SIGTERM to the job and kills it
after the grace. A SIGKILL to the step would leave its container running, and ``scancel
--signal`` to a step Slurm has just resumed was seen to be lost. Slurm's own SIGTERM (time limit,
an operator's ``scancel``) reaches the step's handler the same way; ``scancel`` outright is the
last resort for a step that does not answer. No other signals.

**Suspend/resume** (step.py): the step freezes the job when asked through the file ``pause``
and answers ``paused``; then ``scontrol suspend`` (Slurm's suspend alone would stop the step,
not the container the node's engine runs). Resume: ``scontrol resume``, then the step thaws it.

No exec, stats, stdin, tty or ports: declared, refused.

**Recovery.** Everything is on the shared directory and in Slurm: a restarted agent lists the
job directories and asks Slurm; a job that ended meanwhile has its result and logs there.
"""

__all__ = ["SlurmBackend"]


def __getattr__(name: str):
    # Loaded on first use: the step (``python -m conveyor.backends.slurm.step``) runs on every
    # job's node and imports this package first; it needs none of the driver.
    if name == "SlurmBackend":
        from .driver import SlurmBackend

        return SlurmBackend
    raise AttributeError(name)
