"""VFIO_USER_DIRTY_PAGES (0.9.1), as the client sends it."""

from __future__ import annotations

import struct

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import Command, DirtyPagesFlags

from ._support import listed, need, sent

_HEAD = struct.Struct("<II")  # argsz, flags
_RANGE = 32  # iova, size, then the VFIO Bitmap (pgsize, size): errata 4


def _requests(sessions):
    return [
        (m, *_HEAD.unpack_from(m.payload))
        for _, m in need(sent(sessions, Command.DIRTY_PAGES), "DIRTY_PAGES")
        if len(m.payload) >= _HEAD.size
    ]


@case("client/dirty_pages/flags-exclusive", MUST, revisions=("0.9.1",))
def test_flags_exclusive(vfu_sessions):
    """Each DIRTY_PAGES sets exactly one of START, STOP and GET_BITMAP.

    Spec (VFIO_USER_DIRTY_PAGES): "These flags are mutually exclusive with each other."
    """
    bad = [
        f"{m.describe()}: flags {flags:#x}"
        for m, _, flags in _requests(vfu_sessions)
        if bin(flags & 7).count("1") != 1
    ]
    assert not bad, listed(bad)


@case("client/dirty_pages/bitmap-range-follows", MUST, revisions=("0.9.1",))
def test_bitmap_range_follows(vfu_sessions):
    """A GET_BITMAP carries the VFIO Bitmap Range right after its 8 bytes.

    Spec (VFIO_USER_DIRTY_PAGES): "VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP requests the
    server to return the dirty bitmap for a specific IOVA range. The IOVA range is
    specified by a "VFIO Bitmap Range" structure, which must immediately follow this
    "VFIO Dirty Pages" structure." (Errata 4: the range is 32 bytes on the wire.)
    """
    gets = need(
        [m for m, _, flags in _requests(vfu_sessions) if flags == DirtyPagesFlags.GET_BITMAP],
        "DIRTY_PAGES GET_BITMAP",
    )
    bad = [
        f"{m.describe()}: {len(m.payload)} bytes, not 8 + {_RANGE}"
        for m in gets
        if len(m.payload) != _HEAD.size + _RANGE
    ]
    assert not bad, listed(bad)
