"""Start, watch and stop the vfio-user server under test (the "target").

The target is a program that listens on a UNIX socket.  Its command line is a
template with a ``{socket}`` placeholder (we choose the path and the program
binds it) and/or an ``{fd}`` placeholder (we bind and listen ourselves, and pass
the listening socket down as that file descriptor number).

Readiness is detected by reading /proc/net/unix, never by connecting: many
servers serve a single client and exit, so a probing connection would use them
up.  Every wait has a timeout.  Standard library only, Linux only.

Whatever the server forks is the target's too (``_tree``): a server that
daemonizes (its first process exits once another listens) is followed to the
process that listens, and stop() ends every process it started, in its
process group or not.
"""

from __future__ import annotations

import itertools
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import _guard, _tree
from ._interrupt import deferred_signals

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "ExternalTarget",
    "ResourceSnapshot",
    "Target",
    "TargetStartError",
    "fd_count",
    "is_listening",
    "listening_inodes",
    "rss_bytes",
    "wait_listening",
]

DEFAULT_STARTUP_TIMEOUT = 10.0

# sun_path is 108 bytes including the terminating NUL.
_SUN_PATH_MAX = 107
# Set in the Flags column of /proc/net/unix once listen() has been called.
_SO_ACCEPTCON = 0x00010000
# After SIGKILL the process can still be stuck in uninterruptible sleep; give up
# waiting after this long rather than hang the test session.
_KILL_WAIT = 5.0
# How long an {fd} target must stay alive to count as started.
_FD_SETTLE = 0.05
# Seconds a daemon that listens gets to become our child (its parent exits), once seen.
_FOLLOW_WAIT = 1.0

_counter = itertools.count(1)


class TargetStartError(RuntimeError):
    """The target exited, or did not listen in time, during start()."""

    def __init__(self, message: str, *, command: str, returncode: int | None, stderr_tail: str):
        super().__init__(message)
        self.command = command
        self.returncode = returncode
        self.stderr_tail = stderr_tail


@dataclass(frozen=True)
class ResourceSnapshot:
    """Resource readings of the target process; None where unavailable."""

    fds: int | None
    rss_bytes: int | None
    taken_at: float  # time.monotonic(): subtract two snapshots for an interval


# --------------------------------------------------------------------------
# /proc readings, usable on their own


def listening_inodes(path: str | os.PathLike[str]) -> set[int]:
    """Socket inodes listening on `path`, from one read of /proc/net/unix.

    The path must be spelled as the server bound it (we always hand out
    absolute paths).  Abstract sockets appear with a leading "@".
    """
    want = os.fsencode(path)
    found = set()
    with open("/proc/net/unix", "rb") as f:
        next(f, None)  # header: Num RefCount Protocol Flags Type St Inode Path
        for line in f:
            # The path is the last column and may itself contain spaces.
            fields = line.rstrip(b"\n").split(None, 7)
            if len(fields) < 8 or fields[7] != want:
                continue
            if int(fields[3], 16) & _SO_ACCEPTCON:
                found.add(int(fields[6]))
    return found


def is_listening(path: str | os.PathLike[str]) -> bool:
    """Whether some socket is listening on `path` (no connection is made)."""
    return bool(listening_inodes(path))


def wait_listening(
    path: str | os.PathLike[str],
    timeout: float,
    alive: Callable[[], bool] | None = None,
    *,
    exclude: Iterable[int] = (),
) -> bool:
    """Poll /proc/net/unix until something listens on `path`.

    Returns True once listening; False if `timeout` seconds pass or `alive()`
    returns False first.  Socket inodes in `exclude` (listeners that existed
    before the server started) do not count.
    """
    exclude = set(exclude)
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        if listening_inodes(path) - exclude:
            return True
        if alive is not None and not alive():
            # It may have listened and exited between the two checks; one more
            # look costs nothing and gives the clearer outcome.
            return bool(listening_inodes(path) - exclude)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)  # fast start, then don't hammer /proc


def fd_count(pid: int | None) -> int | None:
    """Number of open file descriptors of `pid`, or None if it is gone."""
    if pid is None:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def rss_bytes(pid: int | None) -> int | None:
    """Resident set size of `pid` in bytes (VmRSS), or None if it is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None  # zombies and kernel threads have no VmRSS line


def _runnable_seconds(pid: int | None) -> float | None:
    """The time `pid`'s threads spent running or waiting to run (/proc/PID/task/*/schedstat:
    on the CPU, then on a run queue, in ns); None if it is gone."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError, PermissionError, TypeError):
        return None
    total = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as f:
                on_cpu, waiting, _ = f.read().split()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # a thread that just ended
        total += int(on_cpu) + int(waiting)
    return total / 1e9


