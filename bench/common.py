"""What every benchmark shares: the run context, interleaved timing, summaries, process
figures (RSS, PSS, threads, CPU) and a `conveyor serve` started for a state directory.

Rules the helpers enforce: warm-up rounds first, then repeated measurements with Conveyor
and its baseline interleaved (the order rotates each round, so drift on a busy machine hits
both alike); summaries carry median and spread, never a single run.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

IMAGE = "conveyor/busybox:latest"
CONVEYOR = str(Path(sys.executable).parent / "conveyor")
BENCH_LABEL = "conveyor-bench"  # on every container a baseline makes, so cleanup is exact
# Its value names this run: two runs at once (two sessions, a smoke test beside a full run)
# each remove only their own containers, never the other's running jobs.
BENCH_RUN = os.environ.get("CONVEYOR_BENCH_RUN") or f"{socket.gethostname()}-{os.getpid()}"
VERBOSE = bool(os.environ.get("BENCH_VERBOSE"))


@dataclass
class Context:
    args: object  # the parsed command line (argparse.Namespace)
    client: object  # docker.DockerClient
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="conveyor-bench-")))
    _sleepers: "Sleepers | None" = None

    @property
    def repeat(self) -> int:
        return self.args.repeat

    @property
    def warmup(self) -> int:
        return self.args.warmup

    @property
    def heavy_repeat(self) -> int:
        """Repeats for figures whose one measurement takes tens of seconds."""
        return min(self.args.repeat, self.args.heavy_repeat)

    def sleepers(self) -> "Sleepers":
        """The run's sleeping jobs under a `conveyor serve`, shared by the benchmarks that
        need many running jobs (supervision, recovery): starting 200 containers is the
        slowest part of either. Torn down by close()."""
        if self._sleepers is None:
            self._sleepers = Sleepers(self)
        return self._sleepers

    def close(self) -> None:
        if self._sleepers is not None:
            self._sleepers.close()
            self._sleepers = None
        # Every CLI command starts its state directory's agent (and it stays): stop them all.
        for home in self.root.iterdir() if self.root.exists() else ():
            if (home / "supervisor.lock").exists():
                subprocess.run([CONVEYOR, "--home", str(home), "serve", "--stop"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=False)

    @property
    def network(self) -> str:
        return self.args.network

    def home(self, name: str) -> str:
        """A fresh state directory for one benchmark."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=False)
        return str(path)

    def spec(self, command: list[str], **fields):
        from conveyor import JobSpec

        labels = {BENCH_LABEL: BENCH_RUN, **fields.pop("labels", {})}  # so the run's cleanup finds every container
        return JobSpec(image=IMAGE, command=command, network=self.network, labels=labels, **fields)

    def docker_run(self, *command: str) -> list[str]:
        """The `docker run --rm` baseline command line, same image and network as the jobs."""
        return ["docker", "run", "--rm", "--network", self.network, "--label", f"{BENCH_LABEL}={BENCH_RUN}", IMAGE, *command]


# ----------------------------------------------------------------------------- statistics

def summary(samples: list[float]) -> dict:
    """Median and spread of repeated measurements."""
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "p25": q[0],
        "p75": q[2],
        "n": len(ordered),
    }


def ratio(conveyor: float, baseline: float) -> float | None:
    """Conveyor's cost over the baseline's: > 1 means Conveyor takes longer (or uses more)."""
    return conveyor / baseline if baseline else None


def interleaved(
    fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 1,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Wall time of each function, run round-robin: ``warmup`` unrecorded rounds, then
    ``repeat`` recorded ones. The order rotates every round. ``setup[name]``, if given, runs
    untimed right before each call of ``fns[name]`` (e.g. stopping an agent for a cold start)."""
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for round_no in range(warmup + repeat):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            if setup and name in setup:
                setup[name]()
            t = time.perf_counter()
            fns[name]()
            elapsed = time.perf_counter() - t
            if round_no >= warmup:
                out[name].append(elapsed)
            if VERBOSE:
                print(f"bench:   {name} {'warm-up' if round_no < warmup else 'run'} {elapsed:.3f} s", file=sys.stderr, flush=True)
    return out


def run_quiet(cmd: list[str], env: dict | None = None) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a command with output to /dev/null: (wall seconds, peak RSS in MB) of that child."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-500:]}")
    return elapsed, usage.ru_maxrss / 1024


# ----------------------------------------------------------------------------- processes

def proc_status(pid: int) -> dict:
    """RSS, PSS (shared pages split between the processes sharing them), threads and CPU
    seconds of a running process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    pss_kb = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss_kb = int(line.split()[1])
    except OSError:
        pass
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "pss_mb": pss_kb / 1024,
        "threads": int(fields["Threads"]),
        "cpu_s": (int(stat[11]) + int(stat[12])) / ticks,
    }


