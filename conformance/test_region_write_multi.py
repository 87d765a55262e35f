"""VFIO_USER_REGION_WRITE_MULTI (0.9.2): several device writes of up to 8 bytes in one
message.

Every case needs ``write_multiple``: the client proposes it in VERSION, and a server
whose reply does not set it has not said it takes the message (the case cannot run).
The writes go to the first scratch range of a writable, readable region, which the
case reads back with REGION_READ.
"""

from __future__ import annotations

import pytest

from conformance._support import accepted, answer, first_scratch, send_refused
from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import (
    FLAG_NO_REPLY,
    Command,
    RegionFlags,
    RegionWriteMulti,
    SingleWrite,
)


@pytest.fixture
def multi(vfu_connect, vfu_device):
    """A client that negotiated write_multiple, and (region, offset) of 16 scratch bytes."""
    client = vfu_connect()
    client.negotiate(capabilities=client.proposal(write_multiple=True))
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


def _write_multi(client, writes) -> bytes:
    """REGION_WRITE_MULTI of (region, offset, count, data) entries, as bytes."""
    return RegionWriteMulti(
        tuple(SingleWrite(o, r, n, d.ljust(8, b"\0")) for r, o, n, d in writes)
    ).pack()


def _read(client, region: int, offset: int, count: int) -> bytes:
    return accepted(client.region_read(region, offset, count), "REGION_READ").body.data


def _completed(client, msg_id, connect, what):
    """The reply to ``what``: its wr_cnt, or None when it was refused (or the connection
    closed; then the rest of the case cannot run on it)."""
    reply = answer(client, msg_id, Command.REGION_WRITE_MULTI, connect, what)
    if reply is None or not reply.ok:
        return None
    return reply.body.wr_cnt


@case(
    "region_write_multi/wr-cnt-counts-completed",
    MUST,
    requires=("write_multiple",),
    revisions=("0.9.2",),
)
def test_wr_cnt_counts_completed(multi, vfu_connect, vfu_device):
    """When one write of a message cannot be done (past the end of its region), the
    device holds exactly the writes the reply counts: a refusal applies none, a reply
    counting n applies the first n.

    Spec (VFIO_USER_REGION_WRITE_MULTI): "wr_cnt is the number of device writes
    completed."
    """
    client, region, offset = multi
    size = vfu_device.region(region).size
    accepted(client.region_write(region, offset, bytes(8)), "REGION_WRITE of zeros")
    writes = [(region, offset, 4, b"\x61" * 4), (region, size, 4, b"\x62" * 4)]
    msg_id = client.send(Command.REGION_WRITE_MULTI, _write_multi(client, writes))
    what = "a REGION_WRITE_MULTI whose second write is past the end of its region"
    done = _completed(client, msg_id, vfu_connect, what)
    held = _read(client, region, offset, 4)
    if done is None:
        assert held == bytes(4), f"{what} was refused, yet its first write was applied"
        return
    assert done <= 1, f"the reply counts {done} writes completed; the second cannot be"
    want = b"\x61" * 4 if done == 1 else bytes(4)
    assert held == want, f"the reply counts {done} completed, the region holds {held.hex()}"


@case(
    "region_write_multi/unwritable-not-counted",
    MUST,
    requires=("write_multiple",),
    revisions=("0.9.2",),
)
def test_unwritable_not_counted(multi, vfu_connect, vfu_device):
    """A write to a region without VFIO_REGION_INFO_FLAG_WRITE is not counted as completed
    (the message is refused, or its reply's wr_cnt leaves that write out).

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "VFIO_REGION_INFO_FLAG_WRITE allows client
    write access to the region." (VFIO_USER_REGION_WRITE_MULTI): "wr_cnt is the number of
    device writes completed."
    """
    client, region, offset = multi
    readonly = [
        r.index
        for r in vfu_device.regions_with(RegionFlags.READ)
        if not r.flags & RegionFlags.WRITE and r.size >= 8
    ]
    if not readonly:
        pytest.skip("the device has no readable region without WRITE")
    target = readonly[0]
    before = _read(client, target, 0, 4)
    writes = [(region, offset, 4, b"\x63" * 4), (target, 0, 4, b"\x64" * 4)]
    msg_id = client.send(Command.REGION_WRITE_MULTI, _write_multi(client, writes))
    what = f"a REGION_WRITE_MULTI whose second write is to read-only region {target}"
    done = _completed(client, msg_id, vfu_connect, what)
    if done is not None:
        assert done <= 1, f"the reply counts {done} writes completed, the read-only one too"
    after = _read(client, target, 0, 4)
    assert after == before, f"read-only region {target} changed: {before.hex()} -> {after.hex()}"


