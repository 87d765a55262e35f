"""Dirty page logging under the faults: DIRTY_PAGES and DMA_UNMAP's dirty bitmap
with the defects of dirty.py's area."""

from __future__ import annotations

import errno

from pytest_vfiouser.protocol import (
    BitmapRange,
    DirtyPages,
    DirtyPagesFlags,
    DmaUnmap,
)
from reference_server.dirty import (
    _ALL,
    _GET,
    _HEAD,
    _RANGE_REQUEST,
    _UNMAP_WITH_BITMAP,
    DirtyLog,
    _check_bitmap_size,
    _covered,
    _pgsize,
)
from reference_server.dma_map import check_range
from reference_server.errors import VfioError

from ._catalogue import FAULTS


def dirty_pages(conn, payload: bytes, fds: list[int]) -> bytes:
    """The DIRTY_PAGES handler."""
    if len(payload) < _HEAD.size:
        raise VfioError(errno.EINVAL, f"payload is {len(payload)} bytes, expected at least 8")
    argsz, flags = _HEAD.unpack_from(payload)
    if "dirty-logging-always-on" in FAULTS:
        _always_logging(conn)
        if not flags & _GET:
            return payload[: _HEAD.size]  # START/STOP (or anything): nothing to do
        return _get_bitmap(conn, argsz, payload)
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


def _always_logging(conn) -> None:
    """Fault dirty-logging-always-on: the log exists from the first request on."""
    if conn.dma_map.dirty is None:
        conn.dma_map.dirty = DirtyLog(_pgsize(conn))
    conn.dirty_logging = True


def _wrong_size(reply: bytes, nbytes: int, need_bytes: int) -> bytes:
    """Fault dirty-bitmap-wrong: the bitmap has one byte per 8 pages, not whole u64s."""
    return reply[: len(reply) - nbytes + need_bytes]


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
    if argsz < _RANGE_REQUEST and "argsz-ignored" not in FAULTS:
        raise VfioError(
            errno.EINVAL, f"argsz {argsz} is below the {_RANGE_REQUEST}-byte reply structure"
        )
    full = _RANGE_REQUEST + rng.bitmap.size
    if argsz < full and "argsz-ignored" not in FAULTS:
        reply = DirtyPages(full, _GET, rng).pack()  # argsz says what is needed
        return _sent_argsz(reply) if "reply-argsz-wrong" in FAULTS else reply
    bits = log.bitmap(rng.iova, rng.size, rng.bitmap.size)
    log.forget(rng.iova, rng.size)
    if FAULTS:
        reply = DirtyPages(full, _GET, rng, bits).pack()
        if "dirty-bitmap-wrong" in FAULTS:
            need = -(-rng.size // log.pgsize // 8) or 1
            reply = _wrong_size(reply, rng.bitmap.size, need)
            reply = (len(reply)).to_bytes(4, "little") + reply[4:]
        return _sent_argsz(reply) if "reply-argsz-wrong" in FAULTS else reply
    return DirtyPages(full, _GET, rng, bits).pack()


def _sent_argsz(reply: bytes) -> bytes:
    """Fault reply-argsz-wrong: argsz counts the bytes sent after the argsz field."""
    return (len(reply) - 4).to_bytes(4, "little") + reply[4:]


def unmap_with_bitmap(conn, req: DmaUnmap, payload_size: int) -> bytes:
    """DMA_UNMAP with the dirty bitmap flag (commands.dma_unmap checked logging is on)."""
    if payload_size != _UNMAP_WITH_BITMAP or req.bitmap is None:
        raise VfioError(
            errno.EINVAL,
            f"payload is {payload_size} bytes, expected "
            f"{_UNMAP_WITH_BITMAP} (the entry and the VFIO Bitmap)",
        )
    if "dirty-logging-always-on" in FAULTS:
        _always_logging(conn)
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
    reply = DmaUnmap(full, req.flags, req.address, req.size, req.bitmap, bits).pack()
    if "dirty-bitmap-wrong" in FAULTS:
        need = -(-req.size // log.pgsize // 8) or 1
        reply = _wrong_size(reply, req.bitmap.size, need)
        reply = (len(reply)).to_bytes(4, "little") + reply[4:]
    return reply
