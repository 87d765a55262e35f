"""Dirty page logging (reference_server/dirty.py): DIRTY_PAGES START/STOP/GET_BITMAP,
pages written by the DMA engine, and DMA_UNMAP with the dirty bitmap."""

from __future__ import annotations

import errno
import random
import struct

import pytest
from test_server_support import ref_server, write32, write64  # noqa: F401  (fixtures)

from pytest_vfiouser.protocol import (
    BitmapRange,
    Command,
    DirtyPages,
    DirtyPagesFlags,
    DmaUnmap,
    VfioBitmap,
    bitmap_bytes,
)
from reference_server import registers as R
from reference_server.dirty import DirtyLog

START, STOP, GET = (
    int(DirtyPagesFlags.START),
    int(DirtyPagesFlags.STOP),
    int(DirtyPagesFlags.GET_BITMAP),
)
PAGE = 4096
BASE = 0x100000
SIZE = 0x10000  # 16 pages: a bitmap of one u64, 8 bytes


def caps(pgsize: int | None = 4096) -> dict:
    mig = {} if pgsize is None else {"pgsize": pgsize}
    return {"max_msg_fds": 16, "max_data_xfer_size": 1 << 20, "migration": mig}


@pytest.fixture
def c(ref_server):  # noqa: F811
    """Negotiated with the migration capability (pgsize 4096); BASE+SIZE mapped (memfd)."""
    client = ref_server.connect(capabilities=caps())
    fd = client.memory.create_memfd_region(BASE, SIZE)
    client.dma_map(BASE, SIZE, fd=fd).check()
    yield client
    client.close()


def dirty(c, flags: int, payload_extra: bytes = b"", argsz: int = 8):
    return c.request(Command.DIRTY_PAGES, struct.pack("<II", argsz, flags) + payload_extra)


def get(c, iova=BASE, size=SIZE, pgsize=PAGE, bsize=None, argsz=None):
    if bsize is None:
        bsize = bitmap_bytes(size, pgsize)
    rng = BitmapRange(iova, size, VfioBitmap(pgsize, bsize))
    return c.dirty_pages(GET, rng, argsz=argsz)


def bits(data: bytes) -> list[int]:
    """Page numbers whose bit is set."""
    n = int.from_bytes(data, "little")
    return [i for i in range(len(data) * 8) if n >> i & 1]


def dma_to_client(c, address, length, dev_offset=0):
    write64(c, R.REG_DMA_DEV_OFFSET, dev_offset).check()
    write64(c, R.REG_DMA_CLIENT_ADDR, address).check()
    write32(c, R.REG_DMA_LENGTH, length).check()
    write32(c, R.REG_DMA_DIRECTION, R.DMA_TO_CLIENT).check()
    return write32(c, R.REG_DMA_DOORBELL, R.DMA_START)


def dma_from_client(c, address, length):
    write64(c, R.REG_DMA_CLIENT_ADDR, address).check()
    write32(c, R.REG_DMA_LENGTH, length).check()
    write32(c, R.REG_DMA_DIRECTION, R.DMA_FROM_CLIENT).check()
    return write32(c, R.REG_DMA_DOORBELL, R.DMA_START)


# ---- START / STOP


def test_start_stop_have_no_reply_payload(c):
    for flags in (START, START, STOP, STOP):  # both idempotent
        r = dirty(c, flags).check()
        assert r.payload == b""


@pytest.mark.parametrize(
    "flags", [0, START | STOP, START | GET, STOP | GET, 7, 8, 1 << 31, START | 8]
)
def test_flags_are_exclusive_and_defined(c, flags):
    r = dirty(c, flags, b"" if not flags & GET else b"\0" * 32, argsz=8 if not flags & GET else 40)
    assert r.error == errno.EINVAL and not r.payload
    assert get(c).error == errno.EINVAL  # nothing was started


