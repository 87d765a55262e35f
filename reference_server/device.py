"""The emulated PCI device: regions, interrupts, DMA engine, reset and state.

Built from a DeviceConfig (device_config.py; the default one when no
``--device`` is given). It outlives client connections: a connection
attaches itself (``attach``) so the DMA engine can reach the client's
memory, and detaches on disconnect; registers, RAM and mask state stay.

DEVICE_RESET: registers and config space back to reset values, the DMA
engine idle (DMA_STATUS 0), interrupts unmasked and nothing pending. The
client's DMA mappings and IRQ eventfds stay, and so does RAM content
(BAR1, BAR2): reset does not clear memory.

The revision decides how the device migrates: a "migration" region of the
description is the 0.9.1 migration region at 0.9.1; at 0.9.2 it is not served
(regions from index 9 on that are left empty go, so the default device has the
9 regions of a PCI device) and the device migrates through DEVICE_FEATURE
(``migration_v2``, migration_v2.py).
"""

from __future__ import annotations

import struct
from dataclasses import replace

from pytest_vfiouser.protocol import (
    REGION_INFO_SIZE,
    VFIO_PCI_NUM_REGIONS,
    VFIO_REGION_SUBTYPE_MIGRATION,
    VFIO_REGION_TYPE_MIGRATION,
    DeviceFlags,
    IoFdSubRegion,
    IoFdType,
    RegionCapId,
    RegionFlags,
    RegionInfo,
    RegionTypeCap,
)

from . import registers as R
from .device_config import DeviceConfig, RegionConfig, default_config
from .dma_engine import ClientLink, DmaEngine
from .irqs import Irqs
from .migration import MigrationRegion
from .migration_v2 import MigrationV2
from .pci_config import ConfigSpace
from .regions import AbsentRegion, PatternRegion, RamRegion, Region, SinkRegion
from .register_block import RegisterBlock

_STATE_MAGIC = b"VFUREF1\0"
_LEN = struct.Struct("<Q")


