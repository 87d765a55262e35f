"""Which UNIX sockets are bound to a socket file, asked of the kernel without connecting.

Connecting to find out is wrong three ways: the program listening there sees a
client (a server that serves one client and exits is used up), a listener whose
backlog is full makes connect() block, and a failed connect says nothing of a
datagram or seqpacket socket, nor of a stream socket bound and not yet
listening. Nor does a path name the file: bind() records it as spelled
(relative, or through a symlink; /proc/net/unix shows that spelling), and the
file may have been renamed since. The kernel's sock_diag netlink interface
(linux/sock_diag.h, linux/unix_diag.h) lists every UNIX socket of this network
namespace with the device and inode of the file it is bound to
(UNIX_DIAG_VFS): exact, and no program notices the question.

Linux only. Sockets of other network namespaces are not seen.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_UDIAG_SHOW_NAME, _UDIAG_SHOW_VFS = 0x1, 0x2
_UNIX_DIAG_NAME, _UNIX_DIAG_VFS = 0, 1
_ALL_STATES = 0xFFFFFFFF
_NOCOOKIE = 0xFFFFFFFF
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQUEST = struct.Struct("=BBHIIIII")  # unix_diag_req
_MSG = struct.Struct("=BBBBI8x")  # unix_diag_msg: family, type, state, pad, ino, cookie
_RTATTR = struct.Struct("=HH")  # len, type
_VFS = struct.Struct("=II")  # unix_diag_vfs: ino, dev (the kernel's dev_t)
_TIMEOUT = 2.0  # seconds: the kernel answers at once; never hang on it

TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10  # the states sock_diag reports
_KINDS = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram", 5: "seqpacket"}


@dataclass(frozen=True)
class BoundSocket:
    inode: int  # the socket's own inode (as in /proc/PID/fd: socket:[inode])
    type: int  # socket.SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET
    state: int  # TCP_LISTEN, TCP_ESTABLISHED (connected) or TCP_CLOSE (neither)
    path: str  # as spelled in bind()

    @property
    def listening(self) -> bool:
        return self.state == TCP_LISTEN

    def describe(self) -> str:
        """E.g. "a listening stream socket", "a datagram socket"."""
        kind = _KINDS.get(self.type, f"type-{self.type}")
        if self.listening:
            return f"a listening {kind} socket"
        if self.state == TCP_ESTABLISHED:
            return f"a connected {kind} socket"
        if self.type == socket.SOCK_DGRAM:
            return f"a {kind} socket"
        return f"a {kind} socket not listening (yet)"


def sockets_bound_to(st: os.stat_result) -> list[BoundSocket]:
    """The sockets bound to the file ``st`` describes (an lstat of a socket file).

    OSError when the kernel cannot tell (sock_diag for AF_UNIX missing: errno
    ENOENT or EPROTONOSUPPORT).
    """
    dev = (os.major(st.st_dev), os.minor(st.st_dev))
    return [s for s, vfs in _dump() if vfs is not None and vfs == (st.st_ino, dev)]


def _dump():
    """(BoundSocket, (file inode, (major, minor)) or None) for every bound UNIX socket."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(_TIMEOUT)
        show = _UDIAG_SHOW_NAME | _UDIAG_SHOW_VFS
        req = _REQUEST.pack(socket.AF_UNIX, 0, 0, _ALL_STATES, 0, show, _NOCOOKIE, _NOCOOKIE)
        flags = _NLM_F_REQUEST | _NLM_F_DUMP
        nl.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, flags, 1, 0) + req)
        while True:
            data = nl.recv(1 << 16)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    raise OSError(0, f"sock_diag: a message of {length} bytes")
                if kind == _NLMSG_DONE:
                    return
                body = off + _NLMSGHDR.size
                if kind == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, body)[0]
                    raise OSError(err, f"sock_diag for AF_UNIX: {os.strerror(err)}")
                if kind == SOCK_DIAG_BY_FAMILY:
                    entry = _entry(data, body, off + length)
                    if entry is not None:
                        yield entry
                off += (length + 3) & ~3


def _entry(data: bytes, start: int, end: int):
    _, kind, state, _, inode = _MSG.unpack_from(data, start)
    path, vfs = None, None
    at = start + _MSG.size
    while at + _RTATTR.size <= end:
        length, attr = _RTATTR.unpack_from(data, at)
        if length < _RTATTR.size:
            break
        value = data[at + _RTATTR.size : at + length]
        if attr == _UNIX_DIAG_NAME:
            path = value.rstrip(b"\0")
        elif attr == _UNIX_DIAG_VFS:
            ino, kdev = _VFS.unpack(value[: _VFS.size])
            vfs = (ino, (kdev >> 20, kdev & 0xFFFFF))  # the kernel's dev_t: MAJOR, MINOR
        at += (length + 3) & ~3
    if path is None:
        return None  # not bound
    return BoundSocket(inode, kind, state, os.fsdecode(path)), vfs
