"""The client's messages, replies, negotiation and fds, against a peer on a real socket."""

from __future__ import annotations

import errno
import mmap
import os

import pytest
from test_client_peer import (  # noqa: F401 (fixtures)
    client_and_peer,
    in_thread,
    no_fd_leak_fixture,
    pair_fixture,
)

from pytest_vfiouser import protocol as P
from pytest_vfiouser.client import ErrorReply, MalformedReply, Reply, UnexpectedReply

C = P.Command


def test_send_frames_one_message_with_auto_incrementing_ids(pair):
    client, peer = pair
    client.next_msg_id = 0xFFFF
    ids = [client.send(C.DEVICE_RESET) for _ in range(3)]
    assert ids == [0xFFFF, 0, 1]  # u16, wrapping
    for msg_id in ids:
        header, payload, fds = peer.recv()
        assert (header.msg_id, header.command, header.msg_size, header.flags) == (msg_id, 13, 16, 0)
        assert payload == b"" and fds == []


def test_send_sets_flags_error_and_explicit_id(pair):
    client, peer = pair
    assert client.send(C.DEVICE_RESET, msg_id=77, no_reply=True, error=5, flags=0x40) == 77
    header, _, _ = peer.recv()
    assert (header.msg_id, header.flags, header.error) == (77, 0x50, 5)


def test_send_accepts_payload_objects_and_bytes(pair):
    client, peer = pair
    client.send(C.REGION_READ, P.RegionRead(8, 2, 4))
    client.send(C.REGION_READ, P.RegionRead(8, 2, 4).pack())
    client.send(C.REGION_READ, bytearray(P.RegionRead(8, 2, 4).pack()))
    for _ in range(3):
        assert peer.recv_decoded()[1] == P.RegionRead(8, 2, 4)


def test_send_raw_sends_exactly_the_bytes(pair):
    client, peer = pair
    client.send_raw(b"\x01\x02\x03")
    assert peer.recv_exact(3)[0] == b"\x01\x02\x03"


def test_request_returns_the_reply(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.DEVICE_GET_INFO, P.DeviceInfo(16, 3, 9, 5).pack()))
    reply = client.device_get_info()
    assert isinstance(reply, Reply) and reply.ok and reply.error == 0
    assert reply.header == P.Header(0, C.DEVICE_GET_INFO, 32, 1, 0)
    assert (reply.msg_id, reply.command, reply.msg_size, reply.flags) == (0, 4, 32, 1)
    assert reply.body == P.DeviceInfo(16, 3, 9, 5)
    assert reply.check() is reply
    assert peer.recv_decoded()[1] == P.DeviceInfo(16)


def test_error_reply_is_returned_and_check_raises(pair):
    client, peer = pair
    peer.send(P.encode_error(0, C.DMA_MAP, errno.EEXIST))
    reply = client.dma_map(0x1000, 0x1000)
    assert not reply.ok and reply.error == errno.EEXIST and reply.body is None
    with pytest.raises(ErrorReply) as info:
        reply.check()
    assert info.value.errno == errno.EEXIST and info.value.command == C.DMA_MAP
    assert "EEXIST" in str(info.value)
    assert client.memory.regions == ()  # a failed map is not modelled


def test_error_flag_with_zero_errno_is_still_an_error(pair):
    client, peer = pair
    peer.send(P.encode_error(0, C.DEVICE_RESET, 0))
    reply = client.reset()
    assert not reply.ok and reply.error == 0
    with pytest.raises(ErrorReply):
        reply.check()


def test_body_that_does_not_decode_raises_malformed_reply(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.DEVICE_GET_INFO, b"\x00" * 5))
    reply = client.device_get_info()
    with pytest.raises(MalformedReply) as info:
        reply.body  # noqa: B018 (decoding is what raises)
    assert info.value.field == "size" and "DEVICE_GET_INFO" in info.value.message
    assert isinstance(info.value.codec_error, P.CodecError)


def test_reply_with_another_msg_id_raises_unexpected_reply(pair):
    client, peer = pair
    peer.send(P.encode_reply(9, C.DEVICE_RESET))
    with pytest.raises(UnexpectedReply) as info:
        client.reset()
    assert info.value.reply.msg_id == 9 and "msg_id 0" in str(info.value)


def test_reply_with_another_command_raises_unexpected_reply(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.DEVICE_GET_INFO, P.DeviceInfo(16).pack()))
    with pytest.raises(UnexpectedReply) as info:
        client.reset()
    assert info.value.reply.command == C.DEVICE_GET_INFO


