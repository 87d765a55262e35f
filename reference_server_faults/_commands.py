"""Command handlers under the faults: the reference server's handlers with the
defects of commands.py's area (message sizes, device and region info, io fds,
region access, SET_IRQS, reset), in ``HANDLERS`` for FaultyConnection."""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import replace

from pytest_vfiouser.protocol import (
    REGION_INFO_SIZE,
    CodecError,
    Command,
    DeviceFlags,
    DeviceInfo,
    DmaMap,
    DmaUnmap,
    DmaUnmapFlags,
    IrqInfo,
    IrqSetFlags,
    RegionAccess,
    RegionCapId,
    RegionFlags,
    RegionInfo,
    RegionIoFdsReply,
    RegionIoFdsRequest,
    RegionRead,
    RegionTypeCap,
    RegionWrite,
    SetIrqs,
    SparseMmapCap,
)
from reference_server.commands import Handler, Out, _no_payload
from reference_server.dma_map import check_range
from reference_server.errors import ClientGone, VfioError

from . import _dirty, _negotiation
from ._catalogue import FAULTS, crash
from ._dirty import _sent_argsz


def _decode(cls, payload: bytes):
    try:
        return cls.unpack(payload)
    except CodecError as e:
        if "payload-size-unchecked" in FAULTS:  # read into a zeroed struct of its size
            size = cls._layout.size
            try:
                return cls.unpack(payload[:size].ljust(size, b"\0"))
            except CodecError:
                pass
        raise VfioError(errno.EINVAL, str(e)) from None


def _argsz_at_least(argsz: int, need: int) -> None:
    if argsz < need and "argsz-ignored" not in FAULTS:
        raise VfioError(errno.EINVAL, f"argsz {argsz} is below the {need}-byte reply structure")


def _region(conn, index: int):
    if FAULTS and "index-wraps" in FAULTS:
        index %= conn.device.num_regions
    if index >= conn.device.num_regions:
        raise VfioError(
            errno.EINVAL, f"no region {index} (the device has {conn.device.num_regions})"
        )
    return conn.device.regions[index]


# ---- handlers


def version(conn, payload: bytes, fds: list[int]) -> bytes:
    if conn.negotiated and "version-handling-lax" not in FAULTS:
        raise VfioError(errno.EINVAL, "VERSION was already negotiated")
    reply, limits = _negotiation.negotiate(
        payload, conn.settings, conn.revision, conn.device.supports_migration
    )
    conn.negotiated, conn.client = True, limits
    return reply


def dma_map(conn, payload: bytes, fds: list[int]) -> bytes:
    req = _decode(DmaMap, payload)
    if req.argsz != DmaMap.SIZE:
        raise VfioError(errno.EINVAL, f"argsz {req.argsz} is not {DmaMap.SIZE}")
    if len(fds) > 1:
        raise VfioError(errno.EINVAL, f"{len(fds)} fds; a mapping takes at most one")
    conn.dma_map.add(req.address, req.size, req.flags, req.offset, fds[0] if fds else None)
    fds.clear()  # the mapping owns it now
    if "dma-map-reply-payload" in FAULTS:
        return payload
    return b""


