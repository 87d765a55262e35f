"""Hypothesis strategies for every vfio-user payload, and for hostile bytes.

Layers, from the bottom:

* integers weighted to the edges (``u8s()`` .. ``u64s()``, ``s32s()``):
  0, 1, the maximum, powers of two and their neighbours, then anything;
* JSON values and the VERSION capabilities object (known keys with valid
  values, plus unknown keys that a peer must carry through);
* one strategy per payload type, named for what it generates
  (``dma_maps()``, ``region_infos()``, ...), collected in
  ``PAYLOAD_STRATEGIES``; ``message_payloads(command, reply)`` and
  ``messages()`` build on them;
* ``mutated(...)``: valid encodings damaged the ways a broken or hostile
  peer damages them (truncated, extended, bits flipped, counts set huge).

Every payload strategy generates objects that encode, and that decode back
to themselves: whatever the encoding states twice (``count`` and the data
length, ``num_ranges`` and the ranges, ...) agrees. Everything the encoding
does not cross-check is drawn from its whole range, so the objects are not
necessarily meaningful requests; a fuzzer that wants meaningful ones
narrows the fields it cares about with the keyword arguments or ``.map``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .protocol import (
    FLAG_ERROR,
    FLAG_NO_REPLY,
    IRQ_SET_ACTION_MASK,
    IRQ_SET_DATA_MASK,
    REGION_INFO_SIZE,
    REPLY_TYPES,
    REQUEST_TYPES,
    BitmapRange,
    Command,
    DeviceFeature,
    DeviceFeatureFlags,
    DeviceInfo,
    DirtyPages,
    DirtyPagesFlags,
    DmaLoggingControl,
    DmaLoggingReport,
    DmaMap,
    DmaMapFlags,
    DmaRead,
    DmaReadReply,
    DmaUnmap,
    DmaUnmapFlags,
    DmaWrite,
    DmaWriteReply,
    Feature,
    FeatureMigDeviceState,
    FeatureMigration,
    Header,
    IoFdSubRegion,
    IoFdType,
    IrqInfo,
    IrqSetFlags,
    MigDataRead,
    MigDataReadReply,
    MigDataWrite,
    MigrationFlags,
    MigrationInfo,
    MigState,
    MsgType,
    Payload,
    RegionAccess,
    RegionCapId,
    RegionInfo,
    RegionIoFdsReply,
    RegionIoFdsRequest,
    RegionRead,
    RegionReadReply,
    RegionTypeCap,
    RegionWrite,
    RegionWriteMulti,
    RegionWriteMultiReply,
    RegionWriteReply,
    SetIrqs,
    SingleWrite,
    SparseMmapCap,
    UnknownCap,
    Version,
    VfioBitmap,
)

# Settings for property tests of the codec: enough examples to find edge
# cases, no deadline (CI machines stall), and no complaint about large data.
CODEC_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Sizes of the variable parts: small enough to be fast, big enough to cross
# the interesting boundaries (8-byte words, the 40-byte entries, ...).
MAX_DATA = 64
MAX_ENTRIES = 4


# ---------------------------------------------------------------- integers


@functools.cache
def _edges(lo: int, hi: int) -> tuple[int, ...]:
    """lo, hi, their neighbours, and powers of two +-1, within [lo, hi]."""
    values = {lo, lo + 1, hi, hi - 1}
    for k in range(hi.bit_length() + 1):
        p = 1 << k
        values |= {p - 1, p, p + 1, -p, -p - 1, -p + 1}
    return tuple(sorted(v for v in values if lo <= v <= hi))


@functools.cache
def ints_between(lo: int, hi: int) -> SearchStrategy[int]:
    """Integers in [lo, hi], half the time one of the edge values."""
    return st.one_of(st.sampled_from(_edges(lo, hi)), st.integers(lo, hi))


def uints(bits: int) -> SearchStrategy[int]:
    return ints_between(0, (1 << bits) - 1)


def u8s() -> SearchStrategy[int]:
    return uints(8)


def u16s() -> SearchStrategy[int]:
    return uints(16)


def u32s() -> SearchStrategy[int]:
    return uints(32)


def u64s() -> SearchStrategy[int]:
    return uints(64)


def s32s() -> SearchStrategy[int]:
    return ints_between(-(1 << 31), (1 << 31) - 1)


@functools.cache
def powers_of_two(bits: int = 64) -> SearchStrategy[int]:
    return st.integers(0, bits - 1).map(lambda k: 1 << k)


def flags_of(flag_type, bits: int = 32) -> SearchStrategy[int]:
    """Combinations of the defined bits of an IntFlag, or any ``bits``-bit value."""
    defined = [int(f) for f in flag_type]
    combos = st.lists(st.sampled_from(defined), max_size=len(defined)).map(
        lambda fs: functools.reduce(int.__or__, fs, 0))
    return st.one_of(combos, uints(bits))


def enum_or_any(enum_type, bits: int = 32) -> SearchStrategy[int]:
    """A defined value of an IntEnum, or any ``bits``-bit value."""
    return st.one_of(st.sampled_from([int(v) for v in enum_type]), uints(bits))


@functools.cache
def data_bytes(max_size: int = MAX_DATA, min_size: int = 0) -> SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size)


def _tuples_of(strategy: SearchStrategy, max_size: int = MAX_ENTRIES, min_size: int = 0
               ) -> SearchStrategy[tuple]:
    return st.lists(strategy, min_size=min_size, max_size=max(min_size, max_size)).map(tuple)


# -------------------------------------------------------------------- JSON

KNOWN_CAPABILITIES = frozenset({"max_msg_fds", "max_data_xfer_size", "migration",
                                "max_dma_maps", "pgsizes", "twin_socket", "write_multiple"})


def json_scalars() -> SearchStrategy:
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(-(1 << 64), 1 << 64),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=16),
    )


def json_values(max_leaves: int = 8) -> SearchStrategy:
    """Anything json.dumps writes and json.loads reads back equal (no NaN)."""
    return st.recursive(
        json_scalars(),
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=max_leaves,
    )


def _with_unknown_keys(known: SearchStrategy[dict], reserved: frozenset[str]
                       ) -> SearchStrategy[dict]:
    """``known`` plus keys outside ``reserved`` with arbitrary JSON values."""
    unknown = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in reserved),
                              json_values(), max_size=3)
    return st.builds(lambda extra, known: {**extra, **known}, unknown, known)


def migration_capabilities() -> SearchStrategy[dict]:
    """The 0.9.1 ``migration`` capability object."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={"pgsize": powers_of_two()}),
        frozenset({"pgsize"}))