class Device:
    # What the device is built of; a subclass may give other kinds.
    irqs_type = Irqs
    dma_engine_type = DmaEngine
    migration_region_type = MigrationRegion
    migration_v2_type = MigrationV2

    def __init__(self, config: DeviceConfig | None = None, revision: str = "0.9.1"):
        cfg = config or default_config()
        self.config = cfg
        self.settings = cfg.server
        self.revision = revision
        self.flags = DeviceFlags.PCI | (DeviceFlags.RESET if cfg.reset else 0)
        self.registers: RegisterBlock | None = None
        self.client: ClientLink | None = None
        migrates = any(cfg.region(i).kind == "migration" for i in range(cfg.num_regions))
        self.migration_v2 = (
            self.migration_v2_type(self, cfg.pre_copy) if migrates and revision != "0.9.1" else None
        )
        self.regions: list[Region] = [
            AbsentRegion() if i == R.CONFIG_REGION else self._make_region(cfg.region(i))
            for i in range(cfg.num_regions)
        ]
        while (
            self.migration_v2 is not None
            and len(self.regions) > VFIO_PCI_NUM_REGIONS
            and isinstance(self.regions[-1], AbsentRegion)
        ):
            self.regions.pop()  # where the 0.9.1 migration region was
        self.regions[R.CONFIG_REGION] = ConfigSpace(
            {
                "vendor_id": cfg.vendor_id,
                "device_id": cfg.device_id,
                "revision": cfg.revision,
                "class_code": cfg.class_code,
                "subsystem_vendor_id": cfg.subsystem_vendor_id,
                "subsystem_id": cfg.subsystem_id,
            },
            [self.regions[i].size for i in range(6)],
            self.regions[6].size,
            has_intx=cfg.irq(R.IRQ_INTX).count > 0,
        )
        self.irqs = self.irqs_type(
            [(cfg.irq(i).count, cfg.irq(i).flags) for i in range(R.NUM_IRQS)]
        )
        ram = self.regions[cfg.dma_ram_region] if cfg.dma_ram_region >= 0 else None
        self.dma_engine = self.dma_engine_type(ram)

    def _make_region(self, rc: RegionConfig) -> Region:
        if rc.kind == "registers":
            self.registers = RegisterBlock(rc.size, self)
            self._ioeventfd = rc.ioeventfd
            self._registers_index = rc.index
            return self.registers
        if rc.kind == "ram":
            flags = (
                (RegionFlags.READ if rc.read else 0)
                | (RegionFlags.WRITE if rc.write else 0)
                | (RegionFlags.MMAP if rc.mmap else 0)
                | (RegionFlags.CAPS if rc.sparse_mmap else 0)
            )
            return RamRegion(f"region{rc.index}", rc.size, flags, rc.sparse_mmap)
        if rc.kind == "pattern":
            return PatternRegion(rc.size)
        if rc.kind == "sink":
            return SinkRegion(rc.size)
        if rc.kind == "migration" and self.migration_v2 is None:
            return self.migration_region_type(self, rc.size)
        return AbsentRegion()

    def set_region(self, index: int, region: Region) -> None:
        """Install a region backend (e.g. the migration region at index 9)."""
        old = self.regions[index]
        self.regions[index] = region
        old.close()

    @property
    def num_regions(self) -> int:
        return len(self.regions)

    @property
    def num_irqs(self) -> int:
        return len(self.irqs)

    @property
    def supports_migration(self) -> bool:
        """A 0.9.1 migration region exists: VERSION then answers the migration capability."""
        return any(
            isinstance(c, RegionTypeCap)
            and c.type == VFIO_REGION_TYPE_MIGRATION
            and c.subtype == VFIO_REGION_SUBTYPE_MIGRATION
            for r in self.regions
            for c in r.caps
        )

    def region_info(self, index: int, mmap: bool = True) -> tuple[RegionInfo, int | None]:
        """DEVICE_GET_REGION_INFO of region ``index`` with all its capabilities (argsz the
        whole size), and the fd to mmap it by. ``mmap`` False: offered without mmap."""
        region = self.regions[index]
        flags, caps, fd = region.flags, region.caps, region.mmap_fd
        if not flags & RegionFlags.MMAP:
            fd = None
        elif not mmap:
            flags &= ~int(RegionFlags.MMAP)
            caps = tuple(c for c in caps if c.id != RegionCapId.SPARSE_MMAP)
            fd = None
        flags = flags | int(RegionFlags.CAPS) if caps else flags & ~int(RegionFlags.CAPS)
        info = RegionInfo(
            0, flags, index, REGION_INFO_SIZE if caps else 0, region.size, region.mmap_offset, caps
        )
        return replace(info, argsz=info.full_size()), fd

    def io_fds(self, index: int) -> list[tuple[IoFdSubRegion, int]]:
        """DEVICE_GET_REGION_IO_FDS sub-regions of a region, with their fds."""
        if self.registers is None or not self._ioeventfd or index != self._registers_index:
            return []
        sub = IoFdSubRegion(
            offset=R.REG_NOTIFY, size=R.NOTIFY_SIZE, fd_index=0, type=IoFdType.IOEVENTFD
        )
        return [(sub, self.registers.notify_fd)]

    # ---- the client connection

    def attach(self, link: ClientLink) -> None:
        self.client = link

    def detach(self) -> None:
        """Client disconnect: its eventfds are closed; the device keeps its state."""
        self.client = None
        self.irqs.close_client_fds()

    def run_dma(self, dev_offset: int, address: int, length: int, direction: int) -> None:
        self.dma_engine.run(self.client, dev_offset, address, length, direction)

    # ---- reset and state

    def reset(self) -> None:
        for r in self.regions:
            r.reset()
        self.irqs.reset()
        if self.migration_v2 is not None:
            self.migration_v2.reset()

    def _state_parts(self) -> list[tuple[str, object]]:
        parts = [(f"region{i}", r) for i, r in enumerate(self.regions)]
        return parts + [(f"irq{irq.index}", irq) for irq in self.irqs.indexes]

    def save_state(self) -> bytes:
        """Registers, config space, RAM and interrupt mask state, as one blob."""
        out = [_STATE_MAGIC]
        for name, part in self._state_parts():
            blob = part.save()
            key = name.encode()
            out += [bytes([len(key)]), key, _LEN.pack(len(blob)), blob]
        return b"".join(out)

    def load_state(self, data: bytes) -> None:
        """Restore save_state()'s blob; ValueError (and nothing changed) if it does not fit."""
        blobs = dict(split_state(bytes(data)))
        parts = dict(self._state_parts())
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

    def close(self) -> None:
        for r in self.regions:
            r.close()


def split_state(data: bytes):
    """save_state()'s blob as (part name, its blob) pairs; ValueError where it is damaged."""
    if not data.startswith(_STATE_MAGIC):
        raise ValueError("device state: bad magic")
    pos = len(_STATE_MAGIC)
    while pos < len(data):
        n = data[pos]
        key = data[pos + 1 : pos + 1 + n].decode("ascii", "replace")
        pos += 1 + n
        if pos + _LEN.size > len(data):
            raise ValueError(f"device state: truncated at {key!r}")
        (size,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if pos + size > len(data):
            raise ValueError(f"device state: {key!r} is truncated")
        yield key, data[pos : pos + size]
        pos += size
