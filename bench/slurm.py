"""Conveyor on the two-node Slurm of scripts/slurm-cluster against plain ``sbatch``, in one run:

- latency: N sequential single jobs (`echo hi`), submit to the job's command running (start)
  and submit to its end seen by the submitter (done). Conveyor: ``Executor.submit`` then
  ``wait``, as a process (backend "slurm") and as a container (the node's docker); baseline:
  ``sbatch --wrap 'echo hi'`` and ``sbatch --wrap 'docker run --rm IMAGE echo hi'``, with
  ``scontrol show job`` polled until the job has ended;
- array: a makespan, submit to every task ended, of an N-task array (`echo task $ID; sleep 0`)
  at most 4 at once with --mem=200M: ``submit_array(max_parallel=4)`` against
  ``sbatch --array=1-N%4``, process and container alike.

Seconds. Each variant runs on the same cluster, interleaved (order rotating), so drift and
other users of the cluster hit all alike.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import time
from pathlib import Path

from conveyor import Executor, JobSpec

from .common import BENCH_LABEL, BENCH_RUN, IMAGE, Context, interleaved, ratio, summary

CLUSTER_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm-cluster"
MEMORY = "200M"  # without --mem Slurm gives a job a whole node's memory: one task a node
ALIVE = ("PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING")  # COMPLETING: the script has ended
POLL_S = 0.05
# Start is when the job's command began, read on both sides from the node, not from Slurm:
# Slurm's RUNNING (and its StartTime, whole seconds) comes before the batch script runs, while
# Conveyor's started_at is its step's start of the command (docker's StartedAt for a container).
# The baseline's job writes /proc/uptime first (busybox's date has no %N; a container shares
# the host's boot clock): 10 ms resolution, truncated.
STAMP = "cat /proc/uptime >&2"


def add_arguments(parser) -> None:
    parser.add_argument("--slurm-jobs", type=int, default=10, help="slurm: sequential single jobs per variant (default 10)")
    parser.add_argument("--slurm-tasks", type=int, default=100, help="slurm: tasks of the array (default 100)")


def p90(samples: list[float]) -> dict:
    q = statistics.quantiles(samples, n=10, method="inclusive")[8] if len(samples) > 1 else samples[0]
    return {**summary(samples), "p90": q}


class Cluster:
    """The Slurm commands, the baseline's jobs, and the cleanup of every job this run made
    (each has its working directory under ``root``)."""

    def __init__(self, conf: str, root: Path):
        self.env = {**os.environ, "SLURM_CONF": conf}
        self.root = root
        self.boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)  # /proc/uptime -> epoch

    def run(self, *argv: str) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def sbatch(self, script: str, *flags: str) -> str:
        return self.run("sbatch", "--parsable", f"--chdir={self.root}", f"--output={self.root}/%j.out",
                        f"--error={self.root}/%j.err", *flags, "--wrap", script).strip()

    def single(self, script: str) -> tuple[float, float]:
        """(start, done) seconds of one baseline job."""
        t0 = time.time()
        job_id = self.sbatch(f"{STAMP}; {script}")
        deadline = time.monotonic() + 300
        while True:
            record = dict(f.split("=", 1) for f in self.run("scontrol", "show", "job", "-o", job_id).split() if "=" in f)
            if record["JobState"] not in ALIVE:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"sbatch job {job_id} still {record['JobState']} after 300 s")
            time.sleep(POLL_S)
        done = time.time() - t0
        if record["ExitCode"] != "0:0":
            raise RuntimeError(f"sbatch job {job_id} ended {record['JobState']} {record['ExitCode']}")
        uptime = float((self.root / f"{job_id}.err").read_text().split()[0])
        return self.boot + uptime - t0, done

    def array(self, script: str, tasks: int) -> None:
        """One ``sbatch --array=1-N%4``, polled with squeue until none of its tasks is alive."""
        array_id = self.sbatch(script, f"--array=1-{tasks}%4", f"--mem={MEMORY}", f"--output={self.root}/%A_%a.out")
        deadline = time.monotonic() + 1200
        while set(self.run("squeue", "-h", "-j", array_id, "-o", "%T").split()) - {"COMPLETING"}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sbatch array {array_id} not ended after 1200 s")
            time.sleep(POLL_S)
        wrong = [i for i in range(1, tasks + 1) if (self.root / f"{array_id}_{i}.out").read_text() != f"task {i}\n"]
        if wrong:
            raise RuntimeError(f"sbatch array {array_id}: tasks {wrong[:5]} did not print their index")

    def cancel_ours(self) -> None:
        """scancel every job still in Slurm whose working directory is this run's: the
        baseline's and Conveyor's (its job directories are under the shared directory here)."""
        ours = {job for job, workdir in (line.split(None, 1) for line in self.run("squeue", "-h", "-o", "%F %Z").splitlines())
                if workdir.startswith(str(self.root))}
        if ours:
            subprocess.run(["scancel", *sorted(ours)], env=self.env, capture_output=True, check=False)


def _conveyor_single(ex: Executor, spec: JobSpec) -> tuple[float, float]:
    t0 = time.time()
    job = ex.wait(ex.submit(spec), timeout=300)
    done = time.time() - t0
    if job.state.value != "Done" or job.started_at is None:
        raise RuntimeError(f"job {job.id} ended {job.state.value}/{job.substate}: {job.message}")
    return job.started_at - t0, done


def _conveyor_array(ex: Executor, spec: JobSpec, tasks: int) -> None:
    array_id = ex.submit_array(spec, 1, tasks, 1, max_parallel=4)
    for job_id, _index, _state in ex.array_tasks(array_id):
        job = ex.wait(job_id, timeout=1200)
        if job.state.value != "Done":
            raise RuntimeError(f"task {job_id} ended {job.state.value}/{job.substate}: {job.message}")


def _latencies(ctx: Context, fns: dict) -> dict[str, list[tuple[float, float]]]:
    """(start, done) of each function's job, ``--slurm-jobs`` times after the warm-up, the
    order rotating each round as in common.interleaved."""
    names = list(fns)
    out: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for i in range(ctx.warmup + ctx.args.slurm_jobs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            sample = fns[name]()
            if i >= ctx.warmup:
                out[name].append(sample)
    return out


def slurm(ctx: Context) -> dict:
    """Single-job latency and an array's makespan: Conveyor on Slurm against plain sbatch."""
    up = subprocess.run(["bash", str(CLUSTER_SCRIPT), "up"], capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        raise RuntimeError(f"the Slurm cluster is not up: scripts/slurm-cluster up exited {up.returncode}:\n"
                           f"{up.stdout}{up.stderr}")
    conf = up.stdout.strip().splitlines()[-1]
    root = Path(ctx.home("slurm-shared"))  # the nodes are on this host: any local path is "shared"
    cluster = Cluster(conf, root)
    home = ctx.home("slurm")
    Path(home, "config.toml").write_text(
        f'[defaults]\ncpus = 0\n[engine]\nname = "slurm"\nurl = "{conf}"\nshared_dir = "{root}"\n')
    labels = {BENCH_LABEL: BENCH_RUN}
    process = JobSpec(command=["echo", "hi"], backend="slurm", labels=labels)
    container = JobSpec(image=IMAGE, command=["echo", "hi"], network=ctx.network, labels=labels)
    task = ["sh", "-c", "echo task $CONVEYOR_TASK_ID; sleep 0"]
    task_process = JobSpec(command=task, backend="slurm", labels=labels, resources={"memory": MEMORY})
    task_container = JobSpec(image=IMAGE, command=task, network=ctx.network, labels=labels, resources={"memory": MEMORY})
    docker = f"docker run --rm --network {shlex.quote(ctx.network)} --label {BENCH_LABEL}={BENCH_RUN}"
    tasks = ctx.args.slurm_tasks
    try:
        with Executor(home) as ex:
            try:
                lat = _latencies(ctx, {
                    "conveyor_process": lambda: _conveyor_single(ex, process),
                    "conveyor_container": lambda: _conveyor_single(ex, container),
                    "sbatch_wrap": lambda: cluster.single("echo hi"),
                    "sbatch_docker_run": lambda: cluster.single(f"{docker} {IMAGE} echo hi"),
                })
                # No warm-up rounds: the single jobs above warmed the nodes (docker, Python, Slurm).
                arrays = interleaved({
                    "conveyor_process": lambda: _conveyor_array(ex, task_process, tasks),
                    "conveyor_container": lambda: _conveyor_array(ex, task_container, tasks),
                    "sbatch_wrap": lambda: cluster.array("echo task $SLURM_ARRAY_TASK_ID; sleep 0", tasks),
                    "sbatch_docker_run": lambda: cluster.array(
                        f"{docker} -e CONVEYOR_TASK_ID=$SLURM_ARRAY_TASK_ID {IMAGE} sh -c 'echo task $CONVEYOR_TASK_ID; sleep 0'",
                        tasks),
                }, ctx.heavy_repeat, 0)
            finally:
                # After a failure: Conveyor's queued tasks must not reach Slurm (held) once we are gone.
                for job in ex.list():
                    if not job.state.is_final:
                        try:
                            ex.cancel(job.id, grace=0, wait=False)
                        except Exception:  # noqa: BLE001, S110 - it ended meanwhile
                            pass
    finally:
        cluster.cancel_ours()
    start = {n: p90([s for s, _ in v]) for n, v in lat.items()}
    done = {n: p90([d for _, d in v]) for n, v in lat.items()}
    array = {n: summary(v) for n, v in arrays.items()}

    def r(figures: dict, a: str, b: str) -> float | None:
        return ratio(figures[a]["median"], figures[b]["median"])
    return {
        "unit": "seconds: a single `echo hi` job from submit to its command running (start) and to its end seen by "
                f"the submitter (done); an array of {tasks} `echo task $ID; sleep 0` tasks, 4 at once, --mem={MEMORY}, "
                "from submit to every task ended",
        "conveyor": {
            "process": {"start_s": start["conveyor_process"], "done_s": done["conveyor_process"],
                        "array_s": array["conveyor_process"]},
            "container": {"start_s": start["conveyor_container"], "done_s": done["conveyor_container"],
                          "array_s": array["conveyor_container"]},
        },
        "baseline": {
            "sbatch_wrap": {"start_s": start["sbatch_wrap"], "done_s": done["sbatch_wrap"], "array_s": array["sbatch_wrap"]},
            "sbatch_docker_run": {"start_s": start["sbatch_docker_run"], "done_s": done["sbatch_docker_run"],
                                  "array_s": array["sbatch_docker_run"]},
        },
        "ratio": {
            "process_start_vs_sbatch_wrap": r(start, "conveyor_process", "sbatch_wrap"),
            "process_done_vs_sbatch_wrap": r(done, "conveyor_process", "sbatch_wrap"),
            "process_array_vs_sbatch_array": r(array, "conveyor_process", "sbatch_wrap"),
            "container_start_vs_sbatch_docker_run": r(start, "conveyor_container", "sbatch_docker_run"),
            "container_done_vs_sbatch_docker_run": r(done, "conveyor_container", "sbatch_docker_run"),
            "container_array_vs_sbatch_docker_run_array": r(array, "conveyor_container", "sbatch_docker_run"),
        },
        "notes": "start: Conveyor's started_at (its step starting the command; docker's StartedAt for a container) "
                 "against the time the baseline job's own first command read from /proc/uptime (10 ms resolution); "
                 "done: Executor.wait returning (Conveyor polls Slurm every 0.5 s) against scontrol show job polled "
                 f"every {POLL_S} s until the job is past RUNNING (COMPLETING counts as ended); arrays: squeue polled "
                 f"every {POLL_S} s until no task is alive. Both nodes run on one host, so 4 parallel tasks share its cores.",
    }


BENCHMARKS = {"slurm": slurm}