@pytest.mark.parametrize("flags", [START, STOP])
@pytest.mark.parametrize(
    "argsz, extra", [(7, b""), (16, b""), (40, b""), (8, b"\0"), (40, b"\0" * 32)]
)
def test_start_stop_take_exactly_the_structure(c, flags, argsz, extra):
    assert dirty(c, flags, extra, argsz).error == errno.EINVAL


@pytest.mark.parametrize("payload", [b"", b"\x08\0\0\0", b"\x08\0\0\0\x01\0\0"])
def test_short_payload(c, payload):
    assert c.request(Command.DIRTY_PAGES, payload).error == errno.EINVAL


# ---- GET_BITMAP


def test_get_bitmap_needs_logging(c):
    assert get(c).error == errno.EINVAL
    dirty(c, START).check()
    get(c).check()
    dirty(c, STOP).check()
    assert get(c).error == errno.EINVAL


def test_get_bitmap_reply(c):
    dirty(c, START).check()
    r = get(c, bsize=8).check()
    assert len(r.payload) == 8 + 32 + 8
    body = r.body
    assert (body.argsz, body.flags) == (48, GET)
    assert body.range == BitmapRange(BASE, SIZE, VfioBitmap(PAGE, 8))
    assert body.bitmap_data == bytes(8)


@pytest.mark.parametrize("with_fd", [True, False])
def test_pages_written_by_dma_are_marked_and_cleared_when_reported(ref_server, with_fd):  # noqa: F811
    with ref_server.connect(capabilities=caps()) as c:
        if with_fd:
            c.dma_map(BASE, SIZE, fd=c.memory.create_memfd_region(BASE, SIZE)).check()
        else:
            c.dma_map(BASE, SIZE).check()  # served by DMA_WRITE messages
        dma_to_client(c, BASE, 16).check()  # before START: not logged
        dirty(c, START).check()
        assert bits(get(c).check().body.bitmap_data) == []
        dma_to_client(c, BASE + 0x1800, 0x2000).check()  # pages 1, 2, 3
        dma_to_client(c, BASE + SIZE - 1, 1).check()  # page 15
        dma_from_client(c, BASE + 0x8000, 0x1000).check()  # a read dirties nothing
        assert bits(get(c).check().body.bitmap_data) == [1, 2, 3, 15]
        assert bits(get(c).check().body.bitmap_data) == []  # reported: cleared
        dma_to_client(c, BASE + 0x4000, 1).check()
        dirty(c, START).check()  # again: does not clear the log
        assert bits(get(c).check().body.bitmap_data) == [4]
        dma_to_client(c, BASE, 1).check()
        dirty(c, STOP).check()  # drops the log
        dirty(c, START).check()
        assert bits(get(c).check().body.bitmap_data) == []


def test_negotiated_smaller_pgsize(ref_server):  # noqa: F811
    with ref_server.connect(capabilities=caps(512)) as c:
        assert c.server_caps.migration_pgsize == 512
        c.dma_map(BASE, SIZE).check()
        dirty(c, START).check()
        assert get(c).error == errno.EINVAL  # 4096 is not the negotiated page size
        dma_to_client(c, BASE + 0x3FF, 2).check()  # pages 1 and 2 of 512 bytes
        r = get(c, pgsize=512).check()
        assert len(r.body.bitmap_data) == bitmap_bytes(SIZE, 512) == 16
        assert bits(r.body.bitmap_data) == [1, 2]


@pytest.mark.parametrize("proposal", ["no pgsize", "no migration"])
def test_without_a_negotiated_pgsize_the_servers_is_used(ref_server, proposal):  # noqa: F811
    cap = caps(None) if proposal == "no pgsize" else None
    with ref_server.connect(capabilities=cap) as c:
        c.dma_map(BASE, SIZE).check()
        dirty(c, START).check()
        assert get(c, pgsize=512).error == errno.EINVAL
        get(c).check()


