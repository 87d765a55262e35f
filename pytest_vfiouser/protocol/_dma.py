"""DMA_MAP, DMA_UNMAP (with the VFIO Bitmap), and the server's DMA_READ/DMA_WRITE."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._base import CountedData, Payload
from ._errors import CodecError


@dataclass(slots=True, frozen=True)
class DmaMap(Payload, layout="IIQQQ", size="SIZE"):
    """Request only; the reply has no payload. argsz is 32."""

    NAME = "DMA_MAP request"
    argsz: int
    flags: int
    offset: int
    address: int
    size: int


@dataclass(slots=True, frozen=True)
class VfioBitmap(Payload, layout="QQ"):
    """pgsize and size (in bytes, of the bitmap that follows)."""

    NAME = "VFIO Bitmap"
    pgsize: int
    size: int


@dataclass(slots=True, frozen=True)
class DmaUnmap(Payload, layout="IIQQ", size="ENTRY_SIZE"):
    """Request and reply: the 24-byte entry, then optionally the VFIO Bitmap.

    In a reply with the bitmap, ``bitmap_data`` holds the dirty page bitmap
    (``bitmap.size`` bytes); in a request it is empty.
    """

    NAME = "DMA_UNMAP"
    argsz: int
    flags: int
    address: int
    size: int
    bitmap: VfioBitmap | None = None
    bitmap_data: bytes = b""

    def pack(self) -> bytes:
        out = self._pack_fixed()
        if self.bitmap is not None:
            out += self.bitmap.pack() + self.bitmap_data
        elif self.bitmap_data:
            raise CodecError(self.NAME, "bitmap_data", "given without a VFIO Bitmap")
        return out

    @classmethod
    def unpack(cls, data: bytes) -> DmaUnmap:
        values, rest = cls._split(data)
        if not rest:
            return cls(*values)
        if len(rest) < VfioBitmap._layout.size:
            raise CodecError(
                cls.NAME, "bitmap", f"{len(rest)} bytes follow the entry; the VFIO Bitmap needs 16"
            )
        bitmap = VfioBitmap(*VfioBitmap._layout.unpack_from(rest))
        bits = rest[VfioBitmap._layout.size :]
        if bits and len(bits) != bitmap.size:
            raise CodecError(
                cls.NAME, "bitmap.size", f"is {bitmap.size}, but {len(bits)} bitmap bytes follow"
            )
        return cls(*values, bitmap, bits)


@dataclass(slots=True, frozen=True)
class DmaRead(Payload, layout="QQ"):
    """Server-to-client request: read ``count`` bytes of client memory at ``address``."""

    NAME = "DMA_READ request"
    address: int
    count: int


@dataclass(slots=True, frozen=True)
class _AddressCountData(CountedData, layout="QQ"):
    """address, count, then exactly ``count`` bytes of data."""

    address: int
    count: int
    data: bytes = b""


@dataclass(slots=True, frozen=True)
class DmaReadReply(_AddressCountData):
    NAME = "DMA_READ reply"


@dataclass(slots=True, frozen=True)
class DmaWrite(_AddressCountData):
    """Server-to-client request: write ``data`` to client memory at ``address``."""

    NAME = "DMA_WRITE request"


@dataclass(slots=True, frozen=True)
class DmaWriteReply(Payload):
    """address u64, count: the spec's table says 4 bytes, the request's is 8.

    Errata 2: both 12- and 16-byte replies are accepted; ``count_size`` says
    which was seen (and which ``pack`` writes).
    """

    NAME = "DMA_WRITE reply"
    address: int
    count: int
    count_size: int = 8

    def pack(self) -> bytes:
        fmt = {8: "<QQ", 4: "<QI"}.get(self.count_size)
        if fmt is None:
            raise CodecError(self.NAME, "count_size", f"must be 4 or 8, got {self.count_size}")
        try:
            return struct.pack(fmt, self.address, self.count)
        except struct.error as e:
            raise CodecError(self.NAME, "address/count", str(e)) from None

    @classmethod
    def unpack(cls, data: bytes) -> DmaWriteReply:
        data = bytes(data)
        if len(data) == 16:
            return cls(*struct.unpack("<QQ", data), 8)
        if len(data) == 12:
            return cls(*struct.unpack("<QI", data), 4)
        raise CodecError(cls.NAME, "size", f"payload is {len(data)} bytes, expected 12 or 16")
