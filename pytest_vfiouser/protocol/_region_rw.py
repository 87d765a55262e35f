"""REGION_READ, REGION_WRITE and (0.9.2) REGION_WRITE_MULTI."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ._base import CountedData, Payload
from ._errors import CodecError


@dataclass(slots=True, frozen=True)
class RegionAccess(Payload, layout="QII", size="SIZE"):
    """offset u64, region u32, count u32: the 16 bytes every region access starts with."""

    offset: int
    region: int
    count: int


@dataclass(slots=True, frozen=True)
class RegionRead(RegionAccess):
    NAME = "REGION_READ request"


@dataclass(slots=True, frozen=True)
class RegionWriteReply(RegionAccess):
    NAME = "REGION_WRITE reply"


@dataclass(slots=True, frozen=True)
class _RegionData(CountedData):
    """offset, region, count, then exactly ``count`` bytes of data."""

    _layout = RegionAccess._layout
    _fields = RegionAccess._fields
    offset: int
    region: int
    count: int
    data: bytes = b""


@dataclass(slots=True, frozen=True)
class RegionReadReply(_RegionData):
    NAME = "REGION_READ reply"


@dataclass(slots=True, frozen=True)
class RegionWrite(_RegionData):
    NAME = "REGION_WRITE request"


@dataclass(slots=True, frozen=True)
class SingleWrite:
    """One entry of REGION_WRITE_MULTI: 24 bytes, at most 8 bytes of data."""

    offset: int
    region: int
    count: int
    data: bytes  # the 8 data bytes as sent; the first ``count`` are written

    SIZE: ClassVar[int] = 24

    @classmethod
    def of(cls, offset: int, region: int, payload: bytes) -> SingleWrite:
        """A write of ``payload`` (at most 8 bytes), padded as sent on the wire."""
        return cls(offset, region, len(payload), payload.ljust(8, b"\0"))

    def pack(self) -> bytes:
        if len(self.data) != 8:
            raise CodecError(
                "REGION_WRITE_MULTI request", "data", f"is {len(self.data)} bytes; the slot is 8"
            )
        try:
            return struct.pack("<QII", self.offset, self.region, self.count) + self.data
        except struct.error as e:
            raise CodecError("REGION_WRITE_MULTI request", "write", str(e)) from None


@dataclass(slots=True, frozen=True)
class RegionWriteMulti(Payload):
    """0.9.2: wr_cnt u64 then wr_cnt 24-byte writes."""

    NAME = "REGION_WRITE_MULTI request"
    writes: tuple[SingleWrite, ...]

    def pack(self) -> bytes:
        return struct.pack("<Q", len(self.writes)) + b"".join(w.pack() for w in self.writes)

    @classmethod
    def unpack(cls, data: bytes) -> RegionWriteMulti:
        data = bytes(data)
        if len(data) < 8:
            raise CodecError(cls.NAME, "size", f"payload is {len(data)} bytes, expected at least 8")
        (wr_cnt,) = struct.unpack_from("<Q", data)
        body = len(data) - 8
        if body % SingleWrite.SIZE or wr_cnt != body // SingleWrite.SIZE:
            raise CodecError(cls.NAME, "wr_cnt", f"is {wr_cnt}, but {body} bytes of writes follow")
        writes = []
        for pos in range(8, len(data), SingleWrite.SIZE):
            offset, region, count = struct.unpack_from("<QII", data, pos)
            writes.append(SingleWrite(offset, region, count, data[pos + 16 : pos + 24]))
        return cls(tuple(writes))


@dataclass(slots=True, frozen=True)
class RegionWriteMultiReply(Payload, layout="Q"):
    NAME = "REGION_WRITE_MULTI reply"
    wr_cnt: int
