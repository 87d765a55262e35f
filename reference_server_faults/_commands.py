"""Command handlers under the faults: the reference server's handlers wrapped with
the defects of commands.py's area (message sizes, device and region info, io fds,
region access, SET_IRQS, reset), with those of _dirty and _device_feature (0.9.2),
in ``HANDLERS`` for FaultyConnection. The checks
the handlers ask of the connection (argsz, must-be-zero fields, indexes, region
access) carry their faults in FaultyConnection."""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import replace

from pytest_vfiouser.protocol import (
    DeviceInfo,
    DmaUnmap,
    DmaUnmapFlags,
    IrqInfo,
    IrqSetFlags,
    RegionAccess,
    RegionFlags,
    RegionInfo,
    RegionIoFdsReply,
    RegionRead,
    RegionWrite,
    SetIrqs,
    VfioBitmap,
)
from reference_server import commands
from reference_server.commands import Handler, Out
from reference_server.connection import Connection
from reference_server.errors import ClientGone, VfioError

from . import _device_feature, _dirty
from ._catalogue import FAULTS, crash
from ._dirty import _sent_argsz

_ACCESS_SIZE = RegionRead.SIZE
_WRITE = commands._WRITE


def _argsz_of(reply: bytes) -> bytes:
    return _sent_argsz(reply) if "reply-argsz-wrong" in FAULTS else reply


def _split(result) -> tuple[bytes, list[int]]:
    return (result.payload, result.fds) if isinstance(result, Out) else (result, [])


def _index_zero(reply: bytes) -> bytes:
    """Fault reply-index-zero on a REGION_READ/WRITE reply: its region field is 0."""
    return reply[:8] + bytes(4) + reply[12:] if "reply-index-zero" in FAULTS else reply


# ---- handlers


def version(conn, payload: bytes, fds: list[int]) -> bytes:
    if "version-handling-lax" in FAULTS:
        conn.negotiated = False  # a second VERSION is served as the first
    return commands.version(conn, payload, fds)


def dma_map(conn, payload: bytes, fds: list[int]) -> bytes:
    reply = commands.dma_map(conn, payload, fds)
    return payload if "dma-map-reply-payload" in FAULTS else reply


