"""Known answers: messages written by hand from the spec's tables.

Every expected byte string is laid out with ``table(size, rows)``, whose rows
are the (offset, size, value) columns of the spec table named in the comment
above it, little-endian (0.9.1 "Protocol Specification"; errata 6). ``table``
insists the rows cover every byte exactly once, so a row at the wrong offset
or of the wrong size fails here instead of agreeing with the codec. Offsets
inside a message are given as in the spec, from the end of the 16-byte header;
nested structures are written ``base + offset`` with the base named.

Each test checks both directions: ``unpack(bytes)`` gives the expected object,
and ``pack(object)`` gives the bytes; the whole-message tests also go through
``encode``, ``MessageReader`` and ``decode``.
"""

from __future__ import annotations

import pytest

from pytest_vfiouser import protocol as p
from pytest_vfiouser.protocol import Command


def table(size: int, *rows: tuple[int, int, int | bytes]) -> bytes:
    """``size`` bytes holding each (offset, size, value) row, little-endian."""
    buf = bytearray(size)
    owner: list[tuple | None] = [None] * size
    for row in rows:
        offset, length, value = row
        raw = (
            value
            if isinstance(value, bytes)
            else value.to_bytes(length, "little", signed=value < 0)
        )
        assert len(raw) == length, f"row {row}: value is {len(raw)} bytes"
        assert offset + length <= size, f"row {row} runs past {size} bytes"
        for i in range(offset, offset + length):
            assert owner[i] is None, f"rows {owner[i]} and {row} overlap at {i}"
            owner[i] = row
        buf[offset : offset + length] = raw
    missing = [i for i, o in enumerate(owner) if o is None]
    assert not missing, f"bytes {missing} are in no row"
    return bytes(buf)


def header(msg_id: int, command: int, msg_size: int, flags: int = 0, error: int = 0) -> bytes:
    # Header table: Message ID 0/2, Command 2/2, Message size 4/4, Flags 8/4, Error 12/4.
    return table(
        16, (0, 2, msg_id), (2, 2, command), (4, 4, msg_size), (8, 4, flags), (12, 4, error)
    )


def both_ways(cls, data: bytes, obj):
    assert cls.unpack(data) == obj
    assert obj.pack() == data
    return obj


def whole_message(
    msg_id: int, command: Command, reply: bool, payload: bytes, obj, msg_size: int
) -> None:
    """The message is 16 + payload bytes, encodes as the spec says, and reads back."""
    assert 16 + len(payload) == msg_size
    flags = p.MsgType.REPLY if reply else p.MsgType.COMMAND
    wire = header(msg_id, command, msg_size, flags) + payload
    assert p.encode(msg_id, command, b"" if obj is None else obj.pack(), flags) == wire
    reader = p.MessageReader(max_msg_size=1 << 20)
    reader.feed(wire)
    hdr, body = reader.next_message()
    assert hdr == p.Header(msg_id, command, msg_size, flags, 0)
    assert p.decode(hdr.command, hdr.is_reply, body) == obj


# ---- Header, each flag


class TestHeader:
    def test_command(self):
        # msg_id 0x1234, command 1 (VERSION), msg_size 0x24, flags 0 (Command), error 0
        wire = bytes.fromhex("34120100240000000000000000000000")
        h = both_ways(p.Header, wire, p.Header(0x1234, Command.VERSION, 0x24, 0, 0))
        assert (h.type, h.is_reply, h.no_reply, h.is_error) == (
            p.MsgType.COMMAND,
            False,
            False,
            False,
        )
        assert h.describe() == "VERSION command id=4660 size=36"

    def test_reply(self):
        wire = bytes.fromhex("34120200100000000100000000000000")
        h = both_ways(p.Header, wire, p.Header(0x1234, Command.DMA_MAP, 16, 1, 0))
        assert (h.type, h.is_reply, h.no_reply, h.is_error) == (p.MsgType.REPLY, True, False, False)

    def test_no_reply(self):
        # Flags bit 4: No_reply
        wire = bytes.fromhex("07000a00140000001000000000000000")
        h = both_ways(p.Header, wire, p.Header(7, Command.REGION_WRITE, 20, 0x10, 0))
        assert (h.type, h.no_reply, h.is_error) == (p.MsgType.COMMAND, True, False)
        assert h.describe() == "REGION_WRITE command id=7 size=20 no_reply"

    def test_error(self):
        # Flags bit 5: Error, with Reply; Error field 22 (EINVAL)
        wire = bytes.fromhex("ffff0500100000002100000016000000")
        h = both_ways(
            p.Header, wire, p.Header(0xFFFF, Command.DEVICE_GET_REGION_INFO, 16, 0x21, 22)
        )
        assert (h.type, h.is_reply, h.is_error, h.error) == (p.MsgType.REPLY, True, True, 22)
        assert h.describe() == "DEVICE_GET_REGION_INFO reply id=65535 size=16 ERROR errno=22"

    def test_error_flag_with_zero_errno(self):
        # "It may be zero even if the Error bit is set in Flags."
        h = p.Header.unpack(header(1, Command.DMA_UNMAP, 16, 0x21, 0))
        assert h.is_error and h.error == 0

    def test_fields_at_their_offsets(self):
        assert p.Header(0x0102, 0x0304, 0x05060708, 0x090A0B0C, 0x0D0E0F10).pack() == bytes.fromhex(
            "02010403080706050c0b0a09100f0e0d"
        )


