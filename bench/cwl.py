"""cwltool through Conveyor against cwltool with the real docker, wall time per cwltool run,
interleaved in one run:

- ``docker``: cwltool as it is, running its steps with the docker CLI (the baseline);
- ``stand-in``: the same cwltool with a directory made by ``conveyor docker-shim DIR`` first on
  PATH, so each step's ``docker run`` is a Conveyor job (target: at most 1.05x docker);
- ``user-space``: ``cwltool --user-space-docker-cmd conveyor``, cwltool calling ``conveyor run``.

Two cases from tests/cwl/: ``tool`` (one step: tr with stdin and stdout) and ``workflow`` (three
chained steps). Each cwltool run has its own output and temporary directories. The figures
include cwltool's own start-up (~1.5 s), the same in every mode; ``per_step_overhead_s`` is
(mode median - docker median) / steps. A Conveyor mode that cannot run the tool case once before
the measurements (no `conveyor docker-shim`, or the stand-in failing) is left out: its figures
and ratios are None and ``unavailable`` says why; the docker figures are measured regardless.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import CONVEYOR, Context, interleaved, ratio, summary

CWL_DIR = Path(__file__).resolve().parent.parent / "tests" / "cwl"
CASES = {  # name: (document, input object, container steps)
    "tool": ("stdin_stdout.cwl", "stdin_stdout.yml", 1),
    "workflow": ("workflow.cwl", "workflow.yml", 3),
}
MODES = ["docker", "stand-in", "user-space"]
TARGET_RATIO = 1.05


def add_arguments(parser) -> None:
    parser.add_argument(
        "--cwl-repeat", type=int, default=None,
        help="cwl: recorded cwltool runs per case and mode (default twice --repeat: 10; --repeat 1 gives 2)",
    )


def _cwltool() -> str:
    path = Path(sys.executable).parent / "cwltool"
    found = str(path) if path.exists() else shutil.which("cwltool")
    if found is None:
        raise RuntimeError("cwltool is not installed: pip install -e '.[test]'")
    return found


class Runner:
    """Runs one case in one mode, each run in fresh directories under ``root``."""

    def __init__(self, ctx: Context, cwltool: str):
        self.ctx, self.cwltool = ctx, cwltool
        self.root = ctx.root / "cwl-runs"
        self.root.mkdir()
        self.count = 0
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        self.env = {"docker": base}
        self.shim: Path | None = None

    def prepare(self, mode: str) -> None:
        """The mode's state directory (and for stand-in the shim); raises if it cannot run."""
        home = self.ctx.home(f"cwl-{mode}")
        env = {**self.env["docker"], "CONVEYOR_HOME": home}
        if mode == "stand-in":
            shim = self.ctx.root / "cwl-shim"
            proc = subprocess.run([CONVEYOR, "docker-shim", str(shim)], check=False, env=env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
            if proc.returncode != 0 or not (shim / "docker").exists():
                raise RuntimeError(f"conveyor docker-shim exited {proc.returncode}: {(proc.stdout + proc.stderr)[-500:]}")
            env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', os.defpath)}"
        self.env[mode] = env
        self.run(mode, "tool")  # once, unrecorded: it works, and its agent runs from here on

    def run(self, mode: str, case: str) -> None:
        document, job, _ = CASES[case]
        self.count += 1
        work = self.root / f"{self.count}-{mode}-{case}"
        (work / "tmp").mkdir(parents=True)
        argv = [
            self.cwltool, "--disable-color", "--quiet",
            "--outdir", str(work / "out"),
            "--tmpdir-prefix", f"{work}/tmp/job-",
            "--tmp-outdir-prefix", f"{work}/tmp/out-",
        ]
        if mode == "user-space":
            argv += ["--user-space-docker-cmd", CONVEYOR]
        argv += [str(CWL_DIR / document), str(CWL_DIR / job)]
        try:
            proc = subprocess.run(argv, check=False, env=self.env[mode], cwd=work, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"cwltool ({mode}, {case}) exited {proc.returncode}: {proc.stderr[-800:]}")
        finally:
            shutil.rmtree(work, ignore_errors=True)


def cwl(ctx: Context) -> dict:
    repeat = ctx.args.cwl_repeat if getattr(ctx.args, "cwl_repeat", None) else 2 * ctx.repeat
    runner = Runner(ctx, _cwltool())
    unavailable: dict[str, str] = {}
    modes = ["docker"]
    for mode in ("stand-in", "user-space"):
        try:
            runner.prepare(mode)
            modes.append(mode)
        except Exception as exc:  # noqa: BLE001 - the mode is left out; docker is measured anyway
            unavailable[mode] = f"{type(exc).__name__}: {exc}"
            print(f"bench:   cwl: {mode} left out: {unavailable[mode][:300]}", file=sys.stderr, flush=True)

    fns = {f"{case}/{mode}": (lambda m=mode, c=case: runner.run(m, c)) for case in CASES for mode in modes}
    t = time.perf_counter()
    samples = interleaved(fns, repeat, ctx.warmup)
    took = time.perf_counter() - t
    med = {name: statistics.median(v) for name, v in samples.items()}

    def figure(case: str, mode: str):
        name = f"{case}/{mode}"
        return summary(samples[name]) if name in samples else None

    key = {"stand-in": "stand_in", "user-space": "user_space"}
    conveyor: dict = {}
    baseline: dict = {}
    ratios: dict = {}
    overhead: dict = {}
    for case, (_, _, steps) in CASES.items():
        baseline[f"{case}_docker_s"] = figure(case, "docker")
        for mode, k in key.items():
            conveyor[f"{case}_{k}_s"] = figure(case, mode)
            name, base = f"{case}/{mode}", f"{case}/docker"
            ratios[f"{case}_{k}_vs_docker"] = ratio(med[name], med[base]) if name in med else None
            overhead[f"{case}_{k}"] = (med[name] - med[base]) / steps if name in med else None
    conveyor["per_step_overhead_s"] = overhead
    return {
        "unit": "seconds of wall time per cwltool run (cwltool's start-up included)",
        "runs_per_figure": repeat,
        "cases": {case: {"document": f"tests/cwl/{doc}", "steps": steps} for case, (doc, _, steps) in CASES.items()},
        "target_ratio": TARGET_RATIO,
        "conveyor": conveyor,
        "baseline": baseline,
        "ratio": ratios,
        "unavailable": unavailable,
        "measured_s": took,
    }


BENCHMARKS = {"cwl": cwl}
