"""The client's replies to the server's DMA_READ and DMA_WRITE."""

from __future__ import annotations

import struct

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
    pairs = [
        (req, answer)
        for s in vfu_sessions
        for req in s.server_requests()
        if (answer := s.reply_to(req)) is not None and not answer.is_error
    ]
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


_MAP_AT = {Command.DMA_MAP: 16, Command.DMA_UNMAP: 8}  # where address and size are


def _mapped(session, upto: int) -> list[tuple[int, int]]:
    """[start, end) of the mappings the session holds before message ``upto``."""
    live: list[tuple[int, int]] = []
    for m in session.sent():
        if m.index >= upto:
            break
        at = _MAP_AT.get(m.command)
        reply = session.reply_to(m) if at is not None else None
        if reply is None or reply.is_error or len(m.payload) < at + 16:
            continue
        address, size = struct.unpack_from("<QQ", m.payload, at)
        if m.command == Command.DMA_MAP:
            live.append((address, address + size))
        elif (address, address + size) in live:
            live.remove((address, address + size))
    return live


@case("client/dma_rw/outside-mappings-refused", MUST)
def test_outside_mappings_refused(vfu_sessions, vfu_scenario):
    """A DMA_READ or DMA_WRITE of the server's outside every mapping the client made is
    refused: an error reply. (Scenario dma-outside: the server names offsets into the
    mappings, not client addresses.)

    Spec (VFIO_USER_DMA_READ): "address is the client DMA memory address being accessed.
    This address must have been previously exported to the server with a
    VFIO_USER_DMA_MAP message."
    """
    if not any(s.server_requests() for s in vfu_sessions):  # the scenario would make none
        need(
            [],
            "session in which the server made DMA requests (the reference device makes "
            "them when its doorbell is rung)",
        )
    judged, bad = 0, []
    for s in vfu_scenario("dma-outside"):
        for req in s.server_requests():
            if req.command not in (Command.DMA_READ, Command.DMA_WRITE) or len(req.payload) < 16:
                continue
            address, count = struct.unpack_from("<QQ", req.payload)
            if any(lo <= address and address + count <= hi for lo, hi in _mapped(s, req.index)):
                continue
            judged += 1
            answer = s.reply_to(req)
            if answer is not None and not answer.is_error:
                bad.append(f"{req.describe()} of [{address:#x}, +{count:#x}) was served")
    if not judged:
        need([], "reply to a DMA request outside its mappings (the server made none)")
    assert not bad, listed(bad)
