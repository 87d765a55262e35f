"""VFIO_USER_DIRTY_PAGES (0.9.1): START, STOP, GET_BITMAP."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ._base import Payload
from ._dma import VfioBitmap
from ._errors import CodecError


@dataclass(slots=True, frozen=True)
class BitmapRange(Payload):
    """iova u64, size u64, then the 16-byte VFIO Bitmap: 32 bytes (errata 4).

    The spec's table gives ``bitmap`` 24 bytes (the kernel's struct with a
    pointer); on the wire implementations send pgsize and size only.
    """

    NAME = "VFIO Bitmap Range"
    SIZE: ClassVar[int] = 32
    _layout = struct.Struct("<QQQQ")
    iova: int
    size: int
    bitmap: VfioBitmap

    def pack(self) -> bytes:
        try:
            return self._layout.pack(self.iova, self.size, self.bitmap.pgsize, self.bitmap.size)
        except struct.error as e:
            raise CodecError(self.NAME, "fields", str(e)) from None

    @classmethod
    def unpack(cls, data: bytes) -> BitmapRange:
        (iova, size, pgsize, bsize), _ = cls._split(data, minimum_only=False)
        return cls(iova, size, VfioBitmap(pgsize, bsize))


@dataclass(slots=True, frozen=True)
class DirtyPages(Payload, layout="II", size="FIXED_SIZE"):
    """Request and GET_BITMAP reply: argsz, flags, then for GET_BITMAP the range.

    In a reply, ``bitmap_data`` is the dirty bitmap after the range, one bit
    a page of ``range.bitmap.pgsize``.
    """

    NAME = "DIRTY_PAGES"
    argsz: int
    flags: int
    range: BitmapRange | None = None
    bitmap_data: bytes = b""

    def pack(self) -> bytes:
        out = self._pack_fixed()
        if self.range is not None:
            out += self.range.pack() + self.bitmap_data
        elif self.bitmap_data:
            raise CodecError(self.NAME, "bitmap_data", "given without a bitmap range")
        return out

    @classmethod
    def unpack(cls, data: bytes) -> DirtyPages:
        values, rest = cls._split(data)
        if not rest:
            return cls(*values)
        if len(rest) < BitmapRange.SIZE:
            raise CodecError(
                cls.NAME, "range", f"{len(rest)} bytes follow; a bitmap range needs 32"
            )
        rng = BitmapRange.unpack(rest[: BitmapRange.SIZE])
        bits = rest[BitmapRange.SIZE :]
        if bits and len(bits) != rng.bitmap.size:
            raise CodecError(
                cls.NAME,
                "range.bitmap.size",
                f"is {rng.bitmap.size}, but {len(bits)} bitmap bytes follow",
            )
        return cls(*values, rng, bits)


def bitmap_bytes(size: int, pgsize: int) -> int:
    """Bytes of a bitmap covering ``size`` bytes with one bit a page, rounded up to u64s.

    This is how the kernel and libvfio-user size dirty bitmaps.
    """
    pages = -(-size // pgsize)
    return -(-pages // 64) * 8
