"""Migration: the 0.9.1 migration region, and 0.9.2's DEVICE_FEATURE and MIG_DATA."""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from ._base import CountedData, Payload, TrailingData, check_exact
from ._constants import DEVICE_FEATURE_MASK, DeviceFeatureFlags
from ._errors import CodecError

# ---- 0.9.1: struct vfio_device_migration_info at offset 0 of the migration region


class MigrationStateBits(enum.IntFlag):
    RUNNING = 1 << 0
    SAVING = 1 << 1
    RESUMING = 1 << 2


class MigrationStateV1(enum.IntEnum):
    """device_state values of the 0.9.1 table (RESUMING/SAVING/RUNNING bits)."""

    STOPPED = 0b000
    RUNNING = 0b001
    STOP_AND_COPY = 0b010
    PRE_COPY = 0b011
    RESUMING = 0b100
    INVALID_101 = 0b101
    ERROR = 0b110
    INVALID_111 = 0b111


V1 = MigrationStateV1
# The spec's table of valid transitions, read row (from) by column (to).
V1_TRANSITIONS: frozenset[tuple[V1, V1]] = frozenset(
    {
        (V1.STOPPED, V1.RUNNING),
        (V1.RUNNING, V1.STOPPED),
        (V1.RUNNING, V1.STOP_AND_COPY),
        (V1.RUNNING, V1.PRE_COPY),
        (V1.RUNNING, V1.RESUMING),
        (V1.STOP_AND_COPY, V1.STOPPED),
        (V1.STOP_AND_COPY, V1.RUNNING),
        (V1.PRE_COPY, V1.STOP_AND_COPY),
        (V1.RESUMING, V1.RUNNING),
    }
)
V1_TABLE_STATES = (V1.STOPPED, V1.RUNNING, V1.STOP_AND_COPY, V1.PRE_COPY, V1.RESUMING)


def v1_transition_valid(current: int, target: int) -> bool:
    return (current, target) in V1_TRANSITIONS


@dataclass(slots=True, frozen=True)
class MigrationInfo(Payload, layout="IIQQQ", size="SIZE"):
    """struct vfio_device_migration_info: the first 32 bytes of the migration region."""

    NAME = "vfio_device_migration_info"
    DEVICE_STATE: ClassVar[int] = 0  # field offsets, for REGION_READ/WRITE
    RESERVED: ClassVar[int] = 4
    PENDING_BYTES: ClassVar[int] = 8
    DATA_OFFSET: ClassVar[int] = 16
    DATA_SIZE: ClassVar[int] = 24
    device_state: int
    reserved: int = 0
    pending_bytes: int = 0
    data_offset: int = 0
    data_size: int = 0


# ---- 0.9.2: the VFIO "v2" migration state machine


class MigState(enum.IntEnum):
    """enum vfio_device_mig_state."""

    ERROR = 0
    STOP = 1
    RUNNING = 2
    STOP_COPY = 3
    RESUMING = 4
    RUNNING_P2P = 5  # not used in vfio-user
    PRE_COPY = 6
    PRE_COPY_P2P = 7  # not used in vfio-user


V2_ARCS: frozenset[tuple[MigState, MigState]] = frozenset(
    {
        (MigState.RUNNING, MigState.STOP),
        (MigState.STOP_COPY, MigState.STOP),
        (MigState.RESUMING, MigState.STOP),
        (MigState.PRE_COPY, MigState.RUNNING),
        (MigState.STOP, MigState.RUNNING),
        (MigState.RUNNING, MigState.PRE_COPY),
        (MigState.STOP, MigState.STOP_COPY),
        (MigState.PRE_COPY, MigState.STOP_COPY),
        (MigState.STOP, MigState.RESUMING),
    }
)
V2_SAVING_GROUP = frozenset({MigState.PRE_COPY, MigState.STOP_COPY})
V2_STATES = (
    MigState.STOP,
    MigState.RUNNING,
    MigState.STOP_COPY,
    MigState.RESUMING,
    MigState.PRE_COPY,
)


