"""PCI configuration space (region 7): a type 0 header, no capabilities.

Writable bits: command (I/O, memory, bus master, parity, SERR, INTx disable),
cache line size, latency timer, interrupt line, and the address bits of the
BARs and expansion ROM. BARs read back as PCI does: writing all ones reads
~(size - 1), which is how software sizes them. Memory BARs, 32-bit,
non-prefetchable. Everything else is read-only; writes to it are ignored.
"""

from __future__ import annotations

import struct

from pytest_vfiouser.protocol import RegionFlags

from .regions import Region

_COMMAND_WRITABLE = 0x0547
_BAR0 = 0x10
_ROM = 0x30


class ConfigSpace(Region):
    kind = "config"

    def __init__(self, ident: dict, bar_sizes: list[int], rom_size: int, has_intx: bool):
        self.size = 256
        self.flags = int(RegionFlags.READ | RegionFlags.WRITE)
        img = bytearray(256)
        struct.pack_into("<HH", img, 0x00, ident["vendor_id"], ident["device_id"])
        img[0x08] = ident["revision"]
        img[0x09:0x0C] = ident["class_code"].to_bytes(3, "little")
        struct.pack_into("<HH", img, 0x2C, ident["subsystem_vendor_id"], ident["subsystem_id"])
        img[0x3D] = 1 if has_intx else 0  # interrupt pin INTA
        self._reset_image = bytes(img)
        mask = bytearray(256)
        struct.pack_into("<H", mask, 0x04, _COMMAND_WRITABLE)
        mask[0x0C] = mask[0x0D] = mask[0x3C] = 0xFF
        for i, size in enumerate(bar_sizes):
            if size:
                struct.pack_into("<I", mask, _BAR0 + 4 * i, ~(size - 1) & 0xFFFFFFF0)
        if rom_size:
            struct.pack_into("<I", mask, _ROM, (~(rom_size - 1) & 0xFFFFF800) | 1)
        self._mask = bytes(mask)
        self._img = bytearray(img)

    def read(self, offset: int, count: int) -> bytes:
        return bytes(self._img[offset : offset + count])

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        n = len(data)
        old = int.from_bytes(self._img[offset:end], "little")
        mask = int.from_bytes(self._mask[offset:end], "little")
        new = (old & ~mask) | (int.from_bytes(data, "little") & mask)
        self._img[offset:end] = new.to_bytes(n, "little")

    def reset(self) -> None:
        self._img[:] = self._reset_image

    def save(self) -> bytes:
        return bytes(self._img)

    def load(self, data: bytes) -> None:
        if len(data) != 256:
            raise ValueError(f"config space is 256 bytes, state has {len(data)}")
        self._img[:] = data
