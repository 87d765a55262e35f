"""Valid requests of every client-to-server command, with the device's edges.

One strategy of (payload bytes, number of fds) per command (``request_payloads``),
framed as requests (``requests``); and the requests the device must grant
(``known_good_requests``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    FLAG_NO_REPLY,
    REGION_INFO_SIZE,
    BitmapRange,
    Command,
    DeviceInfo,
    DirtyPages,
    DirtyPagesFlags,
    DmaMap,
    DmaMapFlags,
    DmaUnmap,
    DmaUnmapFlags,
    IrqInfo,
    IrqSetFlags,
    MigDataRead,
    RegionInfo,
    RegionIoFdsRequest,
    RegionRead,
    RegionWrite,
    RegionWriteMulti,
    SetIrqs,
    SingleWrite,
    VfioBitmap,
    bitmap_bytes,
)

from ._collections import MAX_DATA
from ._device_values import (
    _U32_MAX,
    _U64,
    PAGE,
    _pick,
    access_counts,
    argsz_values,
    device_max_data_xfer_size,
    device_max_msg_fds,
    dma_addresses,
    dma_sizes,
    irq_indexes,
    region_indexes,
    region_offsets,
)
from ._integers import flags_of, u32s
from ._irqs import _IRQ_ACTIONS, _IRQ_DATA
from ._migration import device_features, mig_data_writes
from ._wire import WireMessage

MAX_FUZZ_FDS = 8  # fds attached to one fuzzed message at most


class _Device:
    """What the payload strategies need of a device, with its strategies built once."""

    def __init__(self, device):
        self.num_regions = device.info.num_regions
        self.num_irqs = device.info.num_irqs
        self.region_size = {i: r.size for i, r in device.regions.items()}
        self.irq_count = {i: q.count for i, q in device.irqs.items()}
        self.xfer = device_max_data_xfer_size(device)
        self.max_fds = device_max_msg_fds(device)
        self.regions = region_indexes(device)
        self.irqs = irq_indexes(device)


@st.composite
def _dma_map_payload(draw, d: _Device):
    with_fd = draw(st.booleans())
    flags = draw(_DMA_MAP_FLAGS)
    offset = draw(_FD_OFFSETS) if with_fd else 0
    return DmaMap(
        draw(argsz_values(DmaMap.SIZE)), flags, offset, draw(dma_addresses()), draw(dma_sizes())
    ).pack(), int(with_fd)


_DMA_MAP_FLAGS = st.one_of(st.sampled_from((3, 3, 1, 2)), flags_of(DmaMapFlags))
_FD_OFFSETS = st.sampled_from((0, 0, PAGE, 16 * PAGE))
_UNMAP_FLAGS = st.sampled_from((0, 0, 0, int(DmaUnmapFlags.GET_DIRTY_BITMAP)))
_PGSIZES = st.sampled_from((PAGE, PAGE, 1, 0, 1 << 21, _U64 - 1))
_BITMAP_SIZES = st.sampled_from((0, 1, 7, 8, 4096))


def _bitmap_size(size: int, pgsize: int) -> int:
    if pgsize <= 0 or size <= 0 or size // pgsize > 1 << 20:
        return 8
    return bitmap_bytes(size, pgsize)


@st.composite
def _dma_unmap_payload(draw, d: _Device):
    flags = draw(_UNMAP_FLAGS)
    address, size = draw(dma_addresses()), draw(dma_sizes())
    bitmap = None
    if flags & DmaUnmapFlags.GET_DIRTY_BITMAP:
        pgsize = draw(_PGSIZES)
        bsize = _bitmap_size(size, pgsize) if draw(st.booleans()) else draw(_BITMAP_SIZES)
        bitmap = VfioBitmap(pgsize, bsize)
    full = DmaUnmap.ENTRY_SIZE + (16 + bitmap.size if bitmap is not None else 0)
    return DmaUnmap(draw(argsz_values(min(full, _U32_MAX))), flags, address, size, bitmap).pack(), 0


_ZERO_OR_U32 = st.one_of(st.just(0), st.just(0), u32s())


def _device_info_payload(d: _Device):
    return st.builds(
        lambda argsz, flags, n, m: (DeviceInfo(argsz, flags, n, m).pack(), 0),
        argsz_values(DeviceInfo.SIZE),
        _ZERO_OR_U32,
        _ZERO_OR_U32,
        _ZERO_OR_U32,
    )


def _region_info_payload(d: _Device):
    return st.builds(
        lambda argsz, index, flags: (RegionInfo(argsz, flags, index).pack(), 0),
        argsz_values(REGION_INFO_SIZE),
        d.regions,
        _ZERO_OR_U32,
    )


def _region_io_fds_payload(d: _Device):
    return st.builds(
        lambda argsz, index, flags, count: (
            RegionIoFdsRequest(argsz, flags, index, count).pack(),
            0,
        ),
        argsz_values(4096),
        d.regions,
        _ZERO_OR_U32,
        _ZERO_OR_U32,
    )


def _irq_info_payload(d: _Device):
    return st.builds(
        lambda argsz, index, flags, count: (IrqInfo(argsz, flags, index, count).pack(), 0),
        argsz_values(IrqInfo.SIZE),
        d.irqs,
        _ZERO_OR_U32,
        _ZERO_OR_U32,
    )


_SET_IRQS_FLAGS = [d | a for d in _IRQ_DATA for a in _IRQ_ACTIONS]
_SET_IRQS_FLAG_VALUES = st.one_of(
    st.sampled_from(_SET_IRQS_FLAGS), st.sampled_from(_SET_IRQS_FLAGS), flags_of(IrqSetFlags)
)
_BOOL_BYTES = st.sampled_from((0, 1, 1, 2, 0xFF))


@functools.cache
def _irq_starts(n: int) -> SearchStrategy[int]:
    return st.one_of(st.just(0), _pick([0, 1, n - 1, n, n + 1, _U32_MAX], 0, max(n, 1)))


@functools.cache
def _irq_counts(n: int, start: int) -> SearchStrategy[int]:
    return _pick([0, 1, 2, n, n - start, n + 1, 0x80000000, _U32_MAX], 0, max(n, 1))


@st.composite
def _set_irqs_payload(draw, d: _Device):
    index = draw(d.irqs)
    n = d.irq_count.get(index, 0)
    flags = draw(_SET_IRQS_FLAG_VALUES)
    start = draw(_irq_starts(n))
    count = draw(_irq_counts(n, min(start, n)))
    data = b""
    if flags & IrqSetFlags.DATA_BOOL and count <= MAX_DATA:
        data = bytes(draw(st.lists(_BOOL_BYTES, min_size=count, max_size=count)))
    nfds = min(count, MAX_FUZZ_FDS, d.max_fds) if flags & IrqSetFlags.DATA_EVENTFD else 0
    return SetIrqs(SetIrqs.FIXED_SIZE + len(data), flags, index, start, count, data).pack(), nfds


@st.composite
def _region_access(draw, d: _Device, most: int):
    index = draw(d.regions)
    size = d.region_size.get(index, 0)
    return draw(region_offsets(size)), index, draw(access_counts(d.xfer, size, most))


def _region_read_payload(d: _Device):
    return _region_access(d, 256).map(lambda a: (RegionRead(*a).pack(), 0))


@st.composite
def _region_write_payload(draw, d: _Device):
    offset, index, count = draw(_region_access(d, 64))
    if count <= MAX_DATA:
        data = draw(st.binary(min_size=count, max_size=count))
    else:  # large writes: zeros (no draw per byte); above 16 MiB: no data at all
        data = bytes(count) if count <= 1 << 24 else b""
    return RegionWrite(offset, index, count, data).pack(), 0


_DIRTY_FLAGS = st.one_of(
    st.sampled_from(tuple(int(f) for f in DirtyPagesFlags)), flags_of(DirtyPagesFlags)
)
_DIRTY_PGSIZES = st.sampled_from((PAGE, PAGE, 1, 0, 1 << 21))
_DIRTY_BITMAP_SIZES = st.sampled_from((0, 8, 4096))


@st.composite
def _dirty_pages_payload(draw, d: _Device):
    flags = draw(_DIRTY_FLAGS)
    if not flags & DirtyPagesFlags.GET_BITMAP:
        return DirtyPages(draw(argsz_values(DirtyPages.FIXED_SIZE)), flags).pack(), 0
    iova, size = draw(dma_addresses()), draw(dma_sizes())
    pgsize = draw(_DIRTY_PGSIZES)
    bsize = _bitmap_size(size, pgsize) if draw(st.booleans()) else draw(_DIRTY_BITMAP_SIZES)
    rng = BitmapRange(iova, size, VfioBitmap(pgsize, bsize))
    full = DirtyPages.FIXED_SIZE + BitmapRange.SIZE + bsize
    return DirtyPages(draw(argsz_values(min(full, _U32_MAX))), flags, rng).pack(), 0


@st.composite
def _region_write_multi_payload(draw, d: _Device):
    writes = []
    for _ in range(draw(st.integers(1, 4))):
        index = draw(d.regions)
        offset = draw(region_offsets(d.region_size.get(index, 0)))
        writes.append(SingleWrite.of(offset, index, draw(st.binary(max_size=8))))
    return RegionWriteMulti(tuple(writes)).pack(), 0


def request_payloads(device, spec: str = "0.9.1") -> dict[int, SearchStrategy[tuple[bytes, int]]]:
    """For each client-to-server command of ``spec`` but VERSION: a strategy of
    (payload bytes, number of fds) that frame as a valid request of it, with the
    device's indexes, sizes and counts and the edges around them."""
    d = _Device(device)
    table = {
        Command.DMA_MAP: _dma_map_payload(d),
        Command.DMA_UNMAP: _dma_unmap_payload(d),
        Command.DEVICE_GET_INFO: _device_info_payload(d),
        Command.DEVICE_GET_REGION_INFO: _region_info_payload(d),
        Command.DEVICE_GET_REGION_IO_FDS: _region_io_fds_payload(d),
        Command.DEVICE_GET_IRQ_INFO: _irq_info_payload(d),
        Command.DEVICE_SET_IRQS: _set_irqs_payload(d),
        Command.REGION_READ: _region_read_payload(d),
        Command.REGION_WRITE: _region_write_payload(d),
        Command.DEVICE_RESET: st.just((b"", 0)),
    }
    if spec == "0.9.1":
        table[Command.DIRTY_PAGES] = _dirty_pages_payload(d)
    else:
        table[Command.REGION_WRITE_MULTI] = _region_write_multi_payload(d)
        table[Command.DEVICE_FEATURE] = device_features().map(lambda p: (p.pack(), 0))
        table[Command.MIG_DATA_READ] = st.builds(
            lambda size, argsz: (MigDataRead(argsz, size).pack(), 0),
            _pick([0, 1, 4096, 1 << 20, _U32_MAX], 0, 1 << 16),
            argsz_values(8),
        )
        table[Command.MIG_DATA_WRITE] = mig_data_writes().map(lambda p: (p.pack(), 0))
    return {int(c): s for c, s in table.items()}


