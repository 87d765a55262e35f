"""File descriptors passed with SCM_RIGHTS: the ancillary data of sendmsg/recvmsg."""

from __future__ import annotations

import array
import os
import socket

__all__ = ["ANC_SPACE", "SCM_MAX_FD", "fds_of", "rights"]

SCM_MAX_FD = 253  # the kernel's limit of fds in one SCM_RIGHTS message
ANC_SPACE = socket.CMSG_SPACE(SCM_MAX_FD * 4)  # room for as many as one message can carry


def rights(fds) -> list[tuple[int, int, array.array]]:
    """The ancillary data that sends ``fds`` with a sendmsg."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]


def fds_of(anc) -> list[int]:
    """The fds in the ancillary data of a recvmsg (a truncated last one is dropped)."""
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    return fds


def fd_kind(fd: int) -> str:
    """What an fd is, as /proc says: "eventfd", "memfd", "socket", "pipe", another
    anonymous inode's name, "file" (a path), or "closed"."""
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "closed"
    if link.startswith("anon_inode:"):
        return link[len("anon_inode:") :].strip("[]")
    if link.startswith("/memfd:"):
        return "memfd"
    for kind in ("socket", "pipe"):
        if link.startswith(f"{kind}:"):
            return kind
    return "file"