def cpu_busy(pid: int | None, window: float) -> float | None:
    """How much of the next `window` seconds `pid` spends running or ready to run (1.0:
    it spins; a busy machine does not hide that, as CPU time alone would); None if it is
    gone. The share of samples that find it runnable (state R) counts too: a process a
    CPU quota throttles is neither on a CPU nor on a run queue, but it is in state R."""
    before, start = _runnable_seconds(pid), time.monotonic()
    samples = runnable = 0
    while (now := time.monotonic()) - start < window:
        samples += 1
        proc = _tree.stat(pid) if pid is not None else None
        runnable += proc is not None and proc.state == "R"
        time.sleep(min(_SAMPLE, max(0.0, start + window - now)))
    after = _runnable_seconds(pid)
    if before is None or after is None:
        return None
    return max((after - before) / (time.monotonic() - start), runnable / max(samples, 1))


_SAMPLE = 0.01  # seconds between looks at a process's state


_PF_EXITING = 0x00000004  # <linux/sched.h>: set when do_exit() begins
_PF_DUMPCORE = 0x00000200  # set while the kernel writes a core dump


def is_exiting(pid: int | None) -> bool:
    """Whether `pid` is on its way out: exiting, dumping core, or a zombie.

    A server killed by a signal can have closed its fds (or be writing a
    core) while it still counts as running; /proc/PID/stat tells it apart.
    """
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return True  # gone already
    fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) "
    state, flags = fields[0], int(fields[6])
    return state in (b"Z", b"X") or bool(flags & (_PF_EXITING | _PF_DUMPCORE))


def _tail(path: Path | None, lines: int) -> str:
    """Last `lines` lines of a log file ("" if there is none)."""
    if path is None or lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))  # a chatty server must not cost us much
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# --------------------------------------------------------------------------
# Targets


