"""DEVICE_GET_INFO, DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS, DEVICE_GET_REGION_IO_FDS."""

from __future__ import annotations

from dataclasses import dataclass

from ._base import Payload, TrailingData
from ._errors import CodecError


@dataclass(slots=True, frozen=True)
class DeviceInfo(Payload, layout="IIII", size="SIZE"):
    """Request and reply (16 bytes); in a request all but argsz must be zero."""

    NAME = "DEVICE_GET_INFO"
    argsz: int
    flags: int = 0
    num_regions: int = 0
    num_irqs: int = 0


@dataclass(slots=True, frozen=True)
class IrqInfo(Payload, layout="IIII", size="SIZE"):
    """Request and reply (16 bytes)."""

    NAME = "DEVICE_GET_IRQ_INFO"
    argsz: int
    flags: int = 0
    index: int = 0
    count: int = 0


@dataclass(slots=True, frozen=True)
class SetIrqs(TrailingData, layout="IIIII", size="FIXED_SIZE"):
    """Request only (the reply has no payload). ``data`` is the DATA_BOOL bytes."""

    NAME = "DEVICE_SET_IRQS request"
    argsz: int
    flags: int
    index: int
    start: int
    count: int
    data: bytes = b""

    @property
    def bools(self) -> list[bool]:
        return [b != 0 for b in self.data]


@dataclass(slots=True, frozen=True)
class RegionIoFdsRequest(Payload, layout="IIII", size="SIZE"):
    NAME = "DEVICE_GET_REGION_IO_FDS request"
    argsz: int
    flags: int = 0
    index: int = 0
    count: int = 0


@dataclass(slots=True, frozen=True)
class IoFdSubRegion(Payload, layout="QQIIIIQ", size="SIZE"):
    """One sub-region (40 bytes). ``data`` is datamatch (ioeventfd) or user_data (ioregionfd)."""

    NAME = "Sub-Region IO FD info"
    offset: int
    size: int
    fd_index: int
    type: int
    flags: int = 0
    padding: int = 0
    data: int = 0

    @property
    def datamatch(self) -> int:
        return self.data

    @property
    def user_data(self) -> int:
        return self.data


@dataclass(slots=True, frozen=True)
class RegionIoFdsReply(Payload, layout="IIII", size="HEAD_SIZE"):
    """argsz, flags, index, count, then ``count`` sub-regions.

    Errata 3: entries start at payload offset 16 and their size is derived,
    (size - 16) / count, rather than assumed to be 40. A reply truncated by a
    small request argsz carries the 16-byte head only (``sub_regions`` empty).
    """

    NAME = "DEVICE_GET_REGION_IO_FDS reply"
    argsz: int
    flags: int
    index: int
    count: int
    sub_regions: tuple[IoFdSubRegion, ...] = ()
    entry_size: int = IoFdSubRegion.SIZE

    def pack(self) -> bytes:
        if self.entry_size < IoFdSubRegion.SIZE:
            raise CodecError(self.NAME, "entry_size", f"{self.entry_size} is below 40")
        pad = b"\0" * (self.entry_size - IoFdSubRegion.SIZE)
        return self._pack_fixed() + b"".join(s.pack() + pad for s in self.sub_regions)

    @classmethod
    def unpack(cls, data: bytes) -> RegionIoFdsReply:
        (argsz, flags, index, count), rest = cls._split(data)
        if not rest:
            return cls(argsz, flags, index, count)
        if count == 0:
            raise CodecError(cls.NAME, "count", f"is 0, but {len(rest)} bytes of entries follow")
        entry_size, remainder = divmod(len(rest), count)
        if remainder or entry_size < IoFdSubRegion.SIZE:
            raise CodecError(
                cls.NAME, "count", f"{count} entries do not fit the {len(rest)} bytes that follow"
            )
        subs = tuple(
            IoFdSubRegion.unpack(rest[i : i + IoFdSubRegion.SIZE])
            for i in range(0, len(rest), entry_size)
        )
        return cls(argsz, flags, index, count, subs, entry_size)
