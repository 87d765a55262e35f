"""VFIO_USER_DMA_UNMAP, as the client sends it: a mapping it made, exactly."""

from __future__ import annotations

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import Command, DmaMap, DmaUnmap

from ._support import decode, listed, need, sent


@case("client/dma_unmap/matches-a-mapping", MUST)
def test_matches_a_mapping(vfu_sessions):
    """Each DMA_UNMAP names the address and size of a mapping the session made (and has
    not unmapped since) exactly.

    Spec (VFIO_USER_DMA_UNMAP): "The address and size of the DMA region being unmapped
    must match exactly a previous mapping."
    """
    need(sent(vfu_sessions, Command.DMA_UNMAP), "DMA_UNMAP")
    bad = []
    for s in vfu_sessions:
        mapped: set[tuple[int, int]] = set()
        for m in s.sent():
            if m.command == Command.DMA_MAP:
                reply = s.reply_to(m)
                if reply is not None and not reply.is_error:
                    body = decode(DmaMap, m, "the DMA_MAP")
                    mapped.add((body.address, body.size))
            elif m.command == Command.DMA_UNMAP:
                body = decode(DmaUnmap, m, "the DMA_UNMAP")
                key = (body.address, body.size)
                if key in mapped:
                    mapped.discard(key)
                else:
                    bad.append(f"{m.describe()}: [{body.address:#x}, +{body.size:#x})")
    assert not bad, f"unmaps of no mapping made before: {listed(bad)}"


@case("client/dma_unmap/structure", MUST)
def test_structure(vfu_sessions, vfu_spec):
    """Each DMA_UNMAP without the dirty bitmap flag is the 24-byte entry, and its argsz
    covers the 24-byte reply.

    Spec (VFIO_USER_DMA_UNMAP): "The size of request message depends on whether or not
    the get dirty page bitmap bit is set in Flags: If not set, the size of the total
    request message is: 16 + 24." (0.9.2: "flags is unused in this version.")
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.DMA_UNMAP), "DMA_UNMAP"):
        body = decode(DmaUnmap, m, "the DMA_UNMAP")
        if vfu_spec == "0.9.1" and body.flags & 1:
            continue  # with the bitmap: dirty pages (0.9.1), another structure
        if m.msg_size != 16 + DmaUnmap.ENTRY_SIZE:
            bad.append(f"{m.describe()}: msg_size {m.msg_size}")
        elif body.argsz < DmaUnmap.ENTRY_SIZE:
            bad.append(f"{m.describe()}: argsz {body.argsz}")
    assert not bad, listed(bad)


@case("client/dma_unmap/flags-unused", SHOULD, revisions=("0.9.2",))
def test_flags_unused(vfu_sessions):
    """At 0.9.2 each DMA_UNMAP's flags are 0.

    Spec (VFIO_USER_DMA_UNMAP, 0.9.2): "flags is unused in this version." (Errata 7: the
    0.9.1 dirty bitmap bit is gone.)
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.DMA_UNMAP), "DMA_UNMAP"):
        flags = decode(DmaUnmap, m, "the DMA_UNMAP").flags
        if flags:
            bad.append(f"{m.describe()}: flags {flags:#x}")
    assert not bad, listed(bad)


@case("client/dma_unmap/bitmap-follows", MUST, revisions=("0.9.1",))
def test_bitmap_follows(vfu_sessions):
    """At 0.9.1 a DMA_UNMAP asking for the dirty bitmap carries the 16-byte VFIO Bitmap
    right after the entry.

    Spec (VFIO_USER_DMA_UNMAP): "get dirty page bitmap indicates that a dirty page bitmap
    must be populated before unmapping the DMA region. The client must provide a VFIO
    Bitmap structure, explained below, immediately following this entry."
    """
    flagged = need(
        [(s, m) for s, m in sent(vfu_sessions, Command.DMA_UNMAP) if _flag(m)],
        "DMA_UNMAP asking for the dirty bitmap",
    )
    bad = [
        f"{m.describe()}: {len(m.payload)} bytes, not the entry and a VFIO Bitmap (40)"
        for _, m in flagged
        if len(m.payload) != DmaUnmap.ENTRY_SIZE + 16
    ]
    assert not bad, listed(bad)


def _flag(m) -> bool:
    return len(m.payload) >= 8 and bool(int.from_bytes(m.payload[4:8], "little") & 1)