def twin_socket_capabilities() -> SearchStrategy[dict]:
    """The 0.9.2 ``twin_socket`` capability object."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={"supported": st.booleans(), "fd_index": u64s()}),
        frozenset({"supported", "fd_index"}))


def capabilities() -> SearchStrategy[dict]:
    """A valid ``capabilities`` object: any subset of the known keys, plus unknown keys."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={
            "max_msg_fds": u64s(),
            "max_data_xfer_size": ints_between(1, (1 << 64) - 1),
            "migration": migration_capabilities(),
            "max_dma_maps": u64s(),
            "pgsizes": ints_between(1, (1 << 64) - 1),
            "twin_socket": twin_socket_capabilities(),
            "write_multiple": st.booleans(),
        }),
        KNOWN_CAPABILITIES)


def version_json() -> SearchStrategy[dict]:
    """The version data object: optional ``capabilities`` and unknown top-level keys."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={"capabilities": capabilities()}),
        frozenset({"capabilities"}))


# ---------------------------------------------------------------- payloads


def headers(command: SearchStrategy[int] | None = None,
            flags: SearchStrategy[int] | None = None) -> SearchStrategy[Header]:
    """Headers with any field values (msg_size need not match anything)."""
    if command is None:
        command = enum_or_any(Command, 16)
    if flags is None:
        flags = st.one_of(st.sampled_from([
            MsgType.COMMAND, MsgType.REPLY, MsgType.COMMAND | FLAG_NO_REPLY,
            MsgType.REPLY | FLAG_ERROR]), u32s())
    return st.builds(Header, msg_id=u16s(), command=command, msg_size=u32s(), flags=flags,
                     error=u32s())


def versions(with_json: bool | None = None) -> SearchStrategy[Version]:
    """VERSION payloads, with version data (``with_json=True``), without, or either."""
    json = {None: st.one_of(st.none(), version_json()), True: version_json(),
            False: st.none()}[with_json]
    return st.builds(Version, major=u16s(), minor=u16s(), json=json)


def dma_maps() -> SearchStrategy[DmaMap]:
    return st.builds(DmaMap, argsz=u32s(), flags=flags_of(DmaMapFlags), offset=u64s(),
                     address=u64s(), size=u64s())


def vfio_bitmaps(size: SearchStrategy[int] | None = None) -> SearchStrategy[VfioBitmap]:
    return st.builds(VfioBitmap, pgsize=st.one_of(powers_of_two(), u64s()),
                     size=u64s() if size is None else size)


# What follows a DMA_UNMAP entry or the DIRTY_PAGES head.
BITMAP_KINDS = ("none", "header", "data")


def _bitmap_and_data(bitmaps: SearchStrategy, with_size: Callable[[object, int], object],
                     kinds: tuple[str, ...]) -> SearchStrategy[tuple[object, bytes]]:
    """(None, b""); (header, b""), as in a request; or (header, data) with the
    header's size set to the length of the data, as in a reply."""
    choices = {
        "none": st.just((None, b"")),
        "header": bitmaps.map(lambda b: (b, b"")),
        "data": st.builds(lambda b, data: (with_size(b, len(data)), data),
                          bitmaps, data_bytes(min_size=1)),
    }
    return st.one_of(*[choices[k] for k in kinds])