# ---- VFIO_USER_VERSION

VERSION_JSON = (
    b'{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576,"migration":{"pgsize":4096}}}'
)


class TestVersion:
    def test_request_with_json(self):
        # VERSION Request table: version major 0/2, minor 2/2, version data 4/variable
        # "(including terminating NUL)"
        n = len(VERSION_JSON) + 1
        payload = table(4 + n, (0, 2, 0), (2, 2, 1), (4, n, VERSION_JSON + b"\0"))
        v = both_ways(
            p.Version,
            payload,
            p.Version(
                0,
                1,
                {
                    "capabilities": {
                        "max_msg_fds": 8,
                        "max_data_xfer_size": 1048576,
                        "migration": {"pgsize": 4096},
                    }
                },
            ),
        )
        caps = v.capabilities
        assert (caps.max_msg_fds, caps.max_data_xfer_size, caps.migration_pgsize) == (
            8,
            1048576,
            4096,
        )
        whole_message(1, Command.VERSION, False, payload, v, 16 + 4 + n)
        whole_message(1, Command.VERSION, True, payload, v, 16 + 4 + n)

    def test_json_with_whitespace(self):
        text = b'{ "capabilities" : {\n  "max_msg_fds" : 8 } }\0'
        v = p.Version.unpack(table(4 + len(text), (0, 2, 0), (2, 2, 0), (4, len(text), text)))
        assert v == p.Version(0, 0, {"capabilities": {"max_msg_fds": 8}})

    def test_without_version_data(self):
        # The version data is optional: 4 bytes.
        both_ways(p.Version, table(4, (0, 2, 0), (2, 2, 2)), p.Version(0, 2, None))

    def test_0_9_2_capabilities(self):
        text = (
            b'{"capabilities":{"max_dma_maps":1024,"pgsizes":4096,'
            b'"twin_socket":{"supported":true},"write_multiple":true}}\0'
        )
        payload = table(4 + len(text), (0, 2, 0), (2, 2, 2), (4, len(text), text))
        v = both_ways(
            p.Version,
            payload,
            p.Version.with_capabilities(
                0,
                2,
                max_dma_maps=1024,
                pgsizes=4096,
                twin_socket={"supported": True},
                write_multiple=True,
            ),
        )
        assert (v.capabilities.max_dma_maps, v.capabilities.write_multiple) == (1024, True)
        assert v.capabilities.twin_socket == {"supported": True}


# ---- VFIO_USER_DMA_MAP / DMA_UNMAP


def test_dma_map():
    # DMA_MAP Request table: argsz 0/4, flags 4/4, offset 8/8, address 16/8, size 24/8.
    # "This structure is 32 bytes in size, so the message size is 16 + 32 bytes."
    payload = table(
        32, (0, 4, 32), (4, 4, 0b11), (8, 8, 0x1000), (16, 8, 0xC0000000), (24, 8, 0x40000000)
    )
    m = both_ways(
        p.DmaMap,
        payload,
        p.DmaMap(32, p.DmaMapFlags.READ | p.DmaMapFlags.WRITE, 0x1000, 0xC0000000, 0x40000000),
    )
    whole_message(2, Command.DMA_MAP, False, payload, m, 16 + 32)
    whole_message(2, Command.DMA_MAP, True, b"", None, 16)  # "no payload in the reply"


class TestDmaUnmap:
    def test_request_without_bitmap(self):
        # DMA_UNMAP Request table: argsz 0/4, flags 4/4, address 8/8, size 16/8.
        # "If not set, the size of the total request message is: 16 + 24."
        payload = table(24, (0, 4, 24), (4, 4, 0), (8, 8, 0xC0000000), (16, 8, 0x40000000))
        u = both_ways(p.DmaUnmap, payload, p.DmaUnmap(24, 0, 0xC0000000, 0x40000000))
        whole_message(3, Command.DMA_UNMAP, False, payload, u, 16 + 24)
        whole_message(3, Command.DMA_UNMAP, True, payload, u, 16 + 24)

    def test_request_with_bitmap(self):
        # "If set, the size of the total request message is: 16 + 24 + 16."
        # VFIO Bitmap Format table, after the entry (at 24): pgsize 0/8, size 8/8.
        bitmap_size = 0x40000000 // 4096 // 8
        payload = table(
            40,
            (0, 4, 24 + 16 + bitmap_size),
            (4, 4, 1),
            (8, 8, 0xC0000000),
            (16, 8, 0x40000000),
            (24 + 0, 8, 4096),
            (24 + 8, 8, bitmap_size),
        )
        u = both_ways(
            p.DmaUnmap,
            payload,
            p.DmaUnmap(
                24 + 16 + bitmap_size,
                p.DmaUnmapFlags.GET_DIRTY_BITMAP,
                0xC0000000,
                0x40000000,
                p.VfioBitmap(4096, bitmap_size),
            ),
        )
        whole_message(3, Command.DMA_UNMAP, False, payload, u, 16 + 24 + 16)

    def test_reply_with_bitmap(self):
        # "16 + 24 + (16 + size in VFIO Bitmap if get dirty page bitmap is set)":
        # 16 pages of 4 KiB, 2 bitmap bytes, pages 0, 9 and 15 dirty.
        bits = bytes([0b00000001, 0b10000010])
        payload = table(
            42,
            (0, 4, 42),
            (4, 4, 1),
            (8, 8, 0x100000),
            (16, 8, 0x10000),
            (24 + 0, 8, 4096),
            (24 + 8, 8, 2),
            (40, 2, bits),
        )
        u = both_ways(
            p.DmaUnmap, payload, p.DmaUnmap(42, 1, 0x100000, 0x10000, p.VfioBitmap(4096, 2), bits)
        )
        whole_message(3, Command.DMA_UNMAP, True, payload, u, 16 + 24 + 16 + 2)


