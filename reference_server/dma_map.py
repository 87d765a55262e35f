"""The DMA map table of one client connection (DMA_MAP / DMA_UNMAP).

Rules (errno):
  size 0, address + size beyond 2**64, undefined flag bits, a non-zero
  offset without an fd, an fd that is not a regular file (memfd, shm,
  hugetlbfs) or whose file is shorter than offset + size       EINVAL
  any overlap with an existing mapping                          EEXIST
  more than ``max_maps`` mappings                               ENOSPC
  mmap() refused                                                its errno
  DMA_UNMAP of anything but exactly (address, size) of a mapping ENOENT

An fd-backed mapping is mmap()ed (honouring ``offset``) and the fd kept;
both go at DMA_UNMAP or disconnect. Before each access through a mapping
the file size is checked again: a client that truncates its file must not
be able to make us fault (SIGBUS).
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
import stat
from dataclasses import dataclass

from pytest_vfiouser.protocol import DmaMapFlags

from .errors import VfioError

_U64 = 1 << 64
_ALL_FLAGS = int(DmaMapFlags.READ | DmaMapFlags.WRITE)


@dataclass(slots=True)
class Mapping:
    address: int
    size: int
    flags: int
    offset: int
    fd: int | None = None
    mem: mmap.mmap | None = None
    delta: int = 0  # offset - page-aligned offset: where the mapping starts in ``mem``

    @property
    def end(self) -> int:
        return self.address + self.size

    def close(self) -> None:
        if self.mem is not None:
            self.mem.close()
            self.mem = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _check_file(self, pos: int, n: int) -> None:
        if os.fstat(self.fd).st_size < self.offset + pos + n:
            raise VfioError(
                errno.EFAULT,
                f"the file behind DMA mapping {self.address:#x} shrank below the mapping",
            )

    def read(self, pos: int, n: int) -> bytes:
        """``n`` bytes at ``pos`` in this fd-backed mapping."""
        self._check_file(pos, n)
        start = self.delta + pos
        return self.mem[start : start + n]

    def write(self, pos: int, data: bytes) -> None:
        self._check_file(pos, len(data))
        start = self.delta + pos
        self.mem[start : start + len(data)] = data


def check_range(address: int, size: int) -> None:
    if size == 0:
        raise VfioError(errno.EINVAL, "size is 0")
    if address + size > _U64:
        raise VfioError(errno.EINVAL, f"address {address:#x} + size {size:#x} passes 2**64")


class DmaMapTable:
    def __init__(self, max_maps: int):
        self.max_maps = max_maps
        self._starts: list[int] = []  # sorted; parallel to _maps
        self._maps: list[Mapping] = []
        self.dirty = None  # dirty.DirtyLog while DIRTY_PAGES logging is on

    def __len__(self) -> int:
        return len(self._maps)

    def __iter__(self):
        return iter(list(self._maps))

    def add(self, address: int, size: int, flags: int, offset: int, fd: int | None) -> Mapping:
        """Map; on success the mapping owns ``fd``, on failure the caller still does."""
        if flags & ~_ALL_FLAGS:
            raise VfioError(errno.EINVAL, f"undefined flag bits {flags & ~_ALL_FLAGS:#x}")
        check_range(address, size)
        if fd is None and offset:
            raise VfioError(errno.EINVAL, "offset without a file descriptor must be 0")
        i = self._slot(address, size)
        if len(self._maps) >= self.max_maps:
            raise VfioError(errno.ENOSPC, f"the table holds its maximum of {self.max_maps}")
        m = Mapping(address, size, flags, offset)
        if fd is not None:
            self._map_fd(m, fd)
        self._starts.insert(i, address)
        self._maps.insert(i, m)
        return m

    def _slot(self, address: int, size: int) -> int:
        """Where a new mapping [address, +size) goes in the table; EEXIST if it overlaps one."""
        i = bisect.bisect_right(self._starts, address)
        overlaps_before = i > 0 and self._maps[i - 1].end > address
        overlaps_after = i < len(self._maps) and self._starts[i] < address + size
        if overlaps_before or overlaps_after:
            raise VfioError(errno.EEXIST, f"[{address:#x}, +{size:#x}) overlaps a mapping")
        return i

    def _map_fd(self, m: Mapping, fd: int) -> None:
        try:
            st = os.fstat(fd)
        except OSError as e:
            raise VfioError(errno.EINVAL, f"fd: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise VfioError(errno.EINVAL, "fd is not a mappable file")
        if st.st_size < m.offset + m.size:
            raise VfioError(
                errno.EINVAL, f"file is {st.st_size} bytes, the mapping needs {m.offset + m.size}"
            )
        aligned = m.offset - m.offset % mmap.ALLOCATIONGRANULARITY
        share, prot = self._sharing(m)
        try:
            m.mem = mmap.mmap(fd, m.offset - aligned + m.size, share, prot, offset=aligned)
        except (OSError, ValueError, OverflowError) as e:
            raise VfioError(getattr(e, "errno", None) or errno.EINVAL, f"mmap: {e}") from None
        m.delta = m.offset - aligned
        m.fd = fd

    @staticmethod
    def _sharing(m: Mapping) -> tuple[int, int]:
        """mmap's flags and protection for ``m``: shared with the client, so that each side
        sees the other's writes; writable only when the client allowed it."""
        return mmap.MAP_SHARED, mmap.PROT_READ | (
            mmap.PROT_WRITE if m.flags & DmaMapFlags.WRITE else 0
        )

    def remove(self, address: int, size: int) -> Mapping:
        i = self._find(address, size)
        del self._starts[i]
        m = self._maps.pop(i)
        m.close()
        if self.dirty is not None:
            self.dirty.forget(m.address, m.size)
        return m

    def _find(self, address: int, size: int) -> int:
        """The index of the mapping that is exactly [address, +size); ENOENT if none."""
        i = bisect.bisect_left(self._starts, address)
        if i == len(self._maps) or self._starts[i] != address or self._maps[i].size != size:
            raise VfioError(errno.ENOENT, f"no mapping is exactly [{address:#x}, +{size:#x})")
        return i

    def clear(self) -> None:
        for m in self._maps:
            m.close()
        self._maps.clear()
        self._starts.clear()

    def segments(self, address: int, length: int, need: int) -> list[tuple[Mapping, int, int]]:
        """(mapping, offset in it, length) pieces covering [address, +length).

        EFAULT unless adjacent mappings cover it all; EPERM when one lacks ``need``.
        """
        out = []
        i = bisect.bisect_right(self._starts, address) - 1
        pos, end = address, address + length
        while pos < end:
            if (
                i < 0
                or i >= len(self._maps)
                or not (self._maps[i].address <= pos < self._maps[i].end)
            ):
                raise VfioError(errno.EFAULT, f"client address {pos:#x} is not DMA-mapped")
            m = self._maps[i]
            if not m.flags & need:
                raise VfioError(
                    errno.EPERM, f"mapping {m.address:#x} lacks the {DmaMapFlags(need).name} flag"
                )
            n = min(end, m.end) - pos
            out.append((m, pos - m.address, n))
            pos += n
            i += 1
        return out

    def note_write(self, address: int, length: int) -> None:
        """Every DMA write to client memory passes here: the dirty page tracking hook."""
        if self.dirty is not None:
            self.dirty.mark(address, length)
