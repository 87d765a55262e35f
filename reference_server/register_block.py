"""BAR0: the register block whose layout registers.py documents.

Plain registers live in a byte array with a mask of writable bits, so any
access size and alignment behaves like memory. Action registers (IRQ_TRIGGER,
DMA_DOORBELL, NOTIFY) store nothing and read 0: a write's bytes that fall on
one form the value it acts on.
"""

from __future__ import annotations

import errno
import os
import struct

from pytest_vfiouser.protocol import RegionFlags

from . import registers as R
from .errors import VfioError
from .regions import Region

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_WRITABLE = (
    (R.REG_SCRATCH, 4 * R.SCRATCH_COUNT),
    (R.REG_DMA_DEV_OFFSET, 8),
    (R.REG_DMA_CLIENT_ADDR, 8),
    (R.REG_DMA_LENGTH, 4),
    (R.REG_DMA_DIRECTION, 4),
)


class RegisterBlock(Region):
    kind = "registers"

    def __init__(self, size: int, device):
        self.size = size
        self.flags = int(RegionFlags.READ | RegionFlags.WRITE)
        self._device = device
        self._regs = bytearray(size)
        mask = bytearray(size)
        for off, n in _WRITABLE:
            mask[off : off + n] = b"\xff" * n
        self._mask = bytes(mask)
        # The ioeventfd behind the NOTIFY doorbell (DEVICE_GET_REGION_IO_FDS).
        self.notify_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.reset()

    def reset(self) -> None:
        self._regs[:] = bytes(self.size)
        _U32.pack_into(self._regs, R.REG_ID, R.ID_VALUE)
        _U32.pack_into(self._regs, R.REG_LAYOUT_VERSION, R.LAYOUT_VERSION)
        self._drain_notify()
        self._notify_count = 0

    def _u32(self, off: int) -> int:
        return _U32.unpack_from(self._regs, off)[0]

    def _drain_notify(self) -> int:
        try:
            return os.eventfd_read(self.notify_fd)
        except BlockingIOError:
            return 0

    def read(self, offset: int, count: int) -> bytes:
        if offset < R.REG_NOTIFY_COUNT + 4 and offset + count > R.REG_NOTIFY_COUNT:
            # The client's eventfd writes are noticed when someone looks.
            self._notify_count += self._drain_notify()
            _U32.pack_into(self._regs, R.REG_NOTIFY_COUNT, self._notify_count & 0xFFFFFFFF)
        return bytes(self._regs[offset : offset + count])

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        old = int.from_bytes(self._regs[offset:end], "little")
        mask = int.from_bytes(self._mask[offset:end], "little")
        new = (old & ~mask) | (int.from_bytes(data, "little") & mask)
        self._regs[offset:end] = new.to_bytes(len(data), "little")
        # Actions, in address order.
        value = _written(offset, data, R.REG_IRQ_TRIGGER)
        if value is not None:
            self._device.irqs.raise_irq(value >> 16, value & 0xFFFF)
        value = _written(offset, data, R.REG_DMA_DOORBELL)
        if value == R.DMA_START:
            self._run_dma()
        if _written(offset, data, R.REG_NOTIFY, R.NOTIFY_SIZE) is not None:
            self._notify_count += 1

    def _run_dma(self) -> None:
        dev_offset = _U64.unpack_from(self._regs, R.REG_DMA_DEV_OFFSET)[0]
        address = _U64.unpack_from(self._regs, R.REG_DMA_CLIENT_ADDR)[0]
        length = self._u32(R.REG_DMA_LENGTH)
        direction = self._u32(R.REG_DMA_DIRECTION)
        try:
            self._device.run_dma(dev_offset, address, length, direction)
        except VfioError as e:
            _U32.pack_into(self._regs, R.REG_DMA_STATUS, e.errno)
            raise
        except Exception:
            _U32.pack_into(self._regs, R.REG_DMA_STATUS, errno.EIO)
            raise
        _U32.pack_into(self._regs, R.REG_DMA_STATUS, 0)
        _U32.pack_into(self._regs, R.REG_DMA_COUNT, (self._u32(R.REG_DMA_COUNT) + 1) & 0xFFFFFFFF)

    def save(self) -> bytes:
        self.read(R.REG_NOTIFY_COUNT, 4)  # fold pending eventfd notifications in
        return bytes(self._regs)

    def load(self, data: bytes) -> None:
        if len(data) != self.size:
            raise ValueError(f"register block is {self.size} bytes, state has {len(data)}")
        self._regs[:] = data
        self._drain_notify()
        self._notify_count = self._u32(R.REG_NOTIFY_COUNT)

    def close(self) -> None:
        os.close(self.notify_fd)


def _written(offset: int, data: bytes, reg: int, width: int = 4) -> int | None:
    """The value a write gives register [reg, reg + width), None if it misses it."""
    lo, hi = max(offset, reg), min(offset + len(data), reg + width)
    if lo >= hi:
        return None
    return int.from_bytes(data[lo - offset : hi - offset], "little") << (8 * (lo - reg))