def test_a_command_from_the_server_other_than_dma_is_unexpected(pair):
    client, peer = pair
    peer.request(3, C.DEVICE_RESET)
    with pytest.raises(UnexpectedReply, match="neither a reply"):
        client.reset()


def test_recv_reply_without_id_takes_the_next_reply(pair):
    client, peer = pair
    client.send(C.DEVICE_RESET)
    peer.send(P.encode_reply(0, C.DEVICE_RESET))
    assert client.recv_reply().msg_id == 0


def test_recv_message_returns_any_message_raw(pair):
    client, peer = pair
    peer.request(5, C.DMA_READ, P.DmaRead(0x1000, 4))
    message = client.recv_message()
    assert not message.is_reply and message.command == C.DMA_READ
    assert message.body == P.DmaRead(0x1000, 4)
    assert client.dma_requests == []  # not served: raw


def test_no_reply_and_expect_no_message(pair):
    client, peer = pair
    client.send(C.DEVICE_RESET, no_reply=True)
    header, _, _ = peer.recv()
    assert header.no_reply
    client.expect_no_message(0.05)  # the peer is silent: passes
    peer.send(P.encode_reply(header.msg_id, C.DEVICE_RESET))
    with pytest.raises(UnexpectedReply, match="none was expected") as info:
        client.expect_no_message(1.0)
    assert info.value.reply.msg_id == header.msg_id


def test_expect_no_message_reports_a_partial_message(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.DEVICE_RESET)[:7])
    with pytest.raises(UnexpectedReply, match="7 bytes"):
        client.expect_no_message(0.05)


def test_negotiate_proposes_the_clients_capabilities():
    with client_and_peer(max_data_xfer_size=65536, max_msg_fds=4) as (client, peer):
        caps = {"max_msg_fds": 8, "max_data_xfer_size": 4096, "migration": {"pgsize": 4096}}
        peer.send(P.encode_reply(0, C.VERSION, P.Version(0, 0, {"capabilities": caps}).pack()))
        reply = client.negotiate()
        _, proposed = peer.recv_decoded()
        assert proposed == P.Version(
            0, 0, {"capabilities": {"max_msg_fds": 4, "max_data_xfer_size": 65536}}
        )
        assert reply.ok and client.negotiated == P.Version(0, 0, {"capabilities": caps})
        assert client.server_caps.max_data_xfer_size == 4096
        assert client.server_caps.migration_pgsize == 4096


def test_negotiate_with_empty_capabilities_sends_no_version_data(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.VERSION, P.Version(0, 0).pack()))
    client.negotiate(major=0, minor=2, capabilities={})
    header, payload, _ = peer.recv()
    assert payload == b"\x00\x00\x02\x00"
    assert client.server_caps.max_msg_fds == 1  # the spec's default


def test_negotiate_raises_on_an_error_reply(pair):
    client, peer = pair
    peer.send(P.encode_error(0, C.VERSION, errno.ENOTSUP))
    with pytest.raises(ErrorReply) as info:
        client.negotiate(major=9)
    assert info.value.errno == errno.ENOTSUP and client.negotiated is None


def test_negotiate_raises_malformed_on_bad_json(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.VERSION, b"\x00\x00\x00\x00{not json\x00"))
    with pytest.raises(MalformedReply) as info:
        client.negotiate()
    assert info.value.field == "version data"


@pytest.mark.parametrize(
    "call, command, expected",
    [
        (lambda c: c.region_info(7, argsz=64), C.DEVICE_GET_REGION_INFO, P.RegionInfo(64, index=7)),
        (lambda c: c.irq_info(2), C.DEVICE_GET_IRQ_INFO, P.IrqInfo(16, index=2)),
        (
            lambda c: c.region_io_fds(1, argsz=56),
            C.DEVICE_GET_REGION_IO_FDS,
            P.RegionIoFdsRequest(56, index=1),
        ),
        (
            lambda c: c.set_irqs(1, 0x22, 0, 2, data=b"\x01\x00"),
            C.DEVICE_SET_IRQS,
            P.SetIrqs(22, 0x22, 1, 0, 2, b"\x01\x00"),
        ),
        (lambda c: c.region_read(3, 0x10, 4), C.REGION_READ, P.RegionRead(0x10, 3, 4)),
        (
            lambda c: c.region_write(3, 0x10, b"abcd"),
            C.REGION_WRITE,
            P.RegionWrite(0x10, 3, 4, b"abcd"),
        ),
        (lambda c: c.dma_unmap(0x1000, 0x2000), C.DMA_UNMAP, P.DmaUnmap(24, 0, 0x1000, 0x2000)),
        (
            lambda c: c.dma_unmap(0x1000, 0x2000, 1, P.VfioBitmap(4096, 8)),
            C.DMA_UNMAP,
            P.DmaUnmap(48, 1, 0x1000, 0x2000, P.VfioBitmap(4096, 8)),
        ),
        (lambda c: c.dirty_pages(P.DirtyPagesFlags.START), C.DIRTY_PAGES, P.DirtyPages(8, 1)),
        (
            lambda c: c.dirty_pages(4, P.BitmapRange(0, 1 << 20, P.VfioBitmap(4096, 32))),
            C.DIRTY_PAGES,
            P.DirtyPages(72, 4, P.BitmapRange(0, 1 << 20, P.VfioBitmap(4096, 32))),
        ),
        (lambda c: c.reset(), C.DEVICE_RESET, None),
    ],
)
def test_typed_conveniences_send_what_the_spec_says(pair, call, command, expected):
    client, peer = pair
    peer.send(P.encode_error(0, command, errno.EINVAL))  # any reply will do
    assert call(client).error == errno.EINVAL
    header, body = peer.recv_decoded()
    assert header.command == command and body == expected