# ---- DEVICE_GET_INFO, DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS


def test_device_get_info():
    # DEVICE_GET_INFO Request/Reply table: argsz 0/4, flags 4/4, num_regions 8/4,
    # num_irqs 12/4. Flags bit 0 RESET, bit 1 PCI.
    request = table(16, (0, 4, 16), (4, 4, 0), (8, 4, 0), (12, 4, 0))
    r = both_ways(p.DeviceInfo, request, p.DeviceInfo(16))
    whole_message(4, Command.DEVICE_GET_INFO, False, request, r, 32)
    reply = table(16, (0, 4, 16), (4, 4, 0b11), (8, 4, 9), (12, 4, 5))
    r = both_ways(
        p.DeviceInfo, reply, p.DeviceInfo(16, p.DeviceFlags.RESET | p.DeviceFlags.PCI, 9, 5)
    )
    whole_message(4, Command.DEVICE_GET_INFO, True, reply, r, 32)


def test_device_get_irq_info():
    # DEVICE_GET_IRQ_INFO Request/Reply table: argsz 0/4, flags 4/4, index 8/4, count 12/4.
    request = table(16, (0, 4, 16), (4, 4, 0), (8, 4, p.PciIrq.MSIX), (12, 4, 0))
    r = both_ways(p.IrqInfo, request, p.IrqInfo(16, 0, 2, 0))
    whole_message(5, Command.DEVICE_GET_IRQ_INFO, False, request, r, 32)
    # flags: bit 0 EVENTFD, bit 3 NORESIZE
    reply = table(16, (0, 4, 16), (4, 4, 0b1001), (8, 4, 2), (12, 4, 2048))
    r = both_ways(
        p.IrqInfo, reply, p.IrqInfo(16, p.IrqInfoFlags.EVENTFD | p.IrqInfoFlags.NORESIZE, 2, 2048)
    )
    whole_message(5, Command.DEVICE_GET_IRQ_INFO, True, reply, r, 32)


def test_device_set_irqs_data_bool():
    # DEVICE_SET_IRQS Request table: argsz 0/4, flags 4/4, index 8/4, start 12/4,
    # count 16/4, data 20/variable. flags: bit 1 DATA_BOOL, bit 5 ACTION_TRIGGER.
    # "argsz is the size of the VFIO IRQ set request payload, including any data".
    payload = table(
        23,
        (0, 4, 23),
        (4, 4, 0b100010),
        (8, 4, p.PciIrq.MSIX),
        (12, 4, 4),
        (16, 4, 3),
        (20, 3, b"\x01\x00\x01"),
    )
    r = both_ways(
        p.SetIrqs,
        payload,
        p.SetIrqs(23, p.IrqSetFlags.DATA_BOOL | p.IrqSetFlags.ACTION_TRIGGER, 2, 4, 3, b"\1\0\1"),
    )
    assert r.bools == [True, False, True]
    whole_message(6, Command.DEVICE_SET_IRQS, False, payload, r, 16 + 23)
    whole_message(6, Command.DEVICE_SET_IRQS, True, b"", None, 16)


def test_device_set_irqs_data_none():
    # "a count (and start) of 0, with data flags of VFIO_IRQ_SET_DATA_NONE disables all"
    payload = table(20, (0, 4, 20), (4, 4, 0b100001), (8, 4, 0), (12, 4, 0), (16, 4, 0))
    both_ways(p.SetIrqs, payload, p.SetIrqs(20, 0x21, 0, 0, 0))


# ---- DEVICE_GET_REGION_INFO


def test_region_info_request():
    # DEVICE_GET_REGION_INFO Request table: argsz 0/4, flags 4/4, index 8/4,
    # cap_offset 12/4, size 16/8, offset 24/8.
    payload = table(32, (0, 4, 0x100), (4, 4, 0), (8, 4, 2), (12, 4, 0), (16, 8, 0), (24, 8, 0))
    r = both_ways(p.RegionInfo, payload, p.RegionInfo(0x100, index=2))
    whole_message(7, Command.DEVICE_GET_REGION_INFO, False, payload, r, 48)


