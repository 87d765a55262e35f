"""The 0.9.1 migration region: VFIO_REGION_TYPE_MIGRATION (3), subtype 1.

Region 9 of the default device: READ|WRITE|CAPS with the region type
capability; size from the device description (default
registers.MIGRATION_SIZE, 128 KiB).

Layout:
  [0, 32)              struct vfio_device_migration_info
  [32, DATA_OFFSET)    unused: reads as zeros, writes refused (EINVAL)
  [DATA_OFFSET, size)  the data area; ``data_offset`` always reads DATA_OFFSET

Field access (REGION_WRITE is strict, REGION_READ is lenient):
  device_state   u32 at 0   read/write; a write must be the whole field
  reserved       u32 at 4   any access inside it is ignored: reads give zeros,
                            writes succeed and change nothing (the spec: "any
                            access to it must be ignored by the server")
  pending_bytes  u64 at 8   read only: a write is refused (EPERM)
  data_offset    u64 at 16  read only: a write is refused (EPERM)
  data_size      u64 at 24  written by the client while RESUMING only (the
                            spec: "the amount of data copied to ... the
                            destination migration region by the destination
                            client during the resuming state"); a write in
                            any other state is refused (EPERM)
  A write that is not exactly one field (or inside reserved) is EINVAL.
  A read of exactly pending_bytes or data_offset has the side effects of the
  iteration procedure below; any other read (several fields at once, part of
  a field, the gap, the data area) returns the current bytes with no side
  effect, so generic region tests can read the region.

device_state: starts RUNNING. The transitions of the spec's table
(protocol.V1_TRANSITIONS) succeed; writing the current state again is not a
transition and succeeds without doing anything; every other value (the
invalid states 101 and 111, ERROR 110, other table pairs, values above 7) is
refused with EINVAL and the state stays. DEVICE_RESET puts the region back
to RUNNING and drops any migration in progress (the kernel's v1 header: "The
user application must use the device reset ioctl to recover the device from
VFIO_DEVICE_STATE_ERROR state"); client disconnects change nothing.
The reference device has no activity of its own, so the stopped states do not
block region accesses or the DMA engine: the client keeps the device quiet.

Saving (source), the spec's loop:
  RUNNING -> PRE_COPY     a snapshot of the whole device state
                          (Device.save_state) is queued as PRECOPY chunks
  -> STOP_AND_COPY        what is left of the pre-copy queue is dropped and
                          the device state now is queued as FINAL chunks
                          (all again: the simplest form the spec allows)
  reading pending_bytes   ends the iteration (the chunk on offer, if any, is
                          taken as read) and answers the bytes still queued;
                          idempotent; 0 ends stop-and-copy
  reading data_offset     puts the next chunk at DATA_OFFSET, data_size = its
                          length (0 when nothing is left); read again in the
                          same iteration: the same chunk
  STOP_AND_COPY -> STOPPED / RUNNING drops what was not read.

Resuming (destination): RUNNING -> RESUMING clears the data area. For each
chunk the client writes the bytes at data_offset, then writes data_size =
the chunk's length: that write consumes the chunk (the kernel's v1 protocol,
as QEMU drives it) and fails (EINVAL) if the chunk is not the next one of the
stream, is damaged, or data_size is not its length; a failed chunk is not
consumed. RESUMING -> RUNNING loads the FINAL blob into the device; it fails
(EINVAL, still RESUMING) when chunks came but the FINAL blob is incomplete
or does not fit this device. With no chunk at all the device just runs on
unchanged (a resume the client abandoned).

The migration stream: chunks, each a 40-byte header and a payload:
  magic  8s  b"VFUMIG1\\0"
  seq    u32 the chunk's number in the stream, from 0, no gaps
  kind   u32 1 PRECOPY, 2 FINAL; no PRECOPY chunk after a FINAL one
  offset u64 where the payload goes in the blob of its kind (in order)
  total  u64 the length of that blob
  crc    u32 zlib.crc32 of the payload
  length u32 the payload's length (> 0), header + payload <= CHUNK_MAX
Both blobs are Device.save_state() images; the destination checks PRECOPY
chunks and drops them, and applies the FINAL blob.
"""

from __future__ import annotations

import errno
import struct
import zlib
from collections import deque

from pytest_vfiouser.protocol import (
    VFIO_REGION_SUBTYPE_MIGRATION,
    VFIO_REGION_TYPE_MIGRATION,
    MigrationInfo,
    RegionFlags,
    RegionTypeCap,
    v1_transition_valid,
)
from pytest_vfiouser.protocol import MigrationStateV1 as S