def test_fds_go_with_the_message(pair):
    client, peer = pair
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        peer.send(P.encode_reply(0, C.DEVICE_SET_IRQS))
        client.set_irqs(0, 0x24, 0, 1, fds=[efd]).check()
        header, payload, fds = peer.recv()
        assert header.command == C.DEVICE_SET_IRQS and len(fds) == 1
        os.eventfd_write(fds[0], 3)  # the peer's copy is the same eventfd
        os.close(fds[0])
        assert os.eventfd_read(efd) == 3
    finally:
        os.close(efd)


def test_fds_on_a_reply_are_handed_to_the_caller(pair):
    client, peer = pair
    memfd = os.memfd_create("region", os.MFD_CLOEXEC)
    os.ftruncate(memfd, 4096)
    os.pwrite(memfd, b"bar0", 0)
    info = P.RegionInfo(32, P.RegionFlags.READ | P.RegionFlags.MMAP, 0, 0, 4096, 0)
    peer.send(P.encode_reply(0, C.DEVICE_GET_REGION_INFO, info.pack()), [memfd])
    os.close(memfd)
    reply = client.region_info(0)
    assert reply.fd_count == 1 and reply.closed_fds == 0
    fds = reply.fds  # taken: the caller's now
    assert reply.fds == fds and len(client.owned_fds) == 0
    with mmap.mmap(fds[0], 4096) as m:
        assert m[:4] == b"bar0"
    os.close(fds[0])


def test_fds_not_taken_are_closed_by_close_fds_or_close(pair):
    client, peer = pair
    for msg_id in range(2):
        efd = os.eventfd(0)
        peer.send(
            P.encode_reply(
                msg_id, C.DEVICE_GET_REGION_IO_FDS, P.RegionIoFdsReply(16, 0, 0, 0).pack()
            ),
            [efd],
        )
        os.close(efd)
    first = client.region_io_fds(0)
    second = client.region_io_fds(0)
    assert first.fd_count == second.fd_count == 1 and len(client.owned_fds) == 2
    first.close_fds()
    assert len(client.owned_fds) == 1
    # the second one is left to client.close() (the fd-leak guard checks it)


def test_fds_beyond_max_msg_fds_are_closed():
    with client_and_peer(max_msg_fds=2) as (client, peer):
        efds = [os.eventfd(0) for _ in range(5)]
        peer.send(
            P.encode_reply(0, C.DEVICE_GET_REGION_IO_FDS, P.RegionIoFdsReply(16, 0, 0, 0).pack()),
            efds,
        )
        for fd in efds:
            os.close(fd)
        reply = client.region_io_fds(0)
        assert reply.fd_count == 2 and reply.closed_fds == 3 and client.stray_fds == 3
        for fd in reply.fds:
            os.close(fd)


def _send_with_eventfds(peer, message: bytes, n: int = 1) -> None:
    efds = [os.eventfd(0) for _ in range(n)]
    peer.send(message, efds)
    for fd in efds:
        os.close(fd)