def test_region_info_reply_with_sparse_mmap_and_type_caps():
    # Reply table (as the request's), flags READ|WRITE|MMAP|CAPS, cap_offset 32.
    # VFIO cap header format: id 0/2, version 2/2, next 4/4 (next from the start
    # of the region info). VFIO region info cap sparse mmap: nr_areas 0/4,
    # reserved 4/4, then (offset 8/8, size 16/8) per area -- errata 1: size is a
    # u64, not 9 bytes. VFIO region info type cap: type 0/4, subtype 4/4.
    sparse, sparse_body = 32, 32 + 8
    type_cap = sparse_body + 8 + 2 * 16  # 80
    type_body = type_cap + 8
    payload = table(
        96,
        (0, 4, 96),
        (4, 4, 0b1111),
        (8, 4, 0),
        (12, 4, 32),
        (16, 8, 0x4000),
        (24, 8, 0),
        (sparse + 0, 2, 1),
        (sparse + 2, 2, 1),
        (sparse + 4, 4, type_cap),
        (sparse_body + 0, 4, 2),
        (sparse_body + 4, 4, 0),
        (sparse_body + 8, 8, 0x0000),
        (sparse_body + 16, 8, 0x1000),
        (sparse_body + 24, 8, 0x3000),
        (sparse_body + 32, 8, 0x1000),
        (type_cap + 0, 2, 2),
        (type_cap + 2, 2, 1),
        (type_cap + 4, 4, 0),
        (type_body + 0, 4, 3),
        (type_body + 4, 4, 1),
    )
    info = both_ways(
        p.RegionInfo,
        payload,
        p.RegionInfo(
            96,
            p.RegionFlags.READ | p.RegionFlags.WRITE | p.RegionFlags.MMAP | p.RegionFlags.CAPS,
            0,
            32,
            0x4000,
            0,
            (
                p.SparseMmapCap(((0, 0x1000), (0x3000, 0x1000))),
                p.RegionTypeCap(p.VFIO_REGION_TYPE_MIGRATION, p.VFIO_REGION_SUBTYPE_MIGRATION),
            ),
        ),
    )
    assert p.RegionInfo.unpack(payload).cap_offsets == (32, 80)
    assert info.full_size() == 96
    assert info.cap(p.RegionTypeCap) == p.RegionTypeCap(3, 1)
    whole_message(7, Command.DEVICE_GET_REGION_INFO, True, payload, info, 16 + 96)


def test_region_info_reply_cut_short_by_argsz():
    # argsz 96 needed, the client allowed 32: the structure alone, caps not included.
    payload = table(
        32, (0, 4, 96), (4, 4, 0b1000), (8, 4, 9), (12, 4, 32), (16, 8, 0x1000), (24, 8, 0)
    )
    info = p.RegionInfo.unpack(payload)
    assert info == p.RegionInfo(96, p.RegionFlags.CAPS, 9, 32, 0x1000, 0)
    assert info.caps == ()


# ---- DEVICE_GET_REGION_IO_FDS


def test_region_io_fds_request():
    # Request table: argsz 0/4, flags 4/4, index 8/4, count 12/4.
    payload = table(16, (0, 4, 16 + 2 * 40), (4, 4, 0), (8, 4, 2), (12, 4, 0))
    r = both_ways(p.RegionIoFdsRequest, payload, p.RegionIoFdsRequest(96, 0, 2, 0))
    whole_message(8, Command.DEVICE_GET_REGION_IO_FDS, False, payload, r, 32)


def _ioeventfd(base: int, offset: int, size: int, fd_index: int, flags: int, datamatch: int):
    # Sub-Region IO FD info format (ioeventfd): offset 0/8, size 8/8, fd_index 16/4,
    # type 20/4, flags 24/4, padding 28/4, datamatch 32/8.
    return [
        (base + 0, 8, offset),
        (base + 8, 8, size),
        (base + 16, 4, fd_index),
        (base + 20, 4, p.IoFdType.IOEVENTFD),
        (base + 24, 4, flags),
        (base + 28, 4, 0),
        (base + 32, 8, datamatch),
    ]


@pytest.mark.parametrize("entry_size", [40, 48])
def test_region_io_fds_reply_two_ioeventfds(entry_size):
    # Reply table: argsz 0/4, flags 4/4, index 8/4, count 12/4, sub-regions 16/...
    # Errata 3: entry i at 16 + i * ((argsz - 16) / count); 40 bytes "is not to be
    # relied on", so also entries of 48 with 8 bytes of padding each.
    argsz = 16 + 2 * entry_size
    pad = entry_size - 40
    rows = [
        (0, 4, argsz),
        (4, 4, 0),
        (8, 4, 2),
        (12, 4, 2),
        *_ioeventfd(16, 0x100, 4, 0, p.IoEventFdFlags.DATAMATCH, 0xAB),
        *_ioeventfd(16 + entry_size, 0x200, 8, 1, 0, 0),
    ]
    if pad:
        rows += [(16 + 40, pad, 0), (16 + entry_size + 40, pad, 0)]
    payload = table(argsz, *rows)
    reply = both_ways(
        p.RegionIoFdsReply,
        payload,
        p.RegionIoFdsReply(
            argsz,
            0,
            2,
            2,
            (p.IoFdSubRegion(0x100, 4, 0, 0, 1, 0, 0xAB), p.IoFdSubRegion(0x200, 8, 1, 0, 0, 0, 0)),
            entry_size,
        ),
    )
    assert reply.sub_regions[0].datamatch == 0xAB
    whole_message(8, Command.DEVICE_GET_REGION_IO_FDS, True, payload, reply, 16 + argsz)


