"""Payloads of the DMA commands (DMA_MAP, DMA_UNMAP, DMA_READ, DMA_WRITE) and of
DIRTY_PAGES, which share the VFIO bitmap."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    BitmapRange,
    DirtyPages,
    DirtyPagesFlags,
    DmaMap,
    DmaMapFlags,
    DmaRead,
    DmaReadReply,
    DmaUnmap,
    DmaUnmapFlags,
    DmaWrite,
    DmaWriteReply,
    VfioBitmap,
)

from ._collections import data_bytes
from ._integers import flags_of, powers_of_two, u32s, u64s, uints


def dma_maps() -> SearchStrategy[DmaMap]:
    return st.builds(
        DmaMap,
        argsz=u32s(),
        flags=flags_of(DmaMapFlags),
        offset=u64s(),
        address=u64s(),
        size=u64s(),
    )


def vfio_bitmaps(size: SearchStrategy[int] | None = None) -> SearchStrategy[VfioBitmap]:
    return st.builds(
        VfioBitmap, pgsize=st.one_of(powers_of_two(), u64s()), size=u64s() if size is None else size
    )


# What follows a DMA_UNMAP entry or the DIRTY_PAGES head.
BITMAP_KINDS = ("none", "header", "data")


def _bitmap_and_data(
    bitmaps: SearchStrategy, with_size: Callable[[object, int], object], kinds: tuple[str, ...]
) -> SearchStrategy[tuple[object, bytes]]:
    """(None, b""); (header, b""), as in a request; or (header, data) with the
    header's size set to the length of the data, as in a reply."""
    choices = {
        "none": st.just((None, b"")),
        "header": bitmaps.map(lambda b: (b, b"")),
        "data": st.builds(
            lambda b, data: (with_size(b, len(data)), data), bitmaps, data_bytes(min_size=1)
        ),
    }
    return st.one_of(*[choices[k] for k in kinds])


def dma_unmaps(bitmap: tuple[str, ...] = BITMAP_KINDS) -> SearchStrategy[DmaUnmap]:
    """Requests and replies, with and without the VFIO Bitmap and its data.

    ``bitmap`` selects among "none" (24 bytes), "header" (24 + 16, a request)
    and "data" (24 + 16 + the bitmap, a reply).
    """
    return st.builds(
        lambda fixed, bm: DmaUnmap(*fixed, *bm),
        st.tuples(u32s(), flags_of(DmaUnmapFlags), u64s(), u64s()),
        _bitmap_and_data(vfio_bitmaps(), lambda b, n: dataclasses.replace(b, size=n), bitmap),
    )


def dma_reads() -> SearchStrategy[DmaRead]:
    return st.builds(DmaRead, address=u64s(), count=u64s())


def _address_count_data(cls) -> SearchStrategy:
    return st.builds(lambda address, data: cls(address, len(data), data), u64s(), data_bytes())


def dma_read_replies() -> SearchStrategy[DmaReadReply]:
    return _address_count_data(DmaReadReply)


def dma_writes() -> SearchStrategy[DmaWrite]:
    return _address_count_data(DmaWrite)


def dma_write_replies(count_size: int | None = None) -> SearchStrategy[DmaWriteReply]:
    """Both sizes of reply (errata 2): count as u32 (12 bytes) or u64 (16 bytes)."""
    sizes = (4, 8) if count_size is None else (count_size,)
    return st.one_of(
        *[
            st.builds(
                DmaWriteReply, address=u64s(), count=uints(8 * size), count_size=st.just(size)
            )
            for size in sizes
        ]
    )


def bitmap_ranges(bitmap_size: SearchStrategy[int] | None = None) -> SearchStrategy[BitmapRange]:
    return st.builds(BitmapRange, iova=u64s(), size=u64s(), bitmap=vfio_bitmaps(bitmap_size))


def _range_with_bitmap_size(rng: BitmapRange, size: int) -> BitmapRange:
    return dataclasses.replace(rng, bitmap=dataclasses.replace(rng.bitmap, size=size))


def dirty_pages(bitmap: tuple[str, ...] = BITMAP_KINDS) -> SearchStrategy[DirtyPages]:
    """START/STOP (no range), GET_BITMAP requests (range) and replies (range, bitmap).

    ``bitmap`` selects among "none" (8 bytes), "header" (8 + 32, a GET_BITMAP
    request) and "data" (8 + 32 + the bitmap, its reply).
    """
    return st.builds(
        lambda fixed, rb: DirtyPages(*fixed, *rb),
        st.tuples(u32s(), flags_of(DirtyPagesFlags)),
        _bitmap_and_data(bitmap_ranges(), _range_with_bitmap_size, bitmap),
    )
