"""Nasty input: malformed messages, headers, split and glued writes, stray fds,
unframeable streams, clients that vanish; the server must answer each exactly
and keep serving."""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest
from test_server_support import client, eventfd, read32, ref_server  # noqa: F401  (fixtures)

from pytest_vfiouser.client import Client, ConnectionClosed
from pytest_vfiouser.protocol import (
    Command,
    DeviceInfo,
    DirtyPages,
    DmaMap,
    IrqInfo,
    RegionInfo,
    RegionRead,
    RegionWrite,
    encode,
)
from reference_server import registers as R

HDR = struct.Struct("<HHIII")
EINVAL, ENOSYS = errno.EINVAL, errno.ENOSYS


def msg(command, payload=b"", flags=0, error=0, msg_id=0x4242, size=None):
    size = 16 + len(payload) if size is None else size
    return HDR.pack(msg_id, command, size, flags, error) + payload


READ_ID = RegionRead(R.REG_ID, 0, 4).pack()

# (name, raw message, expected errno or None for "no reply at all")
NASTY = [
    ("command 0", msg(0), ENOSYS),
    ("command 15 (0.9.2 only)", msg(15, b"\0" * 8), ENOSYS),
    ("command 16", msg(16, b"\0" * 8), ENOSYS),
    ("command 17", msg(17), ENOSYS),
    ("command 18", msg(18), ENOSYS),
    ("command 99", msg(99, b"garbage"), ENOSYS),
    ("command 0xffff", msg(0xFFFF), ENOSYS),
    ("DMA_READ from the client", msg(Command.DMA_READ, b"\0" * 16), EINVAL),
    ("DMA_WRITE from the client", msg(Command.DMA_WRITE, b"\0" * 17), EINVAL),
    ("DIRTY_PAGES START|STOP", msg(Command.DIRTY_PAGES, DirtyPages(8, 3).pack()), EINVAL),
    ("reply-typed", msg(Command.REGION_READ, READ_ID, flags=1), EINVAL),
    ("reply-typed, unknown command", msg(77, flags=1), EINVAL),
    ("type 2", msg(Command.REGION_READ, READ_ID, flags=2), EINVAL),
    ("type 15", msg(Command.DEVICE_GET_INFO, DeviceInfo(16).pack(), flags=15), EINVAL),
    ("Error bit on a command", msg(Command.REGION_READ, READ_ID, flags=0x20, error=5), EINVAL),
    ("undefined flag bit 6", msg(Command.REGION_READ, READ_ID, flags=0x40), EINVAL),
    ("undefined flag bit 31", msg(Command.REGION_READ, READ_ID, flags=1 << 31), EINVAL),
    ("No_reply + bad command", msg(99, flags=0x10), None),
    ("No_reply + bad payload", msg(Command.REGION_READ, b"\0", flags=0x10), None),
    ("No_reply reply-typed", msg(Command.REGION_READ, READ_ID, flags=0x11), None),
    ("GET_INFO empty", msg(Command.DEVICE_GET_INFO), EINVAL),
    ("GET_INFO 15 bytes", msg(Command.DEVICE_GET_INFO, b"\x10" + b"\0" * 14), EINVAL),
    ("GET_INFO argsz 0", msg(Command.DEVICE_GET_INFO, DeviceInfo(0).pack()), EINVAL),
    (
        "REGION_INFO index 2**32-1",
        msg(Command.DEVICE_GET_REGION_INFO, RegionInfo(32, index=0xFFFFFFFF).pack()),
        EINVAL,
    ),
    ("IRQ_INFO huge", msg(Command.DEVICE_GET_IRQ_INFO, IrqInfo(16).pack() * 100), EINVAL),
    (
        "REGION_READ count 2**32-1",
        msg(Command.REGION_READ, RegionRead(0, 1, 0xFFFFFFFF).pack()),
        errno.E2BIG,
    ),
    (
        "REGION_READ offset 2**64-1",
        msg(Command.REGION_READ, RegionRead(2**64 - 1, 1, 1).pack()),
        EINVAL,
    ),
    (
        "REGION_WRITE count > data",
        msg(Command.REGION_WRITE, RegionRead(0, 1, 100).pack() + b"x"),
        EINVAL,
    ),
    ("DMA_MAP all ones", msg(Command.DMA_MAP, b"\xff" * 32), EINVAL),
    ("DMA_MAP short", msg(Command.DMA_MAP, b"\x20"), EINVAL),
    (
        "DMA_UNMAP unknown",
        msg(Command.DMA_UNMAP, struct.pack("<IIQQ", 24, 0, 1 << 40, 4096)),
        errno.ENOENT,
    ),
    ("SET_IRQS garbage", msg(Command.DEVICE_SET_IRQS, bytes(range(37))), EINVAL),
    ("SET_IRQS all ones", msg(Command.DEVICE_SET_IRQS, b"\xff" * 20), EINVAL),
    ("RESET with payload", msg(Command.DEVICE_RESET, b"\0"), EINVAL),
    ("VERSION again", msg(Command.VERSION, b"\0\0\0\0"), EINVAL),
    ("VERSION garbage", msg(Command.VERSION, b"\0\0\0\0{{{\0"), EINVAL),
    (
        "IO_FDS flags",
        msg(Command.DEVICE_GET_REGION_IO_FDS, struct.pack("<IIII", 64, 1, 0, 0)),
        EINVAL,
    ),
]


