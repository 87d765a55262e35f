"""DMA_MAP / DMA_UNMAP and the device's DMA engine (fd-backed mappings and
DMA_READ/DMA_WRITE requests to the client)."""

from __future__ import annotations

import errno
import fcntl
import os

import pytest
from test_server_support import RefServer, client, read32, ref_server, write32, write64  # noqa: F401

from pytest_vfiouser.protocol import Command, DmaMap, DmaUnmap, RegionRead, RegionWrite
from reference_server import registers as R

RW = 3
PAGE = 4096


@pytest.fixture
def c(client):  # noqa: F811
    yield client
    for region in client.memory.regions:  # unmap what the test left mapped
        client.dma_unmap(region.address, region.size)


def dma(c, dev_offset, address, length, direction):
    write64(c, R.REG_DMA_DEV_OFFSET, dev_offset).check()
    write64(c, R.REG_DMA_CLIENT_ADDR, address).check()
    write32(c, R.REG_DMA_LENGTH, length).check()
    write32(c, R.REG_DMA_DIRECTION, direction).check()
    return write32(c, R.REG_DMA_DOORBELL, R.DMA_START)


# ---- the map table


def test_map_unmap(c):
    r = c.dma_map(0x10000, 0x4000)
    assert r.ok and r.payload == b""
    r = c.dma_unmap(0x10000, 0x4000).check()
    assert r.body == DmaUnmap(24, 0, 0x10000, 0x4000)


@pytest.mark.parametrize(
    "address, size",
    [
        (0x10000, 0x1000),
        (0x10000, 0x4000),
        (0xF000, 0x2000),
        (0x13FFF, 1),
        (0x8000, 0x10000),
    ],
)
def test_overlap_is_eexist(c, address, size):
    c.dma_map(0x10000, 0x4000).check()
    r = c.request(Command.DMA_MAP, DmaMap(32, RW, 0, address, size))
    assert r.error == errno.EEXIST
    c.dma_map(0x14000, 0x1000).check()  # adjacent is fine
    c.dma_map(0xF000, 0x1000).check()


@pytest.mark.parametrize(
    "payload",
    [
        DmaMap(32, RW, 0, 0x1000, 0).pack(),  # size 0
        DmaMap(32, RW, 0, 2**64 - 0x1000, 0x2000).pack(),  # past 2**64
        DmaMap(32, 4, 0, 0x1000, 0x1000).pack(),  # undefined flag
        DmaMap(32, RW, 0x1000, 0x1000, 0x1000).pack(),  # offset without fd
        DmaMap(31, RW, 0, 0x1000, 0x1000).pack(),  # argsz
        DmaMap(48, RW, 0, 0x1000, 0x1000).pack(),
        DmaMap(32, RW, 0, 0x1000, 0x1000).pack()[:31],
        DmaMap(32, RW, 0, 0x1000, 0x1000).pack() + b"\0",
    ],
)
def test_map_refused(c, payload):
    r = c.request(Command.DMA_MAP, payload)
    assert r.error == errno.EINVAL and not r.payload


def test_map_to_the_top_of_the_address_space(c):
    c.dma_map(2**64 - 0x1000, 0x1000).check()


@pytest.mark.parametrize("address, size", [(0x10000, 0x1000), (0x11000, 0x3000), (0x20000, 1)])
def test_unmap_must_match_exactly(c, address, size):
    c.dma_map(0x10000, 0x4000).check()
    assert c.dma_unmap(address, size).error == errno.ENOENT


@pytest.mark.parametrize(
    "payload, err",
    [
        (DmaUnmap(24, 1, 0x10000, 0x4000).pack(), errno.EINVAL),  # dirty bitmap: logging is off
        (DmaUnmap(24, 2, 0x10000, 0x4000).pack(), errno.EINVAL),
        (DmaUnmap(23, 0, 0x10000, 0x4000).pack(), errno.EINVAL),
        (DmaUnmap(24, 0, 0x10000, 0).pack(), errno.EINVAL),
        (DmaUnmap(24, 0, 2**64 - 1, 2).pack(), errno.EINVAL),
        (DmaUnmap(24, 0, 0x10000, 0x4000).pack() + b"\0" * 16, errno.EINVAL),
        (DmaUnmap(24, 0, 0x10000, 0x4000).pack()[:23], errno.EINVAL),
    ],
)
def test_unmap_refused(c, payload, err):
    c.dma_map(0x10000, 0x4000).check()
    assert c.request(Command.DMA_UNMAP, payload).error == err
    c.dma_unmap(0x10000, 0x4000).check()  # still there


