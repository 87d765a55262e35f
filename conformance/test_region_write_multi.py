"""VFIO_USER_REGION_WRITE_MULTI (0.9.2): several device writes of up to 8 bytes in one
message.

Every case needs ``write_multiple``: the client proposes it in VERSION, and a server
whose reply does not set it has not said it takes the message (the case cannot run).
The writes go to the first scratch range of a writable, readable region, which the
case reads back with REGION_READ.
"""

from __future__ import annotations

import pytest

from conformance._support import accepted, first_scratch, send_refused
from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import Command, RegionWriteMulti, SingleWrite


@pytest.fixture
def multi(vfu_connect, vfu_device):
    """A client that negotiated write_multiple, and (region, offset) of 16 scratch bytes."""
    client = vfu_connect()
    caps = {
        "max_msg_fds": client.max_msg_fds,
        "max_data_xfer_size": client.max_data_xfer_size,
        "write_multiple": True,
    }
    client.negotiate(capabilities=caps)
    if not client.server_caps.write_multiple:
        pytest.skip("the server's VERSION reply does not set write_multiple")
    region, offset, length = first_scratch(vfu_device, 16)
    if length < 12:
        pytest.skip(f"needs profile: a scratch range of 12 bytes (the first has {length})")
    return client, region, offset


@case(
    "region_write_multi/applied-in-order", MUST, requires=("write_multiple",), revisions=("0.9.2",)
)
def test_applied_in_order(multi):
    """Three writes in one message (the last over the first) are all applied, in order,
    and the reply counts them.

    Spec (VFIO_USER_REGION_WRITE_MULTI): "wr_cnt is the number of device writes
    coalesced in the message" ... "wr_cnt is the number of device writes completed."
    """
    client, region, offset = multi
    writes = [
        (region, offset, b"\x11" * 8),
        (region, offset + 8, b"\x22" * 4),
        (region, offset, b"\x33\x44"),
    ]
    reply = accepted(client.region_write_multi(writes), "REGION_WRITE_MULTI of 3 writes")
    assert len(reply.payload) == 8, (
        f"the reply payload is {len(reply.payload)} bytes; it is wr_cnt, 8 bytes"
    )
    assert reply.body.wr_cnt == 3, f"the reply's wr_cnt is {reply.body.wr_cnt}, not 3"
    data = accepted(client.region_read(region, offset, 12), "REGION_READ of the written bytes")
    got = data.body.data
    want = b"\x33\x44" + b"\x11" * 6 + b"\x22" * 4
    assert got == want, f"the region holds {got.hex()} after the writes; expected {want.hex()}"


@case(
    "region_write_multi/count-above-8", SHOULD, requires=("write_multiple",), revisions=("0.9.2",)
)
def test_count_above_8(multi, vfu_connect, vfu_observe):
    """A write whose count is above 8 is refused; the same write of 8 bytes is accepted.

    Spec (VFIO_USER_REGION_WRITE_MULTI): "count is the size of the data to be
    transferred. This format can only describe writes of 8 bytes or less."
    """
    client, region, offset = multi
    accepted(client.region_write_multi([(region, offset, b"\x55" * 8)]), "a write of 8 bytes")
    bad = RegionWriteMulti((SingleWrite(offset, region, 16, b"\x55" * 8),)).pack()
    send_refused(
        client,
        Command.REGION_WRITE_MULTI,
        bad,
        vfu_connect,
        "a write with count 16",
        vfu_observe,
    )