def dma_unmap(conn, payload: bytes, fds: list[int]) -> bytes:
    req = _decode(DmaUnmap, payload)
    undefined = req.flags & ~int(DmaUnmapFlags.GET_DIRTY_BITMAP)  # ~ on an IntFlag keeps its bits
    if undefined:
        raise VfioError(errno.EINVAL, f"undefined flag bits {undefined:#x}")
    if req.flags & DmaUnmapFlags.GET_DIRTY_BITMAP:
        if not conn.dirty_logging and "dirty-logging-always-on" not in FAULTS:
            raise VfioError(errno.EINVAL, "dirty bitmap requested while dirty logging is off")
        reply = _dirty.unmap_with_bitmap(conn, req, len(payload))
        return _sent_argsz(reply) if "reply-argsz-wrong" in FAULTS else reply
    if len(payload) != DmaUnmap.ENTRY_SIZE and "payload-size-unchecked" not in FAULTS:
        raise VfioError(
            errno.EINVAL,
            f"payload is {len(payload)} bytes, expected "
            f"{DmaUnmap.ENTRY_SIZE} without the dirty bitmap flag",
        )
    if req.argsz > DmaUnmap.ENTRY_SIZE and "unmap-large-argsz-disconnect" in FAULTS:
        raise ClientGone(f"dropped: DMA_UNMAP argsz {req.argsz} is not {DmaUnmap.ENTRY_SIZE}")
    _argsz_at_least(req.argsz, DmaUnmap.ENTRY_SIZE)
    check_range(req.address, req.size)
    conn.dma_map.remove(req.address, req.size)
    reply = DmaUnmap(DmaUnmap.ENTRY_SIZE, req.flags, req.address, req.size).pack()
    return _sent_argsz(reply) if "reply-argsz-wrong" in FAULTS else reply


def device_get_info(conn, payload: bytes, fds: list[int]) -> bytes:
    req = _decode(DeviceInfo, payload)
    _argsz_at_least(req.argsz, DeviceInfo.SIZE)
    if (req.flags or req.num_regions or req.num_irqs) and "must-be-zero-unchecked" not in FAULTS:
        raise VfioError(errno.EINVAL, "flags, num_regions and num_irqs must be 0")
    dev = conn.device
    if FAULTS:
        flags, num_regions = dev.flags, dev.num_regions
        if "device-info-wrong" in FAULTS:
            flags, num_regions = 0, 6
        reply = DeviceInfo(DeviceInfo.SIZE, flags, num_regions, dev.num_irqs).pack()
        return _sent_argsz(reply) if "reply-argsz-wrong" in FAULTS else reply
    return DeviceInfo(DeviceInfo.SIZE, dev.flags, dev.num_regions, dev.num_irqs).pack()


def device_get_region_info(conn, payload: bytes, fds: list[int]) -> bytes | Out:
    req = _decode(RegionInfo, payload)
    _argsz_at_least(req.argsz, REGION_INFO_SIZE)
    if (req.flags or req.cap_offset or req.size or req.offset) and (
        "must-be-zero-unchecked" not in FAULTS
    ):
        raise VfioError(errno.EINVAL, "flags, cap_offset, size and offset must be 0")
    region = _region(conn, req.index)
    flags, caps, fd = region.flags, region.caps, region.mmap_fd
    if not flags & RegionFlags.MMAP:
        fd = None
    elif conn.client.max_msg_fds < 1 and "max-msg-fds-ignored" not in FAULTS:
        # A client that takes no fds cannot mmap: offer it no mmap at all.
        flags &= ~int(RegionFlags.MMAP)
        caps = tuple(c for c in caps if c.id != RegionCapId.SPARSE_MMAP)
        fd = None
    flags = flags | int(RegionFlags.CAPS) if caps else flags & ~int(RegionFlags.CAPS)
    info = RegionInfo(
        0, flags, req.index, REGION_INFO_SIZE if caps else 0, region.size, region.mmap_offset, caps
    )
    info = replace(info, argsz=info.full_size())
    if FAULTS:
        info = _region_info_faults(info, region)
    if req.argsz < info.argsz and "argsz-ignored" not in FAULTS:
        # Too small for the capabilities: the fixed part, argsz says what is needed
        # (as the kernel does: CAPS still set, cap_offset 0).
        info = replace(info, caps=(), cap_offset=0)
    reply = info.pack()
    if FAULTS:
        if "reply-argsz-wrong" in FAULTS:
            reply = _sent_argsz(reply)
        if "reply-fds-missing" in FAULTS:
            fd = None
    return Out(reply, [fd]) if fd is not None else reply


