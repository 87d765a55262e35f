"""A watchdog that cleans up after a suite that could not: SIGKILL, a crash, os._exit().

Before its first server, a process of the suite starts one small process
(``python -I -S -c``, in a session of its own so that the signals aimed at the
suite's terminal or process group miss it) and tells it over a pipe which
directories its servers use. When the pipe reaches end of file, the suite's
process is gone (however it ended): the watchdog kills every process whose
environment carries one of its markers (``VFU_TARGET=<token>.<n>``), wherever it
was re-parented, then removes the directories the suite did not remove or keep.
After a clean end it finds nothing to do.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading

from ._tree import MARKER

__all__ = ["Guard", "guard", "token"]

_CODE = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
needle, dirs = b"\0" + sys.argv[1].encode(), []
for line in sys.stdin.buffer:
    op, path = line[:1], line[1:-1]
    if op == b"+":
        dirs.append(path)
    elif op == b"-" and path in dirs:
        dirs.remove(path)
def marked():
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open("/proc/" + name + "/environ", "rb") as f:
                    if needle in b"\0" + f.read():
                        yield int(name)
            except OSError:
                pass
for _ in range(100):  # a server may fork while we kill
    pids = list(marked())
    if not pids:
        break
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.02)
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
"""


_lock = threading.Lock()
_token: tuple[int, str] | None = None  # (pid, token): a forked child makes its own
_guard: tuple[int, Guard] | None = None


def token() -> str:
    """This process's part of its servers' markers (``<token>.<n>``)."""
    global _token
    with _lock:
        if _token is None or _token[0] != os.getpid():
            _token = (os.getpid(), f"{os.getpid()}-{secrets.token_hex(4)}")
        return _token[1]


def guard() -> Guard:
    """This process's watchdog, started the first time (it lives as long as the process)."""
    global _guard
    marker = token()
    with _lock:
        if _guard is None or _guard[0] != os.getpid():
            _guard = (os.getpid(), Guard(marker))
        return _guard[1]


class Guard:
    """The watchdog of one process's servers (markers ``<token>.<n>``)."""

    def __init__(self, token: str):
        self.token = token
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CODE, f"{MARKER}={token}."],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: bytes) -> None:
        try:
            self._proc.stdin.write(line + b"\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):
            pass  # it is gone: nothing to tell

    def add(self, directory: str | os.PathLike[str]) -> None:
        """Remove ``directory`` if the suite dies."""
        self._send(b"+" + os.fsencode(directory))

    def forget(self, directory: str | os.PathLike[str]) -> None:
        """The suite removed ``directory`` itself, or keeps it on purpose."""
        self._send(b"-" + os.fsencode(directory))
