"""The supervisor shim: one small process per job run that owns the job's process group.

Run as ``python shim.py RUNDIR`` (a file path, not ``-m``: it imports only the standard
library, so it starts in a few tens of milliseconds and never loads pydantic). The agent has
already resolved everything into ``RUNDIR/plan.json``; the shim only applies it:

1. forks once and lets the agent reap the parent at once, then ``setsid``: the shim no longer
   belongs to the agent, so an agent killed with SIGKILL leaves the job running and supervised;
2. forks the job: its own process group, in its cgroups (before exec, so nothing escapes the
   limits), a private mount namespace for bind mounts, nice/umask/rlimits, the user, the
   working directory, then exec. An exec failure comes back through a close-on-exec pipe;
3. records ``shim.json`` (its own pid and start time and the job's), copies the job's stdout
   and stderr into two files with a ``<bytes> <ns>`` index line per chunk received, waits for
   the job, kills what is left of its group and cgroup, and records ``exit.json`` (exit code,
   128+signal, OOM from the cgroup's counter) with write-then-rename.

A job whose spec keeps stdin open reads a pipe whose write end the shim holds, fed through one
attach connection on ``RUNDIR/stdin.sock`` (see Stdin); any other job's stdin is /dev/null.

Events (start, oom, die) are appended to the backend's event log, one short line per write
(O_APPEND makes such a write atomic).
"""

import ctypes
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
import warnings  # noqa: F401 - os.execvpe imports it; after the user switch the stdlib may be out of reach

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 1, 32, 4096, 8192, 16384, 1 << 18
STDIN_SOCKET, STDIN_ACK = "stdin.sock", b"\x01"


def main(rundir: str) -> None:
    with open(os.path.join(rundir, "plan.json")) as f:
        plan = json.load(f)
    if os.fork():
        os._exit(0)  # the agent reaps this parent; the shim lives on in a session of its own
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)  # only the job takes signals; the shim records its end
    Shim(rundir, plan).run()


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, a process's identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def socket_address(dir_fd: int) -> str:
    """The stdin socket's address through an open fd of its run directory: a unix socket path
    is limited to 108 bytes, a state directory's path is not (conmon does the same)."""
    return f"/proc/self/fd/{dir_fd}/{STDIN_SOCKET}"


def write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_event(events: str, action: str, handle: str, job_id: str | None) -> None:
    """Append one event line to the log, then ring its bell (a FIFO beside it) so a reader
    waiting there wakes at once; with no reader, or a full bell, the reader's poll finds it."""
    line = json.dumps({"t": time.time(), "a": action, "h": handle, "j": job_id}) + "\n"
    fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    ring(events + ".bell")