def test_logging_belongs_to_the_connection(ref_server):  # noqa: F811
    with ref_server.connect(capabilities=caps()) as c:
        dirty(c, START).check()
    with ref_server.connect(capabilities=caps()) as c:
        c.dma_map(BASE, SIZE).check()
        assert get(c).error == errno.EINVAL


@pytest.mark.parametrize(
    "iova, size, err",
    [
        (BASE, 0, errno.EINVAL),
        (2**64 - PAGE, 2 * PAGE, errno.EINVAL),
        (BASE - PAGE, SIZE, errno.EINVAL),  # starts before the mapping
        (BASE, SIZE + PAGE, errno.EINVAL),  # runs past it
        (0x900000, PAGE, errno.EINVAL),  # nothing mapped there
    ],
)
def test_range_must_be_mapped(c, iova, size, err):
    dirty(c, START).check()
    assert get(c, iova, size, bsize=8).error == err


def test_range_over_adjacent_mappings_and_inside_one(c):
    c.dma_map(BASE + SIZE, SIZE).check()
    dirty(c, START).check()
    dma_to_client(c, BASE + SIZE - 1, 2).check()  # the last page of one, the first of the next
    assert bits(get(c, BASE + SIZE - 2 * PAGE, 4 * PAGE).check().body.bitmap_data) == [1, 2]
    dma_to_client(c, BASE + 0x2000, 1).check()
    assert bits(get(c, BASE + 0x2000, PAGE).check().body.bitmap_data) == [0]
    c.dma_unmap(BASE + SIZE, SIZE).check()


@pytest.mark.parametrize("pgsize", [512, 8192, 0, 4097])
def test_pgsize_must_be_the_negotiated_one(c, pgsize):
    dirty(c, START).check()
    assert get(c, pgsize=pgsize, bsize=64).error == errno.EINVAL


def test_bitmap_size(c):
    dirty(c, START).check()
    assert get(c, bsize=7).error == errno.EINVAL
    assert get(c, bsize=0).error == errno.EINVAL
    dma_to_client(c, BASE, 1).check()
    r = get(c, bsize=24).check()  # larger than needed: the range as sent, zero padding
    assert r.body.range.bitmap.size == 24 and bits(r.body.bitmap_data) == [0]
    assert get(c, bsize=(1 << 20) + 8).error == errno.E2BIG


def test_big_mapping_bitmap_size(ref_server):  # noqa: F811
    with ref_server.connect(capabilities=caps()) as c:
        fd = c.memory.create_memfd_region(0x40000000, 1 << 30)  # sparse: costs nothing
        c.dma_map(0x40000000, 1 << 30, fd=fd).check()  # 262144 pages: 32 KiB of bitmap
        dirty(c, START).check()
        dma_to_client(c, 0x40000000 + (1 << 30) - PAGE, 4).check()
        r = get(c, 0x40000000, 1 << 30).check()
        assert len(r.body.bitmap_data) == bitmap_bytes(1 << 30, PAGE) == 32768
        assert bits(r.body.bitmap_data[-8:]) == [63]


def test_small_argsz_gets_the_needed_size_and_clears_nothing(c):
    dirty(c, START).check()
    dma_to_client(c, BASE, 1).check()
    for argsz in (40, 47):
        r = get(c, argsz=argsz).check()
        assert len(r.payload) == 40 and r.body.argsz == 48 and r.body.bitmap_data == b""
        assert r.body.range == BitmapRange(BASE, SIZE, VfioBitmap(PAGE, 8))
    for argsz in (0, 8, 39):
        assert get(c, argsz=argsz).error == errno.EINVAL
    assert bits(get(c).check().body.bitmap_data) == [0]