def dma_unmaps(bitmap: tuple[str, ...] = BITMAP_KINDS) -> SearchStrategy[DmaUnmap]:
    """Requests and replies, with and without the VFIO Bitmap and its data.

    ``bitmap`` selects among "none" (24 bytes), "header" (24 + 16, a request)
    and "data" (24 + 16 + the bitmap, a reply).
    """
    return st.builds(
        lambda fixed, bm: DmaUnmap(*fixed, *bm),
        st.tuples(u32s(), flags_of(DmaUnmapFlags), u64s(), u64s()),
        _bitmap_and_data(vfio_bitmaps(), lambda b, n: dataclasses.replace(b, size=n), bitmap))


def dma_reads() -> SearchStrategy[DmaRead]:
    return st.builds(DmaRead, address=u64s(), count=u64s())


def _address_count_data(cls) -> SearchStrategy:
    return st.builds(lambda address, data: cls(address, len(data), data), u64s(), data_bytes())


def dma_read_replies() -> SearchStrategy[DmaReadReply]:
    return _address_count_data(DmaReadReply)


def dma_writes() -> SearchStrategy[DmaWrite]:
    return _address_count_data(DmaWrite)


def dma_write_replies(count_size: int | None = None) -> SearchStrategy[DmaWriteReply]:
    """Both sizes of reply (errata 2): count as u32 (12 bytes) or u64 (16 bytes)."""
    sizes = (4, 8) if count_size is None else (count_size,)
    return st.one_of(*[st.builds(DmaWriteReply, address=u64s(), count=uints(8 * size),
                                 count_size=st.just(size)) for size in sizes])


def device_infos() -> SearchStrategy[DeviceInfo]:
    return st.builds(DeviceInfo, argsz=u32s(), flags=u32s(), num_regions=u32s(),
                     num_irqs=u32s())


def irq_infos() -> SearchStrategy[IrqInfo]:
    return st.builds(IrqInfo, argsz=u32s(), flags=u32s(), index=u32s(), count=u32s())


_IRQ_DATA = [int(f) for f in IrqSetFlags if f & IRQ_SET_DATA_MASK]
_IRQ_ACTIONS = [int(f) for f in IrqSetFlags if f & IRQ_SET_ACTION_MASK]


def irq_set_flags() -> SearchStrategy[int]:
    """One DATA flag and one ACTION flag, or any u32."""
    return st.one_of(st.builds(int.__or__, st.sampled_from(_IRQ_DATA),
                               st.sampled_from(_IRQ_ACTIONS)), u32s())


def _set_irqs_bool(flags: int, index: int, start: int, bools: list[int]) -> SetIrqs:
    return SetIrqs(SetIrqs.FIXED_SIZE + len(bools), flags | IrqSetFlags.DATA_BOOL, index,
                   start, len(bools), bytes(bools))


