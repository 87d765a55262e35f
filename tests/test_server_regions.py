"""REGION_READ / REGION_WRITE, mmap-shared RAM, the register block, DEVICE_RESET."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

import pytest
from test_server_support import client, read32, ref_server, write32  # noqa: F401  (fixtures)

from pytest_vfiouser.protocol import Command, RegionRead, RegionWrite
from reference_server import registers as R

MAX = R.DEFAULT_MAX_DATA_XFER_SIZE


def test_read_write_round_trip_on_ram(client):  # noqa: F811
    data = bytes(range(256)) * 4
    r = client.region_write(R.RAM_REGION, 0x100, data).check().body
    assert (r.offset, r.region, r.count) == (0x100, R.RAM_REGION, len(data))
    assert len(client.region_write(R.RAM_REGION, 0, b"x").payload) == 16
    r = client.region_read(R.RAM_REGION, 0x100, len(data)).check().body
    assert (r.offset, r.region, r.count, r.data) == (0x100, R.RAM_REGION, len(data), data)


def test_whole_region_and_last_byte(client):  # noqa: F811
    client.region_write(R.RAM_REGION, R.RAM_SIZE - 1, b"\x5a").check()
    assert client.region_read(R.RAM_REGION, 0, R.RAM_SIZE).check().body.data[-1] == 0x5A
    assert client.region_read(R.RAM_REGION, R.RAM_SIZE, 0).check().body.data == b""


def test_mmap_fd_shares_bytes(client):  # noqa: F811
    r = client.region_info(R.RAM_REGION).check()
    (fd,) = r.take_fds()
    try:
        with mmap.mmap(fd, R.RAM_SIZE, mmap.MAP_SHARED, offset=r.body.offset) as m:
            m[0x2000:0x2004] = b"mmap"
            assert client.region_read(R.RAM_REGION, 0x2000, 4).check().body.data == b"mmap"
            client.region_write(R.RAM_REGION, 0x3000, b"wire").check()
            assert m[0x3000:0x3004] == b"wire"
        # The server's memfd is sealed: the client cannot shrink it under the server.
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
    finally:
        os.close(fd)


def test_sparse_mmap_region_shares_bytes(client):  # noqa: F811
    r = client.region_info(R.DMA_RAM_REGION, argsz=4096).check()
    (fd,) = r.take_fds()
    try:
        off, size = r.body.caps[0].areas[1]
        with mmap.mmap(fd, size, mmap.MAP_SHARED, offset=r.body.offset + off) as m:
            m[:5] = b"area1"
            assert client.region_read(R.DMA_RAM_REGION, off, 5).check().body.data == b"area1"
    finally:
        os.close(fd)


def test_pattern_region_reads_and_refuses_writes(client):  # noqa: F811
    data = client.region_read(R.READONLY_REGION, 100, 50).check().body.data
    assert data == R.pattern_bytes(100, 50)
    r = client.region_write(R.READONLY_REGION, 0, b"x")
    assert r.error == errno.EPERM and not r.payload


def test_sink_region_takes_writes_refuses_reads(client):  # noqa: F811
    client.region_write(R.WRITEONLY_REGION, 0, b"y" * 4096).check()
    assert client.region_read(R.WRITEONLY_REGION, 0, 4).error == errno.EPERM


@pytest.mark.parametrize(
    "region, offset, count, err",
    [
        (R.RAM_REGION, R.RAM_SIZE - 3, 4, errno.EINVAL),
        (R.RAM_REGION, R.RAM_SIZE, 1, errno.EINVAL),
        (R.RAM_REGION, 2**64 - 1, 2, errno.EINVAL),
        (R.RAM_REGION, 0, MAX + 1, errno.E2BIG),
        (R.RAM_REGION, 0, 0xFFFFFFFF, errno.E2BIG),
        (5, 0, 4, errno.EINVAL),  # absent: size 0
        (8, 0, 1, errno.EINVAL),  # absent (VGA)
        (10, 0, 4, errno.EINVAL),
        (0xFFFFFFFF, 0, 4, errno.EINVAL),
    ],
)
def test_read_errors(client, region, offset, count, err):  # noqa: F811
    r = client.request(Command.REGION_READ, RegionRead(offset, region, count))
    assert r.error == err and not r.payload


@pytest.mark.parametrize(
    "region, offset, count, err",
    [
        (R.RAM_REGION, R.RAM_SIZE - 3, 4, errno.EINVAL),
        (R.RAM_REGION, 2**64 - 2, 4, errno.EINVAL),
        (5, 0, 4, errno.EINVAL),
        (10, 0, 4, errno.EINVAL),
    ],
)
def test_write_errors(client, region, offset, count, err):  # noqa: F811
    r = client.request(Command.REGION_WRITE, RegionWrite(offset, region, count, b"\0" * count))
    assert r.error == err and not r.payload


def test_write_above_max_data_xfer_size(client):  # noqa: F811
    r = client.region_write(R.RAM_REGION, 0, b"\0" * (MAX + 1))
    assert r.error == errno.E2BIG
    assert client.region_read(R.RAM_REGION, 0, 4).ok


@pytest.mark.parametrize(
    "payload",
    [
        RegionRead(0, 1, 4).pack()[:15],
        RegionRead(0, 1, 4).pack() + b"\0",
        b"",
    ],
)
def test_read_malformed(client, payload):  # noqa: F811
    assert client.request(Command.REGION_READ, payload).error == errno.EINVAL


@pytest.mark.parametrize(
    "payload",
    [
        RegionRead(0, 1, 4).pack() + b"abc",
        RegionRead(0, 1, 2).pack() + b"abc",
        RegionRead(0, 1, 4).pack()[:12],
    ],
)
def test_write_count_mismatch(client, payload):  # noqa: F811
    assert client.request(Command.REGION_WRITE, payload).error == errno.EINVAL


def test_registers(client):  # noqa: F811
    assert read32(client, R.REG_ID) == R.ID_VALUE
    assert read32(client, R.REG_LAYOUT_VERSION) == R.LAYOUT_VERSION
    write32(client, R.REG_ID, 0).check()  # read-only: ignored
    assert read32(client, R.REG_ID) == R.ID_VALUE
    for n in range(R.SCRATCH_COUNT):
        write32(client, R.scratch(n), 0x1000 + n).check()
    assert [read32(client, R.scratch(n)) for n in range(R.SCRATCH_COUNT)] == [
        0x1000 + n for n in range(R.SCRATCH_COUNT)
    ]
    # Any size and alignment works like memory.
    client.region_write(0, R.scratch(0) + 1, b"\xaa\xbb").check()
    assert read32(client, R.scratch(0)) == 0x00BBAA00
    wide = client.region_read(0, R.REG_SCRATCH, 32).check().body.data
    assert wide[4:8] == (0x1001).to_bytes(4, "little")
    assert read32(client, R.REG_DMA_DOORBELL) == 0 and read32(client, R.REG_IRQ_TRIGGER) == 0


def test_reset(client):  # noqa: F811
    write32(client, R.scratch(3), 0xDEADBEEF).check()
    client.region_write(R.RAM_REGION, 0, b"keep").check()
    write32(client, 0x04, 0x0006, region=R.CONFIG_REGION).check()  # command: memory, master
    assert read32(client, 0x04, region=R.CONFIG_REGION) & 0xFFFF == 6
    assert client.reset().check().payload == b""
    assert read32(client, R.scratch(3)) == 0
    assert read32(client, R.REG_ID) == R.ID_VALUE
    assert read32(client, R.REG_DMA_STATUS) == 0
    assert read32(client, 0x04, region=R.CONFIG_REGION) & 0xFFFF == 0
    assert client.region_read(R.RAM_REGION, 0, 4).check().body.data == b"keep"
    assert client.request(Command.DEVICE_RESET, b"\0").error == errno.EINVAL


def test_state_survives_reconnect(ref_server):  # noqa: F811
    with ref_server.connect() as c:
        write32(c, R.scratch(7), 0x77).check()
    with ref_server.connect() as c:
        assert read32(c, R.scratch(7)) == 0x77


def test_no_reply_commands_are_processed_silently(client):  # noqa: F811
    client.send(Command.REGION_WRITE, RegionWrite(R.scratch(1), 0, 4, b"\x11\0\0\0"), no_reply=True)
    client.send(Command.REGION_READ, RegionRead(0, 99, 4), no_reply=True)  # fails: no reply
    client.send(Command.DIRTY_PAGES, b"", no_reply=True)
    assert read32(client, R.scratch(1)) == 0x11  # the first reply to arrive is this one
    client.expect_no_message(0.05)


def test_pipelined_requests_are_answered_in_order(client):  # noqa: F811
    reqs = [
        (Command.REGION_WRITE, RegionWrite(R.scratch(2), 0, 4, i.to_bytes(4, "little")))
        if i % 2
        else (Command.REGION_READ, RegionRead(R.scratch(2), 0, 4))
        for i in range(1, 200)
    ]
    replies = client.pipeline(reqs)
    for i, r in zip(range(1, 200), replies, strict=True):
        r.check()
        if i % 2 == 0:
            assert int.from_bytes(r.body.data, "little") == i - 1
