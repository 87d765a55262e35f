"""VFIO_USER_DEVICE_SET_IRQS, as the client sends it: its argsz, and the interrupts the
device has."""

from __future__ import annotations

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import Command, IrqInfo, SetIrqs

from ._support import decode, listed, need, sent


@case("client/set_irqs/argsz-is-payload", MUST)
def test_argsz_is_payload(vfu_sessions):
    """Each SET_IRQS's argsz is the size of its payload, data included.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "argsz is the size of the VFIO IRQ set request
    payload, including any data field."
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.DEVICE_SET_IRQS), "SET_IRQS"):
        body = decode(SetIrqs, m, "the SET_IRQS")
        if body.argsz != len(m.payload):
            bad.append(f"{m.describe()}: argsz {body.argsz}, payload {len(m.payload)} bytes")
    assert not bad, listed(bad)


@case("client/set_irqs/within-irq-info", MUST)
def test_within_irq_info(vfu_sessions):
    """Each SET_IRQS names sub-indexes the device has: index below num_irqs and start +
    count within the count GET_IRQ_INFO gave for it (where the session asked).

    Spec (VFIO_USER_DEVICE_SET_IRQS): "The client must know the capabilities of the
    device and IRQ index before it sends a VFIO_USER_DEVICE_SET_IRQ message."
    """
    need(sent(vfu_sessions, Command.DEVICE_SET_IRQS), "SET_IRQS")
    bad = []
    for s in vfu_sessions:
        counts: dict[int, int] = {}  # IRQ index -> count, as the server answered
        for m in s.sent():
            reply = s.reply_to(m)
            if m.command == Command.DEVICE_GET_IRQ_INFO and reply and not reply.is_error:
                info = decode(IrqInfo, reply, "the GET_IRQ_INFO reply")
                counts[info.index] = info.count
            elif m.command == Command.DEVICE_SET_IRQS:
                body = decode(SetIrqs, m, "the SET_IRQS")
                if body.index in counts and body.start + body.count > counts[body.index]:
                    bad.append(
                        f"{m.describe()}: index {body.index} start {body.start} count "
                        f"{body.count}; GET_IRQ_INFO gave count {counts[body.index]}"
                    )
    assert not bad, listed(bad)