@case(
    "region_write_multi/posted-writes-applied",
    MUST,
    requires=("write_multiple",),
    revisions=("0.9.2",),
)
def test_posted_writes_applied(multi):
    """REGION_WRITE_MULTI with No_reply gets no reply, and its writes are done before the
    next command's reply (a REGION_READ that reads them back).

    Spec (Header): "No_reply in a command message indicates that no reply is needed for
    this command." (Command Concurrency): "if a client issues a command with the No_reply
    bit, then subsequently issues a command without No_reply, the older command will have
    been processed before the reply to the younger command is sent by the server."
    """
    client, region, offset = multi
    writes = [(region, offset, 4, b"\x71" * 4), (region, offset + 4, 4, b"\x72" * 4)]
    client.send(Command.REGION_WRITE_MULTI, _write_multi(client, writes), flags=FLAG_NO_REPLY)
    held = _read(client, region, offset, 8)
    assert held == b"\x71" * 4 + b"\x72" * 4, (
        f"after a posted REGION_WRITE_MULTI the region holds {held.hex()}"
    )


@case(
    "region_write_multi/wr-cnt-mismatch-refused",
    SHOULD,
    requires=("write_multiple",),
    revisions=("0.9.2",),
)
def test_wr_cnt_mismatch_refused(multi, vfu_connect, vfu_observe):
    """A message whose wr_cnt says 3 where 2 writes follow is refused (and applies
    nothing); with wr_cnt 2 it is accepted.

    Spec (VFIO_USER_REGION_WRITE_MULTI): "wr_cnt is the number of device writes coalesced
    in the message". Security Considerations: "Standard tools and mechanisms should be
    used on both sides to validate input".
    """
    client, region, offset = multi
    accepted(client.region_write(region, offset, bytes(8)), "REGION_WRITE of zeros")
    good = _write_multi(client, [(region, offset, 4, b"\x81" * 4)] * 2)
    bad = (3).to_bytes(8, "little") + good[8:]
    if send_refused(
        client,
        Command.REGION_WRITE_MULTI,
        bad,
        vfu_connect,
        "wr_cnt 3 with 2 writes",
        vfu_observe,
    ):
        held = _read(client, region, offset, 4)
        assert held == bytes(4), f"the refused message was applied: {held.hex()}"
        reply = client.request(Command.REGION_WRITE_MULTI, good)
        accepted(reply, "the same REGION_WRITE_MULTI with wr_cnt 2")


@case(
    "region_write_multi/unnegotiated-refused",
    SHOULD,
    requires=("write_multiple",),
    revisions=("0.9.2",),
)
def test_unnegotiated_refused(vfu_connect, vfu_device, vfu_observe):
    """On a connection whose VERSION did not propose write_multiple (so the server did not
    say it), REGION_WRITE_MULTI is refused; the same write as REGION_WRITE is accepted.

    Spec (VFIO_USER_VERSION): "write_multiple | boolean | VFIO_USER_REGION_WRITE_MULTI
    messages are supported if the value is true." Security Considerations: "Standard tools
    and mechanisms should be used on both sides to validate input".
    """
    client = vfu_connect()
    client.negotiate()
    region, offset, _ = first_scratch(vfu_device, 8)
    accepted(client.region_write(region, offset, b"\x91" * 4), "REGION_WRITE of 4 bytes")
    payload = _write_multi(client, [(region, offset, 4, b"\x92" * 4)])
    what = "REGION_WRITE_MULTI without write_multiple negotiated"
    send_refused(client, Command.REGION_WRITE_MULTI, payload, vfu_connect, what, vfu_observe)