def test_map_with_fd_and_offset(c, ref_server):  # noqa: F811
    before = ref_server.fds()
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 3 * PAGE)
        os.pwrite(fd, b"at-offset", 2 * PAGE + 100)
        c.request(Command.DMA_MAP, DmaMap(32, RW, 2 * PAGE + 100, 0x40000, 9), [fd]).check()
        assert ref_server.fds() > before
        r = dma(c, 0x100, 0x40000, 9, R.DMA_FROM_CLIENT)
        assert r.ok
        assert c.region_read(R.DMA_RAM_REGION, 0x100, 9).check().body.data == b"at-offset"
        c.request(Command.DMA_UNMAP, DmaUnmap(24, 0, 0x40000, 9)).check()
    finally:
        os.close(fd)
    assert ref_server.fds() == before


@pytest.mark.parametrize("kind", ["short file", "pipe", "eventfd", "two fds"])
def test_map_with_bad_fd(c, ref_server, kind):  # noqa: F811
    before = ref_server.fds()
    fds = []
    if kind == "short file":
        fds = [os.memfd_create("t", os.MFD_CLOEXEC)]
        os.ftruncate(fds[0], PAGE)
    elif kind == "pipe":
        fds = list(os.pipe())[:1]
    elif kind == "eventfd":
        fds = [os.eventfd(0)]
    else:
        fds = [os.memfd_create("t"), os.memfd_create("u")]
        for fd in fds:
            os.ftruncate(fd, 2 * PAGE)
    try:
        r = c.request(Command.DMA_MAP, DmaMap(32, RW, 0, 0x50000, 2 * PAGE), fds)
        assert r.error == errno.EINVAL
    finally:
        for fd in fds:
            os.close(fd)
    assert ref_server.fds() == before
    c.dma_map(0x50000, 2 * PAGE).check()  # nothing was mapped


def test_file_truncated_after_map_is_efault_not_a_crash(c, ref_server):  # noqa: F811
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 2 * PAGE)
        c.request(Command.DMA_MAP, DmaMap(32, RW, 0, 0x60000, 2 * PAGE), [fd]).check()
        os.ftruncate(fd, 0)  # would make the server's accesses fault (SIGBUS)
        for direction in (R.DMA_TO_CLIENT, R.DMA_FROM_CLIENT):
            assert dma(c, 0, 0x60000 + PAGE, 16, direction).error == errno.EFAULT
        c.request(Command.DMA_UNMAP, DmaUnmap(24, 0, 0x60000, 2 * PAGE)).check()
    finally:
        os.close(fd)
    assert ref_server.proc.poll() is None


def test_dma_into_a_file_made_o_append_is_refused(c):
    """The device writes the client's file with pwrite(), which O_APPEND (set by the
    client on the file it passed: the flag is shared) would turn into an append."""
    fd = c.memory.create_memfd_region(0x68000, 2 * PAGE)
    c.dma_map(0x68000, 2 * PAGE, fd=fd).check()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    assert dma(c, 0, 0x68000 + PAGE, 16, R.DMA_TO_CLIENT).error == errno.EINVAL
    assert os.fstat(fd).st_size == 2 * PAGE  # nothing appended
    assert dma(c, 0, 0x68000 + PAGE, 16, R.DMA_FROM_CLIENT).ok  # reads are not affected


def test_map_table_limit(tmp_path):
    dev = tmp_path / "d.toml"
    dev.write_text("[server]\nmax_dma_maps = 3\n")
    srv = RefServer(tmp_path, f"--device={dev}")
    try:
        with srv.connect() as c:
            for i in range(3):
                c.dma_map(i * PAGE, PAGE).check()
            assert c.dma_map(10 * PAGE, PAGE).error == errno.ENOSPC
            c.dma_unmap(0, PAGE).check()
            c.dma_map(10 * PAGE, PAGE).check()
    finally:
        assert srv.stop() == 0


# ---- the DMA engine


PATTERN = bytes((i * 13 + 1) & 0xFF for i in range(0x3000))