from .errors import VfioError
from .regions import Region

DATA_OFFSET = 0x1000
CHUNK_MAX = 0x10000  # header included; smaller when the data area is
MIN_SIZE = 2 * DATA_OFFSET
MAGIC = b"VFUMIG1\0"
HEADER = struct.Struct("<8sIIQQII")
PRECOPY, FINAL = 1, 2
MAX_BLOB = 1 << 32

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_INFO = MigrationInfo.SIZE
_STATE, _RESERVED = MigrationInfo.DEVICE_STATE, MigrationInfo.RESERVED
_PENDING, _DOFF, _DSIZE = (
    MigrationInfo.PENDING_BYTES,
    MigrationInfo.DATA_OFFSET,
    MigrationInfo.DATA_SIZE,
)
_SAVING = (S.PRE_COPY, S.STOP_AND_COPY)


def pieces(blob: bytes, kind: int, chunk_max: int) -> list[tuple[int, int, int, bytes]]:
    """``blob`` cut for chunks of at most ``chunk_max`` bytes: (kind, offset, total, piece)."""
    room = chunk_max - HEADER.size
    return [(kind, off, len(blob), blob[off : off + room]) for off in range(0, len(blob), room)]


def chunk(seq: int, kind: int, offset: int, total: int, piece: bytes) -> bytes:
    """One chunk of the stream: the header, then the piece."""
    return HEADER.pack(MAGIC, seq, kind, offset, total, zlib.crc32(piece), len(piece)) + piece


