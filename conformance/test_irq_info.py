"""VFIO_USER_DEVICE_GET_IRQ_INFO: the interrupt types a device has.

Cases run once per IRQ index the device reports (``vfu_irq_index``).
"""

from __future__ import annotations

import pytest

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import Command, IrqInfo, IrqInfoFlags

from ._support import accepted, send_refused

IRQ_INFO_DEFINED = int(
    IrqInfoFlags.EVENTFD | IrqInfoFlags.MASKABLE | IrqInfoFlags.AUTOMASKED | IrqInfoFlags.NORESIZE
)


# ---------------------------------------------------------------------------
# VFIO_USER_DEVICE_GET_IRQ_INFO


@case("irq_info/reply-argsz", MUST)
def test_irq_info_argsz(vfu_client, vfu_irq_index):
    """The reply to GET_IRQ_INFO is the full 16-byte structure and says argsz 16.

    Spec (VFIO_USER_DEVICE_GET_IRQ_INFO): "argsz is the size required for the full
    reply payload (16 bytes today)"
    """
    reply = accepted(vfu_client.irq_info(vfu_irq_index), f"GET_IRQ_INFO of index {vfu_irq_index}")
    assert len(reply.payload) == IrqInfo.SIZE, (
        f"the reply payload is {len(reply.payload)} bytes, not the 16-byte vfio_irq_info"
    )
    assert reply.body.argsz == IrqInfo.SIZE, f"the reply says argsz {reply.body.argsz}, not 16"


@case("irq_info/reply-index", MUST)
def test_irq_info_index(vfu_client, vfu_irq_index):
    """The reply to GET_IRQ_INFO names the IRQ index that was queried.

    Spec (VFIO_USER_DEVICE_GET_IRQ_INFO): "index is the index of IRQ type being queried"
    """
    body = accepted(
        vfu_client.irq_info(vfu_irq_index), f"GET_IRQ_INFO of index {vfu_irq_index}"
    ).body
    assert body.index == vfu_irq_index, (
        f"asked about IRQ index {vfu_irq_index}, the reply is about index {body.index}"
    )


@case("irq_info/defined-flags", MUST)
def test_irq_info_flags(vfu_client, vfu_irq_index):
    """The reply's flags hold only the four flags the spec defines (bits 0-3).

    Spec (VFIO_USER_DEVICE_GET_IRQ_INFO): "flags defines IRQ attributes:
    VFIO_IRQ_INFO_EVENTFD ... VFIO_IRQ_INFO_MASKABLE ... VFIO_IRQ_INFO_AUTOMASKED ...
    VFIO_IRQ_INFO_NORESIZE"
    """
    body = accepted(
        vfu_client.irq_info(vfu_irq_index), f"GET_IRQ_INFO of index {vfu_irq_index}"
    ).body
    assert not body.flags & ~IRQ_INFO_DEFINED, (
        f"flags {body.flags:#x} of IRQ index {vfu_irq_index} set bits the spec does not "
        f"define ({body.flags & ~IRQ_INFO_DEFINED:#x})"
    )


@case("irq_info/matches-profile", MUST)
@pytest.mark.parametrize("field", ["count", "flags"])
def test_irq_info_matches_profile(vfu_client, vfu_device, vfu_irq_index, field):
    """GET_IRQ_INFO reports the count and flags the device profile expects.

    Spec (VFIO_USER_DEVICE_GET_IRQ_INFO): "count describes the number of interrupts
    of the queried type."
    """
    profile = vfu_device.irq_profile(vfu_irq_index)
    expected = getattr(profile, field) if profile is not None else None
    if expected is None:
        pytest.skip(f"needs profile: irqs[index={vfu_irq_index}].{field}")
    body = accepted(
        vfu_client.irq_info(vfu_irq_index), f"GET_IRQ_INFO of index {vfu_irq_index}"
    ).body
    got = getattr(body, field)
    assert got == expected, (
        f"IRQ index {vfu_irq_index} reports {field} {got:#x}, the profile expects {expected:#x}"
    )


@case("irq_info/index-past-end", MUST)
@pytest.mark.parametrize("past", [0, 0xFFFFFFFF], ids=["num_irqs", "u32-max"])
def test_irq_info_past_end(vfu_client, vfu_connect, vfu_device, vfu_observe, past):
    """GET_IRQ_INFO of an index at or past num_irqs fails with a header-only error reply.

    Spec (VFIO_USER_DEVICE_GET_INFO): "num_irqs is the number of IRQs"; (Header): "If an
    error occurs, the reply message must only include the reply header."
    """
    index = past or vfu_device.num_irqs
    send_refused(
        vfu_client,
        Command.DEVICE_GET_IRQ_INFO,
        IrqInfo(IrqInfo.SIZE, index=index).pack(),
        vfu_connect,
        f"GET_IRQ_INFO of IRQ index {index:#x} (num_irqs is {vfu_device.num_irqs})",
        vfu_observe,
    )
