"""Load: N concurrent clients against one agent, over its unix socket and loopback TCP.

    .venv/bin/python -m bench.load --clients 1000 --duration 600      # the full run (issue 20)
    .venv/bin/python -m bench.load --clients 200 --duration 60        # what the README figures come from

Each client is a thread with its own connection (even ones on the unix socket, odd ones on
TCP) that loops until the duration is over. One in ten submits a short job, waits for it and
reads its logs; one in twenty submits a sleeping job, follows its logs and cancels it; the
rest inspect jobs (timed: the p50/p99 below) and list the queue. Every request either
answers or counts as lost; an answer with a 5xx status counts as a server error. The agent's
resident memory and thread count are sampled every second.

Prints one JSON document. tests/test_faults.py runs a small bounded version in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from conveyor import Client, JobSpec
from conveyor.errors import AgentError, AgentUnreachable, InvalidState

IMAGE = "conveyor/busybox:latest"


class Agent:
    """`conveyor serve --tcp 127.0.0.1:0 --tcp-allow-owner` for a fresh state directory."""

    def __init__(self, home: Path):
        self.home = home
        (home / "config.toml").write_text("[defaults]\ncpus = 0\n")
        log = open(home.parent / "agent.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "conveyor", "--home", str(home), "serve", "--tcp",
                                      "127.0.0.1:0", "--tcp-allow-owner"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        from conveyor.agent.auth import read_token
        from conveyor.agent.server import read_info

        deadline = time.monotonic() + 60
        while not ((read_info(home) or {}).get("url") and self._answers()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not come up; see {home.parent / 'agent.log'}")
            time.sleep(0.2)
        self.url, self.token = read_info(home)["url"], read_token(home)

    def _answers(self) -> bool:
        try:
            return Client(self.home, timeout=5).api.ping()
        except AgentError:
            return False

    def sample(self) -> tuple[int, int]:
        """Resident memory (bytes) and threads of the agent process."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])

    def stop(self) -> None:
        with Client(self.home) as client:
            client.cleanup()
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: Counter = Counter()
        self.lost: Counter = Counter()
        self.server_errors: Counter = Counter()
        self.refused: Counter = Counter()  # answered 409: the job was not in a state for it
        self.inspect_s: list[float] = []
        self.examples: list[str] = []

    def call(self, name: str, fn, *args, **kw):
        t = time.perf_counter()
        try:
            out = fn(*args, **kw)
        except AgentUnreachable as exc:
            self._failed(self.lost, name, exc)
            return None
        except AgentError as exc:
            self._failed(self.server_errors if (exc.status or 0) >= 500 else self.lost, name, exc)
            return None
        except InvalidState as exc:  # an answer, and the right one (a job that had ended by then)
            self._failed(self.refused, name, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - any other failure of a request is a lost one
            self._failed(self.lost, name, exc)
            return None
        with self.lock:
            self.ops[name] += 1
            if name == "inspect":
                self.inspect_s.append(time.perf_counter() - t)
        return out

    def _failed(self, counter: Counter, name: str, exc: Exception) -> None:
        with self.lock:
            counter[name] += 1
            if len(self.examples) < 5:
                self.examples.append(f"{name}: {type(exc).__name__}: {exc}")


def _client_loop(index: int, agent: Agent, until: float, tally: Tally, known: list[str]) -> None:
    client = Client(agent.home, timeout=120) if index % 2 == 0 else Client(url=agent.url, token=agent.token, timeout=120)
    short = JobSpec(image=IMAGE, command=["sh", "-c", f"echo client {index}"], network="none")
    sleeper = JobSpec(image=IMAGE, command=["sh", "-c", "echo up; sleep 600"], network="none")
    try:
        while time.monotonic() < until:
            if index % 10 == 0:
                job_id = tally.call("submit", client.submit, short)
                if job_id:
                    known.append(job_id)
                    tally.call("wait", client.wait, job_id, timeout=120)
                    tally.call("logs", lambda: b"".join(chunk for _, chunk in client.logs(job_id)))
            elif index % 20 == 5:
                job_id = tally.call("submit", client.submit, sleeper)
                if job_id:
                    tally.call("wait_started", client.wait_started, job_id, timeout=120)
                    stream = client.logs(job_id, follow=True)
                    tally.call("follow", lambda: next(iter(stream)))
                    tally.call("cancel", client.cancel, job_id, grace=0)
            else:
                if known:
                    tally.call("inspect", client.info, known[index % len(known)])
                tally.call("list", client.list, limit=20)
                time.sleep(0.05)
    finally:
        client.close()


def run(home: Path, clients: int, duration: float) -> dict:
    agent = Agent(home)
    tally, known = Tally(), []
    samples: list[tuple[int, int]] = []
    try:
        with Client(agent.home) as client:
            known.append(client.run(JobSpec(image=IMAGE, command=["echo", "seed"], network="none"), timeout=60).id)
        idle = agent.sample()
        until = time.monotonic() + duration
        threads = [threading.Thread(target=_client_loop, args=(i, agent, until, tally, known), daemon=True)
                   for i in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            samples.append(agent.sample())
            time.sleep(1)
        elapsed = time.monotonic() - started
        after = agent.sample()
    finally:
        agent.stop()
    lat = sorted(tally.inspect_s)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

    return {
        "clients": clients, "duration_s": round(elapsed, 1), "requests": sum(tally.ops.values()),
        "by_operation": dict(tally.ops), "lost": dict(tally.lost), "server_errors": dict(tally.server_errors),
        "refused_409": dict(tally.refused),
        "examples": tally.examples,
        "inspect_ms": {"p50": pct(0.5), "p99": pct(0.99), "mean": round(statistics.mean(lat) * 1000, 1) if lat else None},
        "agent": {"rss_mb_idle": round(idle[0] / 2**20, 1), "rss_mb_peak": round(max(s[0] for s in samples) / 2**20, 1),
                  "rss_mb_after": round(after[0] / 2**20, 1), "threads_idle": idle[1],
                  "threads_peak": max(s[1] for s in samples), "threads_after": after[1]},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="conveyor-load-"))
    (root / "home").mkdir()
    print(json.dumps(run(root / "home", args.clients, args.duration), indent=2))


if __name__ == "__main__":
    os.environ.pop("CONVEYOR_HOST", None)
    main()