@pytest.mark.parametrize("extra", [b"", b"\0" * 8])
def test_get_bitmap_request_is_8_plus_32(c, extra):
    dirty(c, START).check()
    payload = DirtyPages(56, GET, BitmapRange(BASE, SIZE, VfioBitmap(PAGE, 8))).pack()
    assert len(payload) == 40
    c.request(Command.DIRTY_PAGES, payload).check()
    bad = payload[:-8] if not extra else payload + extra  # 32 or 48 bytes (errata 4)
    assert c.request(Command.DIRTY_PAGES, bad).error == errno.EINVAL


# ---- DMA_UNMAP with the dirty bitmap


def unmap(c, address=BASE, size=SIZE, pgsize=PAGE, bsize=8, argsz=None):
    return c.dma_unmap(address, size, flags=1, bitmap=VfioBitmap(pgsize, bsize), argsz=argsz)


def test_unmap_with_bitmap(c):
    dirty(c, START).check()
    dma_to_client(c, BASE + 0x5000, 0x1001).check()  # pages 5 and 6
    r = unmap(c).check()
    assert len(r.payload) == 24 + 16 + 8
    assert r.body == DmaUnmap(48, 1, BASE, SIZE, VfioBitmap(PAGE, 8), r.body.bitmap_data)
    assert bits(r.body.bitmap_data) == [5, 6]
    assert c.dma_unmap(BASE, SIZE).error == errno.ENOENT  # gone


def test_unmap_with_bitmap_refused_while_logging_is_off(c):
    assert unmap(c).error == errno.EINVAL
    c.dma_unmap(BASE, SIZE).check()  # still mapped


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"pgsize": 8192}, errno.EINVAL),
        ({"bsize": 7}, errno.EINVAL),
        ({"bsize": (1 << 20) + 8}, errno.E2BIG),
        ({"argsz": 47}, errno.EINVAL),
        ({"argsz": 24}, errno.EINVAL),
        ({"size": SIZE - PAGE}, errno.ENOENT),
    ],
)
def test_unmap_with_bitmap_refused(c, kwargs, err):
    dirty(c, START).check()
    assert unmap(c, **kwargs).error == err
    c.dma_unmap(BASE, SIZE).check()  # nothing was unmapped


def test_unmap_with_flag_but_no_bitmap(c):
    dirty(c, START).check()
    r = c.request(Command.DMA_UNMAP, DmaUnmap(24, 1, BASE, SIZE).pack())
    assert r.error == errno.EINVAL
    r = c.request(
        Command.DMA_UNMAP, DmaUnmap(56, 1, BASE, SIZE, VfioBitmap(PAGE, 8), bytes(8)).pack()
    )  # bitmap data in the request
    assert r.error == errno.EINVAL
    c.dma_unmap(BASE, SIZE).check()


def test_unmapping_forgets_dirty_pages(c):
    dirty(c, START).check()
    dma_to_client(c, BASE, SIZE).check()
    c.dma_unmap(BASE, SIZE).check()
    c.dma_map(BASE, SIZE).check()
    assert bits(get(c).check().body.bitmap_data) == []
    dma_to_client(c, BASE, 1).check()
    assert bits(unmap(c, bsize=16).check().body.bitmap_data) == [0]


# ---- the log itself


def test_dirty_log_against_a_model():
    rnd = random.Random(7)
    for _ in range(200):
        log, model = DirtyLog(16), set()
        for _ in range(rnd.randrange(1, 12)):
            op, lo, n = rnd.randrange(3), rnd.randrange(0, 400), rnd.randrange(1, 80)
            if op < 2:
                log.mark(lo, n)
                model |= set(range(lo, lo + n))
            else:
                log.forget(lo, n)
                model -= set(range(lo, lo + n))
        assert all(s < e for s, e in zip(log._starts, log._ends, strict=True))
        assert all(e < s for e, s in zip(log._ends, log._starts[1:], strict=False))  # merged
        lo, n = rnd.randrange(0, 300), rnd.randrange(1, 300)
        expect = sorted({(b - lo) // 16 for b in model if lo <= b < lo + n})
        assert bits(log.bitmap(lo, n, bitmap_bytes(n, 16))) == expect
