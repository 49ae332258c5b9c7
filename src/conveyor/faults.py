"""Fault points for crash tests: stop a process at an exact step so a test can SIGKILL it there.

Only the crash-safety tests use this. ``CONVEYOR_FAULT`` names one or more points (comma
separated); when the process reaches one it appends ``"<point> <job id>"`` to the file named by
``CONVEYOR_FAULT_FILE`` (if set) and then sleeps for good, holding whatever it held at that
step, until the test kills it. Without ``CONVEYOR_FAULT`` a point costs one dict lookup.

Points:
  after-create  the container exists, its id is not yet in the store, the job is still Queued
  after-claim   the job is claimed (Running) but its container is not started
  after-logs    the finished job's logs are saved, its final state is not yet recorded
  after-outputs its outputs are captured into the content store, its final state is not yet recorded
  after-record  the final state is recorded, the container (auto_remove) is not yet removed
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("conveyor.faults")


def reached(point: str, job_id: str) -> None:
    wanted = os.environ.get("CONVEYOR_FAULT")
    if not wanted or point not in wanted.split(","):
        return
    log.warning("fault point %s reached for job %s; stopping here until killed", point, job_id)
    marker = os.environ.get("CONVEYOR_FAULT_FILE")
    if marker:
        with open(marker, "a") as f:
            f.write(f"{point} {job_id}\n")
    while True:
        time.sleep(3600)