def set_irqs(data_bool: bool = False) -> SearchStrategy[SetIrqs]:
    """SET_IRQS requests: any flags and count, some data or none; or DATA_BOOL
    with ``count`` bool bytes (mostly 0 and 1). ``data_bool=True``: only the latter.
    """
    with_bools = st.builds(
        _set_irqs_bool, st.sampled_from(_IRQ_ACTIONS), u32s(), u32s(),
        st.lists(st.one_of(st.sampled_from([0, 1]), u8s()), min_size=1, max_size=MAX_DATA))
    if data_bool:
        return with_bools
    anything = st.builds(SetIrqs, argsz=u32s(), flags=irq_set_flags(), index=u32s(),
                         start=u32s(), count=u32s(),
                         data=st.one_of(st.just(b""), data_bytes()))
    return st.one_of(anything, with_bools)


def region_io_fds_requests() -> SearchStrategy[RegionIoFdsRequest]:
    return st.builds(RegionIoFdsRequest, argsz=u32s(), flags=u32s(), index=u32s(),
                     count=u32s())


def io_fd_sub_regions() -> SearchStrategy[IoFdSubRegion]:
    return st.builds(IoFdSubRegion, offset=u64s(), size=u64s(), fd_index=u32s(),
                     type=enum_or_any(IoFdType), flags=u32s(), padding=u32s(), data=u64s())


def region_io_fds_replies(min_entries: int = 0, min_padding: int = 0
                          ) -> SearchStrategy[RegionIoFdsReply]:
    """Replies with entries (of 40 bytes or more, errata 3), or the head only
    (any count: a reply cut short by a small argsz).

    ``min_padding``: the least number of bytes each entry has beyond 40.
    """
    padding = ints_between(min_padding, max(24, min_padding))
    with_entries = st.builds(
        lambda argsz, flags, index, subs, pad: RegionIoFdsReply(
            argsz, flags, index, len(subs), subs, IoFdSubRegion.SIZE + pad),
        u32s(), u32s(), u32s(),
        _tuples_of(io_fd_sub_regions(), min_size=max(1, min_entries)), padding)
    if min_entries:
        return with_entries
    head_only = st.builds(RegionIoFdsReply, argsz=u32s(), flags=u32s(), index=u32s(),
                          count=u32s())
    return st.one_of(head_only, with_entries)


def sparse_mmap_caps() -> SearchStrategy[SparseMmapCap]:
    return st.builds(SparseMmapCap, areas=_tuples_of(st.tuples(u64s(), u64s())),
                     version=u16s(), reserved=u32s())


def region_type_caps() -> SearchStrategy[RegionTypeCap]:
    return st.builds(RegionTypeCap, type=st.one_of(st.just(3), u32s()),
                     subtype=st.one_of(st.just(1), u32s()), version=u16s())


def unknown_caps() -> SearchStrategy[UnknownCap]:
    known = {int(c) for c in RegionCapId}
    return st.builds(UnknownCap, id=u16s().filter(lambda i: i not in known),
                     data=data_bytes(32), version=u16s())


def region_caps() -> SearchStrategy:
    return st.one_of(sparse_mmap_caps(), region_type_caps(), unknown_caps())


def region_infos(min_caps: int = 0, max_caps: int = MAX_ENTRIES
                 ) -> SearchStrategy[RegionInfo]:
    """Requests and replies: a chain of capabilities (from cap_offset 32, or a
    little further), or none (any cap_offset: a reply cut short by argsz)."""
    def info(cap_offset, caps):
        return st.builds(RegionInfo, argsz=u32s(), flags=u32s(), index=u32s(),
                         cap_offset=cap_offset, size=u64s(), offset=u64s(), caps=caps)
    with_caps = info(ints_between(REGION_INFO_SIZE, REGION_INFO_SIZE + 32),
                     _tuples_of(region_caps(), max_caps, max(1, min_caps)))
    if min_caps:
        return with_caps
    return st.one_of(info(u32s(), st.just(())), with_caps)


