"""Every process a server started, wherever it went (Linux, unprivileged).

A server may fork: helpers in its process group, a child that calls setsid()
and leaves the group, or a daemon (fork, setsid, fork again, the first
process exits). Three things keep track of all of them:

* a marker in the environment (``VFU_TARGET=<marker>``) that the server's
  descendants inherit, unique to one server;
* ``PR_SET_CHILD_SUBREAPER`` on the suite's process while a server of ours
  runs: a descendant whose parent exits is re-parented to us (not to init), so
  a daemon stays our child: we can wait for it and read its exit status;
* the process tree in /proc (``/proc/PID/task/TID/children``).

Being a subreaper makes reaping our duty: ``reap()`` collects the zombies of a
server's processes, never those of processes somebody else in this process
started (their status belongs to their own ``Popen``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from dataclasses import dataclass

__all__ = [
    "MARKER",
    "Proc",
    "adopt_orphans",
    "children",
    "holders",
    "is_child",
    "kill",
    "marked",
    "reap",
    "release_orphans",
    "stat",
    "tree",
]

MARKER = "VFU_TARGET"  # the environment variable every process of a server inherits

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


@dataclass(frozen=True)
class Proc:
    """What /proc/PID/stat says of a process."""

    pid: int
    state: str  # R, S, D, Z, ...
    ppid: int
    pgrp: int
    session: int

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def stat(pid: int) -> Proc | None:
    """/proc/PID/stat, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()  # after "pid (comm) "
    return Proc(pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]))


def children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (a reaper's adopted ones go to some thread)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def tree(roots: set[int]) -> set[int]:
    """``roots`` and all their descendants (zombies included: they still have a pid to reap)."""
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += children(pid)
    return seen


def marked(pid: int, marker: str) -> bool:
    """Whether ``pid``'s environment carries ``VFU_TARGET=marker`` (False for a zombie)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return False
    return f"{MARKER}={marker}".encode() in env.split(b"\0")


def is_child(pid: int) -> bool:
    """Whether ``pid`` is a child of this process (so we may, and must, wait for it)."""
    proc = stat(pid)
    return proc is not None and proc.ppid == os.getpid()


def holders(pids: set[int], inodes: set[int]) -> list[int]:
    """Which of ``pids`` hold one of the socket ``inodes`` open."""
    links = {f"socket:[{inode}]" for inode in inodes}
    out = []
    for pid in sorted(pids):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in links:
                    out.append(pid)
                    break
            except OSError:
                pass
    return out


def reap(sessions: set[int], exclude: set[int]) -> None:
    """Collect our zombie children that belong to a server: in one of its ``sessions`` (or
    process groups), and not in ``exclude`` (the processes whose status the target reads).

    A zombie has no environment left to read; its session is what links it to the
    server (a daemon's first child dies after setsid(), in the session it made)."""
    for pid in children(os.getpid()):
        proc = stat(pid)
        if proc is None or not proc.zombie or pid in exclude:
            continue
        if proc.session in sessions or proc.pgrp in sessions:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def kill(pids: set[int], signum: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


# -- the subreaper: set while some server of ours runs, then as it was

_lock = threading.Lock()
_holders = 0
_previous: int | None = None


def _prctl(option: int, arg) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")
    return 0


def adopt_orphans() -> bool:
    """Make this process a child subreaper (counted: ``release_orphans()`` undoes it once no
    server needs it). False if the kernel refuses (the server's daemons then go to init)."""
    global _holders, _previous
    with _lock:
        if _holders == 0:
            try:
                value = ctypes.c_int()
                _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value))
                _previous = value.value
                if not _previous:
                    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
            except (OSError, AttributeError):
                return False
        _holders += 1
        return True


def release_orphans() -> None:
    """One server less that needs us to be a subreaper; the last one restores the setting."""
    global _holders
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0 and _previous == 0:
            try:
                _prctl(_PR_SET_CHILD_SUBREAPER, 0)
            except (OSError, AttributeError):
                pass
