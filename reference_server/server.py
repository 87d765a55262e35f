"""Listening, accepting one client after another, and termination.

SIGTERM (and SIGINT) raise Terminate in the main thread, which interrupts
whatever blocking call it is in (accept, recv, send, poll); the caller then
cleans up: the client's resources, the listener, the socket file if we
created it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import stat
import time

from pytest_vfiouser._unix import CEILING_NS, sockets_bound_to

from .connection import Connection
from .errors import Terminate
from .limits import DEFAULT, Limits
from .record import Recorder

log = logging.getLogger("reference_server")


class SetupError(Exception):
    """The listening socket cannot be had; the message says why."""


def on_signal(signum, frame):
    # Once is enough: a second signal must not interrupt the cleanup.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Terminate(signum)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def bind_path(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket at ``path``, and the (st_dev, st_ino) of the file made.

    A socket file is taken over only when it is provably stale: the kernel says no
    socket is bound to it (``sockets_bound_to``; never by connecting, which would
    be a client to the program there, or block on its full backlog). A file in use,
    one whose use cannot be told, or any other kind of file is an error.
    """
    if len(os.fsencode(path)) > 107:
        raise SetupError(f"socket path is longer than 107 bytes: {path}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise SetupError(f"{path}: {e.strerror}") from None
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SetupError(f"{path} exists and is not a socket")
        try:
            users = sockets_bound_to(st)
        except OSError as e:
            raise SetupError(
                f"{path} exists, and whether a program uses it cannot be told ({e}); "
                "remove it if none does"
            ) from None
        if users:
            raise SetupError(
                f"{path} is in use: {users[0].describe()} is bound to it "
                "(only a socket file no socket is bound to is replaced)"
            )
        os.unlink(path)  # stale
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(16)
        st = os.stat(path)
    except OSError as e:
        sock.close()
        raise SetupError(f"cannot listen on {path}: {e.strerror}") from None
    return sock, (st.st_dev, st.st_ino)


def inherited_socket(fd: int) -> tuple[socket.socket, bool]:
    """The socket behind ``--fd``, and whether it is listening (else: connected)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        what = "is not a socket" if e.errno == errno.ENOTSOCK else e.strerror
        raise SetupError(f"--fd={fd}: {what}") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise SetupError(f"--fd={fd}: not a UNIX stream socket")
    os.set_inheritable(fd, False)
    listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    return sock, listening


class Server:
    connection_type = Connection  # what serves one client (a subclass may change it)

    def __init__(
        self,
        device,
        revision: str,
        trace: bool = False,
        busy_poll_ns: int = CEILING_NS,
        limits: Limits = DEFAULT,
        recorder: Recorder | None = None,
    ):
        self.device = device
        self.recorder = recorder  # --record (record.py)
        self.revision = revision
        self.trace = trace
        self.busy_poll_ns = busy_poll_ns
        self.limits = limits
        self.listener: socket.socket | None = None  # where the next clients wait
        self.closed_once = False  # [server] close_after: only the first connection is closed

    def serve_one(self, sock: socket.socket) -> None:
        log.info("client connected")
        try:
            conn = self.connection_type(
                sock,
                self.device,
                self.revision,
                self.trace,
                self.busy_poll_ns,
                limits=self.limits,
                listener=self.listener,
                recorder=self.recorder,
            )
            if self.closed_once:
                conn.close_after = None
            try:
                conn.serve()
            finally:
                self.closed_once |= conn.closed_by_server
        except Exception:  # a bug outside per-message handling costs this client only
            log.exception("internal error: connection dropped")
            sock.close()

    def serve_forever(self, listener: socket.socket) -> None:
        self.listener = listener
        while self.accepting():
            try:
                sock, _ = listener.accept()
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept: %s; retrying", e.strerror)
                    time.sleep(0.1)  # out of resources: do not spin
                elif e.errno != errno.ECONNABORTED:
                    raise
                continue
            self.serve_one(sock)

    def accepting(self) -> bool:
        """Whether to wait for a client (always: the server runs until a signal stops it)."""
        return True


def remove_socket_file(path: str, ident: tuple[int, int]) -> None:
    """Unlink ``path`` if it is still the socket file we made."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass
