"""The client memory model, and the server's DMA_READ/DMA_WRITE served from it."""

from __future__ import annotations

import errno
import mmap
import os

import pytest
from test_client_peer import client_and_peer, no_fd_leak_fixture, pair_fixture  # noqa: F401 (fixtures)

from pytest_vfiouser import protocol as P
from pytest_vfiouser.client import ClientMemory, DmaFault

C = P.Command
RW = P.DmaMapFlags.READ | P.DmaMapFlags.WRITE


# -- the memory model on its own


def test_memory_reads_and_writes_bytearray_regions():
    mem = ClientMemory()
    mem.add(0x1000, 0x100)
    mem.write(0x1010, b"abc")
    assert mem.read(0x100F, 5) == b"\x00abc\x00"
    assert mem.read(0x1000, 0) == b""


def test_memory_accesses_may_span_adjacent_regions():
    mem = ClientMemory()
    mem.add(0x2000, 0x10)
    mem.add(0x1FF0, 0x10)
    mem.write(0x1FFE, b"wxyz")
    assert mem.read(0x1FFC, 8) == b"\x00\x00wxyz\x00\x00"


@pytest.mark.parametrize("address, n", [(0xFFF, 2), (0x1100, 1), (0x10FF, 2), (0, 1)])
def test_memory_refuses_what_is_not_mapped(address, n):
    mem = ClientMemory()
    mem.add(0x1000, 0x100)
    with pytest.raises(DmaFault) as info:
        mem.read(address, n)
    assert info.value.errno == errno.EFAULT


def test_memory_enforces_map_permissions():
    mem = ClientMemory()
    mem.add(0x1000, 0x100, flags=P.DmaMapFlags.READ)
    mem.add(0x2000, 0x100, flags=P.DmaMapFlags.WRITE)
    with pytest.raises(DmaFault) as info:
        mem.write(0x1000, b"x")
    assert info.value.errno == errno.EPERM
    with pytest.raises(DmaFault):
        mem.read(0x2000, 1)
    mem.write(0x2000, b"ok")


def test_memory_refuses_overlaps_and_removes_exact_regions():
    mem = ClientMemory()
    mem.add(0x1000, 0x1000)
    for address, size in [(0x1800, 0x1000), (0x800, 0x1000), (0x1000, 1), (0, 0x10000)]:
        with pytest.raises(ValueError):
            mem.add(address, size)
    with pytest.raises(KeyError):
        mem.remove(0x1000, 0x800)
    mem.remove(0x1000, 0x1000)
    assert mem.regions == ()


def test_memfd_region_is_shared_with_whoever_maps_the_fd():
    mem = ClientMemory()
    fd = mem.create_memfd_region(0x10000, 4096)
    try:
        mem.write(0x10000, b"from client")
        assert os.pread(fd, 11, 0) == b"from client"
        os.pwrite(fd, b"from peer", 100)
        assert mem.read(0x10000 + 100, 9) == b"from peer"
    finally:
        mem.close()  # closes the memfd too: the fd-leak guard checks


def test_memory_add_with_a_callers_fd_leaves_the_fd_to_the_caller():
    fd = os.memfd_create("caller", os.MFD_CLOEXEC)
    os.ftruncate(fd, 8192)
    mem = ClientMemory()
    try:
        mem.add(0x4000, 4096, fd=fd, offset=4096)
        os.pwrite(fd, b"second page", 4096)
        assert mem.read(0x4000, 11) == b"second page"
        mem.remove(0x4000, 4096)
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


# -- DMA requests from the server, served while a reply is awaited


def test_dma_read_and_write_before_the_reply_fdless_region(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.DMA_MAP))
    client.dma_map(0x1000, 0x1000, RW).check()
    header, body = peer.recv_decoded()
    assert body == P.DmaMap(32, RW, 0, 0x1000, 0x1000)
    client.memory.write(0x1100, b"guest data")

    # The server reads and writes client memory before answering REGION_READ.
    peer.request(100, C.DMA_READ, P.DmaRead(0x1100, 10))
    peer.request(101, C.DMA_WRITE, P.DmaWrite(0x1200, 6, b"device"))
    peer.send(P.encode_reply(1, C.REGION_READ, P.RegionReadReply(0, 0, 2, b"ok").pack()))
    reply = client.region_read(0, 0, 2)
    assert reply.body.data == b"ok"

    peer.recv()  # the REGION_READ request
    header, body = peer.recv_decoded()
    assert (
        header.msg_id == 100
        and header.is_reply
        and body == P.DmaReadReply(0x1100, 10, b"guest data")
    )
    header, payload, _ = peer.recv()
    assert header.msg_id == 101 and header.is_reply and len(payload) == 16  # errata 2
    assert P.DmaWriteReply.unpack(payload) == P.DmaWriteReply(0x1200, 6)
    assert client.memory.read(0x1200, 6) == b"device"
    assert [(r.command, r.address, r.count, r.ok) for r in client.dma_requests] == [
        (C.DMA_READ, 0x1100, 10, True),
        (C.DMA_WRITE, 0x1200, 6, True),
    ]