@pytest.mark.parametrize("name, raw, err", NASTY, ids=[n[0] for n in NASTY])
def test_nasty_message_then_valid_request(client, name, raw, err):  # noqa: F811
    client.send_raw(raw)
    if err is not None:
        r = client.recv_reply(0x4242)
        assert r.error == err, name
        assert not r.payload and r.msg_size == 16
    info = client.device_get_info().check()
    assert info.body.num_regions == R.NUM_REGIONS


def test_all_nasty_messages_glued_in_one_write(client):  # noqa: F811
    client.send_raw(b"".join(raw for _, raw, _ in NASTY) + msg(Command.REGION_READ, READ_ID))
    for name, _, err in NASTY:
        if err is not None:
            assert client.recv_reply(0x4242).error == err, name
    assert client.recv_reply(0x4242).check().body.data == R.ID_VALUE.to_bytes(4, "little")


def test_byte_by_byte(client):  # noqa: F811
    raw = encode(7, Command.REGION_WRITE, RegionWrite(R.scratch(4), 0, 4, b"\1\2\3\4").pack())
    raw += encode(8, Command.REGION_READ, RegionRead(R.scratch(4), 0, 4).pack())
    for b in raw:
        client.send_raw(bytes([b]))
    assert client.recv_reply(7).ok
    assert client.recv_reply(8).check().body.data == b"\1\2\3\4"


def test_fd_arrives_with_the_second_half(client):  # noqa: F811
    fd = client.memory.create_memfd_region(0x1000000, 0x1000)
    client.memory.write(0x1000000, b"split")
    raw = encode(9, Command.DMA_MAP, DmaMap(32, 3, 0, 0x1000000, 0x1000).pack())
    client.send_raw(raw[:10])
    client.send_raw(raw[10:30], fds=[fd])
    client.send_raw(raw[30:])
    client.recv_reply(9).check()
    write = [
        (R.REG_DMA_DEV_OFFSET, 0),
        (R.REG_DMA_CLIENT_ADDR, 0x1000000),
        (R.REG_DMA_LENGTH, 5),
        (R.REG_DMA_DIRECTION, R.DMA_FROM_CLIENT),
        (R.REG_DMA_DOORBELL, 1),
    ]
    for reg, value in write:
        client.region_write(
            0, reg, value.to_bytes(8 if reg in (0x80, 0x88) else 4, "little")
        ).check()
    assert not client.dma_requests  # it went through the fd, so the fd was attached right
    assert client.region_read(R.DMA_RAM_REGION, 0, 5).check().body.data == b"split"
    client.dma_unmap(0x1000000, 0x1000).check()


def test_fds_on_messages_that_take_none_are_closed(client, ref_server):  # noqa: F811
    before = ref_server.fds()
    fds = [eventfd() for _ in range(3)]
    try:
        assert client.request(Command.DEVICE_GET_INFO, DeviceInfo(16), fds).ok
        assert client.request(Command.REGION_READ, RegionRead(0, 0, 4), fds[:1]).ok
        assert client.request(99, b"", fds).error == ENOSYS
    finally:
        for fd in fds:
            os.close(fd)
    assert ref_server.fds() == before