def ring(bell: str) -> None:
    try:
        fd = os.open(bell, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: no reader
    except OSError:
        return
    try:
        os.write(fd, b"!")
    except OSError:
        pass  # full: the reader has a wake-up pending anyway
    finally:
        os.close(fd)


class Shim:
    def __init__(self, rundir: str, plan: dict):
        self.dir, self.plan = rundir, plan

    def event(self, action: str) -> None:
        append_event(self.plan["events"], action, self.plan["handle"], self.plan["job_id"])

    def run(self) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            stdin = Stdin(self.dir) if self.plan.get("stdin") else None  # listening before shim.json
        except OSError as exc:
            self.finish(127 << 8, error=f"cannot open the job's stdin: {exc}")
            return
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(out_r), os.close(err_r), os.close(ready_r)
            child(self.plan, out_w, err_w, ready_w, stdin.job_end if stdin else None)  # never returns
        for fd in (out_w, err_w, ready_w):
            os.close(fd)
        if stdin:
            os.close(stdin.job_end)  # the job's alone: its exit makes a write fail (EPIPE)
        failure = b""
        while chunk := os.read(ready_r, 4096):
            failure += chunk
        os.close(ready_r)
        if failure:
            if stdin:
                stdin.close()
            _, status = os.waitpid(pid, 0)
            self.finish(status, error=failure.decode(errors="replace"))
            return
        now = time.time()
        write_json(os.path.join(self.dir, "shim.json"), {
            "shim_pid": os.getpid(), "shim_start": proc_start_time(os.getpid()),
            "pid": pid, "pid_start": proc_start_time(pid), "started_at": now,
        })
        self.event("start")
        status = self.pump(pid, out_r, err_r, stdin)
        self.finish(status)

    def pump(self, pid: int, out_r: int, err_r: int, stdin: "Stdin | None") -> int:
        """Copy output until the job's leader has exited and its pipes are closed (or, once it
        has exited and the rest of its group is killed, 2 s more at most), and input while any
        comes; what is left of the input is dropped at the end."""
        files = {}
        for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
            data = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            index = os.open(os.path.join(self.dir, name + ".idx"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            files[fd] = (data, index)
        sel = selectors.DefaultSelector()
        for fd in files:
            sel.register(fd, selectors.EVENT_READ)
        if stdin:
            stdin.watch_for_attach(sel)
        status, deadline = None, None
        while files and (deadline is None or time.monotonic() < deadline):
            for key, _ in sel.select(timeout=0.2):
                if key.fd not in files:
                    stdin.ready(key.data)
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    files.pop(key.fd)
                    continue
                data, index = files[key.fd]
                os.write(data, chunk)
                os.write(index, f"{len(chunk)} {time.time_ns()}\n".encode())
            if status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
                    self.kill_rest(pid)
                    deadline = time.monotonic() + 2.0
        if stdin:
            stdin.close()
        if status is None:
            _, status = os.waitpid(pid, 0)
        return status

    def kill_rest(self, pgid: int) -> None:
        """The leader has exited: nothing of the job may outlive it (as in a container)."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for procs in self.plan["cgroup_procs"]:
            try:
                with open(procs) as f:
                    for line in f:
                        try:
                            os.kill(int(line), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            except OSError:
                pass

    def oom_kills(self) -> int:
        counter = self.plan.get("oom_counter")
        if not counter:
            return 0
        try:
            with open(counter) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            pass
        return 0

    def finish(self, status: int, error: str | None = None) -> None:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = 128 + sig if sig is not None else os.WEXITSTATUS(status)
        oom = self.oom_kills() > 0
        write_json(os.path.join(self.dir, "exit.json"), {
            "exit_code": code, "signal": sig, "oom_killed": oom, "finished_at": time.time(), "error": error,
        })
        if error is None:
            if oom:
                self.event("oom")
            self.event("die")


class Stdin:
    """The job's stdin when its spec keeps it open: a pipe whose write end the shim holds, so
    the job waits for input (as under ``docker run -i``) until ONE attach connection on
    ``RUNDIR/stdin.sock`` feeds it. The run directory is the agent's alone (mode 0700), which keeps
    other users and the job's own user from attaching. The shim acks the connection with one byte,
    copies what comes into the pipe, and closes the pipe (EOF for the job) when the sender shuts its
    side down or the connection fails. Nothing blocks the shim's loop: socket and pipe are
    non-blocking, and the socket is read only while nothing waits for the pipe (a job that does not
    read holds back the sender, never the output). A job that closes its stdin or ends makes the
    write fail (EPIPE): the rest is dropped and the connection closed, which ends the sender's copy."""

    def __init__(self, rundir: str):
        self.path = os.path.join(rundir, STDIN_SOCKET)
        self.job_end, self.pipe = os.pipe()
        os.set_blocking(self.pipe, False)
        self.listener, self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), None
        dir_fd = os.open(rundir, os.O_PATH | os.O_DIRECTORY)
        try:
            self.listener.bind(socket_address(dir_fd))
        finally:
            os.close(dir_fd)
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.sel, self.watching, self.pending = None, None, b""

    def watch_for_attach(self, sel: selectors.BaseSelector) -> None:
        self.sel = sel
        sel.register(self.listener, selectors.EVENT_READ, "listener")

    def ready(self, what: str) -> None:
        if what == "listener":
            self._accept()
        elif what == "conn":
            self._receive()
        else:
            self._flush()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:  # nothing after all, or the caller gave up
            return
        self._close_listener()  # one attach: later ones find no socket
        self.conn = conn
        try:
            conn.setblocking(False)
            conn.send(STDIN_ACK)
        except OSError:
            self.close()
            return
        self._watch("conn")

    def _receive(self) -> None:
        try:
            chunk = self.conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the sender is done (or gone): EOF for the job
            self.close()
            return
        self.pending = chunk
        self._flush()

    def _flush(self) -> None:
        try:
            written = os.write(self.pipe, self.pending)
        except BlockingIOError:
            written = 0
        except OSError:  # EPIPE: nobody reads the job's stdin any more; drop the rest
            self.close()
            return
        self.pending = self.pending[written:]
        self._watch("pipe" if self.pending else "conn")

    def _watch(self, what: str) -> None:
        """Wait for the connection to be readable or the pipe writable, never both."""
        if self.watching == what:
            return
        if self.watching:
            self.sel.unregister(self.conn if self.watching == "conn" else self.pipe)
        self.watching = what
        if what == "conn":
            self.sel.register(self.conn, selectors.EVENT_READ, "conn")
        else:
            self.sel.register(self.pipe, selectors.EVENT_WRITE, "pipe")

    def _close_listener(self) -> None:
        if self.listener is None:
            return
        if self.sel is not None:
            self.sel.unregister(self.listener)
        self.listener.close()
        self.listener = None
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def close(self) -> None:
        """The job's stdin ends here (EOF), whatever was attached or not."""
        if self.watching:
            self.sel.unregister(self.conn if self.watching == "conn" else self.pipe)
            self.watching = None
        self._close_listener()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None


# ----------------------------------------------------------------------------- the job's side


def child(plan: dict, out_w: int, err_w: int, ready_w: int, stdin_r: int | None) -> None:
    """Become the job; on any failure before exec, report it through ``ready_w`` and exit 127."""
    try:
        os.setpgid(0, 0)
        for procs in plan["cgroup_procs"]:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        if plan["mounts"]:
            Namespace(plan["scratch"]).build(plan["mounts"])
        if plan["nice"]:
            os.nice(plan["nice"])
        os.umask(plan["umask"])
        for number, soft, hard in plan["rlimits"]:
            resource.setrlimit(number, (_rlim(soft), _rlim(hard)))
        os.dup2(os.open(os.devnull, os.O_RDONLY) if stdin_r is None else stdin_r, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        # As root, before the user switch: the default work directory lies in the state
        # directory, whose parents (e.g. /root) the job's user may not be allowed to cross.
        os.chdir(plan["cwd"])
        user = plan["user"]
        if user:
            os.setgroups(user["groups"])
            os.setgid(user["gid"])
            os.setuid(user["uid"])
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.closerange(3, ready_w)
        os.closerange(ready_w + 1, 65536)
        os.execvpe(plan["argv"][0], plan["argv"], plan["env"])
    except BaseException as exc:  # noqa: BLE001 - reported to the shim, whatever it is
        try:
            os.write(ready_w, f"cannot start {plan['argv'][0]!r}: {exc}".encode())
        finally:
            os._exit(127)


def _c(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _rlim(value: int) -> int:
    return resource.RLIM_INFINITY if value == -1 else value


class Namespace:
    """A private mount namespace in which each bind mount appears at its target.

    A target missing on the host gets a mount point without touching the host: its deepest
    existing ancestor is *shadowed* by a tmpfs that holds a bind mount of each of the
    ancestor's entries (symlinks copied), and the missing path is made in that tmpfs. For the
    root directory the tmpfs becomes the new root (moved onto / and chrooted into)."""

    def __init__(self, scratch: str):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.scratch, self.used = scratch, 0

    def mount(self, source, target, fstype, flags, data=None) -> None:
        if self.libc.mount(_c(source), _c(target), _c(fstype), flags, _c(data)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {source or fstype} on {target}: {os.strerror(err)}")

    def build(self, mounts: list[dict]) -> None:
        if self.libc.unshare(CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
        self.mount(None, "/", None, MS_REC | MS_PRIVATE)
        for m in sorted(mounts, key=lambda m: m["target"].count("/")):
            directory = os.path.isdir(m["source"])
            self.ensure(m["target"], directory)
            self.mount(m["source"], m["target"], None, MS_BIND | MS_REC)
            if m["read_only"]:
                self.mount(None, m["target"], None, MS_BIND | MS_REMOUNT | MS_RDONLY)

    def ensure(self, target: str, directory: bool) -> None:
        if os.path.lexists(target):
            return
        ancestor = os.path.dirname(target)
        while not os.path.isdir(ancestor):
            ancestor = os.path.dirname(ancestor)
        self.shadow(ancestor)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if directory:
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))

    def shadow(self, ancestor: str) -> None:
        tmp = os.path.join(self.scratch, str(self.used))
        self.used += 1
        st = os.stat(ancestor)
        self.mount("tmpfs", tmp, "tmpfs", 0, f"mode={st.st_mode & 0o7777:o},uid={st.st_uid},gid={st.st_gid}")
        with os.scandir(ancestor) as entries:
            for e in entries:
                src, dst = os.path.join(ancestor, e.name), os.path.join(tmp, e.name)
                if e.is_symlink():
                    os.symlink(os.readlink(src), dst)
                    continue
                if e.is_dir():
                    os.mkdir(dst)
                else:
                    os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
                self.mount(src, dst, None, MS_BIND | MS_REC)
        if ancestor == "/":
            os.chdir(tmp)
            self.mount(tmp, "/", None, MS_MOVE)
            os.chroot(".")
            os.chdir("/")
        else:
            self.mount(tmp, ancestor, None, MS_MOVE)


if __name__ == "__main__":
    main(sys.argv[1])
