"""VFIO_USER_DIRTY_PAGES (0.9.1): dirty page logging, and DMA_UNMAP's dirty bitmap.

Dirty page tracking is optional ("Dirty page tracking is optional for server
implementation"): every case needs the ``dirty_pages`` feature. The client
negotiates the migration capability (pgsize 4096), whose pgsize is the page
size of the bitmaps. The bitmap range is 32 bytes on the wire (errata 4).
"""

from __future__ import annotations

import struct

import pytest

from conformance._support import accepted, answer, send_refused
from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import (
    BitmapRange,
    Command,
    DirtyPagesFlags,
    DmaUnmap,
    DmaUnmapFlags,
    VfioBitmap,
    bitmap_bytes,
)

START, STOP, GET = (
    int(DirtyPagesFlags.START),
    int(DirtyPagesFlags.STOP),
    int(DirtyPagesFlags.GET_BITMAP),
)
PROPOSED_PGSIZE = 4096
BASE = 0x10000000  # client memory the cases map: PAGES pages of the negotiated size
PAGES = 16


class Logging:
    """A connection negotiated with the migration capability, client memory mapped."""

    def __init__(self, client, pgsize: int):
        self.client = client
        self.pgsize = pgsize
        self.size = PAGES * pgsize
        self.bsize = bitmap_bytes(self.size, pgsize)

    def get(self, iova: int | None = None, size: int | None = None) -> object:
        iova = BASE if iova is None else iova
        size = self.size if size is None else size
        rng = BitmapRange(iova, size, VfioBitmap(self.pgsize, bitmap_bytes(size, self.pgsize)))
        return self.client.dirty_pages(GET, rng)


@pytest.fixture
def dp(vfu_connect, vfu_observe):
    client = vfu_connect()
    client.negotiate(capabilities=client.proposal(migration={"pgsize": PROPOSED_PGSIZE}))
    pgsize = client.server_caps.migration_pgsize
    if pgsize is None:
        vfu_observe(
            "the server did not answer the migration capability; the bitmaps are "
            f"asked for in the proposed page size {PROPOSED_PGSIZE}"
        )
        pgsize = PROPOSED_PGSIZE
    log = Logging(client, pgsize)
    fd = client.memory.create_memfd_region(BASE, log.size)
    accepted(client.dma_map(BASE, log.size, fd=fd), "DMA_MAP of the client memory the case uses")
    yield log
    if not client.closed:
        try:  # best effort: leave the device as found
            client.dirty_pages(STOP)
        except Exception:
            pass


def _bits(data: bytes) -> set[int]:
    n = int.from_bytes(data, "little")
    return {i for i in range(len(data) * 8) if n >> i & 1}


def _dma_write(vfu_hooks, client, address: int, length: int) -> None:
    result = vfu_hooks.trigger_dma(client, "write", address, length, 0)
    ok = getattr(result, "ok", True)
    assert ok, (
        f"the device's DMA write of {length} bytes to {address:#x} failed "
        f"({result!r}); the case cannot check dirty logging without it"
    )


@case("dirty_pages/start-stop", MUST, requires=("dirty_pages",), revisions=("0.9.1",))
def test_start_stop(dp):
    """START and STOP succeed, with no reply payload.

    Spec (VFIO_USER_DIRTY_PAGES): "For VFIO_IOMMU_DIRTY_PAGES_FLAG_START or
    VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP, there is no reply payload." (the request:
    "argsz is the size of the VFIO dirty bitmap info structure for START/STOP")
    """
    for flags, name in ((START, "START"), (STOP, "STOP")):
        reply = accepted(dp.client.dirty_pages(flags), f"DIRTY_PAGES {name}")
        assert reply.payload == b"", (
            f"the reply to {name} carries {len(reply.payload)} payload bytes; START and STOP "
            "have no reply payload"
        )