def test_memfd_region_is_visible_to_the_peer_through_the_passed_fd(pair):
    client, peer = pair
    fd = client.memory.create_memfd_region(0x100000, 8192)
    client.memory.write(0x100000, b"written by the client")
    peer.send(P.encode_reply(0, C.DMA_MAP))
    client.dma_map(0x100000, 8192, RW, fd=fd).check()
    header, payload, fds = peer.recv()
    assert P.DmaMap.unpack(payload) == P.DmaMap(32, RW, 0, 0x100000, 8192) and len(fds) == 1
    with mmap.mmap(fds[0], 8192) as shared:  # what a server does with the fd
        assert shared[:21] == b"written by the client"
        shared[4096:4112] = b"written by peer!"
    os.close(fds[0])
    assert client.memory.read(0x101000, 16) == b"written by peer!"

    # DMA messages reach the same bytes.
    peer.request(7, C.DMA_READ, P.DmaRead(0x101000, 16))
    peer.send(P.encode_reply(1, C.DEVICE_RESET))
    client.reset().check()
    assert peer.recv_decoded()[0].command == C.DEVICE_RESET
    assert peer.recv_decoded()[1].data == b"written by peer!"

    # Unmapping forgets the region (and closes the client's memfd).
    peer.send(P.encode_reply(2, C.DMA_UNMAP, P.DmaUnmap(24, 0, 0x100000, 8192).pack()))
    client.dma_unmap(0x100000, 8192).check()
    assert client.memory.regions == ()


def test_dma_outside_mapped_memory_is_refused_with_efault(pair):
    client, peer = pair
    client.memory.add(0x1000, 0x100)
    peer.request(1, C.DMA_READ, P.DmaRead(0x10F0, 0x20))  # runs off the end
    peer.request(2, C.DMA_WRITE, P.DmaWrite(0x9000, 1, b"x"))  # not mapped at all
    peer.send(P.encode_reply(0, C.DEVICE_RESET))
    client.reset().check()
    peer.recv()
    for msg_id in (1, 2):
        header, payload, _ = peer.recv()
        assert (header.msg_id, header.is_error, header.error, payload) == (
            msg_id,
            True,
            errno.EFAULT,
            b"",
        )
    assert [(r.address, r.ok, r.errno) for r in client.dma_requests] == [
        (0x10F0, False, errno.EFAULT),
        (0x9000, False, errno.EFAULT),
    ]
    assert "not in mapped memory" in client.dma_requests[0].detail


def test_dma_above_max_data_xfer_size_is_refused_with_e2big():
    with client_and_peer(max_data_xfer_size=64) as (client, peer):
        client.memory.add(0, 4096)
        peer.request(1, C.DMA_READ, P.DmaRead(0, 65))
        peer.request(2, C.DMA_WRITE, P.DmaWrite(0, 65, b"y" * 65))
        peer.request(3, C.DMA_READ, P.DmaRead(0, 64))  # the limit itself is fine
        peer.send(P.encode_reply(0, C.DEVICE_RESET))
        client.reset()
        peer.recv()
        errors = [peer.recv()[0].error for _ in range(3)]
        assert errors == [errno.E2BIG, errno.E2BIG, 0]
        assert client.memory.read(0, 1) == b"\x00"  # the refused write wrote nothing
        assert [r.ok for r in client.dma_requests] == [False, False, True]


def test_malformed_dma_request_gets_einval(pair):
    client, peer = pair
    peer.request(1, C.DMA_WRITE, P.DmaWrite(0, 10, b"short"))  # count says 10, 5 follow
    peer.send(P.encode_reply(0, C.DEVICE_RESET))
    client.reset()
    peer.recv()
    assert peer.recv()[0].error == errno.EINVAL
    assert client.dma_requests[0].address is None and "count" in client.dma_requests[0].detail


def test_dma_write_with_no_reply_flag_gets_no_reply(pair):
    client, peer = pair
    client.memory.add(0, 16)
    peer.request(1, C.DMA_WRITE, P.DmaWrite(0, 2, b"hi"), flags=P.FLAG_NO_REPLY)
    peer.send(P.encode_reply(0, C.DEVICE_RESET))
    client.reset()
    assert client.memory.read(0, 2) == b"hi"
    assert peer.recv()[0].command == C.DEVICE_RESET
    peer.sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        peer.recv()


def test_dma_requests_are_served_during_a_pipeline(pair):
    client, peer = pair
    client.memory.add(0x1000, 0x1000)
    client.memory.write(0x1000, b"abcd")
    peer.send(P.encode_reply(0, C.DEVICE_RESET))
    peer.request(9, C.DMA_READ, P.DmaRead(0x1000, 4))
    peer.send(P.encode_reply(1, C.DEVICE_RESET))
    replies = client.pipeline([(C.DEVICE_RESET, None)] * 2)
    assert [r.msg_id for r in replies] == [0, 1]
    assert client.dma_requests[0].ok


def test_fds_on_a_dma_request_are_closed_and_counted(pair):
    client, peer = pair
    client.memory.add(0, 16)
    efd = os.eventfd(0)
    peer.send(P.encode(1, C.DMA_READ, P.DmaRead(0, 4).pack()), [efd])
    os.close(efd)
    peer.send(P.encode_reply(0, C.DEVICE_RESET))
    client.reset().check()
    assert client.stray_fds == 1 and client.owned_fds == set()
    assert [(s.command, s.reply, s.received, s.allowed) for s in client.stray] == [
        (C.DMA_READ, False, 1, 0)
    ]


def test_dma_map_that_cannot_be_modelled_is_noted_not_raised(pair):
    client, peer = pair
    efd = os.eventfd(0)  # not mmappable, but the server accepts it
    try:
        peer.send(P.encode_reply(0, C.DMA_MAP))
        assert client.dma_map(0, 4096, fd=efd).ok
        _, _, fds = peer.recv()
        for fd in fds:
            os.close(fd)
    finally:
        os.close(efd)
    assert client.memory.regions == ()
    assert "not modelled" in client.wire_log.render(hexdump=False)
