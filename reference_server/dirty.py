"""Dirty page logging (0.9.1): VFIO_USER_DIRTY_PAGES and DMA_UNMAP's dirty bitmap.

Logging belongs to the connection (``Connection.dirty_logging``; the log sits
on its DmaMapTable as ``dirty``, where ``note_write`` feeds it with every
write of the DMA engine to client memory, fd-backed or by DMA_WRITE). The
page size is the one negotiated in VERSION (``migration.pgsize``, the
smaller of the client's and the server's); a client that did not negotiate
the migration capability gets the server's (``server.migration_pgsize``,
4096). The log keeps written byte ranges, so any mapping alignment works;
a bitmap has bit n (bit n % 8 of byte n // 8, i.e. of the u64 array in
little-endian) for page n counted from the range's start.

DIRTY_PAGES (request: argsz u32, flags u32, then for GET_BITMAP the 32-byte
VFIO Bitmap Range: iova, size, pgsize, bitmap size; errata 4):
  flags           exactly one of START (1), STOP (2), GET_BITMAP (4): none,
                  several ("mutually exclusive") or undefined bits are EINVAL
  START / STOP    payload exactly 8 bytes and argsz 8 ("the size of the VFIO
                  dirty bitmap info structure"), else EINVAL. START while
                  logging and STOP while not are accepted and change nothing
                  (START does not clear the log). STOP drops the log.
  GET_BITMAP      payload exactly 40 bytes, else EINVAL; refused (EINVAL)
                  while logging is off ("only valid if logging of dirty pages
                  has been previously started"), when the range's pgsize is
                  not the negotiated one, when the range is empty, passes
                  2**64 or is not wholly inside DMA-mapped memory (one mapping
                  or several adjacent ones, or part of them: the kernel allows
                  a range over several mappings, libvfio-user wants exactly
                  one; both are accepted), or when the range's bitmap size is
                  below protocol.bitmap_bytes(size, pgsize); E2BIG when that
                  size is above the server's max_data_xfer_size. argsz below
                  40 (the fixed reply) is EINVAL; argsz below the full reply
                  (40 + bitmap size) gets the fixed part with argsz = the size
                  needed and no bitmap, and clears nothing ("Message sizes").
                  The full reply: argsz, flags GET_BITMAP, the range as sent,
                  then ``bitmap size`` bytes; the pages reported are cleared
                  (as the kernel does), so the next GET_BITMAP shows only pages
                  written since.
DMA_UNMAP with "get dirty page bitmap" (bit 0): EINVAL while logging is off
(commands.py); the payload must be the entry and the 16-byte VFIO Bitmap (40
bytes), the bitmap's pgsize the negotiated one, its size at least
bitmap_bytes(mapping size, pgsize) (E2BIG above max_data_xfer_size), argsz at
least the full reply (24 + 16 + bitmap size), all EINVAL otherwise and checked
before anything is unmapped. The reply: the entry (argsz = the full reply's
size), the VFIO Bitmap as sent, and the mapping's dirty bitmap. Unmapping
(with or without the flag) forgets the mapping's dirty pages.
"""

from __future__ import annotations

import bisect
import errno
import struct

from pytest_vfiouser.protocol import (
    BitmapRange,
    DirtyPages,
    DirtyPagesFlags,
    DmaUnmap,
    bitmap_bytes,
)

from .dma_map import check_range
from .errors import VfioError

_HEAD = struct.Struct("<II")
_ALL = int(DirtyPagesFlags.START | DirtyPagesFlags.STOP | DirtyPagesFlags.GET_BITMAP)
_GET = int(DirtyPagesFlags.GET_BITMAP)
_RANGE_REQUEST = DirtyPages.FIXED_SIZE + BitmapRange.SIZE  # 40 (errata 4)
_UNMAP_WITH_BITMAP = DmaUnmap.ENTRY_SIZE + 16


class DirtyLog:
    """Client memory written by the device: sorted, disjoint [start, end) ranges.
    ``ranges`` ((iova, length) pairs): only writes inside them are logged; none: all."""

    def __init__(self, pgsize: int, ranges: tuple[tuple[int, int], ...] = ()):
        self.pgsize = pgsize
        self.ranges = tuple(ranges)
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __len__(self) -> int:
        return len(self._starts)

    def mark(self, address: int, length: int) -> None:
        if not self.ranges:
            self._mark(address, length)
        for lo, n in self.ranges:
            start, end = max(lo, address), min(lo + n, address + length)
            self._mark(start, end - start)

    def _mark(self, address: int, length: int) -> None:
        if length <= 0:
            return
        lo, hi = address, address + length
        i = bisect.bisect_left(self._ends, lo)  # first range ending at or after lo
        j = bisect.bisect_right(self._starts, hi)  # past the last starting at or before hi
        if i < j:
            lo, hi = min(lo, self._starts[i]), max(hi, self._ends[j - 1])
        self._starts[i:j] = [lo]
        self._ends[i:j] = [hi]

    def forget(self, address: int, size: int) -> None:
        lo, hi = address, address + size
        i = bisect.bisect_right(self._ends, lo)  # first range ending after lo
        j = bisect.bisect_left(self._starts, hi)  # first range starting at or after hi
        if i >= j:
            return
        starts, ends = [], []
        if self._starts[i] < lo:
            starts.append(self._starts[i])
            ends.append(lo)
        if self._ends[j - 1] > hi:
            starts.append(hi)
            ends.append(self._ends[j - 1])
        self._starts[i:j] = starts
        self._ends[i:j] = ends

    def bitmap(self, address: int, size: int, nbytes: int, pgsize: int | None = None) -> bytes:
        """``nbytes`` of bitmap for [address, +size): bit n is page n from ``address``
        (pages of ``pgsize`` bytes, the log's own by default)."""
        lo, hi, pg = address, address + size, pgsize or self.pgsize
        i = bisect.bisect_right(self._ends, lo)
        j = bisect.bisect_left(self._starts, hi)
        bits = 0
        for k in range(i, j):
            first = (max(self._starts[k], lo) - lo) // pg
            last = (min(self._ends[k], hi) - 1 - lo) // pg
            bits |= ((1 << (last - first + 1)) - 1) << first
        return bits.to_bytes(nbytes, "little")