def test_region_io_fds_reply_head_only():
    # The client's argsz (16) is too small for the entries: argsz says what is needed.
    payload = table(16, (0, 4, 96), (4, 4, 0), (8, 4, 2), (12, 4, 2))
    both_ways(p.RegionIoFdsReply, payload, p.RegionIoFdsReply(96, 0, 2, 2))


def test_ioregionfd_entry():
    # Sub-Region IO FD info format (ioregionfd): as ioeventfd, user_data at 32/8.
    payload = table(
        40,
        (0, 8, 0),
        (8, 8, 0),
        (16, 4, 3),
        (20, 4, p.IoFdType.IOREGIONFD),
        (24, 4, p.IoRegionFdFlags.POSTED_WRITES),
        (28, 4, 0),
        (32, 8, 0x1122334455667788),
    )
    sub = both_ways(p.IoFdSubRegion, payload, p.IoFdSubRegion(0, 0, 3, 1, 2, 0, 0x1122334455667788))
    assert sub.user_data == 0x1122334455667788


# ---- REGION_READ / REGION_WRITE


def test_region_read():
    # REGION_READ Request table: offset 0/8, region 8/4, count 12/4.
    request = table(16, (0, 8, 0x10), (8, 4, p.PciRegion.CONFIG), (12, 4, 4))
    r = both_ways(p.RegionRead, request, p.RegionRead(0x10, 7, 4))
    whole_message(9, Command.REGION_READ, False, request, r, 32)
    # Reply table: offset 0/8, region 8/4, count 12/4, data 16/variable.
    reply = table(20, (0, 8, 0x10), (8, 4, 7), (12, 4, 4), (16, 4, b"\x0c\x00\x00\xfe"))
    r = both_ways(p.RegionReadReply, reply, p.RegionReadReply(0x10, 7, 4, b"\x0c\0\0\xfe"))
    whole_message(9, Command.REGION_READ, True, reply, r, 36)


def test_region_write():
    # REGION_WRITE Request table: offset 0/8, region 8/4, count 12/4, data 16/variable.
    request = table(18, (0, 8, 0x4), (8, 4, 7), (12, 4, 2), (16, 2, b"\x06\x04"))
    r = both_ways(p.RegionWrite, request, p.RegionWrite(4, 7, 2, b"\x06\x04"))
    whole_message(10, Command.REGION_WRITE, False, request, r, 34)
    # Reply table: offset 0/8, region 8/4, count 12/4.
    reply = table(16, (0, 8, 0x4), (8, 4, 7), (12, 4, 2))
    r = both_ways(p.RegionWriteReply, reply, p.RegionWriteReply(4, 7, 2))
    whole_message(10, Command.REGION_WRITE, True, reply, r, 32)


# ---- DMA_READ / DMA_WRITE (server -> client)


def test_dma_read():
    # DMA_READ Request table: address 0/8, count 8/8.
    request = table(16, (0, 8, 0xC0001000), (8, 8, 8))
    r = both_ways(p.DmaRead, request, p.DmaRead(0xC0001000, 8))
    whole_message(11, Command.DMA_READ, False, request, r, 32)
    # Reply table: address 0/8, count 8/8, data 16/variable.
    reply = table(24, (0, 8, 0xC0001000), (8, 8, 8), (16, 8, 0x0123456789ABCDEF))
    r = both_ways(
        p.DmaReadReply, reply, p.DmaReadReply(0xC0001000, 8, bytes.fromhex("efcdab8967452301"))
    )
    whole_message(11, Command.DMA_READ, True, reply, r, 40)


def test_dma_write_request():
    # DMA_WRITE Request table: address 0/8, count 8/8, data 16/variable.
    request = table(20, (0, 8, 0xC0002000), (8, 8, 4), (16, 4, b"\xde\xad\xbe\xef"))
    r = both_ways(p.DmaWrite, request, p.DmaWrite(0xC0002000, 4, b"\xde\xad\xbe\xef"))
    whole_message(12, Command.DMA_WRITE, False, request, r, 36)


def test_dma_write_reply_12_bytes():
    # DMA_WRITE Reply table as printed: address 0/8, count 8/4 (errata 2).
    reply = table(12, (0, 8, 0xC0002000), (8, 4, 4))
    r = both_ways(p.DmaWriteReply, reply, p.DmaWriteReply(0xC0002000, 4, count_size=4))
    whole_message(12, Command.DMA_WRITE, True, reply, r, 28)


def test_dma_write_reply_16_bytes():
    # Errata 2: count as 8 bytes, like the request's, is accepted too.
    reply = table(16, (0, 8, 0xC0002000), (8, 8, 4))
    r = both_ways(p.DmaWriteReply, reply, p.DmaWriteReply(0xC0002000, 4, count_size=8))
    whole_message(12, Command.DMA_WRITE, True, reply, r, 32)


def test_device_reset():
    # "Neither the request or reply have a payload."
    whole_message(13, Command.DEVICE_RESET, False, b"", None, 16)
    whole_message(13, Command.DEVICE_RESET, True, b"", None, 16)


# ---- DIRTY_PAGES (0.9.1)