def test_each_message_carrying_fds_it_may_not_is_listed_in_stray(pair):
    """None on a reply of a command without fds, on an error reply, on a region without
    the MMAP flag; one on a region with it; the client's max_msg_fds on REGION_IO_FDS."""
    client, peer = pair
    mmap_info = P.RegionInfo(32, P.RegionFlags.READ | P.RegionFlags.MMAP, 0, 0, 4096, 0)
    _send_with_eventfds(peer, P.encode_reply(0, C.DEVICE_RESET))
    _send_with_eventfds(peer, P.encode_error(1, C.DEVICE_GET_REGION_INFO, errno.EINVAL))
    _send_with_eventfds(peer, P.encode_reply(2, C.DEVICE_GET_REGION_INFO, P.RegionInfo(32).pack()))
    _send_with_eventfds(peer, P.encode_reply(3, C.DEVICE_GET_REGION_INFO, mmap_info.pack()), 2)
    _send_with_eventfds(peer, P.encode_reply(4, C.DEVICE_GET_REGION_INFO, mmap_info.pack()))
    io_fds = P.RegionIoFdsReply(16, 0, 0, 0).pack()
    _send_with_eventfds(peer, P.encode_reply(5, C.DEVICE_GET_REGION_IO_FDS, io_fds), 16)
    _send_with_eventfds(peer, P.encode_reply(6, C.DEVICE_GET_REGION_IO_FDS, io_fds), 17)
    replies = [
        client.reset(),
        client.region_info(1),
        client.region_info(2),
        client.region_info(3),
        client.region_info(4),
        client.region_io_fds(0),
        client.region_io_fds(0),
    ]
    assert [(s.msg_id, s.error, s.received, s.allowed) for s in client.stray] == [
        (0, False, 1, 0),
        (1, True, 1, 0),
        (2, False, 1, 0),
        (3, False, 2, 1),
        (6, False, 17, 16),
    ]
    assert [r.fd_count for r in replies] == [0, 0, 0, 1, 1, 16, 16]
    assert client.stray_fds == 1 + 1 + 1 + 1 + 1
    assert client.stray[0].describe() == (
        "the DEVICE_RESET reply msg_id 0 carried 1 fds (it may carry none)"
    )
    for reply in replies:
        reply.close_fds()


def test_a_version_reply_carries_fds_only_for_a_twin_socket(pair):
    client, peer = pair
    twin = P.Version(0, 2, {"capabilities": {"twin_socket": {"supported": True, "fd_index": 0}}})
    _send_with_eventfds(peer, P.encode_reply(0, C.VERSION, P.Version(0, 0).pack()))
    _send_with_eventfds(peer, P.encode_reply(1, C.VERSION, twin.pack()))
    plain, with_twin = client.request(C.VERSION, P.Version(0, 0)), client.request(C.VERSION, twin)
    assert (plain.fd_count, plain.closed_fds, with_twin.fd_count) == (0, 1, 1)
    assert [(s.msg_id, s.allowed) for s in client.stray] == [(0, 0)]
    with_twin.close_fds()


def test_recv_message_hands_over_stray_fds_and_lists_them(pair):
    client, peer = pair
    _send_with_eventfds(peer, P.encode_reply(0, C.DEVICE_RESET), 3)
    message = client.recv_message()
    assert message.fd_count == 3 and client.stray_fds == 0
    assert [(s.command, s.received, s.allowed) for s in client.stray] == [(C.DEVICE_RESET, 3, 0)]
    message.close_fds()


def test_fds_arriving_with_two_pipelined_replies_go_to_the_right_one(pair):
    client, peer = pair
    efd = os.eventfd(0)
    # Both replies land in the client's buffer before it reads: the fd must go
    # with the second (the one it was sent with), not the first.
    peer.send(P.encode_reply(0, C.DEVICE_RESET))
    info = P.RegionInfo(32, P.RegionFlags.READ | P.RegionFlags.MMAP, 0, 0, 4096, 0)
    peer.send(P.encode_reply(1, C.DEVICE_GET_REGION_INFO, info.pack()), [efd])
    os.close(efd)
    first, second = client.pipeline(
        [(C.DEVICE_RESET, None), (C.DEVICE_GET_REGION_INFO, P.RegionInfo(32))]
    )
    assert first.fd_count == 0 and first.closed_fds == 0
    assert second.fd_count == 1
    os.close(second.fds[0])


def test_close_is_idempotent_and_context_manager_closes():
    with client_and_peer() as (client, peer):
        with client:
            pass
        assert client.closed
        client.close()


def test_large_messages_both_ways(pair):
    client, peer = pair
    data = bytes(range(256)) * 4096  # 1 MiB: more than a socket buffer holds

    def serve():
        header, body = peer.recv_decoded()
        assert body.data == data
        peer.reply(header, P.RegionWriteReply(body.offset, body.region, body.count))
        header, body = peer.recv_decoded()
        peer.reply(header, P.RegionReadReply(body.offset, body.region, body.count, data))

    with in_thread(serve):
        assert client.region_write(1, 0, data).body.count == len(data)
        assert client.region_read(1, 0, len(data)).body.data == data
    assert client.buffered == 0 and len(client._buf) == 1 << 16  # grown, then shrunk