@case("dirty_pages/flags-exclusive", MUST, requires=("dirty_pages",), revisions=("0.9.1",))
@pytest.mark.parametrize(
    "flags",
    [START | STOP, START | GET, STOP | GET, START | STOP | GET],
    ids=["start+stop", "start+get", "stop+get", "all-three"],
)
def test_flags_exclusive(dp, vfu_connect, vfu_observe, flags):
    """Two or more of START, STOP and GET_BITMAP at once are refused.

    Spec (VFIO_USER_DIRTY_PAGES): "These flags are mutually exclusive with each
    other."
    """
    payload = struct.pack("<II", 8, flags)
    if flags & GET:  # with the range GET_BITMAP would need, so that only flags are wrong
        payload = (
            struct.pack("<II", 8 + 32 + dp.bsize, flags)
            + BitmapRange(BASE, dp.size, VfioBitmap(dp.pgsize, dp.bsize)).pack()
        )
    send_refused(
        dp.client,
        Command.DIRTY_PAGES,
        payload,
        vfu_connect,
        f"DIRTY_PAGES with flags {flags:#x}",
        vfu_observe,
    )


@case("dirty_pages/get-bitmap-before-start", MUST, requires=("dirty_pages",), revisions=("0.9.1",))
def test_get_bitmap_before_start(dp, vfu_connect, vfu_observe):
    """GET_BITMAP before logging was started is refused.

    Spec (VFIO_USER_DIRTY_PAGES): "This operation is only valid if logging of
    dirty pages has been previously started."
    """
    rng = BitmapRange(BASE, dp.size, VfioBitmap(dp.pgsize, dp.bsize))
    payload = struct.pack("<II", 8 + 32 + dp.bsize, GET) + rng.pack()
    send_refused(
        dp.client, Command.DIRTY_PAGES, payload, vfu_connect, "GET_BITMAP before START", vfu_observe
    )


def _check_bitmap_reply(reply, dp, iova: int, size: int, vfu_observe) -> bytes:
    """The GET_BITMAP reply's bitmap, after checking its layout (errata 4)."""
    bsize = bitmap_bytes(size, dp.pgsize)
    payload = reply.payload
    argsz, flags = struct.unpack_from("<II", payload)
    if len(payload) == 8 + 40 + bsize:
        vfu_observe(
            "the GET_BITMAP reply follows the table's 40-byte bitmap range (errata 4): "
            "the range at 8 with a 24-byte VFIO Bitmap, the bitmap at 48"
        )
        start = 48
    else:
        assert len(payload) == 8 + 32 + bsize, (
            f"the GET_BITMAP reply is {len(payload)} bytes; expected 8 + 32 (the bitmap range) "
            f"+ {bsize} (one bit per {dp.pgsize}-byte page of {size:#x} bytes)"
        )
        start = 40
    assert flags == GET, f"the reply's flags are {flags:#x}, not GET_BITMAP ({GET:#x})"
    assert argsz == len(payload), (
        f"the reply's argsz is {argsz}; it must be the size of the full reply payload "
        f"({len(payload)})"
    )
    echoed = struct.unpack_from("<QQQQ", payload, 8)
    assert echoed == (iova, size, dp.pgsize, bsize), (
        f"the reply's bitmap range is (iova, size, pgsize, bitmap size) = "
        f"{tuple(hex(v) for v in echoed)}, not the range of the request"
    )
    return payload[start:]


@case("dirty_pages/get-bitmap-reply", MUST, requires=("dirty_pages",), revisions=("0.9.1",))
def test_get_bitmap_reply(dp, vfu_observe):
    """GET_BITMAP answers the flags, the range as requested and a bitmap of one bit per page.

    Spec (VFIO_USER_DIRTY_PAGES, Reply): "argsz is the size required for the
    full reply payload (dirty pages structure + bitmap range structure +
    actual bitmap)"; "flags is VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP";
    "bitmap range is the same bitmap range struct provided in the request";
    "bitmap is the actual dirty pages bitmap corresponding to the range
    request". Spec (VFIO_USER_VERSION): pgsize is the "Page size of dirty
    pages bitmap". Bitmaps are sized as the kernel's: whole u64s.
    """
    accepted(dp.client.dirty_pages(START), "DIRTY_PAGES START")
    reply = accepted(dp.get(), "GET_BITMAP of a mapped range while logging")
    _check_bitmap_reply(reply, dp, BASE, dp.size, vfu_observe)