def _region_info_faults(info: RegionInfo, region) -> RegionInfo:
    if "reply-index-zero" in FAULTS:
        info = replace(info, index=0)
    if "flags-internal-bit" in FAULTS:
        info = replace(info, flags=info.flags | 1 << 31)
    if "mmap-offset-unaligned" in FAULTS and info.flags & RegionFlags.MMAP:
        info = replace(info, offset=info.offset + 0x40)
    if "region-caps-wrong" in FAULTS:
        info = replace(info, flags=info.flags | int(RegionFlags.CAPS))
        caps = []
        for cap in info.caps:
            if isinstance(cap, SparseMmapCap):
                cap = SparseMmapCap(((0, 0xC000), (0x8000, 0x10000)))
            elif isinstance(cap, RegionTypeCap):
                cap = replace(cap, version=0)
            caps.append(cap)
        info = replace(info, caps=tuple(caps))
        info = replace(info, argsz=info.full_size())
    return info


def device_get_region_io_fds(conn, payload: bytes, fds: list[int]) -> bytes | Out:
    req = _decode(RegionIoFdsRequest, payload)
    _argsz_at_least(req.argsz, RegionIoFdsReply.HEAD_SIZE)
    if (req.flags or req.count) and "must-be-zero-unchecked" not in FAULTS:
        raise VfioError(errno.EINVAL, "flags and count must be 0")
    _region(conn, req.index)
    entries = conn.device.io_fds(req.index)
    if len(entries) > conn.client.max_msg_fds and "max-msg-fds-ignored" not in FAULTS:
        entries = []  # the client could not receive the fds
    if FAULTS:
        return _io_fds_faulty(conn, req, entries)
    subs = tuple(s for s, _ in entries)
    full = RegionIoFdsReply.HEAD_SIZE + len(subs) * 40
    if req.argsz < full:
        # The head only; without the entries the fds would mean nothing.
        return RegionIoFdsReply(full, 0, req.index, len(subs)).pack()
    reply = RegionIoFdsReply(full, 0, req.index, len(subs), subs).pack()
    return Out(reply, [fd for _, fd in entries]) if entries else reply


def _io_fds_faulty(conn, req, entries) -> bytes | Out:
    """device_get_region_io_fds's reply under the faults enabled."""
    index = 0 if "reply-index-zero" in FAULTS else req.index
    flags = 1 << 31 if "flags-internal-bit" in FAULTS else 0
    subs = tuple(replace(s, flags=s.flags | flags) for s, _ in entries)
    fds = [fd for _, fd in entries]
    if "ioeventfd-not-eventfd" in FAULTS:
        if "fault_pipe" not in conn.device.__dict__:
            conn.device.fault_pipe = os.pipe()
        fds = [conn.device.fault_pipe[0] for _ in fds]
    if "reply-fds-missing" in FAULTS:
        fds = []
    full = RegionIoFdsReply.HEAD_SIZE + len(subs) * 40
    if req.argsz < full and "argsz-ignored" not in FAULTS:
        reply = RegionIoFdsReply(full, flags, index, len(subs)).pack()
        fds = []
    else:
        reply = RegionIoFdsReply(full, flags, index, len(subs), subs).pack()
    if "reply-argsz-wrong" in FAULTS:
        reply = _sent_argsz(reply)
    return Out(reply, fds) if fds else reply


def device_get_irq_info(conn, payload: bytes, fds: list[int]) -> bytes:
    if not payload and "empty-payload-reads-next" in FAULTS:
        conn.take_next_message()  # its bytes were read as this request's structure
        raise VfioError(errno.EINVAL, "flags and count must be 0")
    req = _decode(IrqInfo, payload)
    _argsz_at_least(req.argsz, IrqInfo.SIZE)
    if (req.flags or req.count) and "must-be-zero-unchecked" not in FAULTS:
        raise VfioError(errno.EINVAL, "flags and count must be 0")
    index = req.index
    if FAULTS and "index-wraps" in FAULTS:
        index %= conn.device.num_irqs
    if index >= conn.device.num_irqs:
        raise VfioError(errno.EINVAL, f"no IRQ type {req.index}")
    irq = conn.device.irqs.indexes[index]
    if FAULTS:
        reply = IrqInfo(
            IrqInfo.SIZE,
            irq.flags | (1 << 31 if "flags-internal-bit" in FAULTS else 0),
            0 if "reply-index-zero" in FAULTS else req.index,
            irq.count,
        ).pack()
        return _sent_argsz(reply) if "reply-argsz-wrong" in FAULTS else reply
    return IrqInfo(IrqInfo.SIZE, irq.flags, req.index, irq.count).pack()


