"""The client's memory as the server may see it: what DMA_READ/DMA_WRITE are served from.

A region is either a bytearray (mapped without an fd: the server can reach it
only through DMA_READ/DMA_WRITE) or an mmap of a file (mapped with an fd: the
server mmaps the same file, so both sides see the same bytes).
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
from dataclasses import dataclass

from pytest_vfiouser.protocol import DmaMapFlags

READ_WRITE = DmaMapFlags.READ | DmaMapFlags.WRITE


class DmaFault(Exception):
    """An access the memory model refuses; ``errno`` is what the DMA reply carries."""

    def __init__(self, errno_value: int, detail: str):
        self.errno = errno_value
        super().__init__(detail)


@dataclass(eq=False)
class Region:
    address: int
    size: int
    buf: bytearray | mmap.mmap
    flags: int = READ_WRITE
    fd: int | None = None  # an fd this model created and owns (memfd), else None

    @property
    def end(self) -> int:
        return self.address + self.size


class ClientMemory:
    def __init__(self):
        self._regions: list[Region] = []  # sorted by address, never overlapping
        self._starts: list[int] = []

    @property
    def regions(self) -> tuple[Region, ...]:
        return tuple(self._regions)

    def add(
        self,
        address: int,
        size: int,
        fd: int | None = None,
        offset: int = 0,
        flags: int = READ_WRITE,
    ) -> Region:
        """Model [address, address+size): a bytearray, or an mmap of ``fd`` at ``offset``.

        ``fd`` stays the caller's (mmap keeps its own duplicate).
        """
        buf = bytearray(size) if fd is None else mmap.mmap(fd, size, mmap.MAP_SHARED, offset=offset)
        return self._insert(Region(address, size, buf, flags))

    def create_memfd_region(self, address: int, size: int, flags: int = READ_WRITE) -> int:
        """A memfd of ``size`` bytes, mmapped and modelled at ``address``; returns the fd
        to pass to dma_map. The model owns the fd: remove() or close() closes it."""
        fd = os.memfd_create(f"vfio-user-dma-{address:#x}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            buf = mmap.mmap(fd, size, mmap.MAP_SHARED)
            self._insert(Region(address, size, buf, flags, fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _insert(self, region: Region) -> Region:
        if region.size <= 0:
            _release(region)
            raise ValueError(f"region size must be positive, got {region.size}")
        i = bisect.bisect_left(self._starts, region.address)
        before = self._regions[i - 1] if i else None
        after = self._regions[i] if i < len(self._regions) else None
        if (before and before.end > region.address) or (after and after.address < region.end):
            _release(region)
            raise ValueError(f"region {region.address:#x}+{region.size:#x} overlaps one modelled")
        self._regions.insert(i, region)
        self._starts.insert(i, region.address)
        return region

    def find(self, address: int, size: int | None = None) -> Region | None:
        """The region starting at ``address`` (and of ``size``, if given)."""
        i = bisect.bisect_left(self._starts, address)
        if i < len(self._regions) and self._regions[i].address == address:
            r = self._regions[i]
            if size is None or r.size == size:
                return r
        return None

    def remove(self, address: int, size: int) -> None:
        """Forget the region that is exactly [address, address+size); KeyError if none."""
        region = self.find(address, size)
        if region is None:
            raise KeyError(f"no region {address:#x}+{size:#x}")
        i = self._regions.index(region)
        del self._regions[i], self._starts[i]
        _release(region)

    def close(self) -> None:
        for region in self._regions:
            _release(region)
        self._regions.clear()
        self._starts.clear()

    # -- access, as the server's DMA requests ask for it

    def read(self, address: int, n: int) -> bytes:
        return b"".join(r.buf[lo:hi] for r, lo, hi in self._span(address, n, DmaMapFlags.READ))

    def write(self, address: int, data: bytes) -> None:
        pos = 0
        for r, lo, hi in self._span(address, len(data), DmaMapFlags.WRITE):
            r.buf[lo:hi] = data[pos : pos + hi - lo]
            pos += hi - lo

    def _span(self, address: int, n: int, need: int) -> list[tuple[Region, int, int]]:
        """(region, start, end) pieces covering [address, address+n), which may cross
        adjacent regions; DmaFault if any byte is not modelled or not permitted."""
        pieces = []
        i = bisect.bisect_right(self._starts, address) - 1
        addr, end = address, address + n
        while addr < end:
            r = self._regions[i] if 0 <= i < len(self._regions) else None
            if r is None or not r.address <= addr < r.end:
                raise DmaFault(
                    errno.EFAULT, f"{address:#x}+{n:#x}: {addr:#x} is not in mapped memory"
                )
            if not r.flags & need:
                what = "readable" if need == DmaMapFlags.READ else "writeable"
                raise DmaFault(
                    errno.EPERM,
                    f"{address:#x}+{n:#x}: region at {r.address:#x} is not mapped {what}",
                )
            hi = min(end, r.end)
            pieces.append((r, addr - r.address, hi - r.address))
            addr = hi
            i += 1
        return pieces


def _release(region: Region) -> None:
    if isinstance(region.buf, mmap.mmap):
        region.buf.close()
    if region.fd is not None:
        os.close(region.fd)
        region.fd = None