def _as_message(command: int, msg_id: int, no_reply: bool, payload_fds) -> WireMessage:
    payload, nfds = payload_fds
    return WireMessage(msg_id, command, payload, FLAG_NO_REPLY if no_reply else 0, nfds=nfds)


def requests(
    device, spec: str = "0.9.1", commands: Iterable[int] | None = None, no_reply: bool = True
) -> SearchStrategy[WireMessage]:
    """Valid requests of every client-to-server command (or of ``commands``): sizes
    that agree with each other, field values across their range and at the device's
    edges; now and then with No_reply (``no_reply=False``: never)."""
    table = request_payloads(device, spec)
    chosen = sorted(table) if commands is None else [int(c) for c in commands if int(c) in table]
    flag = st.sampled_from((False, False, False, True)) if no_reply else st.just(False)
    return st.one_of(
        *[
            st.builds(_as_message, st.just(c), st.integers(0, 0xFFFF), flag, table[c])
            for c in chosen
        ]
    )


def known_good_requests(device) -> SearchStrategy[WireMessage]:
    """Requests the device must grant, whose replies are known from discovery:
    DEVICE_GET_INFO, GET_REGION_INFO and GET_IRQ_INFO of its indexes, REGION_READ
    inside readable regions, REGION_WRITE inside scratch ranges."""
    choices = [st.just((int(Command.DEVICE_GET_INFO), DeviceInfo(DeviceInfo.SIZE).pack()))]
    if device.regions:
        choices.append(
            st.sampled_from(sorted(device.regions)).map(
                lambda i: (
                    int(Command.DEVICE_GET_REGION_INFO),
                    RegionInfo(REGION_INFO_SIZE, index=i).pack(),
                )
            )
        )
    if device.irqs:
        choices.append(
            st.sampled_from(sorted(device.irqs)).map(
                lambda i: (int(Command.DEVICE_GET_IRQ_INFO), IrqInfo(IrqInfo.SIZE, index=i).pack())
            )
        )
    readable = [
        (i, r.size) for i, r in sorted(device.regions.items()) if r.flags & 1 and r.size
    ]  # RegionFlags.READ

    @st.composite
    def read(draw):
        index, size = draw(st.sampled_from(readable))
        count = draw(st.integers(1, min(size, 64)))
        offset = draw(st.integers(0, size - count))
        return int(Command.REGION_READ), RegionRead(offset, index, count).pack()

    if readable:
        choices.append(read())
    scratch = list(device.scratch_ranges()) if hasattr(device, "scratch_ranges") else []

    @st.composite
    def write(draw):
        index, start, length = draw(st.sampled_from(scratch))
        count = draw(st.integers(1, min(length, 64)))
        offset = start + draw(st.integers(0, length - count))
        data = draw(st.binary(min_size=count, max_size=count))
        return int(Command.REGION_WRITE), RegionWrite(offset, index, count, data).pack()

    if scratch:
        choices.append(write())
    return st.builds(
        lambda msg_id, cp: WireMessage(msg_id, cp[0], cp[1]),
        st.integers(0, 0xFFFF),
        st.one_of(*choices),
    )
