"""The device's DMA, driven through the implementer's hook (``vfu_trigger_dma``): the
helpers of the cases that watch the server's DMA_READ/DMA_WRITE requests (dma_rw,
twin_socket)."""

from __future__ import annotations

import itertools

import pytest

from pytest_vfiouser.client import ErrorReply, Reply
from pytest_vfiouser.protocol import command_name

from ._support import accepted

SIZE = 0x4000  # each mapping
LENGTH = 0x1800  # each round trip (the device's buffer is used from offset 0)
SMALL_XFER = 4096  # the max_data_xfer_size a client negotiates to see requests split
_bases = itertools.count()


@pytest.fixture
def base() -> int:
    """A client DMA address range no other case of this module uses."""
    return 0x20_0000_0000 + next(_bases) * 0x1000_0000


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed * 31 + 1) & 0xFF for i in range(n))


def dma(vfu_hooks, client, direction: str, address: int, length: int, expect_ok: bool = True):
    """Have the device DMA ``length`` bytes (device buffer offset 0); the hook's result.

    With ``expect_ok``, a failed DMA (an error reply from the hook) fails the case."""
    what = (
        f"the device's DMA {direction} of [{address:#x}, +{length:#x}) "
        f"({'client memory to device' if direction == 'read' else 'device to client memory'})"
    )
    try:
        result = vfu_hooks.trigger_dma(client, direction, address, length, 0)
    except ErrorReply as e:
        if expect_ok:
            raise AssertionError(f"{what} failed: {e}") from e
        return e.reply
    if expect_ok and isinstance(result, Reply):
        assert result.ok, (
            f"{what} failed: the hook's request got an error reply, errno {result.error}"
        )
    return result


def round_trip(vfu_hooks, client, src: int, dst: int, length: int = LENGTH, seed: int = 0):
    """Pattern at ``src`` -> device -> ``dst``; returns (pattern, requests made meanwhile)."""
    data = pattern(length, seed)
    client.memory.write(src, data)
    mark = len(client.dma_requests)
    dma(vfu_hooks, client, "read", src, length)
    dma(vfu_hooks, client, "write", dst, length)
    return data, client.dma_requests[mark:]


def describe(req) -> str:
    where = f"{req.address:#x}+{req.count:#x}" if req.address is not None else "(undecodable)"
    return f"{command_name(req.command)} msg_id {req.msg_id} {where}"


def two_maps(client, base: int) -> tuple[int, int]:
    """Two mappings without fds, with an unmapped gap between them; their addresses."""
    a, b = base, base + 2 * SIZE
    for address in (a, b):
        accepted(client.dma_map(address, SIZE), f"DMA_MAP of [{address:#x}, +{SIZE:#x})")
    return a, b
