"""The server's end of the twin socket (0.9.2 twin-socket mode).

Once VERSION enabled the mode, the server's DMA_READ/DMA_WRITE requests go
out here and their replies come back here (Spec (VFIO_USER_DMA_READ): "This
message and its reply are passed over the separate server-to-client socket if
twin-socket mode has been negotiated"). The connection waits on both sockets
at once and serves the commands that arrive on the main one while a request
is outstanding: "it is still illegal for implementations to stall command or
reply processing indefinitely while waiting for replies on the other channel".

The client sends only replies here. Anything else is refused on this socket
(a command gets an EINVAL error reply) and fds are closed: nothing that comes
here may take the connection down but a stream that cannot be framed.
"""

from __future__ import annotations

import errno
import logging
import socket

from pytest_vfiouser._unix import ANC_SPACE, fds_of
from pytest_vfiouser.protocol import (
    CodecError,
    Header,
    MessageReader,
    MsgType,
    encode_error,
)

from .errors import ClientGone

log = logging.getLogger("reference_server")

RECV_SIZE = 64 * 1024


class TwinChannel:
    def __init__(self, sock: socket.socket, max_msg_size: int):
        sock.setblocking(False)
        self.sock = sock
        self.reader = MessageReader(max_msg_size)
        # Replies that came while the server waited for another of its requests:
        # (msg_id, command) -> (Header, payload).
        self.early: dict[tuple[int, int], tuple[Header, bytes]] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> bool:
        """Read what is there; False when the client closed its end."""
        try:
            data, anc, _, _ = self.sock.recvmsg(RECV_SIZE, ANC_SPACE, socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return True
        except OSError as e:
            raise ClientGone(f"twin socket: recv failed: {e}") from None
        for fd in fds_of(anc):  # no reply the client sends here carries fds
            _close(fd)
        if not data:
            return False
        self.reader.feed(data)
        return True

    def messages(self):
        """The whole messages received so far: (Header, payload)."""
        while True:
            try:
                msg = self.reader.next_message()
            except CodecError as e:
                why = f"dropped: the twin socket's stream cannot be framed ({e})"
                raise ClientGone(why) from None
            if msg is None:
                return
            yield msg

    def refuse(self, hdr: Header) -> bytes | None:
        """What to answer a message that is not a reply (None: nothing)."""
        log.info("twin socket: %s refused (the client sends only replies there)", hdr.describe())
        if hdr.type != MsgType.COMMAND or hdr.no_reply:
            return None
        return encode_error(hdr.msg_id, hdr.command, errno.EINVAL)

    def close(self) -> None:
        self.sock.close()


def _close(fd: int) -> None:
    try:
        socket.close(fd)
    except OSError:
        pass