def _region_accesses(cls) -> SearchStrategy:
    return st.builds(cls, offset=u64s(), region=u32s(), count=u32s())


def region_accesses() -> SearchStrategy[RegionAccess]:
    return _region_accesses(RegionAccess)


def region_reads() -> SearchStrategy[RegionRead]:
    return _region_accesses(RegionRead)


def region_write_replies() -> SearchStrategy[RegionWriteReply]:
    return _region_accesses(RegionWriteReply)


def _region_data(cls) -> SearchStrategy:
    return st.builds(lambda offset, region, data: cls(offset, region, len(data), data),
                     u64s(), u32s(), data_bytes())


def region_read_replies() -> SearchStrategy[RegionReadReply]:
    return _region_data(RegionReadReply)


def region_writes() -> SearchStrategy[RegionWrite]:
    return _region_data(RegionWrite)


def single_writes() -> SearchStrategy[SingleWrite]:
    """Entries of REGION_WRITE_MULTI: mostly 0-8 bytes padded, sometimes any count."""
    return st.one_of(
        st.builds(SingleWrite.of, u64s(), u32s(), data_bytes(8)),
        st.builds(SingleWrite, offset=u64s(), region=u32s(), count=u32s(),
                  data=data_bytes(8, min_size=8)))


def region_write_multis() -> SearchStrategy[RegionWriteMulti]:
    return st.builds(RegionWriteMulti, writes=_tuples_of(single_writes(), 6))


def region_write_multi_replies() -> SearchStrategy[RegionWriteMultiReply]:
    return st.builds(RegionWriteMultiReply, wr_cnt=u64s())


def bitmap_ranges(bitmap_size: SearchStrategy[int] | None = None
                  ) -> SearchStrategy[BitmapRange]:
    return st.builds(BitmapRange, iova=u64s(), size=u64s(),
                     bitmap=vfio_bitmaps(bitmap_size))


def _range_with_bitmap_size(rng: BitmapRange, size: int) -> BitmapRange:
    return dataclasses.replace(rng, bitmap=dataclasses.replace(rng.bitmap, size=size))


def dirty_pages(bitmap: tuple[str, ...] = BITMAP_KINDS) -> SearchStrategy[DirtyPages]:
    """START/STOP (no range), GET_BITMAP requests (range) and replies (range, bitmap).

    ``bitmap`` selects among "none" (8 bytes), "header" (8 + 32, a GET_BITMAP
    request) and "data" (8 + 32 + the bitmap, its reply).
    """
    return st.builds(
        lambda fixed, rb: DirtyPages(*fixed, *rb),
        st.tuples(u32s(), flags_of(DirtyPagesFlags)),
        _bitmap_and_data(bitmap_ranges(), _range_with_bitmap_size, bitmap))


def migration_infos() -> SearchStrategy[MigrationInfo]:
    return st.builds(MigrationInfo, device_state=st.one_of(st.integers(0, 7), u32s()),
                     reserved=u32s(), pending_bytes=u64s(), data_offset=u64s(),
                     data_size=u64s())


def feature_migrations() -> SearchStrategy[FeatureMigration]:
    return st.builds(FeatureMigration, flags=flags_of(MigrationFlags, 64))


def feature_mig_device_states() -> SearchStrategy[FeatureMigDeviceState]:
    return st.builds(FeatureMigDeviceState, device_state=enum_or_any(MigState),
                     data_fd=st.one_of(st.just(-1), s32s()))


def dma_logging_ranges() -> SearchStrategy[tuple[tuple[int, int], ...]]:
    return _tuples_of(st.tuples(u64s(), u64s()))


def dma_logging_controls() -> SearchStrategy[DmaLoggingControl]:
    return st.builds(lambda page_size, reserved, ranges: DmaLoggingControl(
        page_size, len(ranges), reserved, ranges),
        st.one_of(powers_of_two(), u64s()), st.one_of(st.just(0), u32s()),
        dma_logging_ranges())


