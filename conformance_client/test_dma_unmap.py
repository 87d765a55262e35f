"""VFIO_USER_DMA_UNMAP, as the client sends it: a mapping it made, exactly."""

from __future__ import annotations

from pytest_vfiouser import MUST, case
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
