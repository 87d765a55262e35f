"""VFIO_USER_DEVICE_RESET: resetting the device.

Only for devices that support reset (VFIO_DEVICE_FLAGS_RESET, or the profile's
``features.reset``). What the device holds after a reset comes from the profile
(``reset_values`` of its regions); offsets the profile also lists as scratch are
first changed, so that the reset has something to undo.
"""

from __future__ import annotations

import itertools

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import HEADER_SIZE, Command, RegionFlags

from ._support import accepted, assert_framed

SIZE = 0x4000
_bases = itertools.count()


@pytest.fixture
def base() -> int:
    """A client DMA address range no other case of this module uses."""
    return 0x30_0000_0000 + next(_bases) * 0x1000_0000


def _reset(client):
    reply = client.reset()
    accepted(reply, "DEVICE_RESET")
    return reply


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    lo, hi = max(a[0], b[0]), min(a[0] + a[1], b[0] + b[1])
    return (lo, hi - lo) if lo < hi else None


@case("reset/reply-header-only", MUST, requires=("reset",))
def test_reply_header_only(vfu_client):
    """DEVICE_RESET succeeds with a reply that has no payload.

    Spec (VFIO_USER_DEVICE_RESET): "This command message is sent from the client to the
    server to reset the device. Neither the request or reply have a payload."
    """
    reply = _reset(vfu_client)
    assert reply.command == Command.DEVICE_RESET
    assert not reply.payload and reply.msg_size == HEADER_SIZE, (
        f"the DEVICE_RESET reply carries {len(reply.payload)} payload bytes; it has none"
    )
    assert_framed(vfu_client, "DEVICE_RESET")


@case("reset/reset-values", MUST, requires=("reset",))
def test_reset_values(vfu_client, vfu_device, vfu_region_index):
    """After DEVICE_RESET the region holds the reset values the device profile states
    (scratch bytes among them are changed first).

    Spec (VFIO_USER_DEVICE_RESET): "This command message is sent from the client to the
    server to reset the device."
    """
    profile = vfu_device.region_profile(vfu_region_index)
    values = profile.reset_values if profile is not None else ()
    if not values:
        pytest.skip(f"needs profile: regions[index={vfu_region_index}].reset_values")
    info = vfu_device.region(vfu_region_index)
    if info is None or not info.flags & RegionFlags.READ:
        pytest.skip(f"region {vfu_region_index} is not readable")
    changed = []
    if info.flags & RegionFlags.WRITE:
        for offset, data in values:
            for scratch in vfu_device.scratch(vfu_region_index):
                part = _overlap((offset, len(data)), scratch)
                if part is None:
                    continue
                start, n = part
                old = data[start - offset : start - offset + n]
                accepted(
                    vfu_client.region_write(vfu_region_index, start, bytes(b ^ 0xA5 for b in old)),
                    f"REGION_WRITE of region {vfu_region_index} [{start:#x}, +{n:#x}) "
                    "(a scratch range)",
                )
                changed.append((start, n))
    _reset(vfu_client)
    for offset, expected in values:
        reply = accepted(
            vfu_client.region_read(vfu_region_index, offset, len(expected)),
            f"REGION_READ of region {vfu_region_index} [{offset:#x}, +{len(expected):#x})",
        )
        got = reply.body.data
        written = [c for c in changed if _overlap(c, (offset, len(expected)))]
        assert got == expected, (
            f"after DEVICE_RESET, region {vfu_region_index} holds {got.hex()} at {offset:#x}; "
            f"the profile's reset value is {expected.hex()}"
            + (f" (the case had written {written} before the reset)" if written else "")
        )


@case("reset/dma-map-survives", SHOULD, requires=("reset",))
def test_dma_map_survives(vfu_client, base):
    """A DMA mapping made before DEVICE_RESET still exists after it: DMA_UNMAP of exactly
    that range succeeds, once (the positive control: an unmap of a range never mapped is
    refused, or the case cannot tell a mapping that exists from one that does not).

    Spec (VFIO_USER_DMA_UNMAP): "This command message is sent by the client to the server
    to inform it that a DMA region, previously made available via a VFIO_USER_DMA_MAP
    command message, is no longer available for DMA." The spec ends a mapping with
    DMA_UNMAP (or a client disconnect), not with a device reset; VFIO's own device reset
    leaves the IOMMU mappings alone.
    """
    never = base + 8 * SIZE
    if vfu_client.dma_unmap(never, SIZE).ok:
        pytest.skip(
            f"cannot judge: the server accepted a DMA_UNMAP of [{never:#x}, +{SIZE:#x}), "
            "never mapped, so an unmap cannot show whether a mapping exists"
        )
    accepted(vfu_client.dma_map(base, SIZE), f"DMA_MAP of [{base:#x}, +{SIZE:#x})")
    _reset(vfu_client)
    reply = vfu_client.dma_unmap(base, SIZE)
    assert reply.ok, (
        f"after DEVICE_RESET, DMA_UNMAP of the mapping [{base:#x}, +{SIZE:#x}) made before "
        f"it was refused (errno {reply.error}): the reset dropped the client's DMA mapping"
    )
    assert not vfu_client.dma_unmap(base, SIZE).ok, (
        f"a second DMA_UNMAP of [{base:#x}, +{SIZE:#x}) succeeded too: the server does not "
        "tell mapped ranges from unmapped ones"
    )


@case("reset/dma-still-works", SHOULD, requires=("reset", "dma_engine"))
def test_dma_still_works(vfu_client, vfu_hooks, base):
    """DMA to memory mapped before DEVICE_RESET still works after it.

    Spec (VFIO_USER_DMA_MAP): "It must be sent before the server can perform any DMA to the
    client." The spec ends a mapping with DMA_UNMAP (or a client disconnect), not with a
    device reset.
    """
    a, b = base, base + 2 * SIZE
    for address in (a, b):
        accepted(vfu_client.dma_map(address, SIZE), f"DMA_MAP of [{address:#x}, +{SIZE:#x})")
    _reset(vfu_client)
    data = bytes((i * 11 + 3) & 0xFF for i in range(0x800))
    vfu_client.memory.write(a, data)
    for direction, address in (("read", a), ("write", b)):
        result = vfu_hooks.trigger_dma(vfu_client, direction, address, len(data), 0)
        if hasattr(result, "ok"):
            assert result.ok, (
                f"after DEVICE_RESET, the device's DMA {direction} of memory "
                f"mapped before it failed (errno {result.error})"
            )
    assert vfu_client.memory.read(b, len(data)) == data, (
        "after DEVICE_RESET, DMA through mappings made before it did not move the data intact"
    )