def device_set_irqs(conn, payload: bytes, fds: list[int]) -> bytes:
    req = _decode(SetIrqs, payload)
    if fds and not req.flags & IrqSetFlags.DATA_EVENTFD and "unexpected-fds-abort" in FAULTS:
        crash("abort")  # assert(nfds == 0 || data == DATA_EVENTFD)
    conn.device.irqs.set_irqs(req, len(payload), fds)
    if "set-irqs-minimal" in FAULTS:
        return payload[: SetIrqs.FIXED_SIZE]
    return b""


def _check_access(conn, offset: int, region_index: int, count: int, need: int, what: str):
    regions = conn.device.regions
    if FAULTS:
        return _check_access_faulty(conn, offset, region_index, count, need, what)
    if region_index >= len(regions):
        raise VfioError(errno.EINVAL, f"no region {region_index} (the device has {len(regions)})")
    region = regions[region_index]
    if count > conn.settings.max_data_xfer_size:
        raise VfioError(
            errno.E2BIG,
            f"count {count} is above max_data_xfer_size {conn.settings.max_data_xfer_size}",
        )
    if offset + count > region.size:
        raise VfioError(
            errno.EINVAL,
            f"[{offset:#x}, +{count:#x}) is outside region {region_index} ({region.size:#x} bytes)",
        )
    if not region.flags & need:
        raise VfioError(errno.EPERM, f"region {region_index} is not {what}")
    return region


def _check_access_faulty(conn, offset: int, region_index: int, count: int, need: int, what: str):
    """_check_access under the faults enabled."""
    regions = conn.device.regions
    if "index-wraps" in FAULTS:
        region_index %= len(regions)
    if region_index >= len(regions):
        raise VfioError(errno.EINVAL, f"no region {region_index} (the device has {len(regions)})")
    region = regions[region_index]
    if "region-access-unchecked" in FAULTS:
        return region  # the index is all that is checked
    limit = 4096 if "xfer-limit-overstated" in FAULTS else conn.settings.max_data_xfer_size
    if count > limit:
        raise VfioError(errno.E2BIG, f"count {count} is above max_data_xfer_size {limit}")
    if offset + count > region.size:
        raise VfioError(
            errno.EINVAL,
            f"[{offset:#x}, +{count:#x}) is outside region {region_index} ({region.size:#x} bytes)",
        )
    if not region.flags & need:
        raise VfioError(errno.EPERM, f"region {region_index} is not {what}")
    return region


_READ = int(RegionFlags.READ)
_WRITE = int(RegionFlags.WRITE)
_ACCESS_SIZE = RegionRead.SIZE


def region_read(conn, payload: bytes, fds: list[int]) -> bytes:
    try:
        req = RegionRead.unpack(payload)
    except CodecError as e:
        if FAULTS and len(payload) < _ACCESS_SIZE:
            if "short-region-access-hang" in FAULTS:
                conn.stall()  # waits for the rest of the 16-byte head
            if "payload-size-unchecked" in FAULTS:
                return region_read(conn, payload.ljust(_ACCESS_SIZE, b"\0"), fds)
        raise VfioError(errno.EINVAL, str(e)) from None
    region = _check_access(conn, req.offset, req.region, req.count, _READ, "readable")
    if FAULTS:
        return _region_read_faulty(payload, req, region)
    # The reply's offset/region/count are the request's, so its 16 bytes are reused.
    return payload + region.read(req.offset, req.count)


