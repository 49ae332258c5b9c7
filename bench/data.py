"""Data capture and restore: a job writes ``--data-mb`` MB of random bytes in ``--data-files``
files under /out and ends. Capture = reading /out out of the stopped container into the
content store (get_archive stream -> sha256 -> temp file + fsync + rename per blob, then the
manifest), as Conveyor's finalize does; each measurement uses a fresh store so nothing is
deduplicated. Restore = writing the fileset back out into an empty directory (each blob's
content verified, O_NOFOLLOW-safe). Both are compared with a plain `docker cp CID:/out DIR`
of the same container (what a user would do by hand). MB/s = size / median time.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time

from conveyor import Executor
from conveyor.cas import BlobStore, capture_outputs

from .common import Context, ratio, summary


def add_arguments(parser) -> None:
    parser.add_argument("--data-mb", type=int, default=200, help="data: MB of outputs (default 200; the issue's figure is 1024)")
    parser.add_argument("--data-files", type=int, default=1000, help="data: number of files the MB are spread over (default 1000)")


def data(ctx: Context) -> dict:
    size, files = ctx.args.data_mb * 1_000_000, ctx.args.data_files
    per_file = size // files
    mb = per_file * files / 1e6
    script = (
        "mkdir -p /out/a /out/b && i=0; "
        f"while [ $i -lt {files} ]; do d=a; [ $((i % 2)) -eq 1 ] && d=b; "
        f"head -c {per_file} /dev/urandom > /out/$d/f$i.bin; i=$((i+1)); done"
    )
    with Executor(ctx.home("data")) as ex:
        t = time.time()
        job = ex.run(ctx.spec(["sh", "-c", script], outputs=["/out"]))
        if job.state.value != "Done":
            raise RuntimeError(f"data job {job.id} ended {job.state.value}/{job.substate}: {job.message}")
        final_at = ex.store.transitions(job.id)[-1].at
        in_finalize = final_at - job.finished_at  # logs + outputs capture + record, after exit
        captured = sum(f["size"] for f in ex.outputs(job.id))
        if captured != per_file * files:
            raise RuntimeError(f"captured {captured} bytes, the job wrote {per_file * files}")
        cid = job.container_id
        capture_s: list[float] = []
        restore_s: list[float] = []
        cp_s: list[float] = []
        sync_s: list[float] = []
        for i in range(ctx.heavy_repeat):
            store = BlobStore(ctx.root / f"cas-{i}")
            store.sync = _timed(store.sync, sync_s)  # the share of capture spent making it durable
            t = time.perf_counter()
            digest = capture_outputs(ex.backend, cid, ["/out"], store)["/out"]
            capture_s.append(time.perf_counter() - t)
            dest = ctx.root / f"restore-{i}"
            t = time.perf_counter()
            store.restore(digest, dest)
            restore_s.append(time.perf_counter() - t)
            shutil.rmtree(dest)
            shutil.rmtree(store.root)
            cp_dest = ctx.root / f"cp-{i}"
            cp_dest.mkdir()
            t = time.perf_counter()
            done = subprocess.run(["docker", "cp", f"{cid}:/out", str(cp_dest)], capture_output=True)
            cp_s.append(time.perf_counter() - t)
            if done.returncode != 0:
                raise RuntimeError(f"docker cp failed: {done.stderr.decode(errors='replace')[-500:]}")
            shutil.rmtree(cp_dest)
        ex.remove(job.id)
    mc, mr, md = statistics.median(capture_s), statistics.median(restore_s), statistics.median(cp_s)
    return {
        "unit": f"seconds to move {mb:g} MB in {files} files (MB/s = size / median)",
        "conveyor": {
            "capture_s": summary(capture_s),
            "capture_mb_per_s": mb / mc,
            "capture_sync_s": summary(sync_s),  # the one syncfs before the manifest (docker cp does not sync)
            "restore_s": summary(restore_s),
            "restore_mb_per_s": mb / mr,
            "job_exit_to_final_s": in_finalize,
        },
        "baseline": {"docker_cp_s": summary(cp_s), "mb_per_s": mb / md},
        "ratio": {"capture": ratio(mc, md), "restore": ratio(mr, md)},
    }


def _timed(fn, into: list[float]):
    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            into.append(time.perf_counter() - t)

    return wrapper


BENCHMARKS = {"data": data}
