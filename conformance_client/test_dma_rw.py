"""The client's replies to the server's DMA_READ and DMA_WRITE."""

from __future__ import annotations

import pytest

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import Command, DmaRead, DmaReadReply, DmaWriteReply

from ._support import client_limit, decode, dma_requests, listed, mappings, need


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
        for req, address, count in dma_requests(s):
            if any(m.holds(address, count) for m in mappings(s, req.index)):
                continue
            judged += 1
            answer = s.reply_to(req)
            if answer is not None and not answer.is_error:
                bad.append(f"{req.describe()} of [{address:#x}, +{count:#x}) was served")
    if not judged:
        need([], "reply to a DMA request outside its mappings (the server made none)")
    assert not bad, listed(bad)


@case("client/dma_rw/fd-mapped-served", MUST)
def test_fd_mapped_served(vfu_scenario):
    """The client serves DMA_READ and DMA_WRITE for memory it mapped with a file
    descriptor: a successful reply. (Scenario dma-between: the server reads each new
    mapping's first bytes and writes them back through the client.)

    Spec (Read and Write Operations): "all of these operations must be supported by the
    client, even if the corresponding memory or device region has been shared as
    mappable."
    """
    sessions = vfu_scenario("dma-between")
    if not any(s.answers() for s in sessions):
        pytest.skip(
            "cannot judge: the client answered none of the server's requests in scenario "
            "dma-between (client/header/requests-between-answered judges that), so whether "
            "it serves fd-mapped memory does not show"
        )
    judged, bad = 0, []
    for s in sessions:
        for req, address, count in dma_requests(s):
            if not any(m.fd and m.holds(address, count) for m in mappings(s, req.index)):
                continue
            judged += 1
            answer = s.reply_to(req)
            if answer is None:
                bad.append(f"{req.describe()} of [{address:#x}, +{count:#x}) had no reply")
            elif answer.is_error:
                bad.append(f"{req.describe()} of [{address:#x}, +{count:#x}) was refused")
    if not judged:
        need([], "DMA_MAP with a file descriptor (the server reads only what was mapped)")
    assert not bad, listed(bad)


@case("client/dma_rw/oversized-request-answered", MUST)
def test_oversized_request_answered(vfu_scenario):
    """A DMA_READ above the client's max_data_xfer_size (the server breaks the limit) is
    answered all the same, served or refused, or the client closes the connection; it
    is not left unanswered while the client goes on. (Scenario dma-too-big; the
    mapping's read within the limit just before is the control: it must have been
    answered, or the case cannot judge.)

    Spec (Read and Write Operations): "The count field must not exceed the value of
    max_data_xfer_size of the peer, for both reads and writes."; (Header): "Each command
    message in Commands must be replied to with a reply message, unless the message sets
    the No_Reply bit."
    """
    judged, bad = 0, []
    for s in vfu_scenario("dma-too-big"):
        limit = client_limit(s)
        requests = dma_requests(s)
        for n, (req, address, count) in enumerate(requests):
            if count <= limit:
                continue
            control = [r for r, a, c in requests[:n] if a == address and c <= limit]
            if not control or s.reply_to(control[-1]) is None:
                continue  # it answers no request here: requests-between-answered's to judge
            judged += 1
            if (after := s.went_on_past(req)) is not None:
                bad.append(
                    f"{req.describe()} of {count} bytes (the client's limit: {limit}) had no "
                    f"reply; the client went on with {after.describe()}"
                )
    if not judged:
        need(
            [],
            "reply to the DMA_READ within its limit that comes before the one above it "
            "(scenario dma-too-big)",
        )
    assert not bad, listed(bad)