class _BaseTarget:
    """The interface the plugin relies on; both target kinds provide it.

    What only a process of ours has (waiting for its exit, a signal that
    killed it, a directory to clean up) is a no-op here, so that the manager
    treats both kinds alike; ``managed`` says which kind it is where the
    difference is the point (a server somebody else runs cannot be restarted).
    """

    socket_path: str
    command: str | None = None
    sigterm_honoured: bool | None = None
    managed = False  # started (and so stopped, restarted, watched) by the suite
    signal_name: str | None = None  # what killed it, for a process of ours
    stderr_path = ""

    @property
    def pid(self) -> int | None:
        return None

    def poll(self) -> int | None:
        return None

    @property
    def returncode(self) -> int | None:
        return self.poll()

    @property
    def alive(self) -> bool:
        return self.poll() is None

    def stop(self, grace: float = 3.0) -> int | None:
        return None

    def wait(self, timeout: float) -> int | None:
        return self.poll()

    def cleanup(self) -> None:
        """Remove what the suite made for this target (nothing, unless it started it)."""

    def usable(self) -> bool:
        """Whether a test may be handed this target (a server of ours: running, listening)."""
        return True

    def core_note(self) -> str | None:
        return None

    def stderr_tail(self, lines: int = 20) -> str:
        return ""

    def fd_count(self) -> int | None:
        return fd_count(self.pid) if self.alive else None

    def rss_bytes(self) -> int | None:
        return rss_bytes(self.pid) if self.alive else None

    def snapshot(self) -> ResourceSnapshot:
        return ResourceSnapshot(self.fd_count(), self.rss_bytes(), time.monotonic())

    def describe(self) -> str:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class Target(_BaseTarget):
    """A server process we start, watch and stop.

    `command` is a template: a string (split with shlex, or given to /bin/sh if
    `shell=True`) or a list of arguments.  `{socket}` is replaced by the socket
    path, `{fd}` by the number of a listening socket bound to that path.  The
    per-target directory (socket, stdout.log, stderr.log) is made under
    `base_dir` (default: the system temp dir), falling back to /tmp when the
    socket path would exceed the AF_UNIX limit.  It is kept after stop() so the
    logs can still be read; cleanup() removes it.

    The server and all it forks carry ``VFU_TARGET=<marker>`` in their environment,
    a marker of this target alone. Once started, the process's watchdog (``_guard``)
    knows the directory: if this process dies without stop() and cleanup() or keep(),
    the watchdog kills the server (all it forked) and removes the directory.
    """

    managed = True

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        shell: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        base_dir: str | os.PathLike[str] | None = None,
    ):
        text = command if isinstance(command, str) else " ".join(command)
        if "{socket}" not in text and "{fd}" not in text:
            raise ValueError(
                f"target command {text!r} has neither a {{socket}} nor an {{fd}} placeholder; "
                "the server must be told where to listen, e.g. 'my-server --socket {socket}'"
            )
        if shell and not isinstance(command, str):
            raise ValueError("shell=True needs the target command as a single string")
        self._template = command
        self._display = text
        self._shell = shell
        self._use_fd = "{fd}" in text
        self.env = {k: str(v) for k, v in (env or {}).items()}
        self.cwd = Path(cwd) if cwd is not None else None
        self.startup_timeout = startup_timeout

        self.run_dir = self._make_run_dir(base_dir)
        self.socket_path = str(self.run_dir / "vfu.sock")
        self.stdout_path = self.run_dir / "stdout.log"
        self.stderr_path = self.run_dir / "stderr.log"

        self.command: str | None = None  # the expanded command line, set by start()
        self.sigterm_honoured: bool | None = None
        self._proc: subprocess.Popen | None = None
        self._status: int | None = None  # raw wait status, for WCOREDUMP
        self._started_at: float | None = None  # wall clock, to date core files
        self._core_dir: Path | None = None
        self._stopped = False
        self.marker = f"{_guard.token()}.{next(_counter)}"
        # A server that daemonizes: the process that listens once the started one exited
        # (our child: we are a subreaper), its exit status, and the started one's status.
        self._daemon: int | None = None
        self._daemon_returncode: int | None = None
        self._follow_later = False  # the started process may still daemonize (poll)
        self.started_status: int | None = None
        # Sessions (and process groups) of the server's processes: they tell its zombies.
        self._sessions: set[int] = set()
        self.escaped: tuple[int, ...] = ()  # processes outside its session, found at stop()
        self._adopting = False  # holds the subreaper setting (_tree.adopt_orphans)
        self._watchdog: _guard.Guard | None = None  # told of run_dir once started

    @staticmethod
    def _make_run_dir(base_dir: str | os.PathLike[str] | None) -> Path:
        # pid + counter in the name makes it readable; mkdtemp makes it unique
        # even across pytest-xdist workers and reruns.
        prefix = f"vfu-{os.getpid()}-{next(_counter)}-"
        room = _SUN_PATH_MAX - len("/vfu.sock") - len(prefix) - 8  # mkdtemp adds 8 chars
        for base in (base_dir or tempfile.gettempdir(), "/tmp"):
            base = os.path.abspath(base)
            if len(os.fsencode(base)) + 1 <= room:
                return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        raise ValueError(
            f"no directory short enough for a UNIX socket path (tried {base_dir!r}, /tmp)"
        )

    # -- starting ----------------------------------------------------------

    def _expand(self, fd: int | None) -> str | list[str]:
        def sub(s: str, quote: Callable[[str], str]) -> str:
            s = s.replace("{socket}", quote(self.socket_path))
            return s.replace("{fd}", str(fd)) if fd is not None else s

        if self._shell:
            return sub(self._template, shlex.quote)
        args = (
            shlex.split(self._template) if isinstance(self._template, str) else list(self._template)
        )
        return [sub(a, str) for a in args]

    def start(self) -> Target:
        """Start the server and wait until it listens; raise TargetStartError if not."""
        if self._proc is not None:
            raise RuntimeError(f"target already started: {self.describe()}")
        # A leftover socket file would make the server's bind() fail with EADDRINUSE.
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        # Listeners on this path that predate us (an unlinked socket still shows
        # in /proc/net/unix) must not be mistaken for our server.
        stale = listening_inodes(self.socket_path)

        listener = None
        inodes: set[int] = set()
        if self._use_fd:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(self.socket_path)
                listener.listen(16)
            except OSError:
                listener.close()
                raise
            inodes = {os.fstat(listener.fileno()).st_ino}
        args = self._expand(listener.fileno() if listener else None)
        self.command = args if isinstance(args, str) else shlex.join(args)

        self._started_at = time.time()
        self._core_dir = (self.cwd or Path.cwd()).absolute()
        self._watchdog = _guard.guard()  # before the server: it must never go unwatched
        self._watchdog.add(self.run_dir)
        self._adopting = _tree.adopt_orphans()
        # A signal between fork() and the assignment would leave a child nobody knows.
        with deferred_signals():
            try:
                with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
                    self._proc = subprocess.Popen(
                        args,
                        shell=self._shell,
                        # A pipe we hold open: servers that treat stdin EOF as "quit"
                        # (or read a console) behave as under an interactive shell.
                        stdin=subprocess.PIPE,
                        stdout=out,
                        stderr=err,
                        cwd=self.cwd,
                        env={**os.environ, **self.env, _tree.MARKER: self.marker},
                        pass_fds=(listener.fileno(),) if listener else (),
                        # Own process group, so stop() also reaches children of a
                        # shell wrapper, and a Ctrl-C aimed at pytest doesn't kill
                        # the server before teardown can look at it.
                        start_new_session=True,
                    )
            except OSError as e:
                self.stop()
                raise TargetStartError(
                    f"cannot start target: {e}\n  command: {self.command}",
                    command=self.command,
                    returncode=None,
                    stderr_tail="",
                ) from e
            finally:
                if listener is not None:
                    listener.close()  # the child has its own copy now
            self._sessions.add(self._proc.pid)  # start_new_session: its own session

        try:
            ready = self._wait_ready(inodes, stale)
        except BaseException:  # interrupted while it starts: nothing it started may outlive us
            self.stop(grace=0)
            raise
        if not ready:
            self._fail_start()
        # Listening, and the started process still there: if it exits 0 later (a daemon
        # that forked once it listened), poll() follows the process that listens.
        self._follow_later = self._daemon is None
        return self

    def _wait_ready(self, inodes: set[int], stale: set[int]) -> bool:
        """Wait until the server listens; follow it if it daemonizes (the started process
        exits with status 0 and leaves another one listening)."""
        deadline = time.monotonic() + self.startup_timeout
        if self._use_fd:
            time.sleep(_FD_SETTLE)  # already listening; just see it doesn't die at once
            if self.poll() is None:
                return True
        elif not wait_listening(
            self.socket_path, self.startup_timeout, alive=self._starting, exclude=stale
        ):
            return False
        elif self.poll() is None:
            return True
        else:
            inodes = listening_inodes(self.socket_path) - stale
        if self.started_status != 0:
            return False
        return self._follow(inodes, deadline)

    def _follow(self, inodes: set[int], deadline: float) -> bool:
        """The started process exited, something listens: which of its processes holds the
        socket? Once its parent is gone it is our child (subreaper), and followed."""
        while True:
            live = {p for p in self._members() if not _zombie(p)}
            listeners = _tree.holders(live, inodes)
            for pid in listeners:
                if _tree.is_child(pid):
                    self._daemon = pid
                    _tree.reap(self._sessions, {pid})  # its first child, dead after setsid()
                    return True
            if not listeners or time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def _starting(self) -> bool:
        """While waiting for the socket: alive, or exited with 0 and some process of it left."""
        if self.poll() is None:
            return True
        return self.started_status == 0 and any(not _zombie(p) for p in self._members())

    def _fail_start(self) -> None:
        if self.poll() is None:
            how = (
                f"still running, not listening on {self.socket_path} "
                f"after {self.startup_timeout:g} s; killed it"
            )
        else:
            how = self.exit_description()
        self.stop(grace=0)
        tail = self.stderr_tail()
        raise TargetStartError(
            f"target failed to start: {how}\n  command: {self.command}\n"
            + (
                f"  last lines of stderr ({self.stderr_path}):\n" + _indent(tail)
                if tail
                else "  stderr: (empty)"
            ),
            command=self.command or "",
            returncode=self.returncode,
            stderr_tail=tail,
        )

    def __enter__(self) -> Target:
        if self._proc is None:
            self.start()
        return self

    # -- watching ----------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The server's pid: the process that listens, once the started one daemonized."""
        if self._follow_later:
            self.poll()  # the started process may have exited since, leaving a daemon
        if self._daemon is not None:
            return self._daemon
        return self._proc.pid if self._proc is not None else None

    @property
    def daemonized(self) -> bool:
        """Whether the started process exited and left another one serving (followed)."""
        return self._daemon is not None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self.poll() is None

    def poll(self) -> int | None:
        """None while running (or not started), else the exit status.

        Like Popen.returncode: the exit code, or -N if killed by signal N.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            # Reap it ourselves: Popen keeps only the return code, and we want the
            # raw wait status for the core-dump flag.
            try:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                proc.poll()  # reaped behind our back (SIGCHLD ignored?); no raw status
            else:
                if pid != 0:
                    self._status = status
                    proc.returncode = os.waitstatus_to_exitcode(status)
            self.started_status = proc.returncode
        if self._daemon is None and self._follow_later and proc.returncode is not None:
            self._follow_later = False  # once: a plain exit is not looked into again
            if proc.returncode == 0 and not self._stopped:
                self._follow(listening_inodes(self.socket_path), time.monotonic() + _FOLLOW_WAIT)
        if self._daemon is None:
            return proc.returncode
        if self._daemon_returncode is None:
            try:
                pid, status = os.waitpid(self._daemon, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: no status left to read
                pid, status = self._daemon, 0
            if pid != 0:
                self._status = status
                self._daemon_returncode = os.waitstatus_to_exitcode(status)
        return self._daemon_returncode

    def _members(self) -> set[int]:
        """Every process of the server still there (zombies too): the started one and the
        followed one while unreaped, our children with its marker (adopted orphans), and
        all their descendants. Without the subreaper, any process with its marker."""
        roots = set()
        if self._proc is not None and self._proc.returncode is None:
            roots.add(self._proc.pid)  # unreaped: its pid cannot be someone else's
        if self._daemon is not None and self._daemon_returncode is None:
            roots.add(self._daemon)
        candidates = _tree.children(os.getpid()) if self._adopting else _all_pids()
        roots |= {pid for pid in candidates if _tree.marked(pid, self.marker)}
        members = _tree.tree(roots)
        for pid in members:
            proc = _tree.stat(pid)
            if proc is not None:
                self._sessions.add(proc.session)
        return members

    def _wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the exit; woken by it (a pidfd), not by polling: a
        run that starts a server per case stops as many."""
        deadline = time.monotonic() + timeout
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:  # reaped already (poll() says how), or a kernel without pidfds
            pidfd = None
        try:
            while (rc := self.poll()) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if pidfd is None:
                    time.sleep(min(remaining, 0.01))
                else:
                    select.select([pidfd], [], [], remaining)
            return rc
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for exit; the exit status, or None if still running."""
        return self._wait(timeout)

    @property
    def termsig(self) -> int | None:
        """The number of the signal that killed the process, if one did."""
        rc = self.poll()
        return -rc if rc is not None and rc < 0 else None

    @property
    def signal_name(self) -> str | None:
        """E.g. "SIGSEGV" if the process was killed by a signal, else None."""
        signum = self.termsig
        return _signal_name(signum) if signum is not None else None

    @property
    def core_dumped(self) -> bool | None:
        """None while running; else whether the kernel says it dumped core, or a fresh core
        file exists."""
        if self.poll() is None:
            return None
        if self._status is not None and os.WIFSIGNALED(self._status) and os.WCOREDUMP(self._status):
            return True
        return bool(self.core_files())

    def core_files(self) -> list[Path]:
        """core / core.PID files in the target's working directory written since it started."""
        if self.pid is None or self._core_dir is None or self._started_at is None:
            return []
        found = []
        for name in ("core", f"core.{self.pid}"):
            p = self._core_dir / name
            try:
                if p.is_file() and p.stat().st_mtime >= self._started_at - 1:
                    found.append(p)
            except OSError:
                pass
        return found

    def core_note(self) -> str | None:
        """A human note about a core dump, or None.  Informational only."""
        if not self.core_dumped:
            return None
        files = self.core_files()
        if files:
            return "core dumped: " + ", ".join(map(str, files))
        try:
            pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
        except OSError:
            pattern = "?"
        return f"core dumped (kernel core_pattern: {pattern!r})"

    def exit_description(self) -> str:
        """E.g. "running", "exited with status 3", "killed by SIGSEGV (core dumped)"."""
        rc = self.poll()
        if self._proc is None:
            return "not started"
        if rc is None:
            return "running"
        if rc >= 0:
            return f"exited with status {rc}"
        core = " (core dumped)" if self.core_dumped else ""
        return f"killed by {self.signal_name}{core}"

    def stderr_tail(self, lines: int = 20) -> str:
        return _tail(self.stderr_path, lines)

    def stdout_tail(self, lines: int = 20) -> str:
        return _tail(self.stdout_path, lines)

    def describe(self) -> str:
        pid = f"pid {self.pid}, " if self.pid is not None else ""
        where = f"{pid}{self.exit_description()}, socket {self.socket_path}"
        return f"{self.command or self._display} ({where})"

    # -- stopping ----------------------------------------------------------

    def _signal_server(self, signum: int) -> None:
        # Only called while the server is unreaped, so its pid (= the group id of the
        # started one) cannot have been reused by an unrelated process.
        if self._daemon is not None:
            _tree.kill({self._daemon}, signum)
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:  # the leader left its group (setsid); signal it alone
            _tree.kill({self.pid}, signum)

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM to the server, wait up to `grace` s, then SIGKILL; then SIGKILL to every
        other process it started, wherever it is.  Idempotent.

        Returns the exit status (None only if even SIGKILL did not end it in time).
        """
        if self._stopped:
            return self.poll()
        self._stopped = True
        with deferred_signals():  # half a stop would leave processes behind
            proc = self._proc
            if proc is not None:
                if self.poll() is None:
                    session = _tree.stat(self.pid)
                    self.escaped = tuple(
                        sorted(
                            p
                            for p in self._members()
                            if (q := _tree.stat(p)) is not None
                            and not q.zombie
                            and session is not None
                            and q.session != session.session
                        )
                    )
                    self._signal_server(signal.SIGTERM)
                    if self._wait(grace) is not None:
                        self.sigterm_honoured = True
                    else:
                        self.sigterm_honoured = False
                        self._signal_server(signal.SIGKILL)
                        self._wait(_KILL_WAIT)
                self._kill_the_rest()
                if proc.stdin is not None:
                    try:
                        proc.stdin.close()
                    except OSError:
                        pass
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
            if self._adopting:
                self._adopting = False
                _tree.release_orphans()
        return self.poll()

    def _kill_the_rest(self) -> None:
        """SIGKILL whatever the server left (helpers, daemons, a wrapper shell's children)
        and reap their zombies, until nothing is left (or _KILL_WAIT passed)."""
        # The started process's group first: a group id is not reused while a member lives.
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except OSError:
            pass
        own = {self._proc.pid, self._daemon}  # poll() reads their status
        deadline = time.monotonic() + _KILL_WAIT
        while True:
            live = {p for p in self._members() - own if not _zombie(p)}
            _tree.kill(live)
            _tree.reap(self._sessions, own)
            if not live or time.monotonic() >= deadline:
                return
            time.sleep(0.002)

    def usable(self) -> bool:
        return self.poll() is None and is_listening(self.socket_path)

    def cleanup(self) -> None:
        """stop(), then remove the per-target directory and its logs."""
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)  # made by mkdtemp: ours alone
        self._forget()

    def keep(self) -> None:
        """stop(), and keep the per-target directory (a message names its logs)."""
        self.stop()
        self._forget()

    def _forget(self) -> None:
        if self._watchdog is not None:
            self._watchdog.forget(self.run_dir)
            self._watchdog = None


class ExternalTarget(_BaseTarget):
    """A server someone else started, listening at `socket_path`.

    No process management: poll() is always None and stop() does nothing.
    With `pid`, fd_count()/rss_bytes()/alive read /proc for that process.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        pid: int | None = None,
        command: str | None = None,
    ):
        self.socket_path = os.fspath(socket_path)
        self._pid = pid
        self.command = command

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def alive(self) -> bool:
        return self._pid is None or os.path.exists(f"/proc/{self._pid}")

    def start(self, timeout: float = 0.0) -> ExternalTarget:
        """Optionally wait up to `timeout` s for the socket to listen; TargetStartError if not."""
        if not wait_listening(self.socket_path, timeout, alive=lambda: self.alive):
            raise TargetStartError(
                f"no server listening on {self.socket_path}"
                + (f" after {timeout:g} s" if timeout else "")
                + (f" (pid {self._pid} is gone)" if not self.alive else ""),
                command=self.command or "",
                returncode=None,
                stderr_tail="",
            )
        return self

    def describe(self) -> str:
        pid = f", pid {self._pid}" if self._pid is not None else ""
        cmd = f" ({self.command})" if self.command else ""
        return f"external server at {self.socket_path}{pid}{cmd}"


def _zombie(pid: int) -> bool:
    proc = _tree.stat(pid)
    return proc is None or proc.zombie


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
