"""Device faults: the DMA map table, the DMA engine, interrupts, the migration
region and the device itself, each a subclass with the defects of its area."""

from __future__ import annotations

import bisect
import dataclasses
import errno
import mmap
import zlib

from pytest_vfiouser.protocol import (
    IRQ_SET_ACTION_MASK,
    IRQ_SET_DATA_MASK,
    IrqSetFlags,
    SetIrqs,
    v1_transition_valid,
)
from pytest_vfiouser.protocol import MigrationStateV1 as S
from reference_server.device import _LEN, _STATE_MAGIC, Device
from reference_server.dma_engine import ClientLink, DmaEngine
from reference_server.dma_map import DmaMapTable, Mapping
from reference_server.errors import VfioError
from reference_server.irqs import (
    IrqIndex,
    Irqs,
    _close,
)
from reference_server.migration import (
    _DOFF,
    _DSIZE,
    _INFO,
    _PENDING,
    _RESERVED,
    _SAVING,
    _STATE,
    _U32,
    _U64,
    DATA_OFFSET,
    FINAL,
    HEADER,
    MAGIC,
    MAX_BLOB,
    PRECOPY,
    MigrationRegion,
    chunk,
)

from ._catalogue import FAULTS


class FaultyDmaMapTable(DmaMapTable):
    def _slot(self, address: int, size: int) -> int:
        if "dma-table-keyed-by-address" not in FAULTS:
            return super()._slot(address, size)
        # maps[address] = mapping: only the same start collides, and replaces it
        i = bisect.bisect_right(self._starts, address)
        if i > 0 and self._starts[i - 1] == address:
            i -= 1
            del self._starts[i]
            self._maps.pop(i).close()
        return i

    @staticmethod
    def _sharing(m: Mapping) -> tuple[int, int]:
        if "dma-access-wrong" in FAULTS:  # a private copy (always writable)
            return mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE
        return DmaMapTable._sharing(m)

    def _find(self, address: int, size: int) -> int:
        if "dma-table-keyed-by-address" in FAULTS:
            i = bisect.bisect_left(self._starts, address)
            if i < len(self._maps) and self._starts[i] == address:
                size = self._maps[i].size  # maps.pop(address): the size is not compared
        return super()._find(address, size)

    def remove(self, address: int, size: int) -> Mapping:
        if "unmap-keeps-mapping" in FAULTS:
            return self._maps[self._find(address, size)]  # "removed", still in the table
        return super().remove(address, size)


class FaultyDmaEngine(DmaEngine):
    @classmethod
    def write_segment(cls, link: ClientLink, m, pos: int, piece: bytes) -> None:
        if "dirty-bitmap-wrong" in FAULTS and m.mem is not None:
            m.write(pos, piece)  # writes through the fd's mapping are not logged
            return
        super().write_segment(link, m, pos, piece)

    @staticmethod
    def dma_address(m, pos: int) -> int:
        if "dma-access-wrong" in FAULTS:
            return pos  # the offset into the mapping
        return DmaEngine.dma_address(m, pos)


class FaultyIrqIndex(IrqIndex):
    def signal(self, fd: int) -> bool:
        if self.index == 0 and "intx-not-signalled" in FAULTS:
            return True  # counted, never written
        return super().signal(fd)


class FaultyIrqs(Irqs):
    index_type = FaultyIrqIndex

    def set_irqs(self, req: SetIrqs, payload_size: int, fds: list[int]) -> None:
        if "index-wraps" in FAULTS and self.indexes:
            req = dataclasses.replace(req, index=req.index % len(self.indexes))
        if "set-irqs-minimal" in FAULTS:
            self._set_irqs_minimal(req, fds)
        else:
            super().set_irqs(req, payload_size, fds)

    def _set_irqs_minimal(self, req: SetIrqs, fds: list[int]) -> None:
        """Fault set-irqs-minimal: only the index and the range are checked; eventfds are
        assigned, never de-assigned; DATA_NONE/BOOL act on what they name."""
        irq = self.irq(req.index)
        if req.count == 0:
            return  # "disable": nothing to do
        subs = self.sub_indexes(irq, req)
        flags = req.flags
        data = flags & -flags & int(IRQ_SET_DATA_MASK) or int(IrqSetFlags.DATA_NONE)
        action = flags & int(IRQ_SET_ACTION_MASK)
        action = action & -action or int(IrqSetFlags.ACTION_TRIGGER)
        if data == IrqSetFlags.DATA_EVENTFD:
            table = irq.eventfds(action)
            for s, fd in zip(subs, list(fds), strict=False):
                _close(table[s])
                table[s] = fd
                fds.remove(fd)
        elif data == IrqSetFlags.DATA_BOOL:
            irq.act(action, [s for s, b in zip(subs, req.data, strict=False) if b])
        else:
            irq.act(action, subs)

    def _assign(self, irq: IrqIndex, action: int, subs: range, fds: list[int]) -> None:
        try:
            super()._assign(irq, action, subs, fds)
        except VfioError:
            if "refused-fds-leaked" in FAULTS and fds and len(fds) != len(subs):
                fds.clear()  # the error path forgets them: never closed
            raise