@case(
    "dirty_pages/dma-writes-marked",
    MUST,
    requires=("dirty_pages", "dma_engine"),
    revisions=("0.9.1",),
)
def test_dma_writes_marked(dp, vfu_hooks, vfu_observe):
    """Pages the device wrote by DMA while logging are set in the bitmap.

    Spec (VFIO_USER_DIRTY_PAGES): "VFIO_IOMMU_DIRTY_PAGES_FLAG_START instructs
    the server to start logging pages it dirties."
    """
    accepted(dp.client.dirty_pages(START), "DIRTY_PAGES START")
    _dma_write(vfu_hooks, dp.client, BASE + dp.pgsize + 8, dp.pgsize)  # pages 1 and 2
    reply = accepted(dp.get(), "GET_BITMAP after the device wrote client memory")
    bits = _bits(_check_bitmap_reply(reply, dp, BASE, dp.size, vfu_observe))
    assert {1, 2} <= bits, (
        f"the device wrote pages 1 and 2 of the range by DMA, but the bitmap marks pages "
        f"{sorted(bits)}"
    )


@case(
    "dirty_pages/get-bitmap-unmapped-range", SHOULD, requires=("dirty_pages",), revisions=("0.9.1",)
)
def test_get_bitmap_unmapped_range(dp, vfu_connect):
    """GET_BITMAP of a range no DMA_MAP covers: the server survives and stays framed.

    Spec (VFIO_USER_DIRTY_PAGES): the spec is silent on a range outside the
    client's mappings ("requests the server to return the dirty bitmap for a
    specific IOVA range"); robustness only. Spec (Security Considerations):
    "Standard tools and mechanisms should be used on both sides to validate
    input and prevent against denial of service scenarios".
    """
    accepted(dp.client.dirty_pages(START), "DIRTY_PAGES START")
    far = BASE + 0x100000000
    rng = BitmapRange(far, dp.size, VfioBitmap(dp.pgsize, dp.bsize))
    msg_id = dp.client.send(
        Command.DIRTY_PAGES, struct.pack("<II", 8 + 32 + dp.bsize, GET) + rng.pack()
    )
    answer(dp.client, msg_id, Command.DIRTY_PAGES, vfu_connect, "GET_BITMAP of an unmapped range")


def _unmap_with_bitmap(dp):
    bitmap = VfioBitmap(dp.pgsize, dp.bsize)
    return dp.client.dma_unmap(BASE, dp.size, flags=DmaUnmapFlags.GET_DIRTY_BITMAP, bitmap=bitmap)


@case(
    "dirty_pages/unmap-bitmap-marks-dma",
    MUST,
    requires=("dirty_pages", "dma_engine"),
    revisions=("0.9.1",),
)
def test_unmap_bitmap_marks_dma(dp, vfu_hooks):
    """The bitmap DMA_UNMAP returns marks the pages the device wrote by DMA.

    Spec (VFIO_USER_DMA_UNMAP): "get dirty page bitmap indicates that a dirty
    page bitmap must be populated before unmapping the DMA region"; "each bit
    represents one page of size pgsize in VFIO Bitmap". (The reply's layout is
    dma/unmap-dirty-bitmap's; errata 7: 0.9.1 only.)
    """
    accepted(dp.client.dirty_pages(START), "DIRTY_PAGES START")
    _dma_write(vfu_hooks, dp.client, BASE + 5 * dp.pgsize, 1)  # page 5
    reply = accepted(_unmap_with_bitmap(dp), "DMA_UNMAP with the dirty bitmap while logging")
    bits = _bits(reply.payload[DmaUnmap.ENTRY_SIZE + 16 :])
    assert 5 in bits, (
        f"the device wrote page 5 of the mapping by DMA, but the bitmap marks pages {sorted(bits)}"
    )
