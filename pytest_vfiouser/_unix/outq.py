"""What the peer of a UNIX stream socket has not read yet (SIOCOUTQ).

A message cut into several writes reaches a server in pieces only if it reads
each piece before the next one arrives; otherwise the kernel hands it the
pieces as one. Waiting until the peer has read what was sent makes the cut
the server sees the cut the test made, whatever the scheduler does.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import time

__all__ = ["unread", "wait_read"]

_INT = struct.Struct("i")


def unread(sock: socket.socket) -> int:
    """The kernel memory still held by what ``sock`` sent and its peer has not read
    (0: the peer has read everything; a partly read write still counts whole)."""
    return _INT.unpack(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(_INT.size)))[0]


def wait_read(sock: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` s until the peer has read all ``sock`` sent; whether it has."""
    deadline = time.monotonic() + timeout
    pause = 20e-6
    while unread(sock):
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 1e-3)
    return True
