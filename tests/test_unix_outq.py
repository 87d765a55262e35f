"""What the peer has not read yet (SIOCOUTQ), over real UNIX stream sockets."""

from __future__ import annotations

import socket
import threading
import time

from pytest_vfiouser._unix import unread, wait_read
from pytest_vfiouser.client._connection import Connection


def test_unread_until_the_peer_has_read_every_byte():
    a, b = socket.socketpair()
    with a, b:
        assert unread(a) == 0
        a.send(b"x" * 100)
        assert unread(a) > 0
        b.recv(50)
        assert unread(a) > 0, "a write read in part still counts"
        b.recv(50)
        assert unread(a) == 0


def test_wait_read_times_out_on_a_peer_that_does_not_read():
    a, b = socket.socketpair()
    with a, b:
        a.send(b"piece")
        started = time.monotonic()
        assert wait_read(a, 0.1) is False
        assert 0.1 <= time.monotonic() - started < 0.5


def test_wait_read_returns_once_the_peer_reads():
    a, b = socket.socketpair()
    with a, b:
        a.send(b"piece")
        reader = threading.Timer(0.05, b.recv, (16,))
        reader.start()
        started = time.monotonic()
        assert wait_read(a, 5.0) is True
        assert time.monotonic() - started < 1.0
        reader.join()


def test_nothing_is_unread_once_the_peer_closed():
    a, b = socket.socketpair()
    with a:
        a.send(b"never read")
        b.close()
        assert wait_read(a, 1.0) is True


def test_a_client_closing_lets_a_server_blocked_on_writing_read_first():
    """Before a close the client waits until the server has read what it sent, and drops
    what the server sends meanwhile: a server blocked writing to it gets to read."""
    a, b = socket.socketpair()
    with a, b:
        conn = Connection(a, timeout=2.0)

        def server():  # writes more than the socket buffers hold, then reads
            b.sendall(b"r" * (4 << 20))
            b.recv(16)

        t = threading.Thread(target=server)
        t.start()
        time.sleep(0.05)
        conn.send_bytes(b"request")
        assert conn.wait_peer_read(0.2) is False, "without dropping, the server never reads"
        assert conn.wait_peer_read(5.0, discard=True) is True
        t.join(5)
        assert not t.is_alive()
