"""Device faults: the DMA map table, the DMA engine, interrupts, the migration
region and the device itself, each a subclass with the defects of its area (the
0.9.2 migration's in _migration_v2)."""

from __future__ import annotations

import bisect
import dataclasses
import errno
import mmap
from dataclasses import replace

from pytest_vfiouser.protocol import (
    IRQ_SET_ACTION_MASK,
    IRQ_SET_DATA_MASK,
    IrqSetFlags,
    RegionFlags,
    RegionInfo,
    RegionTypeCap,
    SetIrqs,
    SparseMmapCap,
)
from pytest_vfiouser.protocol import MigrationStateV1 as S
from reference_server.device import Device, split_state
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
    _PENDING,
    _RESERVED,
    _SAVING,
    _U64,
    DATA_OFFSET,
    FINAL,
    HEADER,
    MigrationRegion,
)

from ._catalogue import FAULTS
from ._migration_v2 import FaultyMigrationV2


@dataclasses.dataclass(slots=True)
class FaultyMapping(Mapping):
    """Fault dma-access-wrong: the file is mapped MAP_PRIVATE and the device's accesses
    go through that copy, so its writes never reach the client (nor survive a truncation:
    the faulty server may die of SIGBUS)."""

    private: mmap.mmap | None = None

    def read(self, pos: int, n: int) -> bytes:
        if self.private is None:
            return Mapping.read(self, pos, n)
        start = self.offset % mmap.ALLOCATIONGRANULARITY + pos
        return self.private[start : start + n]

    def write(self, pos: int, data: bytes) -> None:
        if self.private is None:
            Mapping.write(self, pos, data)
            return
        start = self.offset % mmap.ALLOCATIONGRANULARITY + pos
        self.private[start : start + len(data)] = data

    def close(self) -> None:
        if self.private is not None:
            self.private.close()
            self.private = None
        Mapping.close(self)


class FaultyDmaMapTable(DmaMapTable):
    mapping_type = FaultyMapping

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

    def _map_fd(self, m: FaultyMapping, fd: int) -> None:
        super()._map_fd(m, fd)
        if "dma-access-wrong" in FAULTS:  # a private copy (always writable)
            aligned = m.offset - m.offset % mmap.ALLOCATIONGRANULARITY
            m.private = mmap.mmap(
                fd,
                m.offset - aligned + m.size,
                mmap.MAP_PRIVATE,
                mmap.PROT_READ | mmap.PROT_WRITE,
                offset=aligned,
            )

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

    def note_write(self, address: int, length: int) -> None:
        if "dma-log-last-page-missed" in FAULTS and self.dirty is not None:
            # pages counted as length // page size from the first page written
            pg = self.dirty.pgsize
            address, length = address - address % pg, length // pg * pg
        super().note_write(address, length)


class FaultyDmaEngine(DmaEngine):
    @classmethod
    def read_client_memory(cls, link: ClientLink, segments) -> bytes:
        data = super().read_client_memory(link, segments)
        if "dma-log-reads" in FAULTS:  # every access is logged, reads too
            for m, pos, n in segments:
                link.dma_map.note_write(m.address + pos, n)
        return data

    @classmethod
    def write_segment(cls, link: ClientLink, m, pos: int, piece: bytes) -> None:
        if "dirty-bitmap-wrong" in FAULTS and m.fd is not None:
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

    def _check_transition(self, old: int, new: int) -> None:
        if "failed-transition-changes-state" in FAULTS:
            self.state = new  # stored first; a refusal below leaves it
        if (
            "precopy-to-stopcopy-needs-drain" in FAULTS
            and (old, new) == (S.PRE_COPY, S.STOP_AND_COPY)
            and self._offered is not None
        ):
            raise VfioError(errno.EBUSY, "a pre-copy chunk is still on offer")
        super()._check_transition(old, new)

    def _resume(self) -> None:
        if "resume-data-lost" in FAULTS:
            self._device.load_state(bytes(self._final[:0x10000]), partial=True)
            return
        super()._resume()

    def _read_pending(self) -> int:
        if self.state in _SAVING and "migration-info-fields-wrong" in FAULTS:
            if _PENDING in self._written:
                return self._written[_PENDING]
            self._offered = None
            self._read_data_offset()  # each read starts a new chunk
        return super()._read_pending()

    def _read_data_offset(self) -> int:
        offset = super()._read_data_offset()
        if "migration-info-fields-wrong" in FAULTS and _DOFF in self._written:
            return self._written[_DOFF]
        if "data-offset-past-region" in FAULTS:
            return self.size - 0x800
        return offset

    def _consume(self, n: int) -> None:
        if "resume-data-lost" in FAULTS:
            self._take_unchecked(n)
            return
        super()._consume(n)

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
        if "migration-info-fields-wrong" in FAULTS and offset < DATA_OFFSET:
            if _RESERVED <= offset and offset + len(data) <= _RESERVED + 4:
                raise VfioError(errno.EINVAL, "reserved is not writable")
            if (offset, len(data)) in ((_PENDING, 8), (_DOFF, 8)):
                self._written[offset] = _U64.unpack(data)[0]
                return
        super().write(offset, data)


class FaultyDevice(Device):
    irqs_type = FaultyIrqs
    dma_engine_type = FaultyDmaEngine
    migration_region_type = FaultyMigrationRegion
    migration_v2_type = FaultyMigrationV2

    def region_info(self, index: int, mmap: bool = True) -> tuple[RegionInfo, int | None]:
        lookup = index % self.num_regions if "index-wraps" in FAULTS else index
        info, fd = super().region_info(lookup, mmap)
        return _region_info_faults(replace(info, index=index)), fd

    def load_state(self, data: bytes, partial: bool = False) -> None:
        """``partial`` (fault resume-data-lost): load the parts that came whole, ignore the
        rest."""
        if not partial:
            super().load_state(data)
            return
        blobs = {}
        try:
            for name, blob in split_state(bytes(data)):
                blobs[name] = blob
        except ValueError:
            pass  # what came before the damage
        parts = dict(self._state_parts())
        for name, blob in blobs.items():
            try:
                parts[name].load(blob)
            except (KeyError, ValueError):
                pass


def _region_info_faults(info: RegionInfo) -> RegionInfo:
    if "reply-index-zero" in FAULTS:
        info = replace(info, index=0)
    if "flags-internal-bit" in FAULTS:
        info = replace(info, flags=info.flags | 1 << 31)
    if "mmap-offset-unaligned" in FAULTS and info.flags & RegionFlags.MMAP:
        info = replace(info, offset=info.offset + 0x40)
    if "region-caps-wrong" in FAULTS:
        info = replace(info, flags=info.flags | int(RegionFlags.CAPS))
        caps = []
        for cap in info.caps:
            if isinstance(cap, SparseMmapCap):
                cap = SparseMmapCap(((0, 0xC000), (0x8000, 0x10000)))
            elif isinstance(cap, RegionTypeCap):
                cap = replace(cap, version=0)
            caps.append(cap)
        info = replace(info, caps=tuple(caps))
        info = replace(info, argsz=info.full_size())
    return info