class TestDirtyPages:
    @pytest.mark.parametrize("flag", [p.DirtyPagesFlags.START, p.DirtyPagesFlags.STOP])
    def test_start_stop(self, flag):
        # Request table: argsz 0/4, flags 4/4 (bit 0 START, bit 1 STOP, bit 2 GET_BITMAP).
        payload = table(8, (0, 4, 8), (4, 4, flag))
        d = both_ways(p.DirtyPages, payload, p.DirtyPages(8, flag))
        whole_message(14, Command.DIRTY_PAGES, False, payload, d, 24)
        whole_message(14, Command.DIRTY_PAGES, True, b"", None, 16)  # no reply payload

    def test_get_bitmap_request(self):
        # VFIO Bitmap Range Format at 8: iova 0/8, size 8/8, bitmap 16/... -- errata 4:
        # the bitmap is the 16-byte VFIO Bitmap (pgsize 0/8, size 8/8): 8 + 32 bytes.
        rng = 8
        payload = table(
            40,
            (0, 4, 8 + 32 + 8),
            (4, 4, 0b100),
            (rng + 0, 8, 0x100000),
            (rng + 8, 8, 64 * 4096),
            (rng + 16 + 0, 8, 4096),
            (rng + 16 + 8, 8, 8),
        )
        d = both_ways(
            p.DirtyPages,
            payload,
            p.DirtyPages(
                48,
                p.DirtyPagesFlags.GET_BITMAP,
                p.BitmapRange(0x100000, 64 * 4096, p.VfioBitmap(4096, 8)),
            ),
        )
        whole_message(14, Command.DIRTY_PAGES, False, payload, d, 16 + 8 + 32)

    def test_get_bitmap_reply(self):
        # Reply: argsz, flags, the range, then the bitmap -- at payload offset 40
        # (errata 4), not 48. 64 pages, pages 1 and 63 dirty.
        bitmap = (1 << 1 | 1 << 63).to_bytes(8, "little")
        payload = table(
            48,
            (0, 4, 48),
            (4, 4, 0b100),
            (8 + 0, 8, 0x100000),
            (8 + 8, 8, 64 * 4096),
            (8 + 16 + 0, 8, 4096),
            (8 + 16 + 8, 8, 8),
            (40, 8, bitmap),
        )
        d = both_ways(
            p.DirtyPages,
            payload,
            p.DirtyPages(48, 4, p.BitmapRange(0x100000, 64 * 4096, p.VfioBitmap(4096, 8)), bitmap),
        )
        whole_message(14, Command.DIRTY_PAGES, True, payload, d, 16 + 48)
        assert p.bitmap_bytes(64 * 4096, 4096) == 8


def test_bitmap_bytes_rounds_up_to_u64s():
    assert p.bitmap_bytes(4096, 4096) == 8
    assert p.bitmap_bytes(65 * 4096, 4096) == 16
    assert p.bitmap_bytes(1, 4096) == 8
    assert p.bitmap_bytes(0, 4096) == 0


# ---- VFIO Device Migration Info (0.9.1)


def test_migration_info():
    # VFIO Device Migration Info table: device_state 0/4, reserved 4/4,
    # pending_bytes 8/8, data_offset 16/8, data_size 24/8.
    payload = table(32, (0, 4, 0b011), (4, 4, 0), (8, 8, 0x10000), (16, 8, 0x1000), (24, 8, 0x800))
    m = both_ways(
        p.MigrationInfo,
        payload,
        p.MigrationInfo(p.MigrationStateV1.PRE_COPY, 0, 0x10000, 0x1000, 0x800),
    )
    assert (
        p.MigrationInfo.DEVICE_STATE,
        p.MigrationInfo.RESERVED,
        p.MigrationInfo.PENDING_BYTES,
        p.MigrationInfo.DATA_OFFSET,
        p.MigrationInfo.DATA_SIZE,
    ) == (0, 4, 8, 16, 24)
    assert p.MigrationStateBits.RUNNING | p.MigrationStateBits.SAVING == m.device_state
    # Read through REGION_READ of the migration region at offset 0:
    reply = table(48, (0, 8, 0), (8, 4, 9), (12, 4, 32), (16, 32, payload))
    r = p.RegionReadReply.unpack(reply)
    assert p.MigrationInfo.unpack(r.data) == m


# ---- REGION_WRITE_MULTI (0.9.2)


def test_region_write_multi():
    # Request table: wr_cnt 0/8, wrs 8/variable. Single Device Write Format:
    # offset 0/8, region 8/4, count 12/4, data 16/8.
    w0, w1 = 8, 8 + 24
    payload = table(
        8 + 2 * 24,
        (0, 8, 2),
        (w0 + 0, 8, 0x3000),
        (w0 + 8, 4, 0),
        (w0 + 12, 4, 4),
        (w0 + 16, 8, b"\x01\x00\x00\x00\x00\x00\x00\x00"),
        (w1 + 0, 8, 0x3008),
        (w1 + 8, 4, 0),
        (w1 + 12, 4, 8),
        (w1 + 16, 8, 0x1122334455667788),
    )
    r = both_ways(
        p.RegionWriteMulti,
        payload,
        p.RegionWriteMulti(
            (
                p.SingleWrite.of(0x3000, 0, b"\1\0\0\0"),
                p.SingleWrite(0x3008, 0, 8, bytes.fromhex("8877665544332211")),
            )
        ),
    )
    whole_message(15, Command.REGION_WRITE_MULTI, False, payload, r, 16 + 56)
    # Reply table: wr_cnt 0/8.
    reply = table(8, (0, 8, 2))
    r = both_ways(p.RegionWriteMultiReply, reply, p.RegionWriteMultiReply(2))
    whole_message(15, Command.REGION_WRITE_MULTI, True, reply, r, 24)


