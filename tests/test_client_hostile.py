"""Peers that misbehave: silence, hang-ups, lies about sizes, garbage, fd floods."""

from __future__ import annotations

import errno
import os
import socket
import time
import tracemalloc

import pytest
from test_client_peer import (  # noqa: F401 (fixtures)
    client_and_peer,
    in_thread,
    no_fd_leak_fixture,
    pair_fixture,
    raw_header,
)

from pytest_vfiouser import protocol as P
from pytest_vfiouser.client import (
    SCM_MAX_FD,
    Client,
    ClientError,
    ConnectionClosed,
    MalformedReply,
    Timeout,
    UnexpectedReply,
)

C = P.Command
MARGIN = 1.0  # seconds a Timeout may come late on a loaded machine (CI: 2 cores, 2 workers)


def test_exceptions_share_a_base():
    for cls in (Timeout, ConnectionClosed, MalformedReply, UnexpectedReply):
        assert issubclass(cls, ClientError)


def test_silent_peer_times_out_within_the_timeout(pair):
    client, peer = pair
    start = time.monotonic()
    with pytest.raises(Timeout) as info:
        client.request(C.DEVICE_RESET, timeout=0.2)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 0.2 + MARGIN
    assert info.value.timeout == 0.2 and info.value.partial_bytes == 0
    assert "DEVICE_RESET reply to msg_id 0" in str(info.value)


def test_default_timeout_applies_to_every_wait():
    with client_and_peer(timeout=0.15) as (client, peer):
        for call in (client.reset, client.recv_message, lambda: client.pipeline([(13, None)])):
            start = time.monotonic()
            with pytest.raises(Timeout):
                call()
            assert 0.15 <= time.monotonic() - start < 0.15 + MARGIN


def test_a_trickling_peer_cannot_stretch_the_deadline(pair):
    client, peer = pair
    message = P.encode_reply(0, C.DEVICE_RESET)

    def trickle():  # a byte every 50 ms: the message would take 0.8 s
        for i in range(len(message)):
            time.sleep(0.05)
            try:
                peer.send(message[i : i + 1])
            except OSError:  # the client gave up and closed
                return

    client.send(C.DEVICE_RESET)
    start = time.monotonic()
    with in_thread(trickle):
        with pytest.raises(Timeout) as info:
            client.recv_reply(0, timeout=0.2)
        elapsed = time.monotonic() - start
        client.close()
    assert 0.2 <= elapsed < 0.2 + MARGIN
    assert 2 <= info.value.partial_bytes <= 5


def test_a_short_timeout_then_the_default_again(pair):
    client, peer = pair
    with pytest.raises(Timeout):
        client.recv_message(timeout=0.01)
    peer.send(P.encode_reply(0, C.DEVICE_RESET))
    assert client.reset().ok  # the shortened kernel timeout did not stick


def test_peer_closing_mid_message_reports_partial_bytes(pair):
    client, peer = pair
    message = P.encode_reply(0, C.REGION_READ, P.RegionReadReply(0, 0, 8, b"12345678").pack())
    peer.send(message[:21])
    peer.close()
    with pytest.raises(ConnectionClosed) as info:
        client.region_read(0, 0, 8)
    assert info.value.partial_bytes == 21
    assert info.value.partial_header == P.Header(0, C.REGION_READ, 40, 1, 0)


def test_peer_closing_mid_header(pair):
    client, peer = pair
    peer.send(b"\x00\x00\x0d")
    peer.close()
    with pytest.raises(ConnectionClosed) as info:
        client.reset()
    assert info.value.partial_bytes == 3 and info.value.partial_header is None


def test_peer_closing_between_messages(pair):
    client, peer = pair
    peer.close()
    with pytest.raises(ConnectionClosed) as info:
        client.recv_message()
    assert info.value.partial_bytes == 0


def test_sending_to_a_closed_peer_raises_connection_closed(pair):
    client, peer = pair
    peer.close()
    with pytest.raises(ConnectionClosed):
        for _ in range(3):  # the first send may still be accepted
            client.send(C.DEVICE_RESET)


def test_oversized_msg_size_is_refused_without_allocating():
    with client_and_peer(max_msg_size=1 << 20) as (client, peer):
        peer.send(raw_header(0, C.REGION_READ, 0xFFFFFFFF) + b"x" * 100)
        tracemalloc.start()
        try:
            with pytest.raises(MalformedReply) as info:
                client.region_read(0, 0, 4)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20
        assert info.value.field == "msg_size" and "4294967295" in info.value.detail
        assert info.value.header.msg_size == 0xFFFFFFFF
        # The stream cannot be framed any more: every later receive says so.
        with pytest.raises(MalformedReply):
            client.recv_message()
        with pytest.raises(MalformedReply):
            client.reset()


def test_msg_size_below_the_header_is_refused(pair):
    client, peer = pair
    peer.send(raw_header(0, C.DEVICE_RESET, 15))
    with pytest.raises(MalformedReply, match="below the header size"):
        client.reset()