class MigrationRegion(Region):
    kind = "migration"

    def __init__(self, device, size: int):
        if size < MIN_SIZE:
            raise ValueError(f"a migration region needs at least {MIN_SIZE:#x} bytes")
        self.size = size
        self.flags = int(RegionFlags.READ | RegionFlags.WRITE | RegionFlags.CAPS)
        self.caps = (RegionTypeCap(VFIO_REGION_TYPE_MIGRATION, VFIO_REGION_SUBTYPE_MIGRATION),)
        self.chunk_max = min(CHUNK_MAX, size - DATA_OFFSET)
        self._device = device
        self._area = bytearray(size - DATA_OFFSET)
        self.reset()

    # ---- state

    def reset(self) -> None:
        """Back to RUNNING, nothing in progress (DEVICE_RESET and construction)."""
        self.state = S.RUNNING
        self._clear()

    def _clear(self) -> None:
        self._area[:] = bytes(len(self._area))
        # source
        self._queue: deque[tuple[int, int, int, bytes]] = deque()  # pieces() not offered yet
        self._offered: bytes | None = None  # the chunk at DATA_OFFSET in this iteration
        self._seq = 0  # chunks offered so far: the next one's number
        self.data_size = 0
        # destination
        self._next_seq = 0
        self._kind = 0  # kind of the last chunk consumed
        self._total = 0  # total of its blob
        self._got = 0  # bytes of that blob received
        self._final = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes queued, the chunk on offer included (no side effect)."""
        if self.state not in _SAVING:
            return 0
        return self._queued() + (len(self._offered) if self._offered else 0)

    def _queued(self) -> int:
        return sum(HEADER.size + len(p[3]) for p in self._queue)

    def _set_state(self, new: int) -> None:
        old = self.state
        if new == old:
            return  # not a transition: nothing to do
        self._check_transition(old, new)
        if old == S.RESUMING:
            self._resume()  # raises (and the state stays) when the data cannot be applied
        if new in (S.PRE_COPY, S.STOP_AND_COPY):
            self._start_saving(new)
        elif new == S.RESUMING or old in _SAVING or old == S.RESUMING:
            self._clear()
        self.state = S(new)

    def _check_transition(self, old: int, new: int) -> None:
        if not v1_transition_valid(old, new):
            raise VfioError(
                errno.EINVAL, f"device_state {old:03b} -> {new:#x} is not a valid transition"
            )

    def _start_saving(self, new: int) -> None:
        if self.state != S.PRE_COPY:
            self._clear()
        kind = PRECOPY if new == S.PRE_COPY else FINAL
        self._queue = deque(pieces(self._device.save_state(), kind, self.chunk_max))
        self._offered = None
        self.data_size = 0

    def _resume(self) -> None:
        if self._next_seq == 0:
            return  # nothing came: the device runs on as it is
        if self._kind != FINAL or self._got != self._total:
            what = (
                "only pre-copy data came"
                if self._kind != FINAL
                else f"{self._got} of the {self._total} bytes of the device state came"
            )
            raise VfioError(errno.EINVAL, f"incomplete migration data: {what}")
        try:
            self._device.load_state(bytes(self._final))
        except ValueError as e:
            raise VfioError(errno.EINVAL, f"migration data does not fit this device: {e}") from None

    # ---- the iteration (source)

    def _read_pending(self) -> int:
        if self.state not in _SAVING:
            return 0
        self._offered = None  # a new iteration: the chunk on offer was read
        self.data_size = 0
        return self._queued()

    def _read_data_offset(self) -> int:
        if self.state in _SAVING and self._offered is None and self._queue:
            data = chunk(self._seq, *self._queue.popleft())
            self._seq += 1
            self._area[: len(data)] = data
            self._offered = data
            self.data_size = len(data)
        return DATA_OFFSET

    # ---- consuming (destination)

    def _consume(self, n: int) -> None:
        if not HEADER.size <= n <= len(self._area):
            raise VfioError(
                errno.EINVAL,
                f"data_size {n} is not the size of a chunk ({HEADER.size}..{len(self._area)})",
            )
        data = bytes(self._area[:n])
        magic, seq, kind, off, total, crc, length = HEADER.unpack_from(data)
        payload = data[HEADER.size :]
        if magic != MAGIC:
            raise VfioError(errno.EINVAL, "not migration data of this server (bad magic)")
        if length != len(payload) or length == 0:
            raise VfioError(
                errno.EINVAL,
                f"data_size {n} does not match the chunk's length {HEADER.size} + {length}",
            )
        if seq != self._next_seq:
            raise VfioError(
                errno.EINVAL, f"chunk {seq} came where chunk {self._next_seq} was expected"
            )
        if kind not in (PRECOPY, FINAL) or (kind == PRECOPY and self._kind == FINAL):
            raise VfioError(errno.EINVAL, f"chunk {seq} has kind {kind} after kind {self._kind}")
        first = kind != self._kind
        if off != (0 if first else self._got) or (not first and total != self._total):
            raise VfioError(errno.EINVAL, f"chunk {seq} is out of place in its blob")
        if total > MAX_BLOB or off + length > total:
            raise VfioError(errno.EINVAL, f"chunk {seq} runs past its blob's length {total}")
        if zlib.crc32(payload) != crc:
            raise VfioError(errno.EINVAL, f"chunk {seq} is damaged (crc mismatch)")
        if first:
            self._kind, self._total, self._got = kind, total, 0
            self._final = bytearray()
        if kind == FINAL:
            self._final += payload
        self._got += length
        self._next_seq += 1
        self.data_size = n

    # ---- Region interface

    def _info_bytes(self) -> bytes:
        return MigrationInfo(self.state, 0, self.pending_bytes, DATA_OFFSET, self.data_size).pack()

    def read(self, offset: int, count: int) -> bytes:
        if (offset, count) == (_PENDING, 8):
            return _U64.pack(self._read_pending())
        if (offset, count) == (_DOFF, 8):
            return _U64.pack(self._read_data_offset())
        end = offset + count
        out = bytearray()
        if offset < _INFO:
            out += self._info_bytes()[offset : min(end, _INFO)]
        if offset < DATA_OFFSET and end > _INFO:
            out += bytes(min(end, DATA_OFFSET) - max(offset, _INFO))
        if end > DATA_OFFSET:
            lo = max(offset, DATA_OFFSET) - DATA_OFFSET
            out += self._area[lo : end - DATA_OFFSET]
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if offset >= DATA_OFFSET:
            if self.state != S.RESUMING:
                raise VfioError(errno.EPERM, "the data area is written only while RESUMING")
            self._area[offset - DATA_OFFSET : end - DATA_OFFSET] = data
            return
        if _RESERVED <= offset and end <= _RESERVED + 4:
            return  # reserved: ignored
        if offset >= _INFO:
            raise VfioError(
                errno.EINVAL,
                f"[{offset:#x}, {end:#x}) is outside the migration info and the data area",
            )
        if (offset, len(data)) == (_STATE, 4):
            self._set_state(_U32.unpack(data)[0])
        elif (offset, len(data)) in ((_PENDING, 8), (_DOFF, 8)):
            name = "pending_bytes" if offset == _PENDING else "data_offset"
            raise VfioError(errno.EPERM, f"{name} is read only")
        elif (offset, len(data)) == (_DSIZE, 8):
            if self.state != S.RESUMING:
                raise VfioError(errno.EPERM, "data_size is written only while RESUMING")
            self._consume(_U64.unpack(data)[0])
        else:
            raise VfioError(
                errno.EINVAL,
                f"a write of [{offset:#x}, {end:#x}) is not one "
                "whole field of vfio_device_migration_info",
            )
