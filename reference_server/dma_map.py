"""The DMA map table of one client connection (DMA_MAP / DMA_UNMAP).

Rules (errno):
  size 0, address + size beyond 2**64, undefined flag bits, a non-zero
  offset without an fd, an fd that is not a regular file (memfd, shm,
  hugetlbfs) or whose file is shorter than offset + size       EINVAL
  any overlap with an existing mapping                          EEXIST
  more than ``max_maps`` mappings                               ENOSPC
  mmap() refused                                                its errno
  DMA_UNMAP of anything but exactly (address, size) of a mapping ENOENT

An fd-backed mapping keeps the fd; it goes at DMA_UNMAP or disconnect. The
spec says such a region "can be mapped via the mmap() system call": DMA_MAP
maps it once to see that it can, and refuses what cannot be (a file opened
read-only for a writable mapping, a sealed one, a misaligned hugetlbfs
offset). The device's accesses then go through the fd, pread()/pwrite() at
offset + position, not through a mapping: the client owns the file and may
truncate it at any moment, and touching a mapped page past the end of the
file is a SIGBUS that kills the server (no check before the access can close
that race). A read past the end comes back short, and a write is refused
when the file is too short (pwrite would grow it back): EFAULT, the client's
memory is gone. A write to a file the client made O_APPEND is EINVAL (pwrite
would append); other pread/pwrite errors are the copy's errno (hugetlbfs
takes no write(): EINVAL).
"""

from __future__ import annotations

import bisect
import errno
import fcntl
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
    fd: int | None = None  # the client's file (fd-backed), else DMA_READ/DMA_WRITE

    @property
    def end(self) -> int:
        return self.address + self.size

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def read(self, pos: int, n: int) -> bytes:
        """``n`` bytes at ``pos`` in this fd-backed mapping, read from its file."""
        try:
            data = os.pread(self.fd, n, self.offset + pos)
        except OSError as e:
            raise self._failed("read", e) from None
        if len(data) < n:
            raise self._gone()
        return data

    def write(self, pos: int, data: bytes) -> None:
        """Write ``data`` at ``pos`` in this fd-backed mapping, into its file."""
        fd, at = self.fd, self.offset + pos
        if os.fstat(fd).st_size < at + len(data):
            raise self._gone()  # pwrite would grow the file back
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
            raise VfioError(
                errno.EINVAL,
                f"the file behind DMA mapping {self.address:#x} was made O_APPEND: "
                "a write would land at its end",
            )
        try:
            done = os.pwrite(fd, data, at)
        except OSError as e:
            raise self._failed("write", e) from None
        if done < len(data):
            raise self._gone()

    def _gone(self) -> VfioError:
        return VfioError(
            errno.EFAULT,
            f"the file behind DMA mapping {self.address:#x} shrank below the mapping",
        )

    def _failed(self, what: str, e: OSError) -> VfioError:
        return VfioError(
            e.errno or errno.EIO,
            f"{what} of the file behind DMA mapping {self.address:#x}: {e.strerror}",
        )


def check_range(address: int, size: int) -> None:
    if size == 0:
        raise VfioError(errno.EINVAL, "size is 0")
    if address + size > _U64:
        raise VfioError(errno.EINVAL, f"address {address:#x} + size {size:#x} passes 2**64")


class DmaMapTable:
    mapping_type = Mapping  # what one entry is (a subclass may change it)

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
        m = self.mapping_type(address, size, flags, offset)
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
        self._check_mappable(m, fd)
        m.fd = fd

    @staticmethod
    def _check_mappable(m: Mapping, fd: int) -> None:
        """Map [offset, +size) of ``fd`` shared, writable if the client allowed it, and
        unmap it: the file is one the server could mmap() as the spec has it."""
        aligned = m.offset - m.offset % mmap.ALLOCATIONGRANULARITY
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if m.flags & DmaMapFlags.WRITE else 0)
        try:
            mmap.mmap(
                fd, m.offset - aligned + m.size, mmap.MAP_SHARED, prot, offset=aligned
            ).close()
        except (OSError, ValueError, OverflowError) as e:
            raise VfioError(getattr(e, "errno", None) or errno.EINVAL, f"mmap: {e}") from None

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
