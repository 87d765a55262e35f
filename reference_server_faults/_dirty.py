"""Dirty page logging under the faults: DIRTY_PAGES and DMA_UNMAP's dirty bitmap
with the defects of dirty.py's area."""

from __future__ import annotations

from pytest_vfiouser.protocol import (
    BitmapRange,
    DmaUnmap,
)
from reference_server import dirty
from reference_server.dirty import (
    _GET,
    _HEAD,
    _RANGE_REQUEST,
    _UNMAP_WITH_BITMAP,
    DirtyLog,
    _pgsize,
)

from ._catalogue import FAULTS


def dirty_pages(conn, payload: bytes, fds: list[int]) -> bytes:
    """The DIRTY_PAGES handler: GET_BITMAP is _get_bitmap's."""
    if len(payload) >= _HEAD.size:
        argsz, flags = _HEAD.unpack_from(payload)
        if "dirty-logging-always-on" in FAULTS:
            _always_logging(conn)
            if not flags & _GET:
                return payload[: _HEAD.size]  # START/STOP (or anything): nothing to do
            return _get_bitmap(conn, argsz, payload)
        if flags == _GET:
            return _get_bitmap(conn, argsz, payload)
    return dirty.dirty_pages(conn, payload, fds)


def _always_logging(conn) -> None:
    """Fault dirty-logging-always-on: the log exists from the first request on."""
    if conn.dma_map.dirty is None:
        conn.dma_map.dirty = DirtyLog(_pgsize(conn))
    conn.dirty_logging = True


def _wrong_size(reply: bytes, size: int, pgsize: int, nbytes: int) -> bytes:
    """Fault dirty-bitmap-wrong: the bitmap has one byte per 8 pages, not whole u64s
    (and argsz counts what is sent)."""
    need = -(-size // pgsize // 8) or 1
    reply = reply[: len(reply) - nbytes + need]
    return len(reply).to_bytes(4, "little") + reply[4:]


def _get_bitmap(conn, argsz: int, payload: bytes) -> bytes:
    if "argsz-ignored" in FAULTS:
        argsz = 0xFFFFFFFF  # as if it were large enough
    reply = dirty._get_bitmap(conn, argsz, payload)
    if "dirty-bitmap-wrong" in FAULTS and len(reply) > _RANGE_REQUEST:  # the bitmap is there
        rng = BitmapRange.unpack(payload[_HEAD.size :])
        reply = _wrong_size(reply, rng.size, rng.bitmap.pgsize, rng.bitmap.size)
    return _sent_argsz(reply) if "reply-argsz-wrong" in FAULTS else reply


def _sent_argsz(reply: bytes) -> bytes:
    """Fault reply-argsz-wrong: argsz counts the bytes sent after the argsz field."""
    return (len(reply) - 4).to_bytes(4, "little") + reply[4:]


def unmap_with_bitmap(conn, req: DmaUnmap, payload_size: int) -> bytes:
    """DMA_UNMAP with the dirty bitmap flag (commands.dma_unmap checked logging is on)."""
    well_formed = payload_size == _UNMAP_WITH_BITMAP and req.bitmap is not None
    if "dirty-logging-always-on" in FAULTS and well_formed:
        _always_logging(conn)
    reply = dirty.unmap_with_bitmap(conn, req, payload_size)
    if "dirty-bitmap-wrong" in FAULTS:
        reply = _wrong_size(reply, req.size, req.bitmap.pgsize, req.bitmap.size)
    return reply