# ---- DEVICE_FEATURE (0.9.2)

GET, SET, PROBE = 1 << 16, 1 << 17, 1 << 18


class TestDeviceFeature:
    def test_migration_get(self):
        # Request table: argsz 0/4, flags 4/4 (bits 0-15 feature index, 16 GET,
        # 17 SET, 18 PROBE), data 8/variable. VFIO_DEVICE_FEATURE_MIGRATION is 1;
        # "There is no data field of the request message."
        request = table(8, (0, 4, 16), (4, 4, GET | 1))
        r = both_ways(p.DeviceFeature, request, p.DeviceFeature(16, GET | p.Feature.MIGRATION))
        assert (r.feature, r.get, r.set, r.probe) == (1, True, False, False)
        whole_message(16, Command.DEVICE_FEATURE, False, request, r, 24)
        # Reply data: flags 0/8 (bit 0 STOP_COPY, 1 P2P, 2 PRE_COPY).
        reply = table(16, (0, 4, 16), (4, 4, GET | 1), (8 + 0, 8, 0b101))
        r = both_ways(
            p.DeviceFeature,
            reply,
            p.DeviceFeature(
                16,
                GET | 1,
                p.FeatureMigration(p.MigrationFlags.STOP_COPY | p.MigrationFlags.PRE_COPY).pack(),
            ),
        )
        assert p.FeatureMigration.unpack(r.data).flags == 0b101
        whole_message(16, Command.DEVICE_FEATURE, True, reply, r, 32)

    def test_mig_device_state_set(self):
        # VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE (2) data: device_state 0/4, data_fd 4/4.
        # STOP_COPY is 3; data_fd is unused in vfio-user (-1 here).
        payload = table(16, (0, 4, 16), (4, 4, SET | 2), (8 + 0, 4, 3), (8 + 4, 4, -1))
        data = both_ways(
            p.FeatureMigDeviceState, payload[8:], p.FeatureMigDeviceState(p.MigState.STOP_COPY, -1)
        )
        r = both_ways(
            p.DeviceFeature,
            payload,
            p.DeviceFeature(16, SET | p.Feature.MIG_DEVICE_STATE, data.pack()),
        )
        assert (r.feature, r.set) == (p.Feature.MIG_DEVICE_STATE, True)
        # "The reply payload must be the same as the request payload for setting."
        whole_message(16, Command.DEVICE_FEATURE, False, payload, r, 32)
        whole_message(16, Command.DEVICE_FEATURE, True, payload, r, 32)

    def test_mig_device_state_get_reply(self):
        payload = table(16, (0, 4, 16), (4, 4, GET | 2), (8 + 0, 4, 2), (8 + 4, 4, 0))
        r = p.DeviceFeature.unpack(payload)
        assert p.FeatureMigDeviceState.unpack(r.data) == p.FeatureMigDeviceState(
            p.MigState.RUNNING, 0
        )

    def test_probe(self):
        payload = table(8, (0, 4, 8), (4, 4, PROBE | SET | 6))
        r = both_ways(p.DeviceFeature, payload, p.DeviceFeature(8, PROBE | SET | 6))
        assert (r.feature, r.probe, r.set, r.get) == (
            p.Feature.DMA_LOGGING_START,
            True,
            True,
            False,
        )

    def test_dma_logging_start(self):
        # DMA_LOGGING_START (6) SET data: page_size 0/8, num_ranges 8/4, reserved 12/4,
        # ranges 16/variable, each iova 0/8, length 8/8.
        d = 8  # the data field of DEVICE_FEATURE
        payload = table(
            8 + 16 + 2 * 16,
            (0, 4, 56),
            (4, 4, SET | 6),
            (d + 0, 8, 4096),
            (d + 8, 4, 2),
            (d + 12, 4, 0),
            (d + 16 + 0, 8, 0),
            (d + 16 + 8, 8, 0xA0000),
            (d + 32 + 0, 8, 0x100000),
            (d + 32 + 8, 8, 0x7FF00000),
        )
        ctl = both_ways(
            p.DmaLoggingControl,
            payload[d:],
            p.DmaLoggingControl.of(4096, ((0, 0xA0000), (0x100000, 0x7FF00000))),
        )
        r = both_ways(p.DeviceFeature, payload, p.DeviceFeature(56, SET | 6, ctl.pack()))
        whole_message(16, Command.DEVICE_FEATURE, False, payload, r, 16 + 56)

    def test_dma_logging_start_all_writes(self):
        # "A value of zero indicates that all writes should be logged."
        both_ways(
            p.DmaLoggingControl,
            table(16, (0, 8, 4096), (8, 4, 0), (12, 4, 0)),
            p.DmaLoggingControl(4096, 0),
        )

    def test_dma_logging_stop(self):
        payload = table(8, (0, 4, 8), (4, 4, SET | 7))
        both_ways(p.DeviceFeature, payload, p.DeviceFeature(8, SET | p.Feature.DMA_LOGGING_STOP))

    def test_dma_logging_report(self):
        # DMA_LOGGING_REPORT (8) GET data: iova 0/8, length 8/8, page_size 16/8;
        # in the reply the bitmap follows at 24, u64s. Errata 8: bit n is page n
        # from iova -- 64 pages, pages 0 and 3 dirty: 0b1001.
        d = 8
        request = table(
            8 + 24,
            (0, 4, 8 + 24 + 8),
            (4, 4, GET | 8),
            (d + 0, 8, 0x100000),
            (d + 8, 8, 64 * 4096),
            (d + 16, 8, 4096),
        )
        rep = p.DmaLoggingReport(0x100000, 64 * 4096, 4096)
        both_ways(p.DmaLoggingReport, request[d:], rep)
        r = both_ways(p.DeviceFeature, request, p.DeviceFeature(40, GET | 8, rep.pack()))
        whole_message(16, Command.DEVICE_FEATURE, False, request, r, 16 + 32)
        reply = table(
            8 + 32,
            (0, 4, 40),
            (4, 4, GET | 8),
            (d + 0, 8, 0x100000),
            (d + 8, 8, 64 * 4096),
            (d + 16, 8, 4096),
            (d + 24, 8, 0b1001),
        )
        rep = p.DmaLoggingReport(0x100000, 64 * 4096, 4096, (0b1001).to_bytes(8, "little"))
        both_ways(p.DmaLoggingReport, reply[d:], rep)
        r = both_ways(p.DeviceFeature, reply, p.DeviceFeature(40, GET | 8, rep.pack()))
        whole_message(16, Command.DEVICE_FEATURE, True, reply, r, 16 + 40)