@pytest.mark.parametrize("with_fd", [True, False])
def test_dma_to_client(c, with_fd):
    if with_fd:
        fd = c.memory.create_memfd_region(0x100000, 0x4000)
        c.dma_map(0x100000, 0x4000, fd=fd).check()
    else:
        c.dma_map(0x100000, 0x4000).check()
    c.region_write(R.DMA_RAM_REGION, 0x1000, PATTERN).check()
    n = len(c.dma_requests)
    r = dma(c, 0x1000, 0x100800, len(PATTERN), R.DMA_TO_CLIENT)
    assert r.ok and r.payload[12:16] == (4).to_bytes(4, "little")
    assert c.memory.read(0x100800, len(PATTERN)) == PATTERN
    assert read32(c, R.REG_DMA_STATUS) == 0
    assert len(c.dma_requests) == n + (0 if with_fd else 1)


@pytest.mark.parametrize("with_fd", [True, False])
def test_dma_from_client(c, with_fd):
    if with_fd:
        fd = c.memory.create_memfd_region(0x200000, 0x4000)
        c.dma_map(0x200000, 0x4000, fd=fd).check()
    else:
        c.dma_map(0x200000, 0x4000).check()
    c.memory.write(0x200000, PATTERN)
    count = read32(c, R.REG_DMA_COUNT)
    dma(c, 0x8000, 0x200000, len(PATTERN), R.DMA_FROM_CLIENT).check()
    assert c.region_read(R.DMA_RAM_REGION, 0x8000, len(PATTERN)).check().body.data == PATTERN
    assert read32(c, R.REG_DMA_COUNT) == count + 1


def test_dma_is_chunked_to_the_clients_max_data_xfer_size(ref_server):  # noqa: F811
    with ref_server.connect(
        capabilities={"max_data_xfer_size": 4096}, max_data_xfer_size=4096
    ) as c:
        c.dma_map(0x300000, 0x8000).check()
        c.memory.write(0x300000, PATTERN * 2)
        dma(c, 0, 0x300000, 0x6000, R.DMA_FROM_CLIENT).check()
        reads = [q for q in c.dma_requests if q.command == Command.DMA_READ]
        assert [q.count for q in reads] == [4096] * 6 and all(q.ok for q in reads)
        assert [q.address for q in reads] == [0x300000 + i * 4096 for i in range(6)]
        dma(c, 0x100, 0x301000, 0x2001, R.DMA_TO_CLIENT).check()
        writes = [q for q in c.dma_requests if q.command == Command.DMA_WRITE]
        assert [q.count for q in writes] == [4096, 4096, 1]
        assert c.memory.read(0x301000, 0x2001) == (PATTERN * 2)[0x100:0x2101]


def test_dma_across_adjacent_mappings(c):
    fd = c.memory.create_memfd_region(0x400000, 0x1000)
    c.dma_map(0x400000, 0x1000, fd=fd).check()
    c.dma_map(0x401000, 0x1000).check()
    c.region_write(R.DMA_RAM_REGION, 0, PATTERN[:0x1800]).check()
    dma(c, 0, 0x400800, 0x1000, R.DMA_TO_CLIENT).check()
    assert c.memory.read(0x400800, 0x1000) == PATTERN[:0x1000]


@pytest.mark.parametrize(
    "dev_offset, address, length, direction, err",
    [
        (0, 0x500000, 0x3000, R.DMA_TO_CLIENT, errno.EFAULT),  # runs past the mappings
        (0, 0x4FF000, 0x10, R.DMA_TO_CLIENT, errno.EFAULT),  # before it
        (0, 0x900000, 0x10, R.DMA_FROM_CLIENT, errno.EFAULT),  # nowhere
        (0xFFF0, 0x500000, 0x20, R.DMA_TO_CLIENT, errno.EINVAL),  # past the DMA RAM
        (0, 0x500000, 0x10, 2, errno.EINVAL),  # direction
        (0, 0x501000, 0x10, R.DMA_FROM_CLIENT, errno.EPERM),  # write-only mapping
        (0, 0x501000, 0x10, R.DMA_TO_CLIENT, None),  # ... can be written
    ],
)
def test_dma_errors(c, dev_offset, address, length, direction, err):
    c.dma_map(0x500000, 0x1000).check()
    c.dma_map(0x501000, 0x1000, flags=2).check()
    r = dma(c, dev_offset, address, length, direction)
    if err is None:
        r.check()
        assert read32(c, R.REG_DMA_STATUS) == 0
        return
    assert r.error == err and not r.payload
    assert read32(c, R.REG_DMA_STATUS) == err
    write32(c, R.REG_DMA_LENGTH, 0).check()
    write32(c, R.REG_DMA_DIRECTION, 0).check()
    write32(c, R.REG_DMA_DOORBELL, 1).check()  # nothing to copy: success
    assert read32(c, R.REG_DMA_STATUS) == 0


