"""pytest-vfiouser hooks for the reference server: IRQs and DMA through BAR0.

Loaded automatically when the suite's target is the embedded reference
server; for a reference server started by hand, pass
``-p reference_server.pytest_hooks``.  An implementer of another server
writes the same three functions for their device (see
``pytest_vfiouser.hookspecs``); pytest wants them named ``pytest_vfu_*``.
"""

from __future__ import annotations

import struct

from . import registers as R

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DIRECTIONS = {"read": R.DMA_FROM_CLIENT, "write": R.DMA_TO_CLIENT}


def pytest_vfu_trigger_irq(client, device, index: int, subindex: int):
    """Write IRQ_TRIGGER: the device raises interrupt ``subindex`` of type ``index``."""
    value = R.irq_trigger_value(index, subindex)
    client.region_write(R.REGISTERS_REGION, R.REG_IRQ_TRIGGER, _U32.pack(value)).check()
    return True


def pytest_vfu_trigger_dma(
    client, device, direction: str, address: int, length: int, device_offset: int
):
    """Program the DMA engine and ring its doorbell; returns the doorbell's REGION_WRITE reply.

    The reply comes once the copy is done (the client serves the server's
    DMA_READ/DMA_WRITE meanwhile); it is an error reply with the copy's
    errno if the copy failed (e.g. EFAULT for unmapped client memory).
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be 'read' or 'write', got {direction!r}")
    regs = R.REGISTERS_REGION
    for offset, data in (
        (R.REG_DMA_DEV_OFFSET, _U64.pack(device_offset)),
        (R.REG_DMA_CLIENT_ADDR, _U64.pack(address)),
        (R.REG_DMA_LENGTH, _U32.pack(length)),
        (R.REG_DMA_DIRECTION, _U32.pack(_DIRECTIONS[direction])),
    ):
        client.region_write(regs, offset, data).check()
    return client.region_write(regs, R.REG_DMA_DOORBELL, _U32.pack(R.DMA_START))


def pytest_vfu_device_state(client, device):
    """BAR0's registers, both RAM regions and config space, concatenated."""
    parts = [client.region_read(R.REGISTERS_REGION, 0, R.REG_NOTIFY_COUNT + 4)]
    for region, size in (
        (R.RAM_REGION, R.RAM_SIZE),
        (R.DMA_RAM_REGION, R.DMA_RAM_SIZE),
        (R.CONFIG_REGION, R.CONFIG_SIZE),
    ):
        parts.append(client.region_read(region, 0, size))
    return b"".join(reply.check().body.data for reply in parts)