def dma_unmap(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(DmaUnmap, payload)
    if req.flags == DmaUnmapFlags.GET_DIRTY_BITMAP and (
        conn.dirty_logging or "dirty-logging-always-on" in FAULTS
    ):
        return _argsz_of(_dirty.unmap_with_bitmap(conn, req, len(payload)))
    if conn.revision != "0.9.1" and req.flags and "unmap-flags-0-9-1-reply" in FAULTS:
        # The 0.9.1 reply form kept for the flag 0.9.2 no longer defines: an empty bitmap
        plain = replace(req, flags=0).pack()
        return commands.dma_unmap(conn, plain, fds) + VfioBitmap(0, 0).pack()
    if not req.flags:
        if len(payload) != DmaUnmap.ENTRY_SIZE and "payload-size-unchecked" in FAULTS:
            payload = payload[: DmaUnmap.ENTRY_SIZE].ljust(DmaUnmap.ENTRY_SIZE, b"\0")
        if len(payload) == DmaUnmap.ENTRY_SIZE and req.argsz > DmaUnmap.ENTRY_SIZE:
            if "unmap-large-argsz-disconnect" in FAULTS:
                raise ClientGone(
                    f"dropped: DMA_UNMAP argsz {req.argsz} is not {DmaUnmap.ENTRY_SIZE}"
                )
    return _argsz_of(commands.dma_unmap(conn, payload, fds))


def device_get_info(conn, payload: bytes, fds: list[int]) -> bytes:
    reply = commands.device_get_info(conn, payload, fds)
    if "device-info-wrong" in FAULTS:
        reply = replace(DeviceInfo.unpack(reply), flags=0, num_regions=6).pack()
    return _argsz_of(reply)


_MMAP = int(RegionFlags.MMAP)


def device_get_region_info(conn, payload: bytes, fds: list[int]) -> bytes | Out:
    reply, out = _split(commands.device_get_region_info(conn, payload, fds))
    info = RegionInfo.unpack(reply)
    if info.argsz > len(reply):  # too small for the capabilities
        if "small-argsz-keeps-caps" in FAULTS:
            reply = replace(info, flags=info.flags | int(RegionFlags.CAPS)).pack()
        if "small-argsz-mmap-no-fd" in FAULTS and conn.device.regions[info.index].flags & _MMAP:
            # libvfio-user's short reply: MMAP set, and the fd left for the full reply
            short = RegionInfo.unpack(reply)
            reply = replace(short, flags=short.flags | _MMAP).pack()
            out = []
    if "reply-fds-missing" in FAULTS:
        out = []
    reply = _argsz_of(reply)
    return Out(reply, out) if out else reply


def device_get_region_io_fds(conn, payload: bytes, fds: list[int]) -> bytes | Out:
    reply, out = _split(commands.device_get_region_io_fds(conn, payload, fds))
    info = RegionIoFdsReply.unpack(reply)
    if "io-fds-none" in FAULTS:  # no sub-region registered: every reply is the bare head
        info = replace(info, argsz=RegionIoFdsReply.HEAD_SIZE, count=0, sub_regions=())
        out = []
    flags = 1 << 31 if "flags-internal-bit" in FAULTS else 0
    info = replace(
        info,
        flags=info.flags | flags,
        index=0 if "reply-index-zero" in FAULTS else info.index,
        sub_regions=tuple(replace(s, flags=s.flags | flags) for s in info.sub_regions),
    )
    if "ioeventfd-not-eventfd" in FAULTS:
        if "fault_pipe" not in conn.device.__dict__:
            conn.device.fault_pipe = os.pipe()
        out = [conn.device.fault_pipe[0] for _ in out]
    if "reply-fds-missing" in FAULTS:
        out = []
    reply = _argsz_of(info.pack())
    return Out(reply, out) if out else reply


def device_get_irq_info(conn, payload: bytes, fds: list[int]) -> bytes:
    if not payload and "empty-payload-reads-next" in FAULTS:
        conn.take_next_message()  # its bytes were read as this request's structure
        raise VfioError(errno.EINVAL, "flags and count must be 0")
    reply = commands.device_get_irq_info(conn, payload, fds)
    info = IrqInfo.unpack(reply)
    if "flags-internal-bit" in FAULTS:
        info = replace(info, flags=info.flags | 1 << 31)
    if "reply-index-zero" in FAULTS:
        info = replace(info, index=0)
    return _argsz_of(info.pack())


def device_set_irqs(conn, payload: bytes, fds: list[int]) -> bytes:
    if fds and "unexpected-fds-abort" in FAULTS:
        if not conn.decode(SetIrqs, payload).flags & IrqSetFlags.DATA_EVENTFD:
            crash("abort")  # assert(nfds == 0 || data == DATA_EVENTFD)
    reply = commands.device_set_irqs(conn, payload, fds)
    return payload[: SetIrqs.FIXED_SIZE] if "set-irqs-minimal" in FAULTS else reply


def region_read(conn, payload: bytes, fds: list[int]) -> bytes:
    if len(payload) < _ACCESS_SIZE:
        if "short-region-access-hang" in FAULTS:
            conn.stall()  # waits for the rest of the 16-byte head
        if "payload-size-unchecked" in FAULTS:
            payload = payload.ljust(_ACCESS_SIZE, b"\0")
    if "region-access-unchecked" in FAULTS:
        reply = _read_unchecked(conn, payload)
    else:
        reply = commands.region_read(conn, payload, fds)
    if "region-access-64bit" in FAULTS:
        region = conn.region(RegionAccess.unpack(reply[:_ACCESS_SIZE]).region)
        if region.kind == "registers":  # whole 64-bit words
            data = reply[_ACCESS_SIZE:]
            reply = reply[:_ACCESS_SIZE] + data.ljust(max(8, -(-len(data) // 8) * 8), b"\0")
    return _index_zero(reply)


def _read_unchecked(conn, payload: bytes) -> bytes:
    """Fault region-access-unchecked: what lies outside the region reads as zeros."""
    req = Connection.decode(conn, RegionRead, payload)  # the handler's own size check
    region = conn.check_access(req.offset, req.region, req.count, commands._READ, "readable")
    inside = max(0, min(req.count, region.size - req.offset))
    try:
        data = region.read(req.offset, inside) if inside else b""
    except VfioError:
        data = b""
    return payload + data.ljust(req.count, b"\0")


def region_write(conn, payload: bytes, fds: list[int]) -> bytes:
    if len(payload) < _ACCESS_SIZE and "short-region-access-hang" in FAULTS:
        conn.stall()  # waits for the rest of the 16-byte head
    if "payload-size-unchecked" in FAULTS:  # count says how much data there is
        head = RegionAccess.unpack(payload[:_ACCESS_SIZE].ljust(_ACCESS_SIZE, b"\0"))
        data = payload[_ACCESS_SIZE : _ACCESS_SIZE + head.count].ljust(head.count, b"\0")
        payload = head.pack() + data
    if FAULTS & {"region-access-64bit", "region-access-unchecked"}:
        reply = _write_faulty(conn, payload)
    else:
        reply = commands.region_write(conn, payload, fds)
    return _index_zero(reply)


def _write_faulty(conn, payload: bytes) -> bytes:
    """Faults region-access-64bit (one 64-bit store) and region-access-unchecked (what
    lies outside the region is dropped, and so is a write to a read-only one)."""
    req = Connection.decode(conn, RegionWrite, payload)  # the handler's own size check
    region = conn.check_access(req.offset, req.region, req.count, _WRITE, "writable")
    data = req.data
    if "region-access-64bit" in FAULTS and region.kind == "registers":
        data = data[:8]
    if "region-access-unchecked" in FAULTS:
        data = data[: max(0, region.size - req.offset)]
        if data and region.flags & _WRITE:
            region.write(req.offset, data)
    elif data:
        region.write(req.offset, data)
    return payload[:_ACCESS_SIZE]


def device_reset(conn, payload: bytes, fds: list[int]) -> bytes:
    if "reset-noop" not in FAULTS:
        return commands.device_reset(conn, payload, fds)
    commands.check_reset(conn, payload)
    return bytes(4)  # a status word, and nothing was reset


def server_to_client(conn, payload: bytes, fds: list[int]) -> bytes:
    if "dispatch-table-wrong" in FAULTS and len(payload) >= 16:
        address, count = struct.unpack_from("<QQ", payload)  # served: zeros read, writes taken
        data = bytes(min(count, 4096)) if len(payload) == 16 else b""
        return struct.pack("<QQ", address, count) + data
    return commands.server_to_client(conn, payload, fds)


# Each correct handler, or the overlay's namesake where there is one.
_OVERLAY = {
    h.__name__: h
    for h in (
        version,
        dma_map,
        dma_unmap,
        device_get_info,
        device_get_region_info,
        device_get_region_io_fds,
        device_get_irq_info,
        device_set_irqs,
        region_read,
        region_write,
        device_reset,
        server_to_client,
        _dirty.dirty_pages,
        _device_feature.device_feature,
        _device_feature.mig_data_read,
        _device_feature.mig_data_write,
        _device_feature.region_write_multi,
    )
}
HANDLERS: dict[int, Handler] = {
    command: _OVERLAY.get(h.__name__, h) for command, h in commands.HANDLERS.items()
}