def _pgsize(conn) -> int:
    return conn.client.migration_pgsize or conn.settings.migration_pgsize


def _check_bitmap_size(conn, given: int, size: int, pgsize: int) -> None:
    need = bitmap_bytes(size, pgsize)
    if given < need:
        raise VfioError(
            errno.EINVAL,
            f"bitmap size {given} is below the {need} bytes "
            f"{size:#x} bytes of {pgsize}-byte pages need",
        )
    conn.check_xfer_size(given, f"bitmap size {given}")


def _covered(table, lo: int, hi: int) -> bool:
    """[lo, hi) lies wholly inside the table's mappings (adjacent ones may share it)."""
    pos = lo
    for m in table:  # in address order
        if m.end <= pos:
            continue
        if m.address > pos:
            return False
        pos = m.end
        if pos >= hi:
            return True
    return False


def dirty_pages(conn, payload: bytes, fds: list[int]) -> bytes:
    """The DIRTY_PAGES handler."""
    if len(payload) < _HEAD.size:
        raise VfioError(errno.EINVAL, f"payload is {len(payload)} bytes, expected at least 8")
    argsz, flags = _HEAD.unpack_from(payload)
    if flags & ~_ALL:
        raise VfioError(errno.EINVAL, f"undefined flag bits {flags & ~_ALL:#x}")
    if flags.bit_count() != 1:
        raise VfioError(
            errno.EINVAL,
            f"flags {flags:#x}: exactly one of START, STOP and "
            "GET_BITMAP (they are mutually exclusive)",
        )
    if flags == _GET:
        return _get_bitmap(conn, argsz, payload)
    if len(payload) != _HEAD.size or argsz != _HEAD.size:
        raise VfioError(
            errno.EINVAL,
            f"START/STOP take exactly the 8-byte structure with "
            f"argsz 8 (got {len(payload)} bytes, argsz {argsz})",
        )
    table = conn.dma_map
    if flags == DirtyPagesFlags.START:
        if table.dirty is None:
            table.dirty = DirtyLog(_pgsize(conn))
    else:
        table.dirty = None
    conn.dirty_logging = table.dirty is not None
    return b""


def _get_bitmap(conn, argsz: int, payload: bytes) -> bytes:
    if len(payload) != _RANGE_REQUEST:
        raise VfioError(
            errno.EINVAL,
            f"GET_BITMAP payload is {len(payload)} bytes, expected "
            f"{_RANGE_REQUEST} (8 + the 32-byte bitmap range)",
        )
    log = conn.dma_map.dirty
    if log is None:
        raise VfioError(errno.EINVAL, "GET_BITMAP while dirty page logging is off")
    rng = BitmapRange.unpack(payload[_HEAD.size :])
    if rng.bitmap.pgsize != log.pgsize:
        raise VfioError(
            errno.EINVAL, f"bitmap pgsize {rng.bitmap.pgsize} is not the negotiated {log.pgsize}"
        )
    check_range(rng.iova, rng.size)
    if not _covered(conn.dma_map, rng.iova, rng.iova + rng.size):
        raise VfioError(errno.EINVAL, f"[{rng.iova:#x}, +{rng.size:#x}) is not wholly DMA-mapped")
    _check_bitmap_size(conn, rng.bitmap.size, rng.size, log.pgsize)
    if argsz < _RANGE_REQUEST:
        raise VfioError(
            errno.EINVAL, f"argsz {argsz} is below the {_RANGE_REQUEST}-byte reply structure"
        )
    full = _RANGE_REQUEST + rng.bitmap.size
    if argsz < full:
        return DirtyPages(full, _GET, rng).pack()  # argsz says what is needed
    bits = log.bitmap(rng.iova, rng.size, rng.bitmap.size)
    log.forget(rng.iova, rng.size)
    return DirtyPages(full, _GET, rng, bits).pack()


def unmap_with_bitmap(conn, req: DmaUnmap, payload_size: int) -> bytes:
    """DMA_UNMAP with the dirty bitmap flag (commands.dma_unmap checked logging is on)."""
    if payload_size != _UNMAP_WITH_BITMAP or req.bitmap is None:
        raise VfioError(
            errno.EINVAL,
            f"payload is {payload_size} bytes, expected "
            f"{_UNMAP_WITH_BITMAP} (the entry and the VFIO Bitmap)",
        )
    log = conn.dma_map.dirty
    check_range(req.address, req.size)
    if req.bitmap.pgsize != log.pgsize:
        raise VfioError(
            errno.EINVAL, f"bitmap pgsize {req.bitmap.pgsize} is not the negotiated {log.pgsize}"
        )
    _check_bitmap_size(conn, req.bitmap.size, req.size, log.pgsize)
    full = _UNMAP_WITH_BITMAP + req.bitmap.size
    if req.argsz < full:
        raise VfioError(errno.EINVAL, f"argsz {req.argsz} is below the {full}-byte reply")
    bits = log.bitmap(req.address, req.size, req.bitmap.size)
    conn.dma_map.remove(req.address, req.size)  # ENOENT unless exactly a mapping
    return DmaUnmap(full, req.flags, req.address, req.size, req.bitmap, bits).pack()