def dma_logging_reports() -> SearchStrategy[DmaLoggingReport]:
    """Requests (no bitmap) and replies (a bitmap of whole u64s)."""
    bitmap = st.lists(st.binary(min_size=8, max_size=8), max_size=MAX_DATA // 8).map(b"".join)
    return st.builds(DmaLoggingReport, iova=u64s(), length=u64s(),
                     page_size=st.one_of(powers_of_two(), u64s()), bitmap=bitmap)


_FEATURE_OPS = [int(DeviceFeatureFlags.GET), int(DeviceFeatureFlags.SET),
                int(DeviceFeatureFlags.PROBE),
                int(DeviceFeatureFlags.PROBE | DeviceFeatureFlags.GET),
                int(DeviceFeatureFlags.PROBE | DeviceFeatureFlags.SET)]


def feature_data() -> SearchStrategy[tuple[int, bytes]]:
    """(feature index, data) with the data a feature carries, or none (GET, PROBE)."""
    def typed(feature, strategy):
        return st.tuples(st.just(int(feature)),
                         st.one_of(st.just(b""), strategy.map(lambda p: p.pack())))
    return st.one_of(
        typed(Feature.MIGRATION, feature_migrations()),
        typed(Feature.MIG_DEVICE_STATE, feature_mig_device_states()),
        typed(Feature.DMA_LOGGING_START, dma_logging_controls()),
        typed(Feature.DMA_LOGGING_STOP, dma_logging_controls()),
        typed(Feature.DMA_LOGGING_REPORT, dma_logging_reports()),
        st.tuples(u16s(), data_bytes()),
    )


def device_features() -> SearchStrategy[DeviceFeature]:
    """DEVICE_FEATURE requests and replies, the data usually that of the feature,
    argsz usually the size of the payload."""
    def build(feature_and_data, op, any_flags, any_argsz):
        feature, data = feature_and_data
        flags = op | feature if any_flags is None else any_flags
        argsz = DeviceFeature.FIXED_SIZE + len(data) if any_argsz is None else any_argsz
        return DeviceFeature(argsz, flags, data)
    return st.builds(build, feature_data(), st.sampled_from(_FEATURE_OPS),
                     st.one_of(st.none(), u32s()), st.one_of(st.none(), u32s()))


def mig_data_reads() -> SearchStrategy[MigDataRead]:
    return st.builds(MigDataRead, argsz=u32s(), size=u32s())


def _mig_data(cls) -> SearchStrategy:
    return st.builds(lambda argsz, data: cls(argsz, len(data), data), u32s(), data_bytes())


def mig_data_read_replies() -> SearchStrategy[MigDataReadReply]:
    return _mig_data(MigDataReadReply)


def mig_data_writes() -> SearchStrategy[MigDataWrite]:
    return _mig_data(MigDataWrite)


PAYLOAD_STRATEGIES: dict[type[Payload], SearchStrategy] = {
    Version: versions(),
    DmaMap: dma_maps(),
    VfioBitmap: vfio_bitmaps(),
    DmaUnmap: dma_unmaps(),
    DmaRead: dma_reads(),
    DmaReadReply: dma_read_replies(),
    DmaWrite: dma_writes(),
    DmaWriteReply: dma_write_replies(),
    DeviceInfo: device_infos(),
    IrqInfo: irq_infos(),
    SetIrqs: set_irqs(),
    RegionIoFdsRequest: region_io_fds_requests(),
    IoFdSubRegion: io_fd_sub_regions(),
    RegionIoFdsReply: region_io_fds_replies(),
    RegionInfo: region_infos(),
    RegionAccess: region_accesses(),
    RegionRead: region_reads(),
    RegionReadReply: region_read_replies(),
    RegionWrite: region_writes(),
    RegionWriteReply: region_write_replies(),
    RegionWriteMulti: region_write_multis(),
    RegionWriteMultiReply: region_write_multi_replies(),
    BitmapRange: bitmap_ranges(),
    DirtyPages: dirty_pages(),
    MigrationInfo: migration_infos(),
    DeviceFeature: device_features(),
    FeatureMigration: feature_migrations(),
    FeatureMigDeviceState: feature_mig_device_states(),
    DmaLoggingControl: dma_logging_controls(),
    DmaLoggingReport: dma_logging_reports(),
    MigDataRead: mig_data_reads(),
    MigDataReadReply: mig_data_read_replies(),
    MigDataWrite: mig_data_writes(),
}


def encodings(cls: type) -> SearchStrategy[bytes]:
    """Valid encodings of a payload class (or of Header)."""
    strategy = headers() if cls is Header else PAYLOAD_STRATEGIES[cls]
    return strategy.map(lambda p: p.pack())


# ---------------------------------------------------------------- messages


@functools.cache
def message_payloads(command: int, reply: bool) -> SearchStrategy[Payload | None]:
    """The payload of a request or reply of ``command``: None where it carries none."""
    table = REPLY_TYPES if reply else REQUEST_TYPES
    cls = table.get(command)
    if cls is None:
        return st.none()
    if command == Command.DIRTY_PAGES and reply:  # START and STOP replies are empty
        return st.one_of(st.none(), PAYLOAD_STRATEGIES[cls])
    return PAYLOAD_STRATEGIES[cls]


def _message(command: int, reply: bool, payload: Payload | None, msg_id: int,
             no_reply: bool) -> tuple[Header, bytes]:
    body = b"" if payload is None else payload.pack()
    flags = MsgType.REPLY if reply else (FLAG_NO_REPLY if no_reply else MsgType.COMMAND)
    return Header(msg_id, command, 16 + len(body), flags), body


def messages(commands: Iterable[int] = tuple(Command),
             replies: Iterable[bool] = (False, True)) -> SearchStrategy[tuple[Header, bytes]]:
    """Whole, well-framed messages: the header and the payload bytes.

    ``encode(...)`` of the header's fields and the payload gives the wire bytes;
    ``header.pack() + payload`` is the same thing.
    """
    return st.one_of(*[
        st.builds(_message, st.just(int(command)), st.just(reply),
                  message_payloads(int(command), reply), u16s(), st.booleans())
        for command in commands for reply in replies])


# ---------------------------------------------------------------- mutations

# Values a corrupted count or size field takes: the ones that overflow.
HUGE_WORDS = {
    4: [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0x10000000],
    8: [(1 << 64) - 1, (1 << 63) - 1, 1 << 63, 1 << 32, (1 << 64) - 8],
}


_MUTATIONS = ("truncate", "extend", "flip", "huge", "insert", "delete")
# An index into the data, taken modulo its length: one strategy for any length.
_POSITIONS = st.integers(0, (1 << 24) - 1)


def _apply_mutation(buf: bytearray, op: str, pos: int, width: int, huge: int,
                    extra: bytes) -> None:
    if op == "truncate" and buf:
        del buf[pos % len(buf):]
    elif op == "extend":
        buf += extra or b"\0"
    elif op == "flip" and buf:
        bit = pos % (8 * len(buf))
        buf[bit // 8] ^= 1 << (bit % 8)
    elif op == "huge" and len(buf) >= width:
        # Fields sit on 4-byte boundaries in every vfio-user structure.
        at = 4 * (pos % ((len(buf) - width) // 4 + 1))
        buf[at:at + width] = huge.to_bytes(width, "little")
    elif op == "insert":
        at = pos % (len(buf) + 1)
        buf[at:at] = extra[:8] or b"\xff"
    elif op == "delete" and buf:
        at = pos % len(buf)
        del buf[at:at + 1 + pos % 8]


_MUTATION_STEPS = st.lists(
    st.tuples(st.sampled_from(_MUTATIONS), _POSITIONS,
              st.sampled_from([(w, v) for w, values in HUGE_WORDS.items() for v in values]),
              data_bytes(40)),
    min_size=1, max_size=3)


def _mutate(data: bytes, steps) -> bytes:
    buf = bytearray(data)
    for op, pos, (width, huge), extra in steps:
        _apply_mutation(buf, op, pos, width, huge, extra)
    return bytes(buf)


def mutated(valid: SearchStrategy[bytes]) -> SearchStrategy[bytes]:
    """Valid encodings damaged 1-3 times: truncated, extended, bits flipped,
    a 4- or 8-byte field set huge, bytes inserted or deleted."""
    return st.builds(_mutate, valid, _MUTATION_STEPS)


def hostile(valid: SearchStrategy[bytes], max_size: int = 256) -> SearchStrategy[bytes]:
    """Arbitrary bytes, or mutations of ``valid``."""
    return st.one_of(st.binary(max_size=max_size), mutated(valid))
