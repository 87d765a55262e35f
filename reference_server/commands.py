"""Command handlers and the dispatch table (keyed by command, chosen by revision).

A handler gets the connection, the request payload and the list of fds that
came with it, and returns the reply payload (or ``Out(payload, fds)`` to send
fds). It refuses by raising VfioError. It takes ownership of an fd only by
removing it from the list; the connection closes whatever is left.

errno choices, beyond each module's own (dma_map.py, irqs.py, registers.py):
  EINVAL   payload of the wrong size or that does not decode; argsz below the
           fixed reply structure (or not the structure size where the spec
           says argsz is that: DMA_MAP 32, SET_IRQS the payload size);
           fields the spec says must be zero that are not; a region or IRQ
           index the device lacks; a REGION_READ/WRITE range outside the
           region (absent regions have size 0); DMA_UNMAP with the dirty
           bitmap flag while dirty logging is off
  E2BIG    REGION_READ/WRITE count above the server's max_data_xfer_size
  EPERM    REGION_READ of a region without READ, REGION_WRITE without WRITE
  ENOTSUP  DEVICE_RESET of a device without VFIO_DEVICE_FLAGS_RESET;
           VERSION major != 0
  ENOSYS   a command number the revision does not define
DEVICE_GET_REGION_IO_FDS of a region without io fds answers count 0.
DEVICE_GET_REGION_INFO takes zero bytes after the 32-byte request, up to argsz
(a zeroed reply buffer sent whole); with argsz too small for the capabilities: the fixed
part without CAPS, and for a region with sparse mmap areas without MMAP and its
fd too (the handler says why); the full reply has them.
DIRTY_PAGES and DMA_UNMAP's dirty bitmap: dirty.py; the migration region:
migration.py. 0.9.2: DEVICE_FEATURE and MIG_DATA_READ/WRITE: device_feature.py;
DMA_MAP's address, size and offset aligned to the smallest page size of the
server's pgsizes, DMA_UNMAP's flags all undefined ("unused in this version"),
REGION_WRITE_MULTI only after the server said write_multiple (EINVAL).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

from pytest_vfiouser.protocol import (
    COMMANDS_BY_REVISION,
    REGION_INFO_SIZE,
    CodecError,
    Command,
    DeviceFlags,
    DeviceInfo,
    DmaMap,
    DmaUnmap,
    DmaUnmapFlags,
    IrqInfo,
    RegionCapId,
    RegionFlags,
    RegionInfo,
    RegionIoFdsReply,
    RegionIoFdsRequest,
    RegionRead,
    RegionWrite,
    RegionWriteMulti,
    RegionWriteMultiReply,
    SetIrqs,
)

from . import device_feature, dirty
from .dma_map import check_range
from .errors import VfioError


class Out(NamedTuple):
    payload: bytes
    fds: list[int]
    owned: bool = False  # the fds are the reply's own: closed once sent (or not sent)


Handler = Callable[..., "bytes | Out"]


def _no_payload(payload: bytes, what: str) -> None:
    if payload:
        raise VfioError(errno.EINVAL, f"{what} carries no payload, got {len(payload)} bytes")


# ---- handlers


def version(conn, payload: bytes, fds: list[int]) -> bytes:
    if conn.negotiated:
        raise VfioError(errno.EINVAL, "VERSION was already negotiated")
    reply, limits = conn.negotiate(payload)
    conn.negotiated, conn.client = True, limits
    if limits.twin_socket:
        return Out(reply, [conn.open_twin()], owned=True)
    return reply


def dma_map(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(DmaMap, payload)
    if req.argsz != DmaMap.SIZE:
        raise VfioError(errno.EINVAL, f"argsz {req.argsz} is not {DmaMap.SIZE}")
    if len(fds) > 1:
        raise VfioError(errno.EINVAL, f"{len(fds)} fds; a mapping takes at most one")
    page = conn.dma_page()
    for name, value in (("address", req.address), ("size", req.size), ("offset", req.offset)):
        if value % page:
            raise VfioError(
                errno.EINVAL,
                f"{name} {value:#x} is not aligned to the {page}-byte pages of pgsizes "
                f"{conn.settings.pgsizes:#x}",
            )
    conn.dma_map.add(req.address, req.size, req.flags, req.offset, fds[0] if fds else None)
    fds.clear()  # the mapping owns it now
    return b""


def dma_unmap(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(DmaUnmap, payload)
    # 0.9.2: "flags is unused in this version" (errata 7); ~ on an IntFlag keeps its bits
    defined = int(DmaUnmapFlags.GET_DIRTY_BITMAP) if conn.revision == "0.9.1" else 0
    undefined = req.flags & ~defined
    if undefined:
        raise VfioError(errno.EINVAL, f"undefined flag bits {undefined:#x}")
    if req.flags & DmaUnmapFlags.GET_DIRTY_BITMAP:
        if not conn.dirty_logging:
            raise VfioError(errno.EINVAL, "dirty bitmap requested while dirty logging is off")
        return dirty.unmap_with_bitmap(conn, req, len(payload))
    if len(payload) != DmaUnmap.ENTRY_SIZE:
        raise VfioError(
            errno.EINVAL,
            f"payload is {len(payload)} bytes, expected "
            f"{DmaUnmap.ENTRY_SIZE} without the dirty bitmap flag",
        )
    conn.check_argsz(req.argsz, DmaUnmap.ENTRY_SIZE)
    check_range(req.address, req.size)
    conn.dma_map.remove(req.address, req.size)
    return DmaUnmap(DmaUnmap.ENTRY_SIZE, req.flags, req.address, req.size).pack()


def device_get_info(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(DeviceInfo, payload)
    conn.check_argsz(req.argsz, DeviceInfo.SIZE)
    conn.must_be_zero(
        req.flags or req.num_regions or req.num_irqs, "flags, num_regions and num_irqs"
    )
    dev = conn.device
    return DeviceInfo(DeviceInfo.SIZE, dev.flags, dev.num_regions, dev.num_irqs).pack()


def device_get_region_info(conn, payload: bytes, fds: list[int]) -> bytes | Out:
    if len(payload) > REGION_INFO_SIZE and not any(payload[REGION_INFO_SIZE:]):
        # The request is the 32-byte structure; a client may send the whole zeroed
        # buffer of argsz bytes it receives the reply in, as the ioctl takes it
        # (libvfio-user's client does). Zero bytes, up to argsz: "all other fields
        # must be zero", and "The request payload size is defined by the usual
        # msg_size field in the header, not the argsz field."
        req = conn.decode(RegionInfo, payload[:REGION_INFO_SIZE])
        if len(payload) > req.argsz:
            raise VfioError(
                errno.EINVAL, f"{len(payload)}-byte request beyond its argsz {req.argsz}"
            )
    else:
        req = conn.decode(RegionInfo, payload)
    conn.check_argsz(req.argsz, REGION_INFO_SIZE)
    conn.must_be_zero(
        req.flags or req.cap_offset or req.size or req.offset, "flags, cap_offset, size and offset"
    )
    conn.region(req.index)
    # A client that takes no fds cannot mmap: offer it no mmap at all.
    info, fd = conn.device.region_info(req.index, mmap=conn.can_send_fds(1))
    sparse = any(c.id == RegionCapId.SPARSE_MMAP for c in info.caps)
    if not conn.argsz_covers(req.argsz, info.argsz):
        # Too small for the capabilities: the fixed part, argsz says what is needed, and
        # no CAPS ("indicates additional capabilities found in the reply": none are), as
        # libvfio-user does. The kernel keeps CAPS with cap_offset 0, which QEMU's
        # vfio-user client refuses (a cap_offset outside the reply is EINVAL).
        info = replace(info, flags=info.flags & ~int(RegionFlags.CAPS), caps=(), cap_offset=0)
        if sparse:
            # Nor MMAP and its fd: only the sparse mmap capability says what may be mapped
            # ("defined when only a subrange of the region supports direct access by the
            # client via mmap()"); MMAP without it would offer the whole region. And
            # "When this flag is set, the reply will include a file descriptor": MMAP
            # without the fd is no answer either. libvfio-user sends no fd here, and its
            # sample client takes none (an fd it did not ask for fails its recvmsg).
            info, fd = replace(info, flags=info.flags & ~int(RegionFlags.MMAP)), None
    reply = info.pack()
    return Out(reply, [fd]) if fd is not None else reply


def device_get_region_io_fds(conn, payload: bytes, fds: list[int]) -> bytes | Out:
    req = conn.decode(RegionIoFdsRequest, payload)
    conn.check_argsz(req.argsz, RegionIoFdsReply.HEAD_SIZE)
    conn.must_be_zero(req.flags or req.count, "flags and count")
    conn.region(req.index)
    entries = conn.device.io_fds(req.index)
    if not conn.can_send_fds(len(entries)):
        entries = []  # the client could not receive the fds
    subs = tuple(s for s, _ in entries)
    full = RegionIoFdsReply.HEAD_SIZE + len(subs) * 40
    if not conn.argsz_covers(req.argsz, full):
        # The head only; without the entries the fds would mean nothing.
        return RegionIoFdsReply(full, 0, req.index, len(subs)).pack()
    reply = RegionIoFdsReply(full, 0, req.index, len(subs), subs).pack()
    return Out(reply, [fd for _, fd in entries]) if entries else reply


def device_get_irq_info(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(IrqInfo, payload)
    conn.check_argsz(req.argsz, IrqInfo.SIZE)
    conn.must_be_zero(req.flags or req.count, "flags and count")
    irq = conn.irq_type(req.index)
    return IrqInfo(IrqInfo.SIZE, irq.flags, req.index, irq.count).pack()


def device_set_irqs(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(SetIrqs, payload)
    conn.device.irqs.set_irqs(req, len(payload), fds)
    return b""


_READ = int(RegionFlags.READ)
_WRITE = int(RegionFlags.WRITE)
_ACCESS_SIZE = RegionRead.SIZE


def region_read(conn, payload: bytes, fds: list[int]) -> bytes:
    try:
        req = RegionRead.unpack(payload)
    except CodecError as e:
        raise VfioError(errno.EINVAL, str(e)) from None
    region = conn.check_access(req.offset, req.region, req.count, _READ, "readable")
    # The reply's offset/region/count are the request's, so its 16 bytes are reused.
    return payload + region.read(req.offset, req.count)


def region_write(conn, payload: bytes, fds: list[int]) -> bytes:
    try:
        req = RegionWrite.unpack(payload)
    except CodecError as e:
        raise VfioError(errno.EINVAL, str(e)) from None
    region = conn.check_access(req.offset, req.region, req.count, _WRITE, "writable")
    region.write(req.offset, req.data)
    return payload[:_ACCESS_SIZE]  # the reply echoes offset, region and count


def region_write_multi(conn, payload: bytes, fds: list[int]) -> bytes:
    """0.9.2: every write is checked (as REGION_WRITE, and count 1..8: "This format can
    only describe writes of 8 bytes or less") before any is applied; then all, in order."""
    if not conn.client.write_multiple:
        raise VfioError(errno.EINVAL, "write_multiple was not negotiated")
    req = conn.decode(RegionWriteMulti, payload)
    regions = []
    for i, w in enumerate(req.writes):
        if not 1 <= w.count <= 8:
            raise VfioError(errno.EINVAL, f"write {i}: count {w.count} is not 1..8")
        regions.append(conn.check_access(w.offset, w.region, w.count, _WRITE, "writable"))
    for region, w in zip(regions, req.writes, strict=True):
        region.write(w.offset, w.data[: w.count])
    return RegionWriteMultiReply(len(req.writes)).pack()


def device_reset(conn, payload: bytes, fds: list[int]) -> bytes:
    check_reset(conn, payload)
    conn.device.reset()
    return b""


def check_reset(conn, payload: bytes) -> None:
    """DEVICE_RESET carries no payload, and needs a device with VFIO_DEVICE_FLAGS_RESET."""
    _no_payload(payload, "DEVICE_RESET")
    if not conn.device.flags & DeviceFlags.RESET:
        raise VfioError(errno.ENOTSUP, "the device does not support reset")


def server_to_client(conn, payload: bytes, fds: list[int]) -> bytes:
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
    Command.DIRTY_PAGES: dirty.dirty_pages,
    Command.REGION_WRITE_MULTI: region_write_multi,
    Command.DEVICE_FEATURE: device_feature.device_feature,
    Command.MIG_DATA_READ: device_feature.mig_data_read,
    Command.MIG_DATA_WRITE: device_feature.mig_data_write,
}


def dispatch_table(revision: str, handlers: dict[int, Handler] = HANDLERS) -> dict[int, Handler]:
    """The commands a revision defines, each with its handler (from ``handlers``)."""
    return {int(c): handlers[c] for c in COMMANDS_BY_REVISION[revision] if c in handlers}
