"""Poll a socket briefly before blocking on it, for as long as it pays.

Used by the raw client (waiting for a reply) and by the reference server
(waiting for the next request). Why: on a small VM a blocked process's vCPU
halts, and waking it again (an inter-processor interrupt through the
hypervisor) costs tens of microseconds, several times the Python work of a
whole round trip. A side still polling when the bytes land skips that
wakeup. SPDK's vfio-user target polls all the time; we poll only while
recent waits say a poll would have caught the bytes.

The window adapts as the kernel's haltpoll cpuidle governor does
(drivers/cpuidle/governors/haltpoll.c): a wait that ended within the
window costs nothing more; one longer than the window but within the
ceiling grows the window (to GROW_START_NS, then doubling); one longer
than the ceiling halves it. A peer that talks rarely (a conformance test
between its steps, a server doing slow work) soon gets a window of zero:
no CPU is burnt. Each poll iteration yields the CPU, so a peer that shares
it runs.

Nor does a poll pay on a crowded machine, one with more runnable tasks than
this process has CPUs (the kernel's run queue, /proc/loadavg, looked at every
0.1 s at most): there no CPU is idle to halt, and every poll takes time from a
task that waits for a CPU. A test session that runs suites and servers side by
side spent a tenth of its CPU polling. While the machine is crowded, receives
block and the window is left as it was.
"""

from __future__ import annotations

import os
import socket
import time

CEILING_NS = 200_000  # no poll lasts longer than this
GROW_START_NS = 50_000
MIN_NS = 10_000  # below this, the window is closed (0)

CROWD_CHECK_NS = 100_000_000  # the run queue is looked at no more often than this

_DONTWAIT = socket.MSG_DONTWAIT
_now = time.perf_counter_ns
_yield = os.sched_yield


def runnable_tasks(loadavg: str) -> int:
    """The tasks runnable now, from the text of /proc/loadavg ("0.52 0.58 0.59 3/467 1234")."""
    return int(loadavg.split()[3].split("/")[0])


class RunQueue:
    """Whether the machine is crowded: more tasks runnable than this process's CPUs.

    The file stays open from the start: a server that opened it at each look would
    show one fd more now and then, and the suite counts a server's fds."""

    def __init__(self, path: str = "/proc/loadavg", check_ns: int = CROWD_CHECK_NS):
        self.check_ns = check_ns
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
        self.cpus = len(cpus) or os.cpu_count() or 1
        self._looked = -check_ns
        self._crowded = False
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:  # no /proc: poll as if idle
            self._fd = None

    def crowded(self) -> bool:
        now = _now()
        if self._fd is not None and now - self._looked >= self.check_ns:
            self._looked = now
            try:
                text = os.pread(self._fd, 256, 0).decode("ascii", "replace")
                self._crowded = runnable_tasks(text) > self.cpus
            except (OSError, ValueError, IndexError):
                self._crowded = False
        return self._crowded


MACHINE = RunQueue()


class BusyPoll:
    def __init__(self, ceiling_ns: int = CEILING_NS, crowded=MACHINE.crowded):
        self.crowded = crowded  # () -> bool: when True, receives block at once
        self.ceiling_ns = ceiling_ns
        self.window_ns = 0 if ceiling_ns <= 0 else min(GROW_START_NS, ceiling_ns)
        self.caught = 0  # receives a poll answered
        self.blocked = 0  # receives that blocked

    def recvmsg_into(self, sock: socket.socket, buffers, ancbufsize: int, flags: int):
        """sock.recvmsg_into, polled for up to the window before it blocks."""
        window = self.window_ns
        if window and self.crowded():
            self.blocked += 1
            return sock.recvmsg_into(buffers, ancbufsize, flags)
        started = _now()
        if window:
            deadline = started + window
            while True:
                try:
                    got = sock.recvmsg_into(buffers, ancbufsize, flags | _DONTWAIT)
                except BlockingIOError:
                    pass
                else:
                    self.caught += 1
                    return got
                if _now() >= deadline:
                    break
                _yield()
        self.blocked += 1
        got = sock.recvmsg_into(buffers, ancbufsize, flags)
        self._adjust(_now() - started)
        return got

    def _adjust(self, waited_ns: int) -> None:
        """After a wait the poll did not catch: grow or shrink the window."""
        window = self.window_ns
        if waited_ns <= self.ceiling_ns:
            if waited_ns > window:  # a longer poll would have caught it
                self.window_ns = min(max(window * 2, GROW_START_NS), self.ceiling_ns)
        else:
            window //= 2
            self.window_ns = window if window >= MIN_NS else 0
