"""VFIO_USER_DMA_MAP, as the client sends it: the 32-byte structure, and an fd only
with memory the server can map."""

from __future__ import annotations

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import Command, DmaMap

from ._support import decode, listed, need, sent


@case("client/dma_map/structure", MUST)
def test_structure(vfu_sessions):
    """Each DMA_MAP is 16 + 32 bytes, and its argsz is 32.

    Spec (VFIO_USER_DMA_MAP): "argsz is the size of the above structure."; "This
    structure is 32 bytes in size, so the message size is 16 + 32 bytes."
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.DMA_MAP), "DMA_MAP"):
        if m.msg_size != 16 + DmaMap.SIZE:
            bad.append(f"{m.describe()}: msg_size {m.msg_size}")
        elif (body := decode(DmaMap, m, "the DMA_MAP")).argsz != DmaMap.SIZE:
            bad.append(f"{m.describe()}: argsz {body.argsz}")
    assert not bad, listed(bad)


@case("client/dma_map/fd-rules", MUST)
def test_fd_rules(vfu_sessions):
    """A DMA_MAP carries one fd (memory the server can map) or none, and without one its
    offset is 0.

    Spec (VFIO_USER_DMA_MAP): "If the DMA region being added can be directly mapped by the
    server, a file descriptor must be sent as part of the message meta-data." "Otherwise
    ... no file descriptor must be sent"; "offset is the file offset of the region with
    respect to the associated file descriptor, or zero if the region is not mappable"
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.DMA_MAP), "DMA_MAP"):
        body = decode(DmaMap, m, "the DMA_MAP")
        if m.fds > 1:
            bad.append(f"{m.describe()}: {m.fds} fds for one region")
        elif not m.fds and body.offset:
            bad.append(f"{m.describe()}: no fd, offset {body.offset:#x}")
    assert not bad, listed(bad)


@case("client/dma_map/flags-defined", SHOULD)
def test_flags_defined(vfu_sessions):
    """Each DMA_MAP's flags hold only the readable and writeable bits.

    Spec (VFIO_USER_DMA_MAP): "flags | 4 | 4 | Bit 0 readable, 1 writeable"; "flags
    contains the following region attributes: readable indicates that the region can be
    read from. writeable indicates that the region can be written to."
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.DMA_MAP), "DMA_MAP"):
        flags = decode(DmaMap, m, "the DMA_MAP").flags
        if flags & ~3:
            bad.append(f"{m.describe()}: flags {flags:#x}")
    assert not bad, listed(bad)
