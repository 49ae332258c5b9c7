"""The swarm backend: a job as a one-task Docker Swarm service, through the manager's Engine API.

**A job is a service** named ``conveyor-<job id>``, mode ``replicated-job`` with one completion
and MaxConcurrent 1 (never replicas=N: with failing tasks Swarm re-creates them endlessly),
restart condition none, ``dnsrr`` endpoint (no IPVS here, so no virtual IP and no routing mesh).
Conveyor's labels (managed, executor, job, name) are on the service and on the ContainerSpec, so
every task container ties back to its job. Resources: cpus and memory as both Reservations (the
scheduler places by them) and Limits; pids_limit as Limits.Pids. Env, workdir, user, hostname,
entrypoint (Swarm's Command) and command (Args), read_only, init, ulimits, StopGracePeriod from
``stop_grace``, bind/volume/tmpfs mounts (a bind source must exist on the node that runs the
task, else Swarm rejects the task). Logs through the ``local`` driver, byte-exact as for docker
jobs. The image is passed as written: the API never resolves it against a registry (what the
CLI's ``--no-resolve-image`` turns off); every node must hold it (``load_image`` loads it on the
manager and on each node in ``node_urls``), else the task is rejected ("No such image").
Network: the node's default bridge (no ``Networks``), ``host``, or a swarm network by name;
``none`` is no swarm network and ``container:`` modes do not exist: refused. Placement from the
job's backend options (spec/backend.py SwarmOptions): ``constraints`` as given
(``node.labels.pool==gpu``), ``preferences`` as spread descriptors (``spread=node.labels.zone``).
``check`` refuses what a service cannot carry (mapping.check): privileged, ipc/uts/pid modes,
tty, stdin, ports, GPUs, swap, shm_size, a restart policy (use retries), staged inputs.

**Create, then start.** ``create`` makes the service with zero completions: it exists (a second
create is EngineConflict, ``find`` sees it after a crash) and runs nothing. ``start`` updates it
to one completion (a job service runs anew on each update). The phase is a service label
(``conveyor.swarm.phase``: created, started, stopping, stopped), since an update is the only
way to act on a job and every update re-runs it.

**States** (mapping.service_status): created until started; a started job whose task waits
(pending ... starting, or no task yet) is ``running`` with the wait's reason in ``error`` (e.g.
"pending: no suitable node (scheduling constraints not satisfied on 3 nodes)"): the finisher
leaves it alone and the reconcile never starts it again. running; complete -> exited 0; failed
-> exited with the container's exit code; rejected -> exited, exit code None, the node's words;
shutdown/orphaned/remove, or a running task whose node is down -> dead, naming the node.
Swarm reports no OOM kill: ``oom_killed`` is always False (an OOM-killed job is a plain 137).
A finished task keeps no start time: started_at is when this driver saw it running, else the
task's creation time.

**Events.** /events carries no task events on 20.10, so ``events()`` polls this executor's
services and tasks every 0.25 s from a snapshot taken when it returns: start, die, destroy.

**Stop.** Swarm has no per-task signal. Any update removes the running task -- and with it the
service's log and the exit code. So a stop (``signal`` SIGTERM/SIGKILL, ``stop``) follows the
service's log into this driver's cache (``cache_dir``) first, updates the job to zero
completions (Swarm sends SIGTERM, then SIGKILL after the task's StopGracePeriod, which is the
spec's ``stop_grace``, fixed at create; SIGKILL while stopping is what Swarm sends itself),
watches the task to its end, and writes that end on the service (label ``conveyor.swarm.final``,
phase stopped). ``save_logs`` then reads the kept log. An agent that dies mid-stop loses that
job's log and exit code (the job ends dead, saying so). Other signals, pause, exec, stats,
attach, resize and read_archive are NotSupported.

**Leftovers.** Swarm leaves task containers after the service goes. ``remove`` removes the
service, then the containers labelled with its service id on the manager and on every node in
``node_urls``; the manager's API cannot reach other nodes, so without ``node_urls`` they stay
for a node-level prune (``docker container prune --filter label=conveyor.executor=<id>``), and
``cleanup`` removes the ones it can reach.

Capabilities: recover, images, image_load; no pause, exec, gpus, ports, stdin, files, stats, tty.
"""

from .driver import SwarmBackend
from .mapping import check, service_args, service_status

__all__ = ["SwarmBackend", "check", "service_args", "service_status"]
