"""The client's replies to the server's DMA_READ and DMA_WRITE."""

from __future__ import annotations

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import Command, DmaRead, DmaReadReply, DmaWriteReply

from ._support import decode, listed, need


@case("client/dma_rw/replies-well-formed", MUST)
def test_replies_well_formed(vfu_sessions):
    """The client's successful reply to a DMA_READ is the address, the count and count
    bytes of data; to a DMA_WRITE, the address and the count (8 or, as the table says, 4
    bytes: errata 2); both echo the request's address and count.

    Spec (VFIO_USER_DMA_READ): "address is the client DMA memory address being accessed.
    count is the size of the data transferred. data is the data read."
    (VFIO_USER_DMA_WRITE): "address is the client DMA memory address being accessed.
    count is the size of the data transferred."
    """
    pairs = []
    for s in vfu_sessions:
        for req in s.server_requests():
            for m in s.messages[req.index + 1 :]:
                if (
                    m.direction == "c2s"
                    and m.is_reply
                    and (m.msg_id, m.command)
                    == (
                        req.msg_id,
                        req.command,
                    )
                ):
                    if not m.is_error:
                        pairs.append((req, m))
                    break
    need(pairs, "successful reply to a DMA_READ or DMA_WRITE")
    bad = []
    for req, m in pairs:
        asked = DmaRead.unpack(req.payload[:16])  # the address and count of either
        cls = DmaReadReply if m.command == Command.DMA_READ else DmaWriteReply
        body = decode(cls, m, f"the client's {cls.NAME}")
        if (body.address, body.count) != (asked.address, asked.count):
            bad.append(
                f"{m.describe()}: address {body.address:#x} count {body.count}, asked "
                f"{asked.address:#x} count {asked.count}"
            )
        elif cls is DmaReadReply and len(body.data) != asked.count:
            bad.append(f"{m.describe()}: {len(body.data)} bytes of data for {asked.count}")
    assert not bad, listed(bad)