def test_too_many_fds_on_any_message(client, ref_server):  # noqa: F811
    before = ref_server.fds()
    fds = [eventfd() for _ in range(R.DEFAULT_MAX_MSG_FDS + 1)]
    try:
        assert client.request(Command.DEVICE_GET_INFO, DeviceInfo(16), fds).error == EINVAL
    finally:
        for fd in fds:
            os.close(fd)
    assert ref_server.fds() == before


@pytest.mark.parametrize("size", [0, 1, 15])
def test_msg_size_below_16_closes_the_connection(ref_server, size):  # noqa: F811
    with ref_server.connect() as c:
        c.send_raw(msg(Command.DEVICE_GET_INFO, DeviceInfo(16).pack(), size=size))
        with pytest.raises(ConnectionClosed):
            c.recv_reply()
    with ref_server.connect() as c:  # the server goes on
        assert c.device_get_info().ok


@pytest.mark.parametrize("size", [0xFFFFFFFF, 16 + 16 + R.DEFAULT_MAX_DATA_XFER_SIZE + 8192])
def test_msg_size_too_big_closes_the_connection(ref_server, size):  # noqa: F811
    with ref_server.connect() as c:
        c.send_raw(msg(Command.REGION_WRITE, RegionRead(0, 1, 4).pack(), size=size))
        with pytest.raises(ConnectionClosed):
            c.recv_reply()
    with ref_server.connect() as c:
        assert c.device_get_info().ok


def test_biggest_write_fits(client):  # noqa: F811
    data = os.urandom(R.RAM_SIZE)
    client.region_write(R.RAM_REGION, 0, data).check()
    assert client.region_read(R.RAM_REGION, 0, R.RAM_SIZE).check().body.data == data


@pytest.mark.parametrize("cut", [1, 15, 16, 20])
def test_client_vanishes_mid_message(ref_server, cut):  # noqa: F811
    raw = encode(1, Command.DMA_MAP, DmaMap(32, 3, 0, 0x1000, 0x1000).pack())
    with ref_server.connect() as c:
        fd = eventfd()
        c.send_raw(raw[:cut], fds=[fd])  # an fd, too, held with the partial message
        os.close(fd)
    ref_server.wait_idle()
    with ref_server.connect() as c:
        assert c.device_get_info().ok


def test_client_vanishes_before_reading_replies(ref_server):  # noqa: F811
    with ref_server.connect() as c:
        c.send_raw(msg(Command.REGION_READ, RegionRead(0, 1, 65536).pack()) * 50)
    ref_server.wait_idle()
    with ref_server.connect() as c:
        assert c.device_get_info().ok


def test_connect_and_leave_without_a_word(ref_server):  # noqa: F811
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX)
        s.connect(ref_server.path)
        s.close()
    with ref_server.connect() as c:
        assert read32(c, R.REG_ID) == R.ID_VALUE


def test_disconnect_cleanup_returns_to_baseline(ref_server):  # noqa: F811
    ref_server.wait_idle()
    base = ref_server.baseline_fds
    with ref_server.connect() as c:
        for i in range(4):
            fd = c.memory.create_memfd_region(0x2000000 + i * 0x10000, 0x2000)
            c.dma_map(0x2000000 + i * 0x10000, 0x2000, fd=fd).check()
        efds = [eventfd() for _ in range(8)]
        c.set_irqs(2, 0x24, 0, 8, fds=efds).check()
        for fd in efds:
            os.close(fd)
        assert ref_server.fds() > base + 12
    assert ref_server.wait_fds(base) == base
    with ref_server.connect() as c:  # same maps again: no EEXIST
        for i in range(4):
            c.dma_map(0x2000000 + i * 0x10000, 0x2000).check()
    assert ref_server.wait_fds(base) == base


def test_clients_one_after_another_queue_up(ref_server):  # noqa: F811
    first = ref_server.connect()
    second = Client.connect(ref_server.path, timeout=5)  # accepted once the first is gone
    try:
        assert first.device_get_info().ok
        first.close()
        second.negotiate()
        assert second.device_get_info().ok
    finally:
        first.close()
        second.close()