def test_client_error_reply_to_a_dma_request(c):
    # Mapped in the server, unknown to the client's memory model: the client refuses.
    c.request(Command.DMA_MAP, DmaMap(32, RW, 0, 0x600000, 0x1000)).check()
    r = dma(c, 0, 0x600000, 0x10, R.DMA_TO_CLIENT)
    assert r.error == errno.EFAULT
    assert not c.dma_requests[-1].ok and c.dma_requests[-1].errno == errno.EFAULT
    assert read32(c, R.REG_DMA_STATUS) == errno.EFAULT
    c.request(Command.DMA_UNMAP, DmaUnmap(24, 0, 0x600000, 0x1000)).check()


def test_doorbell_values_other_than_start_do_nothing(c):
    count = read32(c, R.REG_DMA_COUNT)
    write32(c, R.REG_DMA_LENGTH, 0).check()
    write32(c, R.REG_DMA_DOORBELL, 2).check()
    assert read32(c, R.REG_DMA_COUNT) == count


def test_commands_pipelined_during_dma_are_served_after_it(c):
    c.dma_map(0x700000, 0x2000).check()
    c.memory.write(0x700000, b"pipelined!")
    for reg, value in ((R.REG_DMA_DEV_OFFSET, 0x2000), (R.REG_DMA_CLIENT_ADDR, 0x700000)):
        write64(c, reg, value).check()
    write32(c, R.REG_DMA_LENGTH, 10).check()
    write32(c, R.REG_DMA_DIRECTION, R.DMA_FROM_CLIENT).check()
    count = read32(c, R.REG_DMA_COUNT)
    ids = [
        c.send(Command.REGION_WRITE, RegionWrite(R.REG_DMA_DOORBELL, 0, 4, b"\1\0\0\0")),
        c.send(Command.REGION_READ, RegionRead(R.REG_DMA_COUNT, 0, 4)),
        c.send(Command.REGION_READ, RegionRead(0x2000, R.DMA_RAM_REGION, 10)),
    ]
    replies = [c.recv_reply(i) for i in ids]  # serves the server's DMA_READ meanwhile
    assert replies[0].ok
    assert int.from_bytes(replies[1].check().body.data, "little") == count + 1
    assert replies[2].check().body.data == b"pipelined!"


def test_dma_reply_timeout_and_late_reply(tmp_path):
    dev = tmp_path / "d.toml"
    dev.write_text("[server]\ndma_reply_timeout = 0.2\n")
    srv = RefServer(tmp_path, f"--device={dev}")
    try:
        with srv.connect() as c:
            c.dma_map(0x10000, 0x1000).check()
            for reg, value in ((R.REG_DMA_CLIENT_ADDR, 0x10000), (R.REG_DMA_DEV_OFFSET, 0)):
                write64(c, reg, value).check()
            write32(c, R.REG_DMA_LENGTH, 8).check()
            write32(c, R.REG_DMA_DIRECTION, R.DMA_FROM_CLIENT).check()
            bell = c.send(Command.REGION_WRITE, RegionWrite(R.REG_DMA_DOORBELL, 0, 4, b"\1\0\0\0"))
            req = c.recv_message()  # the DMA_READ, left unanswered
            assert req.command == Command.DMA_READ and not req.is_reply
            assert c.recv_reply(bell).error == errno.ETIMEDOUT
            assert read32(c, R.REG_DMA_STATUS) == errno.ETIMEDOUT
            # The late reply is dropped without an answer.
            c.send(Command.DMA_READ, req.payload + b"\0" * 8, msg_id=req.msg_id, flags=1)
            assert read32(c, R.REG_ID) == R.ID_VALUE
            c.expect_no_message(0.05)
    finally:
        assert srv.stop() == 0
    assert "late reply" in srv.log()


def test_disconnect_unmaps_everything(ref_server):  # noqa: F811
    ref_server.wait_idle()
    with ref_server.connect() as c:
        for i in range(3):
            fd = c.memory.create_memfd_region(0x800000 + i * 0x10000, 0x4000)
            c.dma_map(0x800000 + i * 0x10000, 0x4000, fd=fd).check()
        c.dma_map(0x900000, 0x1000).check()
        assert ref_server.fds() >= ref_server.baseline_fds + 3 + 1  # the memfds, the socket
    ref_server.wait_idle()
    with ref_server.connect() as c:
        for i in range(3):
            c.dma_map(0x800000 + i * 0x10000, 0x4000).check()  # no EEXIST: the table is new
        c.dma_map(0x900000, 0x1000).check()