def test_a_message_at_the_limit_is_accepted():
    with client_and_peer(max_msg_size=200000) as (client, peer):
        data = b"z" * (200000 - 32)
        peer.send(P.encode_reply(0, C.REGION_READ, P.RegionReadReply(0, 0, len(data), data).pack()))
        assert client.region_read(0, 0, len(data)).body.data == data
        assert client.buffered == 0


def test_garbage_is_refused(pair):
    client, peer = pair
    peer.send(bytes(range(7, 71)))
    with pytest.raises(MalformedReply):
        client.reset()


def test_garbage_that_frames_is_an_unexpected_reply(pair):
    client, peer = pair
    peer.send(raw_header(0x4242, 0x4242, 16, flags=0x4F))
    with pytest.raises(UnexpectedReply) as info:
        client.reset()
    assert info.value.reply.command == 0x4242


def test_fd_flood_on_a_reply_that_should_carry_none(pair):
    client, peer = pair
    fds = [os.eventfd(0) for _ in range(SCM_MAX_FD)]
    try:
        peer.send(P.encode_reply(0, C.DEVICE_RESET), fds)
    finally:
        for fd in fds:
            os.close(fd)
    reply = client.reset()
    assert reply.ok and reply.fd_count == 0 and reply.closed_fds == SCM_MAX_FD
    assert client.stray_fds == SCM_MAX_FD and client.owned_fds == set()
    assert "closed 253 fds" in client.wire_log.render(hexdump=False)


def test_fd_flood_spread_over_many_messages(pair):
    client, peer = pair
    for msg_id in range(20):
        fds = [os.eventfd(0) for _ in range(10)]
        peer.send(P.encode_reply(msg_id, C.DEVICE_RESET), fds)
        for fd in fds:
            os.close(fd)
    replies = client.pipeline([(C.DEVICE_RESET, None)] * 20)
    assert sum(r.closed_fds for r in replies) == 200 and client.owned_fds == set()


def test_fds_of_a_message_never_completed_are_closed_at_close():
    with client_and_peer() as (client, peer):
        efd = os.eventfd(0)
        peer.send(P.encode_reply(0, C.DEVICE_GET_REGION_INFO, P.RegionInfo(32).pack())[:20], [efd])
        os.close(efd)
        with pytest.raises(Timeout) as info:
            client.recv_message(timeout=0.05)
        assert info.value.partial_bytes == 20
    # close() ran on leaving client_and_peer: the fd-leak guard checks the fd went


def test_unexpected_msg_id(pair):
    client, peer = pair
    peer.send(P.encode_reply(1234, C.DEVICE_RESET))
    with pytest.raises(UnexpectedReply) as info:
        client.reset()
    assert info.value.reply.msg_id == 1234


def test_client_socket_is_closed_by_close():
    a, b = socket.socketpair()
    client = Client(a)
    client.close()
    assert a.fileno() == -1
    assert b.recv(1) == b""
    b.close()


def test_what_the_peer_sent_before_closing_can_still_be_read(pair):
    client, peer = pair
    peer.send(P.encode_error(0, C.DEVICE_RESET, 5))
    peer.close()
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(3):
            client.send(C.DEVICE_RESET)
    assert info.value.partial_bytes == 16
    assert info.value.partial_header == P.Header(0, C.DEVICE_RESET, 16, 0x21, 5)
    assert client.recv_message().error == 5
    with pytest.raises(ConnectionClosed):
        client.recv_message()


def test_a_peer_that_never_reads_makes_sending_time_out():
    with client_and_peer(timeout=0.2) as (client, peer):
        start = time.monotonic()
        with pytest.raises(Timeout, match="the peer to accept REGION_WRITE"):
            client.region_write(0, 0, bytes(8 << 20))  # far more than the socket buffers
        assert time.monotonic() - start < 0.2 + MARGIN


def test_a_peer_that_answers_as_it_reads_gets_all_of_a_large_send():
    """A peer that writes an error reply per header it reads blocks on writing once the
    client's receive buffer is full, and reads no more: the client takes the replies in
    while it sends (it would otherwise time out), and they are there to receive after."""
    count = 16384  # 256 KiB sent; the replies fill the client's buffer long before
    reply = P.encode_error(0, 0, errno.EINVAL)

    def answer_each_header(sock: socket.socket) -> None:
        for _ in range(count):
            got = b""
            while len(got) < 16:
                got += sock.recv(16 - len(got))
            sock.sendall(reply)

    a, b = socket.socketpair()
    client = Client(a, timeout=2.0)
    try:
        with in_thread(answer_each_header, b):
            start = time.monotonic()
            client.send_raw(bytes(16 * count))
            assert time.monotonic() - start < 2.0
            for _ in range(count):
                assert client.recv_message().error == errno.EINVAL
    finally:
        client.close()
        b.close()