def v2_path(current: MigState, target: MigState, pre_copy: bool = True) -> list[MigState] | None:
    """The states a SET from ``current`` to ``target`` passes through, ending at target.

    The shortest path over the direct arcs whose interior states are not in
    the saving group; None where no such path exists (anything into ERROR)
    and for STOP_COPY -> PRE_COPY, which the spec names as not allowed. Without
    PRE_COPY, arcs touching it go.
    """
    if (current, target) == (MigState.STOP_COPY, MigState.PRE_COPY):
        return None
    states = {s for s in V2_STATES if pre_copy or s != MigState.PRE_COPY}
    if current not in states or target not in states:
        return None
    if current == target:
        return []
    arcs = {(a, b) for a, b in V2_ARCS if a in states and b in states}
    prev: dict[MigState, MigState] = {}
    queue = deque([current])
    while queue:
        state = queue.popleft()
        if state != current and state in V2_SAVING_GROUP:
            continue  # saving-group states may only end a path
        for a, b in sorted(arcs):
            if a == state and b not in prev and b != current:
                prev[b] = state
                if b == target:
                    path = [b]
                    while path[-1] != current and prev[path[-1]] != current:
                        path.append(prev[path[-1]])
                    return path[::-1]
                queue.append(b)
    return None


@dataclass(slots=True, frozen=True)
class DeviceFeature(TrailingData, layout="II", size="FIXED_SIZE"):
    """Request and reply: argsz, flags (feature index and GET/SET/PROBE), data."""

    NAME = "DEVICE_FEATURE"
    argsz: int
    flags: int
    data: bytes = b""

    @property
    def feature(self) -> int:
        return self.flags & DEVICE_FEATURE_MASK

    @property
    def get(self) -> bool:
        return bool(self.flags & DeviceFeatureFlags.GET)

    @property
    def set(self) -> bool:
        return bool(self.flags & DeviceFeatureFlags.SET)

    @property
    def probe(self) -> bool:
        return bool(self.flags & DeviceFeatureFlags.PROBE)


@dataclass(slots=True, frozen=True)
class FeatureMigration(Payload, layout="Q"):
    """Data of VFIO_DEVICE_FEATURE_MIGRATION: flags u64 (MigrationFlags)."""

    NAME = "VFIO_DEVICE_FEATURE_MIGRATION data"
    flags: int


@dataclass(slots=True, frozen=True)
class FeatureMigDeviceState(Payload, layout="Ii"):
    """Data of VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: device_state u32, data_fd s32."""

    NAME = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE data"
    device_state: int
    data_fd: int = -1


@dataclass(slots=True, frozen=True)
class DmaLoggingControl(Payload, layout="QII"):
    """Data of DMA_LOGGING_START (and its reply): page_size, ranges of (iova, length)."""

    NAME = "VFIO_DEVICE_FEATURE_DMA_LOGGING_START data"
    page_size: int
    num_ranges: int
    reserved: int = 0
    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, page_size: int, ranges: tuple[tuple[int, int], ...]) -> DmaLoggingControl:
        return cls(page_size, len(ranges), 0, tuple(ranges))

    def pack(self) -> bytes:
        try:
            return self._pack_fixed() + b"".join(struct.pack("<QQ", i, n) for i, n in self.ranges)
        except struct.error as e:
            raise CodecError(self.NAME, "ranges", str(e)) from None

    @classmethod
    def unpack(cls, data: bytes) -> DmaLoggingControl:
        (page_size, num_ranges, reserved), rest = cls._split(data)
        check_exact(cls.NAME, "num_ranges", num_ranges * 16, len(rest))
        ranges = tuple(struct.unpack_from("<QQ", rest, i) for i in range(0, len(rest), 16))
        return cls(page_size, num_ranges, reserved, ranges)


@dataclass(slots=True, frozen=True)
class DmaLoggingReport(Payload, layout="QQQ", size="HEAD_SIZE"):
    """Data of DMA_LOGGING_REPORT: iova, length, page_size; in the reply the bitmap follows.

    Errata 8: bit n of the u64 array stands for page n counted from ``iova``.
    """

    NAME = "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT data"
    iova: int
    length: int
    page_size: int
    bitmap: bytes = b""

    def pack(self) -> bytes:
        return self._pack_fixed() + self.bitmap

    @classmethod
    def unpack(cls, data: bytes) -> DmaLoggingReport:
        values, rest = cls._split(data)
        if len(rest) % 8:
            raise CodecError(cls.NAME, "bitmap", f"{len(rest)} bytes is not a whole number of u64s")
        return cls(*values, rest)


@dataclass(slots=True, frozen=True)
class MigDataRead(Payload, layout="II", size="SIZE"):
    NAME = "MIG_DATA_READ request"
    argsz: int
    size: int


@dataclass(slots=True, frozen=True)
class _MigData(CountedData, layout="II"):
    """argsz, size, then exactly ``size`` bytes of migration data."""

    _count = "size"
    argsz: int
    size: int
    data: bytes = b""


@dataclass(slots=True, frozen=True)
class MigDataReadReply(_MigData):
    NAME = "MIG_DATA_READ reply"


@dataclass(slots=True, frozen=True)
class MigDataWrite(_MigData):
    NAME = "MIG_DATA_WRITE request"
