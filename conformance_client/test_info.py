"""The info requests (DEVICE_GET_INFO, GET_REGION_INFO, GET_IRQ_INFO,
GET_REGION_IO_FDS): only index and argsz are the client's to set."""

from __future__ import annotations

import struct

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import Command

from ._support import listed, need, sent

# command -> (fields after argsz, the names of those that must be zero, the fixed reply size)
_LAYOUT = {
    Command.DEVICE_GET_INFO: (struct.Struct("<4xIII"), ("flags", "num_regions", "num_irqs"), 16),
    Command.DEVICE_GET_REGION_INFO: (
        struct.Struct("<4xIIIQQ"),
        ("flags", None, "cap_offset", "size", "offset"),
        32,
    ),
    Command.DEVICE_GET_IRQ_INFO: (struct.Struct("<4xIII"), ("flags", None, "count"), 16),
    Command.DEVICE_GET_REGION_IO_FDS: (struct.Struct("<4xIII"), ("flags", None, "count"), 16),
}


def _requests(sessions):
    return need(
        [(s, m) for command in _LAYOUT for s, m in sent(sessions, command)],
        "DEVICE_GET_INFO, GET_REGION_INFO, GET_IRQ_INFO or GET_REGION_IO_FDS",
    )


@case("client/info/other-fields-zero", MUST)
def test_other_fields_zero(vfu_sessions):
    """In each info request, every field but argsz and index is zero.

    Spec (VFIO_USER_DEVICE_GET_INFO): "all other fields must be zero."
    (VFIO_USER_DEVICE_GET_REGION_INFO): "index is the index of memory region being
    queried, it is the only field that is required to be set in the command message."
    "all other fields must be zero." (VFIO_USER_DEVICE_GET_REGION_IO_FDS): "The client
    must set flags to zero and specify the region being queried in the index."
    (VFIO_USER_DEVICE_GET_IRQ_INFO): "all other fields must be zero"
    """
    bad = []
    for _, m in _requests(vfu_sessions):
        layout, names, _ = _LAYOUT[m.command]
        if len(m.payload) < layout.size:
            bad.append(f"{m.describe()}: {len(m.payload)} bytes, short of {layout.size}")
            continue
        values = layout.unpack_from(m.payload)
        set_ = [f"{n}={v:#x}" for n, v in zip(names, values, strict=True) if n and v]
        if set_:
            bad.append(f"{m.describe()}: {', '.join(set_)}")
    assert not bad, listed(bad)


@case("client/info/argsz-covers-reply", SHOULD)
def test_argsz_covers_reply(vfu_sessions):
    """Each info request's argsz leaves room for the fixed part of its reply.

    Spec (Message sizes): "Some requests have an argsz field. In a request, it defines the
    maximum expected reply payload size, which should be at least the size of the fixed
    reply payload headers defined here."
    """
    bad = []
    for _, m in _requests(vfu_sessions):
        fixed = _LAYOUT[m.command][2]
        argsz = int.from_bytes(m.payload[:4], "little") if len(m.payload) >= 4 else 0
        if argsz < fixed:
            bad.append(f"{m.describe()}: argsz {argsz}, the fixed reply is {fixed} bytes")
    assert not bad, listed(bad)
