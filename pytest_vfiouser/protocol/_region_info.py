"""DEVICE_GET_REGION_INFO and its capability chain."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import ClassVar

from ._base import Payload
from ._constants import CAP_HEADER_SIZE, REGION_INFO_SIZE, RegionCapId
from ._errors import CodecError

_NAME = "DEVICE_GET_REGION_INFO"
_CAP_HEADER = struct.Struct("<HHI")


@dataclass(slots=True, frozen=True)
class SparseMmapCap:
    """VFIO_REGION_INFO_CAP_SPARSE_MMAP: (offset, size) areas, each two u64 (errata 1)."""

    areas: tuple[tuple[int, int], ...]
    version: int = 1
    reserved: int = 0
    id: ClassVar[int] = RegionCapId.SPARSE_MMAP

    def body(self) -> bytes:
        head = struct.pack("<II", len(self.areas), self.reserved)
        return head + b"".join(struct.pack("<QQ", o, s) for o, s in self.areas)

    @classmethod
    def from_body(cls, version: int, body: bytes, where: str) -> SparseMmapCap:
        if len(body) < 8:
            raise CodecError(_NAME, where, "sparse mmap capability shorter than nr_areas")
        nr_areas, reserved = struct.unpack_from("<II", body)
        if nr_areas * 16 > len(body) - 8:
            raise CodecError(
                _NAME, f"{where}.nr_areas", f"{nr_areas} areas do not fit in the reply"
            )
        areas = tuple(struct.unpack_from("<QQ", body, 8 + 16 * i) for i in range(nr_areas))
        return cls(areas, version, reserved)

    @property
    def size(self) -> int:
        return CAP_HEADER_SIZE + 8 + 16 * len(self.areas)


@dataclass(slots=True, frozen=True)
class RegionTypeCap:
    """VFIO_REGION_INFO_CAP_TYPE: type and subtype (u32 each)."""

    type: int
    subtype: int
    version: int = 1
    id: ClassVar[int] = RegionCapId.TYPE

    def body(self) -> bytes:
        return struct.pack("<II", self.type, self.subtype)

    @classmethod
    def from_body(cls, version: int, body: bytes, where: str) -> RegionTypeCap:
        if len(body) < 8:
            raise CodecError(_NAME, where, "region type capability shorter than 8 bytes")
        return cls(*struct.unpack_from("<II", body), version)

    @property
    def size(self) -> int:
        return CAP_HEADER_SIZE + 8


@dataclass(slots=True, frozen=True)
class UnknownCap:
    """A capability id the codec does not know, kept raw."""

    id: int
    data: bytes
    version: int = 1

    def body(self) -> bytes:
        return self.data

    @classmethod
    def from_body(cls, cap_id: int, version: int, body: bytes) -> UnknownCap:
        return cls(cap_id, body, version)

    @property
    def size(self) -> int:
        return CAP_HEADER_SIZE + len(self.data)


RegionCap = SparseMmapCap | RegionTypeCap | UnknownCap
_KNOWN_CAPS = {RegionCapId.SPARSE_MMAP: SparseMmapCap, RegionCapId.TYPE: RegionTypeCap}


@dataclass(slots=True, frozen=True)
class RegionInfo(Payload, layout="IIIIQQ"):
    """Request (32 bytes, only argsz and index set) and reply (32 + capabilities).

    ``caps`` is the chain in the order it is linked. ``pack`` lays the chain
    out back to back from ``cap_offset``; ``unpack`` follows ``next`` wherever
    it points, refusing headers outside the payload and loops, and ends each
    capability's body where the next capability in the payload begins. A reply cut
    short by a small request argsz has no capabilities in it, whatever
    cap_offset says: ``caps`` is then empty.
    """

    NAME = _NAME
    argsz: int
    flags: int = 0
    index: int = 0
    cap_offset: int = 0
    size: int = 0
    offset: int = 0
    caps: tuple[RegionCap, ...] = ()
    # Where each capability was found (set by unpack; not part of equality).
    cap_offsets: tuple[int, ...] = field(default=(), compare=False)

    def full_size(self) -> int:
        """argsz a reply must state: the structure plus its capabilities."""
        if not self.caps:
            return REGION_INFO_SIZE
        return self.cap_offset + sum(c.size for c in self.caps)

    def pack(self) -> bytes:
        out = bytearray(self._pack_fixed())
        if not self.caps:
            return bytes(out)
        if self.cap_offset < REGION_INFO_SIZE:
            raise CodecError(
                self.NAME,
                "cap_offset",
                f"{self.cap_offset} would overlap the region info structure",
            )
        out += b"\0" * (self.cap_offset - REGION_INFO_SIZE)
        pos = self.cap_offset
        for i, cap in enumerate(self.caps):
            nxt = pos + cap.size if i + 1 < len(self.caps) else 0
            try:
                out += _CAP_HEADER.pack(cap.id, cap.version, nxt) + cap.body()
            except struct.error as e:
                raise CodecError(self.NAME, f"caps[{i}]", str(e)) from None
            pos += cap.size
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes) -> RegionInfo:
        values, rest = cls._split(data)
        info = cls(*values)
        if not rest or info.cap_offset == 0:
            if rest:
                raise CodecError(
                    cls.NAME, "cap_offset", f"is 0, but {len(rest)} bytes follow the structure"
                )
            return info
        data = bytes(data)
        # First the chain, then the bodies: a body runs from its header to the
        # next capability in the payload (or the payload's end), whatever order
        # the chain visits them in, so that no byte is copied into two bodies
        # (a chain linked backwards would otherwise copy the tail of the
        # payload once per capability: quadratic in the payload's size).
        offsets, seen = [], set()
        pos = info.cap_offset
        while pos:
            if pos in seen:
                raise CodecError(cls.NAME, "next", f"capability chain loops back to {pos}")
            if pos < REGION_INFO_SIZE or pos + CAP_HEADER_SIZE > len(data):
                raise CodecError(
                    cls.NAME,
                    "next" if seen else "cap_offset",
                    f"{pos} is outside the {len(data)}-byte reply",
                )
            seen.add(pos)
            offsets.append(pos)
            pos = _CAP_HEADER.unpack_from(data, pos)[2]
        starts = sorted(offsets)
        end_of = dict(zip(starts, starts[1:] + [len(data)], strict=True))
        caps = []
        for pos in offsets:
            cap_id, version, _ = _CAP_HEADER.unpack_from(data, pos)
            body = data[pos + CAP_HEADER_SIZE : end_of[pos]]
            known = _KNOWN_CAPS.get(cap_id)
            cap = (
                known.from_body(version, body, f"capability at {pos}")
                if known
                else UnknownCap.from_body(cap_id, version, body)
            )
            caps.append(cap)
        return replace(info, caps=tuple(caps), cap_offsets=tuple(offsets))

    def cap(self, cls: type) -> RegionCap | None:
        """The first capability of a given class, if present."""
        return next((c for c in self.caps if isinstance(c, cls)), None)
