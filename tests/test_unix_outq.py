"""What the peer has not read yet (SIOCOUTQ), over real UNIX stream sockets."""

from __future__ import annotations

import socket
import threading
import time

from pytest_vfiouser._unix import unread, wait_read


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