class FaultyMigrationRegion(MigrationRegion):
    def __init__(self, device, size: int):
        super().__init__(device, size)
        if "migration-starts-stopped" in FAULTS:
            self.state = S.STOPPED  # the struct's zero

    def _clear(self) -> None:
        super()._clear()
        self._written: dict[int, int] = {}  # fault migration-info-fields-wrong

    def _set_state(self, new: int) -> None:
        old = self.state
        if new == old:
            return  # not a transition: nothing to do
        if "failed-transition-changes-state" in FAULTS:
            self.state = new  # stored first; a refusal below leaves it
        if (
            "precopy-to-stopcopy-needs-drain" in FAULTS
            and (old, new) == (S.PRE_COPY, S.STOP_AND_COPY)
            and self._offered is not None
        ):
            raise VfioError(errno.EBUSY, "a pre-copy chunk is still on offer")
        if not v1_transition_valid(old, new):
            raise VfioError(
                errno.EINVAL, f"device_state {old:03b} -> {new:#x} is not a valid transition"
            )
        if old == S.RESUMING:
            self._resume()  # raises (and the state stays) when the data cannot be applied
        if new in (S.PRE_COPY, S.STOP_AND_COPY):
            self._start_saving(new)
        elif new == S.RESUMING or old in _SAVING or old == S.RESUMING:
            self._clear()
        self.state = S(new)

    def _resume(self) -> None:
        if "resume-data-lost" in FAULTS:
            self._device.load_state(bytes(self._final[:0x10000]), partial=True)
            return
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

    def _read_pending(self) -> int:
        if self.state not in _SAVING:
            return 0
        if "migration-info-fields-wrong" in FAULTS:
            if _PENDING in self._written:
                return self._written[_PENDING]
            self._offered = None
            self._read_data_offset()  # each read starts a new chunk
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
        if FAULTS:
            if "migration-info-fields-wrong" in FAULTS and _DOFF in self._written:
                return self._written[_DOFF]
            if "data-offset-past-region" in FAULTS:
                return self.size - 0x800
        return DATA_OFFSET

    def _consume(self, n: int) -> None:
        if "resume-data-lost" in FAULTS:
            self._take_unchecked(n)
            return
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

    def _take_unchecked(self, n: int) -> None:
        """Fault resume-data-lost: the payload of whatever came is appended, unchecked."""
        data = bytes(self._area[: min(n, len(self._area))])
        if len(data) >= HEADER.size:
            kind = HEADER.unpack_from(data)[2]
            if kind == FINAL:
                if self._kind != FINAL:
                    self._final = bytearray()
                self._final += data[HEADER.size :]
            self._kind = kind
        self._next_seq += 1
        self.data_size = n

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if offset >= DATA_OFFSET:
            if self.state != S.RESUMING:
                raise VfioError(errno.EPERM, "the data area is written only while RESUMING")
            self._area[offset - DATA_OFFSET : end - DATA_OFFSET] = data
            return
        if _RESERVED <= offset and end <= _RESERVED + 4:
            if "migration-info-fields-wrong" in FAULTS:
                raise VfioError(errno.EINVAL, "reserved is not writable")
            return  # reserved: ignored
        if offset >= _INFO:
            raise VfioError(
                errno.EINVAL,
                f"[{offset:#x}, {end:#x}) is outside the migration info and the data area",
            )
        if (offset, len(data)) == (_STATE, 4):
            self._set_state(_U32.unpack(data)[0])
        elif (offset, len(data)) in ((_PENDING, 8), (_DOFF, 8)):
            if "migration-info-fields-wrong" in FAULTS:
                self._written[offset] = _U64.unpack(data)[0]
                return
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


class FaultyDevice(Device):
    irqs_type = FaultyIrqs
    dma_engine_type = FaultyDmaEngine
    migration_region_type = FaultyMigrationRegion

    def load_state(self, data: bytes, partial: bool = False) -> None:
        """Restore save_state()'s blob; ValueError (and nothing changed) if it does not fit.

        ``partial`` (fault resume-data-lost): load the parts that came whole, ignore the rest.
        """
        data = bytes(data)
        if not data.startswith(_STATE_MAGIC):
            if partial:
                return
            raise ValueError("device state: bad magic")
        pos, blobs = len(_STATE_MAGIC), {}
        while pos < len(data):
            n = data[pos]
            key = data[pos + 1 : pos + 1 + n].decode("ascii", "replace")
            pos += 1 + n
            if pos + _LEN.size > len(data):
                if partial:
                    break
                raise ValueError(f"device state: truncated at {key!r}")
            (size,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            if pos + size > len(data):
                if partial:
                    break
                raise ValueError(f"device state: {key!r} is truncated")
            blobs[key] = data[pos : pos + size]
            pos += size
        parts = dict(self._state_parts())
        if partial:
            for name, blob in blobs.items():
                try:
                    parts[name].load(blob)
                except (KeyError, ValueError):
                    pass
            return
        if set(blobs) != set(parts):
            raise ValueError(f"device state: parts {sorted(blobs)} do not match this device")
        saved = {name: part.save() for name, part in parts.items()}
        try:
            for name, part in parts.items():
                part.load(blobs[name])
        except ValueError:
            for name, part in parts.items():
                part.load(saved[name])
            raise
