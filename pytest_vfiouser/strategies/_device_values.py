"""Field values at the edges of the device under test.

The fuzzing strategies weight field values to the edges *of the device under
test* (its region sizes, IRQ counts, index counts), so they take the
discovered device (``DeviceModel``: ``.info``, ``.regions``, ``.irqs``,
``.capabilities``) as a parameter.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ._integers import u32s

PAGE = 4096
_U32_MAX = (1 << 32) - 1
_U64 = 1 << 64


def _caps(device):
    return getattr(device, "capabilities", None)


def device_max_data_xfer_size(device) -> int:
    caps = _caps(device)
    return caps.max_data_xfer_size if caps is not None else 1 << 20


def device_max_msg_fds(device) -> int:
    caps = _caps(device)
    return caps.max_msg_fds if caps is not None else 1


def _pick(edges: Iterable[int], lo: int, hi: int) -> SearchStrategy[int]:
    """One of ``edges`` (clipped to [lo, hi]), or any integer in [lo, hi]."""
    return _pick_cached(tuple(sorted({v for v in edges if lo <= v <= hi})), lo, hi)


@functools.cache
def _pick_cached(values: tuple[int, ...], lo: int, hi: int) -> SearchStrategy[int]:
    return (
        st.one_of(st.sampled_from(values), st.integers(lo, hi)) if values else st.integers(lo, hi)
    )


def _index_values(present: Iterable[int], num: int) -> tuple[list[int], list[int]]:
    known = sorted(present) or [0]
    past = [num, num + 1, 2 * num + 1, 0x7FFFFFFF, 0x80000000, _U32_MAX]
    return known, [v for v in past if v <= _U32_MAX]


def region_indexes(device) -> SearchStrategy[int]:
    """Region indexes: mostly ones the device has, else just past the end, or any u32."""
    known, past = _index_values(device.regions, device.info.num_regions)
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.sampled_from(past), u32s())


def irq_indexes(device) -> SearchStrategy[int]:
    """IRQ indexes: mostly ones the device has, else just past the end, or any u32."""
    known, past = _index_values(device.irqs, device.info.num_irqs)
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.sampled_from(past), u32s())


@functools.cache
def region_offsets(size: int) -> SearchStrategy[int]:
    """Offsets into a region of ``size`` bytes: inside it, at and around its end,
    and near 2**64 (where offset + count wraps)."""
    edges = [
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        16,
        size - 8,
        size - 4,
        size - 2,
        size - 1,
        size,
        size + 1,
        size + 4096,
        1 << 32,
        1 << 63,
        _U64 - 8,
        _U64 - 1,
    ]
    inside = st.integers(0, max(0, size - 1))
    return st.one_of(inside, st.sampled_from(sorted({v for v in edges if 0 <= v < _U64})))


@functools.cache
def access_counts(xfer: int, size: int = 0, most: int = 256) -> SearchStrategy[int]:
    """Counts of a region access: small, the region's size, ``xfer`` (the server's
    max_data_xfer_size) and its neighbours, u32 edges."""
    edges = [
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        16,
        64,
        4096,
        size,
        size + 1,
        xfer,
        xfer + 1,
        0x7FFFFFFF,
        _U32_MAX,
    ]
    return st.one_of(
        st.integers(1, most), st.sampled_from(sorted({v for v in edges if 0 <= v <= _U32_MAX}))
    )


@functools.cache
def dma_addresses(base: int = 1 << 32, pages: int = 256) -> SearchStrategy[int]:
    """DMA addresses: page-aligned in a window (so that maps overlap), or edges."""
    edges = [0, PAGE, base - PAGE, 1 << 47, 1 << 63, _U64 - PAGE, _U64 - 1, 1]
    return st.one_of(
        st.integers(0, pages - 1).map(lambda p: base + p * PAGE), st.sampled_from(edges)
    )


@functools.cache
def dma_sizes() -> SearchStrategy[int]:
    """DMA sizes: whole pages mostly, else 0, 1, unaligned, huge."""
    edges = [0, 1, PAGE - 1, PAGE + 1, 1 << 32, 1 << 63, _U64 - PAGE, _U64 - 1]
    return st.one_of(st.integers(1, 16).map(lambda n: n * PAGE), st.sampled_from(edges))


_ARGSZ_EDGES = [
    0,
    1,
    4,
    8,
    15,
    16,
    17,
    20,
    23,
    24,
    31,
    32,
    33,
    40,
    48,
    64,
    4096,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    _U32_MAX,
]


@functools.cache
def argsz_values(expected: int) -> SearchStrategy[int]:
    """argsz: mostly the right value, else its neighbours and the edges."""
    near = [expected - 8, expected - 1, expected + 1, expected + 8]
    return st.one_of(
        st.just(expected),
        st.just(expected),
        st.sampled_from(sorted({v for v in [*near, *_ARGSZ_EDGES] if 0 <= v <= _U32_MAX})),
    )