# ---- MIG_DATA_READ / MIG_DATA_WRITE (0.9.2)


def test_mig_data_read():
    # MIG_DATA_READ Request table: argsz 0/4, size 4/4.
    request = table(8, (0, 4, 8 + 4096), (4, 4, 4096))
    r = both_ways(p.MigDataRead, request, p.MigDataRead(8 + 4096, 4096))
    whole_message(17, Command.MIG_DATA_READ, False, request, r, 24)
    # Reply table: argsz 0/4, size 4/4, data 8/variable. "If this is less than
    # the requested size, there is no more migration data to read."
    reply = table(8 + 5, (0, 4, 13), (4, 4, 5), (8, 5, b"state"))
    r = both_ways(p.MigDataReadReply, reply, p.MigDataReadReply(13, 5, b"state"))
    whole_message(17, Command.MIG_DATA_READ, True, reply, r, 16 + 13)


def test_mig_data_write():
    # MIG_DATA_WRITE Request table: argsz 0/4, size 4/4, data 8/variable; no reply payload.
    request = table(8 + 5, (0, 4, 8), (4, 4, 5), (8, 5, b"state"))
    r = both_ways(p.MigDataWrite, request, p.MigDataWrite(8, 5, b"state"))
    whole_message(18, Command.MIG_DATA_WRITE, False, request, r, 16 + 13)
    whole_message(18, Command.MIG_DATA_WRITE, True, b"", None, 16)


# ---- numbers named by the spec


def test_command_numbers():
    # Commands table (0.9.1), and 0.9.2's: 14 is gone, 15-18 are new.
    assert {c.name: c.value for c in Command} == {
        "VERSION": 1,
        "DMA_MAP": 2,
        "DMA_UNMAP": 3,
        "DEVICE_GET_INFO": 4,
        "DEVICE_GET_REGION_INFO": 5,
        "DEVICE_GET_REGION_IO_FDS": 6,
        "DEVICE_GET_IRQ_INFO": 7,
        "DEVICE_SET_IRQS": 8,
        "REGION_READ": 9,
        "REGION_WRITE": 10,
        "DMA_READ": 11,
        "DMA_WRITE": 12,
        "DEVICE_RESET": 13,
        "DIRTY_PAGES": 14,
        "REGION_WRITE_MULTI": 15,
        "DEVICE_FEATURE": 16,
        "MIG_DATA_READ": 17,
        "MIG_DATA_WRITE": 18,
    }
    assert p.COMMANDS_BY_REVISION["0.9.1"] == frozenset(range(1, 15))
    assert p.COMMANDS_BY_REVISION["0.9.2"] == frozenset(range(1, 14)) | {15, 16, 17, 18}
    assert p.SERVER_TO_CLIENT == {Command.DMA_READ, Command.DMA_WRITE}
    assert p.command_name(99) == "COMMAND_99"


def test_flag_bits():
    assert (p.FLAG_NO_REPLY, p.FLAG_ERROR, p.TYPE_MASK) == (1 << 4, 1 << 5, 0xF)
    assert [int(f) for f in p.IrqSetFlags] == [1 << i for i in range(6)]
    assert [int(f) for f in p.RegionFlags] == [1 << i for i in range(4)]
    assert [int(f) for f in p.IrqInfoFlags] == [1 << i for i in range(4)]
    assert [int(f) for f in p.DirtyPagesFlags] == [1 << i for i in range(3)]
    assert (GET, SET, PROBE) == tuple(int(f) for f in p.DeviceFeatureFlags)
    assert [int(f) for f in p.Feature] == [1, 2, 6, 7, 8]
    assert [int(f) for f in p.MigState] == list(range(8))
    assert p.DEVICE_FEATURE_MASK == 0xFFFF
