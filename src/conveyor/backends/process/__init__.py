"""The process backend: a job as a host process group, no container engine.

Layout under ``root`` (``<state dir>/process``)::

    events.log              one JSON line per event (start, oom, die, pause, unpause, destroy)
    runs/<handle>/          one job run; the handle is the job id (a second create conflicts)
        meta.json plan.json   labels and mounts; what the shim applies (written at create)
        started shim.json     start claimed; the shim's and the job's pid + start time
        stdin.sock            while a stdin_open job runs and nobody has attached its stdin
        exit.json             exit code (128+signal), oom_killed, finished_at (write-then-rename)
        paused                present while the group is stopped (SIGSTOP)
        stdout stderr *.idx   the job's bytes as written, and a "<bytes> <epoch ns>" line per chunk
        work/ outputs/<n>/    the default working directory; one directory per output path

**Shim and recovery.** ``start`` runs ``shim.py`` (stdlib only), which forks away from the agent
into a session of its own and forks the job (see shim.py). The agent keeps no state in memory:
a new ProcessBackend on the same root finds every run from its directory. A run is alive while
its shim is: the pid in ``shim.json`` *and* that process's start time (``/proc/PID/stat``
field 22) match, so a reused pid is never taken for the shim. A shim that died without writing
``exit.json`` (SIGKILL) makes the run ``dead`` with an unknown exit code (and a die event); what
is left of the job is killed, since nothing would record its end.

**Inputs, outputs, mounts.** The job sees the host's filesystem, in a private mount namespace
made by the shim (as root) just before exec, where each bind mount (``spec.mounts``, including
the inputs the launcher staged) appears read-only or not at its target, and each output path is
a fresh directory ``outputs/<n>`` mounted at that path (write files *into* an output path; it is
a directory). A target missing on the host is made inside a tmpfs that shadows its deepest
existing parent (holding a bind mount of each of the parent's entries), so the host is never
touched; for ``/`` that tmpfs becomes the job's root. ``read_archive`` maps a path through the
same mounts (else it is the host's path) and tars it like docker's archive. A ``workdir`` that is
not on the host is the run's ``work/`` mounted there. Only bind mounts: volume and tmpfs mounts
are refused at ``check``; so are mounts, inputs, outputs and ``user`` when the agent is not root.

**Limits.** ``ulimits`` as rlimits, ``nice`` and ``umask`` from the backend options. CPU, memory
(and swap, as docker counts it) and pids through cgroups v2, else v1 (see cgroups.py); OOM from
the cgroup's ``oom_kill`` counter. Where neither is writable: ``cgroup: auto`` (the default) and
``off`` refuse a job that sets limits, ``required`` refuses every job, all at ``check``/``create``.

**Other choices.** The job's environment is PATH, HOME (the user's) and the spec's env, never the
agent's. With ``stdin_open`` its stdin is a pipe the shim holds open: a reader waits (as under
``docker run -i``) until one ``attach_stdin`` feeds it through the shim's ``stdin.sock``, and
sees EOF when that source ends or fails (see shim.Stdin); without, it is /dev/null. No tty or
exec capability. When the job's first process exits, the rest of its group and cgroup is
killed, as in a container. Pause is SIGSTOP of the group (SIGCONT to resume; ``stop`` sends
SIGCONT after SIGTERM so a paused job can act on it).
The event log is never truncated (a line per event, ~100 bytes).
"""

from .backend import ProcessBackend

__all__ = ["ProcessBackend"]