class Serve:
    """`conveyor serve` for one state directory, in its own process: the supervisor that
    launches and watches the jobs, as in production. ``started_in`` is the time from spawn
    to the supervisor saying it supervises (lock taken, engine subscribed, store
    reconciled against the engine)."""

    def __init__(self, home: str, timeout: float = 120):
        t = time.perf_counter()
        self.proc = subprocess.Popen(
            [CONVEYOR, "--home", home, "serve"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        seen = b""
        while b"supervising" not in seen:
            line = self.proc.stderr.readline()
            if not line or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"conveyor serve did not start: {seen.decode(errors='replace')[-1000:]}")
            seen += line
        self.started_in = time.perf_counter() - t
        # Read on, to the end: an agent whose stderr pipe is full blocks in its next log line,
        # holding the logging lock every thread of it then waits for (the api benchmark hung
        # on urllib3's "connection pool is full" warnings).
        threading.Thread(target=self._drain, daemon=True, name="bench-serve-stderr").start()

    def _drain(self) -> None:
        with self.proc.stderr:  # closed at its end (the agent's exit), here and not by stop()
            for _ in self.proc.stderr:
                pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict:
        return proc_status(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL: a crash. Running jobs keep running."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sleepers(ex, ctx: Context, n: int, have: list[str], timeout: float = 600) -> list[str]:
    """Submit sleeping jobs until ``have`` holds ``n`` ids, and wait until all run."""
    spec = ctx.spec(["sleep", "3600"], auto_remove=True)
    while len(have) < n:
        have.append(ex.submit(spec, image_ready=True))
    for job_id in have:
        job = ex.wait_started(job_id, timeout=timeout)
        if job.state.value != "Running":
            raise RuntimeError(f"sleeping job {job_id} is {job.state.value}/{job.substate}: {job.message}")
    return have


def stop_all(home: str) -> None:
    """Cancel every live job of a state directory and remove its containers. Needs no
    supervisor to be running: this process becomes it."""
    from conveyor import Executor

    with Executor(home) as ex:
        live = [j.id for j in ex.list() if not j.state.is_final]
        for job_id in live:
            try:
                ex.cancel(job_id, grace=0, wait=False)
            except Exception:  # noqa: BLE001 - it ended meanwhile
                pass
        for job_id in live:
            try:
                ex.wait(job_id, timeout=120)
            except Exception:  # noqa: BLE001 - cleanup below removes what is left
                pass
        ex.cleanup()


def remove_bench_containers(client) -> None:
    """Containers a baseline made (label conveyor-bench), and nothing else."""
    for c in client.api.containers(all=True, filters={"label": f"{BENCH_LABEL}={BENCH_RUN}"}):
        try:
            client.api.remove_container(c["Id"], force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


class Sleepers:
    """Sleeping jobs in one state directory, supervised by a `conveyor serve` process, with
    a client Executor in this process (as a user's program would be)."""

    def __init__(self, ctx: Context):
        from conveyor import Executor

        self.ctx = ctx
        self.home = ctx.home("sleepers")
        # Hundreds of sleeping jobs on a 2-core box: above the default max_running (32 a CPU).
        Path(self.home, "config.toml").write_text("[limits]\nmax_running = 100000\n")
        self.serve = Serve(self.home)
        self.client = Executor(self.home)
        if self.client.supervising:
            raise RuntimeError("the benchmark's client became the supervisor: conveyor serve is not holding the lock")
        self.ids: list[str] = []

    def grow(self, n: int) -> list[str]:
        return start_sleepers(self.client, self.ctx, n, self.ids)

    def crash_and_restart(self) -> float:
        """SIGKILL the supervisor and start another: seconds until it supervises again."""
        self.serve.kill()
        self.serve = Serve(self.home)
        return self.serve.started_in

    def close(self) -> None:
        self.client.close()
        self.serve.stop()
        stop_all(self.home)