def _region_read_faulty(payload: bytes, req, region) -> bytes:
    head = payload[:_ACCESS_SIZE]
    if "reply-index-zero" in FAULTS:
        head = head[:8] + bytes(4) + head[12:]
    if "region-access-unchecked" in FAULTS:
        inside = max(0, min(req.count, region.size - req.offset))
        try:
            data = region.read(req.offset, inside) if inside else b""
        except VfioError:
            data = b""
        data = data.ljust(req.count, b"\0")
    else:
        data = region.read(req.offset, req.count)
    if "region-access-64bit" in FAULTS and region.kind == "registers":
        data = data.ljust(max(8, -(-len(data) // 8) * 8), b"\0")  # whole 64-bit words
    return head + data


def region_write(conn, payload: bytes, fds: list[int]) -> bytes:
    try:
        req = RegionWrite.unpack(payload)
    except CodecError as e:
        if FAULTS:
            if len(payload) < _ACCESS_SIZE and "short-region-access-hang" in FAULTS:
                conn.stall()  # waits for the rest of the 16-byte head
            if "payload-size-unchecked" in FAULTS:  # count says how much data there is
                head = RegionAccess.unpack(payload[:_ACCESS_SIZE].ljust(_ACCESS_SIZE, b"\0"))
                data = payload[_ACCESS_SIZE : _ACCESS_SIZE + head.count].ljust(head.count, b"\0")
                return region_write(conn, head.pack() + data, fds)
        raise VfioError(errno.EINVAL, str(e)) from None
    region = _check_access(conn, req.offset, req.region, req.count, _WRITE, "writable")
    if FAULTS:
        return _region_write_faulty(payload, req, region)
    region.write(req.offset, req.data)
    return payload[:_ACCESS_SIZE]  # the reply echoes offset, region and count


def _region_write_faulty(payload: bytes, req, region) -> bytes:
    data = req.data
    if "region-access-64bit" in FAULTS and region.kind == "registers":
        data = data[:8]  # one 64-bit store
    if "region-access-unchecked" in FAULTS:
        data = data[: max(0, region.size - req.offset)]
        if data and region.flags & _WRITE:
            region.write(req.offset, data)
    elif data:
        region.write(req.offset, data)
    head = payload[:_ACCESS_SIZE]
    if "reply-index-zero" in FAULTS:
        head = head[:8] + bytes(4) + head[12:]
    return head


def device_reset(conn, payload: bytes, fds: list[int]) -> bytes:
    _no_payload(payload, "DEVICE_RESET")
    if not conn.device.flags & DeviceFlags.RESET:
        raise VfioError(errno.ENOTSUP, "the device does not support reset")
    if "reset-noop" in FAULTS:
        return bytes(4)  # a status word, and nothing was reset
    conn.device.reset()
    return b""


def server_to_client(conn, payload: bytes, fds: list[int]) -> bytes:
    if "dispatch-table-wrong" in FAULTS and len(payload) >= 16:
        address, count = struct.unpack_from("<QQ", payload)  # served: zeros read, writes taken
        data = bytes(min(count, 4096)) if len(payload) == 16 else b""
        return struct.pack("<QQ", address, count) + data
    raise VfioError(errno.EINVAL, "DMA_READ/DMA_WRITE go from the server to the client")


HANDLERS: dict[int, Handler] = {
    Command.VERSION: version,
    Command.DMA_MAP: dma_map,
    Command.DMA_UNMAP: dma_unmap,
    Command.DEVICE_GET_INFO: device_get_info,
    Command.DEVICE_GET_REGION_INFO: device_get_region_info,
    Command.DEVICE_GET_REGION_IO_FDS: device_get_region_io_fds,
    Command.DEVICE_GET_IRQ_INFO: device_get_irq_info,
    Command.DEVICE_SET_IRQS: device_set_irqs,
    Command.REGION_READ: region_read,
    Command.REGION_WRITE: region_write,
    Command.DMA_READ: server_to_client,
    Command.DMA_WRITE: server_to_client,
    Command.DEVICE_RESET: device_reset,
    Command.DIRTY_PAGES: _dirty.dirty_pages,
}
