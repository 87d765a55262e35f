"""Region backends: what sits behind a region index.

A region is any object with the :class:`Region` interface. The command
handlers do every protocol check (index, range, READ/WRITE flags, transfer
size) before calling ``read``/``write``, so a backend only implements its
behaviour; it may still raise VfioError for a device-level refusal (e.g. the
DMA doorbell). The 0.9.1 migration region is meant to be one more backend.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

from pytest_vfiouser.protocol import RegionCap, RegionFlags, SparseMmapCap

from . import registers
from .errors import VfioError


class Region:
    """Interface and defaults: an absent region (size 0, flags 0)."""

    kind = "absent"
    size: int = 0
    flags: int = 0
    caps: tuple[RegionCap, ...] = ()
    mmap_fd: int | None = None  # sent with REGION_INFO when flags has MMAP
    mmap_offset: int = 0  # the REGION_INFO offset field: mmap() offset into mmap_fd

    def read(self, offset: int, count: int) -> bytes:
        raise VfioError(errno.EPERM, "region is not readable")

    def write(self, offset: int, data: bytes) -> None:
        raise VfioError(errno.EPERM, "region is not writable")

    def reset(self) -> None:
        """DEVICE_RESET."""

    def save(self) -> bytes:
        """State for Device.save_state (empty: nothing to save)."""
        return b""

    def load(self, data: bytes) -> None:
        """Restore what save() returned; raise ValueError if it does not fit."""
        if data:
            raise ValueError(f"{self.kind} region has no state, got {len(data)} bytes")

    def close(self) -> None:
        """Release OS resources (server exit)."""


AbsentRegion = Region


class RamRegion(Region):
    """RAM in a sealed memfd, mapped here; optionally offered to the client for mmap.

    Sealed against shrinking and growing: the client gets the fd, and a
    truncated file would make our own accesses fault (SIGBUS) and kill us.
    Contents survive DEVICE_RESET and client disconnects.
    """

    kind = "ram"

    def __init__(
        self, name: str, size: int, flags: int, sparse_areas: tuple[tuple[int, int], ...] = ()
    ):
        self.size = size
        self.flags = int(flags)  # plain ints: IntFlag arithmetic is slow on the hot path
        fd = os.memfd_create(f"vfio-user-ref-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(
                fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
            )
            self.mem = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if flags & RegionFlags.MMAP:
            self.mmap_fd = fd
            if sparse_areas:
                self.caps = (SparseMmapCap(tuple(sparse_areas)),)

    def read(self, offset: int, count: int) -> bytes:
        return self.mem[offset : offset + count]

    def write(self, offset: int, data: bytes) -> None:
        self.mem[offset : offset + len(data)] = data

    def save(self) -> bytes:
        return self.mem[:]

    def load(self, data: bytes) -> None:
        if len(data) != self.size:
            raise ValueError(f"RAM region is {self.size} bytes, state has {len(data)}")
        self.mem[:] = data

    def close(self) -> None:
        self.mem.close()
        os.close(self._fd)


class PatternRegion(Region):
    """Read-only, fixed contents: registers.pattern_bytes."""

    kind = "pattern"

    def __init__(self, size: int):
        self.size = size
        self.flags = int(RegionFlags.READ)
        self._data = registers.pattern_bytes(0, size)

    def read(self, offset: int, count: int) -> bytes:
        return self._data[offset : offset + count]


class SinkRegion(Region):
    """Write-only: data is accepted and discarded (bytes_written counts it)."""

    kind = "sink"

    def __init__(self, size: int):
        self.size = size
        self.flags = int(RegionFlags.WRITE)
        self.bytes_written = 0

    def write(self, offset: int, data: bytes) -> None:
        self.bytes_written += len(data)
