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
  peer damages them (truncated, extended, bits flipped, counts set huge);
* for fuzzing a server (the last part): what goes on the wire
  (``WireMessage``, ``RawBytes``, ``Transmission``), valid requests of every
  command with the edges of the device under test (``requests(device)``),
  structure-aware mutations of them (``mutated_requests``,
  ``REQUEST_MUTATIONS``), requests carrying fds (``requests_with_fds``),
  ``garbage()``, hostile ``version_proposals()``, ``known_good_requests``,
  and ``transmissions(...)``: several back to back, cut into writes.

Every payload strategy generates objects that encode, and that decode back
to themselves: whatever the encoding states twice (``count`` and the data
length, ``num_ranges`` and the ranges, ...) agrees. Everything the encoding
does not cross-check is drawn from its whole range, so the objects are not
necessarily meaningful requests; a fuzzer that wants meaningful ones
narrows the fields it cares about with the keyword arguments or ``.map``.

May import: ``protocol`` (and Hypothesis).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import struct
from collections.abc import Callable, Iterable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    FLAG_ERROR,
    FLAG_NO_REPLY,
    HEADER_SIZE,
    IRQ_SET_ACTION_MASK,
    IRQ_SET_DATA_MASK,
    REGION_INFO_SIZE,
    REPLY_TYPES,
    REQUEST_TYPES,
    BitmapRange,
    CodecError,
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
    bitmap_bytes,
    decode,
    encode,
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
        lambda fs: functools.reduce(int.__or__, fs, 0)
    )
    return st.one_of(combos, uints(bits))


def enum_or_any(enum_type, bits: int = 32) -> SearchStrategy[int]:
    """A defined value of an IntEnum, or any ``bits``-bit value."""
    return st.one_of(st.sampled_from([int(v) for v in enum_type]), uints(bits))


@functools.cache
def data_bytes(max_size: int = MAX_DATA, min_size: int = 0) -> SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size)


def _tuples_of(
    strategy: SearchStrategy, max_size: int = MAX_ENTRIES, min_size: int = 0
) -> SearchStrategy[tuple]:
    return st.lists(strategy, min_size=min_size, max_size=max(min_size, max_size)).map(tuple)


# -------------------------------------------------------------------- JSON

KNOWN_CAPABILITIES = frozenset(
    {
        "max_msg_fds",
        "max_data_xfer_size",
        "migration",
        "max_dma_maps",
        "pgsizes",
        "twin_socket",
        "write_multiple",
    }
)


def json_scalars() -> SearchStrategy:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(1 << 64), 1 << 64),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=16),
    )


def json_values(max_leaves: int = 8) -> SearchStrategy:
    """Anything json.dumps writes and json.loads reads back equal (no NaN)."""
    return st.recursive(
        json_scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def _with_unknown_keys(
    known: SearchStrategy[dict], reserved: frozenset[str]
) -> SearchStrategy[dict]:
    """``known`` plus keys outside ``reserved`` with arbitrary JSON values."""
    unknown = st.dictionaries(
        st.text(max_size=12).filter(lambda k: k not in reserved), json_values(), max_size=3
    )
    return st.builds(lambda extra, known: {**extra, **known}, unknown, known)


def migration_capabilities() -> SearchStrategy[dict]:
    """The 0.9.1 ``migration`` capability object."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={"pgsize": powers_of_two()}), frozenset({"pgsize"})
    )


def twin_socket_capabilities() -> SearchStrategy[dict]:
    """The 0.9.2 ``twin_socket`` capability object."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={"supported": st.booleans(), "fd_index": u64s()}),
        frozenset({"supported", "fd_index"}),
    )


def capabilities() -> SearchStrategy[dict]:
    """A valid ``capabilities`` object: any subset of the known keys, plus unknown keys."""
    return _with_unknown_keys(
        st.fixed_dictionaries(
            {},
            optional={
                "max_msg_fds": u64s(),
                "max_data_xfer_size": ints_between(1, (1 << 64) - 1),
                "migration": migration_capabilities(),
                "max_dma_maps": u64s(),
                "pgsizes": ints_between(1, (1 << 64) - 1),
                "twin_socket": twin_socket_capabilities(),
                "write_multiple": st.booleans(),
            },
        ),
        KNOWN_CAPABILITIES,
    )


def version_json() -> SearchStrategy[dict]:
    """The version data object: optional ``capabilities`` and unknown top-level keys."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={"capabilities": capabilities()}),
        frozenset({"capabilities"}),
    )


# ---------------------------------------------------------------- payloads


def headers(
    command: SearchStrategy[int] | None = None, flags: SearchStrategy[int] | None = None
) -> SearchStrategy[Header]:
    """Headers with any field values (msg_size need not match anything)."""
    if command is None:
        command = enum_or_any(Command, 16)
    if flags is None:
        flags = st.one_of(
            st.sampled_from(
                [
                    MsgType.COMMAND,
                    MsgType.REPLY,
                    MsgType.COMMAND | FLAG_NO_REPLY,
                    MsgType.REPLY | FLAG_ERROR,
                ]
            ),
            u32s(),
        )
    return st.builds(
        Header, msg_id=u16s(), command=command, msg_size=u32s(), flags=flags, error=u32s()
    )


def versions(with_json: bool | None = None) -> SearchStrategy[Version]:
    """VERSION payloads, with version data (``with_json=True``), without, or either."""
    json = {None: st.one_of(st.none(), version_json()), True: version_json(), False: st.none()}[
        with_json
    ]
    return st.builds(Version, major=u16s(), minor=u16s(), json=json)


def dma_maps() -> SearchStrategy[DmaMap]:
    return st.builds(
        DmaMap,
        argsz=u32s(),
        flags=flags_of(DmaMapFlags),
        offset=u64s(),
        address=u64s(),
        size=u64s(),
    )


def vfio_bitmaps(size: SearchStrategy[int] | None = None) -> SearchStrategy[VfioBitmap]:
    return st.builds(
        VfioBitmap, pgsize=st.one_of(powers_of_two(), u64s()), size=u64s() if size is None else size
    )


# What follows a DMA_UNMAP entry or the DIRTY_PAGES head.
BITMAP_KINDS = ("none", "header", "data")


def _bitmap_and_data(
    bitmaps: SearchStrategy, with_size: Callable[[object, int], object], kinds: tuple[str, ...]
) -> SearchStrategy[tuple[object, bytes]]:
    """(None, b""); (header, b""), as in a request; or (header, data) with the
    header's size set to the length of the data, as in a reply."""
    choices = {
        "none": st.just((None, b"")),
        "header": bitmaps.map(lambda b: (b, b"")),
        "data": st.builds(
            lambda b, data: (with_size(b, len(data)), data), bitmaps, data_bytes(min_size=1)
        ),
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
        _bitmap_and_data(vfio_bitmaps(), lambda b, n: dataclasses.replace(b, size=n), bitmap),
    )


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
    return st.one_of(
        *[
            st.builds(
                DmaWriteReply, address=u64s(), count=uints(8 * size), count_size=st.just(size)
            )
            for size in sizes
        ]
    )


def device_infos() -> SearchStrategy[DeviceInfo]:
    return st.builds(DeviceInfo, argsz=u32s(), flags=u32s(), num_regions=u32s(), num_irqs=u32s())


def irq_infos() -> SearchStrategy[IrqInfo]:
    return st.builds(IrqInfo, argsz=u32s(), flags=u32s(), index=u32s(), count=u32s())


_IRQ_DATA = [int(f) for f in IrqSetFlags if f & IRQ_SET_DATA_MASK]
_IRQ_ACTIONS = [int(f) for f in IrqSetFlags if f & IRQ_SET_ACTION_MASK]


def irq_set_flags() -> SearchStrategy[int]:
    """One DATA flag and one ACTION flag, or any u32."""
    return st.one_of(
        st.builds(int.__or__, st.sampled_from(_IRQ_DATA), st.sampled_from(_IRQ_ACTIONS)), u32s()
    )


def _set_irqs_bool(flags: int, index: int, start: int, bools: list[int]) -> SetIrqs:
    return SetIrqs(
        SetIrqs.FIXED_SIZE + len(bools),
        flags | IrqSetFlags.DATA_BOOL,
        index,
        start,
        len(bools),
        bytes(bools),
    )


def set_irqs(data_bool: bool = False) -> SearchStrategy[SetIrqs]:
    """SET_IRQS requests: any flags and count, some data or none; or DATA_BOOL
    with ``count`` bool bytes (mostly 0 and 1). ``data_bool=True``: only the latter.
    """
    with_bools = st.builds(
        _set_irqs_bool,
        st.sampled_from(_IRQ_ACTIONS),
        u32s(),
        u32s(),
        st.lists(st.one_of(st.sampled_from([0, 1]), u8s()), min_size=1, max_size=MAX_DATA),
    )
    if data_bool:
        return with_bools
    anything = st.builds(
        SetIrqs,
        argsz=u32s(),
        flags=irq_set_flags(),
        index=u32s(),
        start=u32s(),
        count=u32s(),
        data=st.one_of(st.just(b""), data_bytes()),
    )
    return st.one_of(anything, with_bools)


def region_io_fds_requests() -> SearchStrategy[RegionIoFdsRequest]:
    return st.builds(RegionIoFdsRequest, argsz=u32s(), flags=u32s(), index=u32s(), count=u32s())


def io_fd_sub_regions() -> SearchStrategy[IoFdSubRegion]:
    return st.builds(
        IoFdSubRegion,
        offset=u64s(),
        size=u64s(),
        fd_index=u32s(),
        type=enum_or_any(IoFdType),
        flags=u32s(),
        padding=u32s(),
        data=u64s(),
    )


def region_io_fds_replies(
    min_entries: int = 0, min_padding: int = 0
) -> SearchStrategy[RegionIoFdsReply]:
    """Replies with entries (of 40 bytes or more, errata 3), or the head only
    (any count: a reply cut short by a small argsz).

    ``min_padding``: the least number of bytes each entry has beyond 40.
    """
    padding = ints_between(min_padding, max(24, min_padding))
    with_entries = st.builds(
        lambda argsz, flags, index, subs, pad: RegionIoFdsReply(
            argsz, flags, index, len(subs), subs, IoFdSubRegion.SIZE + pad
        ),
        u32s(),
        u32s(),
        u32s(),
        _tuples_of(io_fd_sub_regions(), min_size=max(1, min_entries)),
        padding,
    )
    if min_entries:
        return with_entries
    head_only = st.builds(RegionIoFdsReply, argsz=u32s(), flags=u32s(), index=u32s(), count=u32s())
    return st.one_of(head_only, with_entries)


def sparse_mmap_caps() -> SearchStrategy[SparseMmapCap]:
    return st.builds(
        SparseMmapCap, areas=_tuples_of(st.tuples(u64s(), u64s())), version=u16s(), reserved=u32s()
    )


def region_type_caps() -> SearchStrategy[RegionTypeCap]:
    return st.builds(
        RegionTypeCap,
        type=st.one_of(st.just(3), u32s()),
        subtype=st.one_of(st.just(1), u32s()),
        version=u16s(),
    )


def unknown_caps() -> SearchStrategy[UnknownCap]:
    known = {int(c) for c in RegionCapId}
    return st.builds(
        UnknownCap, id=u16s().filter(lambda i: i not in known), data=data_bytes(32), version=u16s()
    )


def region_caps() -> SearchStrategy:
    return st.one_of(sparse_mmap_caps(), region_type_caps(), unknown_caps())


def region_infos(min_caps: int = 0, max_caps: int = MAX_ENTRIES) -> SearchStrategy[RegionInfo]:
    """Requests and replies: a chain of capabilities (from cap_offset 32, or a
    little further), or none (any cap_offset: a reply cut short by argsz)."""

    def info(cap_offset, caps):
        return st.builds(
            RegionInfo,
            argsz=u32s(),
            flags=u32s(),
            index=u32s(),
            cap_offset=cap_offset,
            size=u64s(),
            offset=u64s(),
            caps=caps,
        )

    with_caps = info(
        ints_between(REGION_INFO_SIZE, REGION_INFO_SIZE + 32),
        _tuples_of(region_caps(), max_caps, max(1, min_caps)),
    )
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
    return st.builds(
        lambda offset, region, data: cls(offset, region, len(data), data),
        u64s(),
        u32s(),
        data_bytes(),
    )


def region_read_replies() -> SearchStrategy[RegionReadReply]:
    return _region_data(RegionReadReply)


def region_writes() -> SearchStrategy[RegionWrite]:
    return _region_data(RegionWrite)


def single_writes() -> SearchStrategy[SingleWrite]:
    """Entries of REGION_WRITE_MULTI: mostly 0-8 bytes padded, sometimes any count."""
    return st.one_of(
        st.builds(SingleWrite.of, u64s(), u32s(), data_bytes(8)),
        st.builds(
            SingleWrite, offset=u64s(), region=u32s(), count=u32s(), data=data_bytes(8, min_size=8)
        ),
    )


def region_write_multis() -> SearchStrategy[RegionWriteMulti]:
    return st.builds(RegionWriteMulti, writes=_tuples_of(single_writes(), 6))


def region_write_multi_replies() -> SearchStrategy[RegionWriteMultiReply]:
    return st.builds(RegionWriteMultiReply, wr_cnt=u64s())


def bitmap_ranges(bitmap_size: SearchStrategy[int] | None = None) -> SearchStrategy[BitmapRange]:
    return st.builds(BitmapRange, iova=u64s(), size=u64s(), bitmap=vfio_bitmaps(bitmap_size))


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
        _bitmap_and_data(bitmap_ranges(), _range_with_bitmap_size, bitmap),
    )


def migration_infos() -> SearchStrategy[MigrationInfo]:
    return st.builds(
        MigrationInfo,
        device_state=st.one_of(st.integers(0, 7), u32s()),
        reserved=u32s(),
        pending_bytes=u64s(),
        data_offset=u64s(),
        data_size=u64s(),
    )


def feature_migrations() -> SearchStrategy[FeatureMigration]:
    return st.builds(FeatureMigration, flags=flags_of(MigrationFlags, 64))


def feature_mig_device_states() -> SearchStrategy[FeatureMigDeviceState]:
    return st.builds(
        FeatureMigDeviceState,
        device_state=enum_or_any(MigState),
        data_fd=st.one_of(st.just(-1), s32s()),
    )


def dma_logging_ranges() -> SearchStrategy[tuple[tuple[int, int], ...]]:
    return _tuples_of(st.tuples(u64s(), u64s()))


def dma_logging_controls() -> SearchStrategy[DmaLoggingControl]:
    return st.builds(
        lambda page_size, reserved, ranges: DmaLoggingControl(
            page_size, len(ranges), reserved, ranges
        ),
        st.one_of(powers_of_two(), u64s()),
        st.one_of(st.just(0), u32s()),
        dma_logging_ranges(),
    )


def dma_logging_reports() -> SearchStrategy[DmaLoggingReport]:
    """Requests (no bitmap) and replies (a bitmap of whole u64s)."""
    bitmap = st.lists(st.binary(min_size=8, max_size=8), max_size=MAX_DATA // 8).map(b"".join)
    return st.builds(
        DmaLoggingReport,
        iova=u64s(),
        length=u64s(),
        page_size=st.one_of(powers_of_two(), u64s()),
        bitmap=bitmap,
    )


_FEATURE_OPS = [
    int(DeviceFeatureFlags.GET),
    int(DeviceFeatureFlags.SET),
    int(DeviceFeatureFlags.PROBE),
    int(DeviceFeatureFlags.PROBE | DeviceFeatureFlags.GET),
    int(DeviceFeatureFlags.PROBE | DeviceFeatureFlags.SET),
]


def feature_data() -> SearchStrategy[tuple[int, bytes]]:
    """(feature index, data) with the data a feature carries, or none (GET, PROBE)."""

    def typed(feature, strategy):
        return st.tuples(
            st.just(int(feature)), st.one_of(st.just(b""), strategy.map(lambda p: p.pack()))
        )

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

    return st.builds(
        build,
        feature_data(),
        st.sampled_from(_FEATURE_OPS),
        st.one_of(st.none(), u32s()),
        st.one_of(st.none(), u32s()),
    )


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


def _message(
    command: int, reply: bool, payload: Payload | None, msg_id: int, no_reply: bool
) -> tuple[Header, bytes]:
    body = b"" if payload is None else payload.pack()
    flags = MsgType.REPLY if reply else (FLAG_NO_REPLY if no_reply else MsgType.COMMAND)
    return Header(msg_id, command, 16 + len(body), flags), body


def messages(
    commands: Iterable[int] = tuple(Command), replies: Iterable[bool] = (False, True)
) -> SearchStrategy[tuple[Header, bytes]]:
    """Whole, well-framed messages: the header and the payload bytes.

    ``encode(...)`` of the header's fields and the payload gives the wire bytes;
    ``header.pack() + payload`` is the same thing.
    """
    return st.one_of(
        *[
            st.builds(
                _message,
                st.just(int(command)),
                st.just(reply),
                message_payloads(int(command), reply),
                u16s(),
                st.booleans(),
            )
            for command in commands
            for reply in replies
        ]
    )


# ---------------------------------------------------------------- mutations

# Values a corrupted count or size field takes: the ones that overflow.
HUGE_WORDS = {
    4: [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0x10000000],
    8: [(1 << 64) - 1, (1 << 63) - 1, 1 << 63, 1 << 32, (1 << 64) - 8],
}


_MUTATIONS = ("truncate", "extend", "flip", "huge", "insert", "delete")
# An index into the data, taken modulo its length: one strategy for any length.
_POSITIONS = st.integers(0, (1 << 24) - 1)


def _apply_mutation(buf: bytearray, op: str, pos: int, width: int, huge: int, extra: bytes) -> None:
    if op == "truncate" and buf:
        del buf[pos % len(buf) :]
    elif op == "extend":
        buf += extra or b"\0"
    elif op == "flip" and buf:
        bit = pos % (8 * len(buf))
        buf[bit // 8] ^= 1 << (bit % 8)
    elif op == "huge" and len(buf) >= width:
        # Fields sit on 4-byte boundaries in every vfio-user structure.
        at = 4 * (pos % ((len(buf) - width) // 4 + 1))
        buf[at : at + width] = huge.to_bytes(width, "little")
    elif op == "insert":
        at = pos % (len(buf) + 1)
        buf[at:at] = extra[:8] or b"\xff"
    elif op == "delete" and buf:
        at = pos % len(buf)
        del buf[at : at + 1 + pos % 8]


_MUTATION_STEPS = st.lists(
    st.tuples(
        st.sampled_from(_MUTATIONS),
        _POSITIONS,
        st.sampled_from([(w, v) for w, values in HUGE_WORDS.items() for v in values]),
        data_bytes(40),
    ),
    min_size=1,
    max_size=3,
)


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


# ==================================================================== fuzzing
#
# What a fuzzer puts on the wire. A ``WireMessage`` is one message: its
# header fields, payload bytes, how many fds go with it and what was done to
# it; ``RawBytes`` is anything else; a ``Transmission`` is one or more of them
# sent back to back, possibly cut into several writes. The strategies below
# generate them from the codec's types, with field values weighted to the
# edges *of the device under test* (its region sizes, IRQ counts, index
# counts), so they take the discovered device (``DeviceModel``: ``.info``,
# ``.regions``, ``.irqs``, ``.capabilities``) as a parameter.
#
# fds are counted, not made: whoever sends a message creates them. The kind
# follows ``reproducer._fd_kinds`` (a memfd for a write that starts with a
# DMA_MAP, an eventfd otherwise), so that a replayed conversation passes the
# same kinds of fds.

PAGE = 4096
_HDR = struct.Struct("<HHIII")
_U32_MAX = (1 << 32) - 1
_U64 = 1 << 64
MAX_FUZZ_FDS = 8  # fds attached to one fuzzed message at most
MAX_WRITE_DATA = 4096  # REGION_WRITE data drawn byte by byte up to this; zeros above


def _describe_bytes(raw: bytes) -> str:
    """One line: the header and the decoded payload (or why it does not decode)."""
    if len(raw) < HEADER_SIZE:
        return f"<{len(raw)} bytes, less than a header>"
    h = Header.unpack(raw[:HEADER_SIZE])
    payload = raw[HEADER_SIZE:]
    text = h.describe()
    if h.msg_size != len(raw):
        return f"{text}: {len(payload)} payload bytes follow (msg_size says {h.msg_size})"
    try:
        body = decode(h.command, h.is_reply, payload)
    except CodecError as e:
        return f"{text}: {len(payload)} payload bytes, undecodable: {e}"
    shown = "(none)" if body is None else repr(body)
    return f"{text}: {shown if len(shown) <= 160 else shown[:157] + '...'}"


@dataclasses.dataclass(frozen=True)
class WireMessage:
    """One message as a fuzzer sends it.

    ``msg_size`` None: the true size (16 + len(payload)). ``mutation`` says
    what was done to a valid message ("" for none), for reports.
    """

    msg_id: int
    command: int
    payload: bytes = b""
    flags: int = 0
    error: int = 0
    msg_size: int | None = None
    nfds: int = 0
    mutation: str = ""

    @property
    def true_size(self) -> int:
        return HEADER_SIZE + len(self.payload)

    def encode(self) -> bytes:
        size = self.true_size if self.msg_size is None else self.msg_size
        return _HDR.pack(self.msg_id, self.command, size, self.flags, self.error) + self.payload

    def describe(self) -> str:
        fds = f" +{self.nfds} fds" if self.nfds else ""
        how = f" [{self.mutation}]" if self.mutation else ""
        return f"{_describe_bytes(self.encode())}{fds}{how}"

    def mutate(self, label: str, **changes) -> WireMessage:
        mutation = f"{self.mutation}, {label}" if self.mutation else label
        return dataclasses.replace(self, mutation=mutation, **changes)


@dataclasses.dataclass(frozen=True)
class RawBytes:
    """Bytes that need not be a message at all."""

    data: bytes
    nfds: int = 0
    mutation: str = "raw bytes"

    def encode(self) -> bytes:
        return self.data

    def describe(self) -> str:
        fds = f" +{self.nfds} fds" if self.nfds else ""
        return f"{len(self.data)} raw bytes{fds}: {_describe_bytes(self.data)}"


@dataclasses.dataclass(frozen=True)
class Transmission:
    """Items sent back to back, cut into writes at ``cuts`` (stream offsets).

    An item's fds go with the write that starts at its first byte (a cut is
    made there), so a write with fds always starts with the message they
    belong to.
    """

    items: tuple
    cuts: tuple[int, ...] = ()

    def stream(self) -> bytes:
        return b"".join(item.encode() for item in self.items)

    def writes(self) -> list[tuple[bytes, int]]:
        """(bytes, number of fds) of each write, in order."""
        stream = self.stream()
        pos = 0
        fds_at: dict[int, int] = {}
        for item in self.items:
            if item.nfds:
                fds_at[pos] = fds_at.get(pos, 0) + item.nfds
            pos += len(item.encode())
        bounds = sorted({0, len(stream), *fds_at, *(c for c in self.cuts if 0 < c < len(stream))})
        return [(stream[a:b], fds_at.get(a, 0)) for a, b in zip(bounds, bounds[1:], strict=False)]

    def describe(self) -> str:
        lines = [f"  >> {item.describe()}" for item in self.items]
        if self.cuts:
            lines.append(f"  (sent in {len(self.writes())} writes, cut at {list(self.cuts)})")
        return "\n".join(lines)


# ---- values of the device under test


def _caps(device):
    return getattr(device, "capabilities", None)


def device_max_data_xfer_size(device) -> int:
    caps = _caps(device)
    return caps.max_data_xfer_size if caps is not None else 1 << 20


def device_max_msg_fds(device) -> int:
    caps = _caps(device)
    return caps.max_msg_fds if caps is not None else 1


def _pick(edges: Iterable[int], lo: int, hi: int) -> SearchStrategy[int]:
    """One of ``edges`` (clipped to [lo, hi]), or any integer in [lo, hi]."""
    return _pick_cached(tuple(sorted({v for v in edges if lo <= v <= hi})), lo, hi)


@functools.cache
def _pick_cached(values: tuple[int, ...], lo: int, hi: int) -> SearchStrategy[int]:
    return (
        st.one_of(st.sampled_from(values), st.integers(lo, hi)) if values else st.integers(lo, hi)
    )


def _index_values(present: Iterable[int], num: int) -> tuple[list[int], list[int]]:
    known = sorted(present) or [0]
    past = [num, num + 1, 2 * num + 1, 0x7FFFFFFF, 0x80000000, _U32_MAX]
    return known, [v for v in past if v <= _U32_MAX]


def region_indexes(device) -> SearchStrategy[int]:
    """Region indexes: mostly ones the device has, else just past the end, or any u32."""
    known, past = _index_values(device.regions, device.info.num_regions)
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.sampled_from(past), u32s())


def irq_indexes(device) -> SearchStrategy[int]:
    """IRQ indexes: mostly ones the device has, else just past the end, or any u32."""
    known, past = _index_values(device.irqs, device.info.num_irqs)
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.sampled_from(past), u32s())


@functools.cache
def region_offsets(size: int) -> SearchStrategy[int]:
    """Offsets into a region of ``size`` bytes: inside it, at and around its end,
    and near 2**64 (where offset + count wraps)."""
    edges = [
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        16,
        size - 8,
        size - 4,
        size - 2,
        size - 1,
        size,
        size + 1,
        size + 4096,
        1 << 32,
        1 << 63,
        _U64 - 8,
        _U64 - 1,
    ]
    inside = st.integers(0, max(0, size - 1))
    return st.one_of(inside, st.sampled_from(sorted({v for v in edges if 0 <= v < _U64})))


@functools.cache
def access_counts(xfer: int, size: int = 0, most: int = 256) -> SearchStrategy[int]:
    """Counts of a region access: small, the region's size, ``xfer`` (the server's
    max_data_xfer_size) and its neighbours, u32 edges."""
    edges = [
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        16,
        64,
        4096,
        size,
        size + 1,
        xfer,
        xfer + 1,
        0x7FFFFFFF,
        _U32_MAX,
    ]
    return st.one_of(
        st.integers(1, most), st.sampled_from(sorted({v for v in edges if 0 <= v <= _U32_MAX}))
    )


@functools.cache
def dma_addresses(base: int = 1 << 32, pages: int = 256) -> SearchStrategy[int]:
    """DMA addresses: page-aligned in a window (so that maps overlap), or edges."""
    edges = [0, PAGE, base - PAGE, 1 << 47, 1 << 63, _U64 - PAGE, _U64 - 1, 1]
    return st.one_of(
        st.integers(0, pages - 1).map(lambda p: base + p * PAGE), st.sampled_from(edges)
    )


@functools.cache
def dma_sizes() -> SearchStrategy[int]:
    """DMA sizes: whole pages mostly, else 0, 1, unaligned, huge."""
    edges = [0, 1, PAGE - 1, PAGE + 1, 1 << 32, 1 << 63, _U64 - PAGE, _U64 - 1]
    return st.one_of(st.integers(1, 16).map(lambda n: n * PAGE), st.sampled_from(edges))


_ARGSZ_EDGES = [
    0,
    1,
    4,
    8,
    15,
    16,
    17,
    20,
    23,
    24,
    31,
    32,
    33,
    40,
    48,
    64,
    4096,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    _U32_MAX,
]


@functools.cache
def argsz_values(expected: int) -> SearchStrategy[int]:
    """argsz: mostly the right value, else its neighbours and the edges."""
    near = [expected - 8, expected - 1, expected + 1, expected + 8]
    return st.one_of(
        st.just(expected),
        st.just(expected),
        st.sampled_from(sorted({v for v in [*near, *_ARGSZ_EDGES] if 0 <= v <= _U32_MAX})),
    )


# ---- one strategy of (payload bytes, number of fds) per client-to-server command


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


# ---- structure-aware mutations of a request

# Payload fields by command: name -> (offset, width). "index" is a region or IRQ
# index, "start"/"count" the SET_IRQS range, (offset|address, count|size) pairs
# are what may overflow 64 bits.
REQUEST_FIELDS: dict[int, dict[str, tuple[int, int]]] = {
    Command.DMA_MAP: {
        "argsz": (0, 4),
        "flags": (4, 4),
        "offset": (8, 8),
        "address": (16, 8),
        "size": (24, 8),
    },
    Command.DMA_UNMAP: {"argsz": (0, 4), "flags": (4, 4), "address": (8, 8), "size": (16, 8)},
    Command.DEVICE_GET_INFO: {"argsz": (0, 4), "flags": (4, 4)},
    Command.DEVICE_GET_REGION_INFO: {"argsz": (0, 4), "flags": (4, 4), "index": (8, 4)},
    Command.DEVICE_GET_REGION_IO_FDS: {
        "argsz": (0, 4),
        "flags": (4, 4),
        "index": (8, 4),
        "count": (12, 4),
    },
    Command.DEVICE_GET_IRQ_INFO: {"argsz": (0, 4), "flags": (4, 4), "index": (8, 4)},
    Command.DEVICE_SET_IRQS: {
        "argsz": (0, 4),
        "flags": (4, 4),
        "index": (8, 4),
        "start": (12, 4),
        "count": (16, 4),
    },
    Command.REGION_READ: {"address": (0, 8), "index": (8, 4), "size": (12, 4)},
    Command.REGION_WRITE: {"address": (0, 8), "index": (8, 4), "size": (12, 4)},
    Command.DIRTY_PAGES: {"argsz": (0, 4), "flags": (4, 4), "address": (8, 8), "size": (16, 8)},
    Command.REGION_WRITE_MULTI: {"count": (0, 8)},
    Command.DEVICE_FEATURE: {"argsz": (0, 4), "flags": (4, 4)},
    Command.MIG_DATA_READ: {"argsz": (0, 4), "size": (4, 4)},
    Command.MIG_DATA_WRITE: {"argsz": (0, 4), "size": (4, 4)},
}
# The flag bits each request defines (the rest are undefined).
DEFINED_REQUEST_FLAGS: dict[int, int] = {
    Command.DMA_MAP: int(DmaMapFlags.READ | DmaMapFlags.WRITE),
    Command.DMA_UNMAP: int(DmaUnmapFlags.GET_DIRTY_BITMAP),
    Command.DEVICE_GET_INFO: 0,
    Command.DEVICE_GET_REGION_INFO: 0,
    Command.DEVICE_GET_REGION_IO_FDS: 0,
    Command.DEVICE_GET_IRQ_INFO: 0,
    Command.DEVICE_SET_IRQS: int(IRQ_SET_DATA_MASK | IRQ_SET_ACTION_MASK),
    Command.DIRTY_PAGES: int(
        DirtyPagesFlags.START | DirtyPagesFlags.STOP | DirtyPagesFlags.GET_BITMAP
    ),
    Command.DEVICE_FEATURE: 0x7FFFF,
}
# Requests whose reply carries data: No_reply on them asks for nothing back.
DATA_REPLIES = frozenset(
    int(c)
    for c in (
        Command.VERSION,
        Command.DMA_UNMAP,
        Command.DEVICE_GET_INFO,
        Command.DEVICE_GET_REGION_INFO,
        Command.DEVICE_GET_REGION_IO_FDS,
        Command.DEVICE_GET_IRQ_INFO,
        Command.REGION_READ,
        Command.REGION_WRITE,
        Command.DIRTY_PAGES,
        Command.REGION_WRITE_MULTI,
        Command.DEVICE_FEATURE,
        Command.MIG_DATA_READ,
    )
)
_HEADER_FLAGS_UNDEFINED = [1 << b for b in range(6, 32)]
_ERRNOS = [0, 1, 5, 22, 4095, 4096, 0x7FFFFFFF, _U32_MAX]


def _field(msg: WireMessage, name: str) -> tuple[int, int] | None:
    """(offset, width) of a field the message's payload is long enough to hold."""
    spot = REQUEST_FIELDS.get(msg.command, {}).get(name)
    if spot is None or spot[0] + spot[1] > len(msg.payload):
        return None
    return spot


def _read_field(msg: WireMessage, spot: tuple[int, int]) -> int:
    return int.from_bytes(msg.payload[spot[0] : spot[0] + spot[1]], "little")


def _with_field(msg: WireMessage, spot: tuple[int, int], value: int, label: str) -> WireMessage:
    at, width = spot
    value &= (1 << 8 * width) - 1
    payload = msg.payload[:at] + value.to_bytes(width, "little") + msg.payload[at + width :]
    return msg.mutate(label, payload=payload)


def _m_msg_size_short(draw, msg, device):
    cut = draw(
        _pick(
            [1, 2, 4, 8, msg.true_size - HEADER_SIZE, msg.true_size - 1, msg.true_size],
            1,
            msg.true_size,
        )
    )
    return msg.mutate(f"msg_size-{cut}", msg_size=msg.true_size - cut)


def _m_msg_size_long(draw, msg, device):
    extra = draw(st.sampled_from((1, 2, 3, 4, 7, 8, 16, 64, 4096, 1 << 16)))
    if draw(st.booleans()):
        return msg.mutate(f"msg_size+{extra}", msg_size=min(msg.true_size + extra, _U32_MAX))
    huge = draw(st.sampled_from(HUGE_WORDS[4]))
    return msg.mutate(f"msg_size={huge:#x}", msg_size=huge)


def _m_argsz(draw, msg, device):
    spot = _field(msg, "argsz")
    value = _read_field(msg, spot)
    if draw(st.booleans()):
        delta = draw(st.sampled_from((-16, -8, -4, -1, 1, 4, 8, 16, 4096)))
        return _with_field(msg, spot, value + delta, f"argsz{delta:+d}")
    big = draw(
        st.sampled_from(
            tuple(
                v
                for v in (
                    0,
                    1,
                    0x7FFFFFFF,
                    0x80000000,
                    _U32_MAX,
                    (value * 2) & _U32_MAX,
                    (value << 16) & _U32_MAX,
                )
                if v != value
            )
        )
    )
    return _with_field(msg, spot, big, f"argsz={big:#x}")


def _m_flags_undefined(draw, msg, device):
    spot = _field(msg, "flags")
    defined = DEFINED_REQUEST_FLAGS.get(msg.command, 0)
    bits = [1 << b for b in range(32) if not defined & (1 << b)]
    bit = draw(st.sampled_from(bits))
    return _with_field(msg, spot, _read_field(msg, spot) | bit, f"flags|{bit:#x}")


def _m_index_past_end(draw, msg, device):
    spot = _field(msg, "index")
    num = (
        device.info.num_irqs
        if msg.command in (Command.DEVICE_GET_IRQ_INFO, Command.DEVICE_SET_IRQS)
        else device.info.num_regions
    )
    value = draw(st.sampled_from((num, num + 1, 0x80000000, _U32_MAX)))
    return _with_field(msg, spot, value, f"index={value:#x}")


def _m_overflow(draw, msg, device):
    """offset/address + count/size reaching 2**64 (the SET_IRQS range: 2**32): it wraps."""
    if _field(msg, "start") is not None and _field(msg, "count") is not None:
        start, count = _field(msg, "start"), _field(msg, "count")
        n = max(1, _read_field(msg, count))
        back = draw(st.integers(1, min(n, 1 << 16)))
        return _with_field(msg, start, (1 << 32) - back, f"start=2**32-{back} (+{n} wraps)")
    addr, size = _field(msg, "address"), _field(msg, "size")
    length = max(1, _read_field(msg, size))
    back = draw(st.integers(1, min(length, 1 << 20)))
    return _with_field(msg, addr, _U64 - back, f"address/offset=2**64-{back} (+{length} wraps)")


def _m_truncate(draw, msg, device):
    keep = draw(st.one_of(st.just(0), st.integers(0, len(msg.payload) - 1)))  # often none
    return msg.mutate(f"payload cut to {keep}", payload=msg.payload[:keep])


def _m_trailing(draw, msg, device):
    extra = draw(
        st.one_of(
            st.binary(min_size=1, max_size=16),
            st.sampled_from((bytes(8), b"\xff" * 24, bytes(4096))),
        )
    )
    return msg.mutate(f"+{len(extra)} trailing bytes", payload=msg.payload + extra)


def _m_type(draw, msg, device):
    kind = draw(st.integers(1, 15))
    return msg.mutate(f"type={kind}", flags=(msg.flags & ~0xF) | kind)


def _m_header_flags(draw, msg, device):
    bit = draw(st.sampled_from(_HEADER_FLAGS_UNDEFINED))
    return msg.mutate(f"header flags|{bit:#x}", flags=msg.flags | bit)


def _m_error_bit(draw, msg, device):
    err = draw(st.sampled_from(_ERRNOS))
    return msg.mutate(f"Error bit, error={err}", flags=msg.flags | FLAG_ERROR, error=err)


def _m_error_field(draw, msg, device):
    err = draw(st.sampled_from(_ERRNOS[1:]))
    return msg.mutate(f"error field={err}", error=err)


def _m_no_reply(draw, msg, device):
    return msg.mutate("No_reply", flags=msg.flags | FLAG_NO_REPLY)


def _m_command(draw, msg, device):
    other = [int(c) for c in Command if c != Command.VERSION and c != msg.command]
    command = draw(
        st.one_of(st.sampled_from(other), st.sampled_from((0, 19, 20, 0x100, 0x8000, 0xFFFF)))
    )
    return msg.mutate(f"command={command}", command=command)


def _m_fds_extra(draw, msg, device):
    n = draw(st.integers(1, 3))
    return msg.mutate(f"{n} fds that do not belong", nfds=msg.nfds + n)


def _m_fds_missing(draw, msg, device):
    if msg.nfds:
        keep = draw(st.integers(0, msg.nfds - 1))
        return msg.mutate(f"{msg.nfds - keep} of its fds missing", nfds=keep)
    spot = _field(msg, "offset")  # a DMA_MAP that needs an fd (a file offset) but has none
    return _with_field(msg, spot, PAGE, "file offset without the fd")


def _m_bytes(draw, msg, device):
    payload = _mutate(msg.payload, draw(_MUTATION_STEPS))
    return msg.mutate("payload bytes damaged", payload=payload)


# name -> (applies to the message?, mutator)
REQUEST_MUTATIONS: dict[str, tuple[Callable[[WireMessage], bool], Callable]] = {
    "msg_size_short": (lambda m: True, _m_msg_size_short),
    "msg_size_long": (lambda m: True, _m_msg_size_long),
    "argsz": (lambda m: _field(m, "argsz") is not None, _m_argsz),
    "flags_undefined": (lambda m: _field(m, "flags") is not None, _m_flags_undefined),
    "index_past_end": (lambda m: _field(m, "index") is not None, _m_index_past_end),
    "overflow": (
        lambda m: (
            (_field(m, "address") is not None and _field(m, "size") is not None)
            or (_field(m, "start") is not None and _field(m, "count") is not None)
        ),
        _m_overflow,
    ),
    "truncate": (lambda m: bool(m.payload), _m_truncate),
    "trailing": (lambda m: True, _m_trailing),
    "type": (lambda m: True, _m_type),
    "header_flags": (lambda m: True, _m_header_flags),
    "error_bit": (lambda m: True, _m_error_bit),
    "error_field": (lambda m: True, _m_error_field),
    "no_reply": (lambda m: m.command in DATA_REPLIES and not m.flags & FLAG_NO_REPLY, _m_no_reply),
    "command": (lambda m: True, _m_command),
    "fds_extra": (lambda m: True, _m_fds_extra),
    "fds_missing": (
        lambda m: m.nfds > 0 or (m.command == Command.DMA_MAP and _field(m, "offset") is not None),
        _m_fds_missing,
    ),
    "bytes": (lambda m: bool(m.payload), _m_bytes),
}


@functools.cache
def _one_of_names(names: tuple[str, ...]) -> SearchStrategy[str]:
    return st.sampled_from(names)


def mutate_request(draw, msg: WireMessage, device, ops: Iterable[str] | None = None) -> WireMessage:
    """One mutation of ``msg`` (drawn with ``draw``, from ``ops`` or all that apply)."""
    names = tuple(n for n in (ops or REQUEST_MUTATIONS) if REQUEST_MUTATIONS[n][0](msg))
    name = draw(_one_of_names(names))
    return REQUEST_MUTATIONS[name][1](draw, msg, device)


def mutated_requests(
    device, spec: str = "0.9.1", max_mutations: int = 2, ops: Iterable[str] | None = None
) -> SearchStrategy[WireMessage]:
    """Valid requests (``requests``) damaged 1..``max_mutations`` times the ways that
    matter to a parser: msg_size shorter or longer than what follows, argsz off by a
    little or a lot, undefined flag bits, indexes past the end, offset + count past
    2**64, truncated payloads, trailing bytes, wrong type bits, the Error bit and
    error field on a command, No_reply on commands that return data, another command
    number, fds where none belong and missing where required, damaged bytes.
    ``ops`` restricts the mutations (names of ``REQUEST_MUTATIONS``)."""
    base = requests(device, spec)
    ops = tuple(ops) if ops is not None else None

    @st.composite
    def build(draw):
        msg = draw(base)
        for _ in range(draw(st.integers(1, max_mutations))):
            msg = mutate_request(draw, msg, device, ops)
        return msg

    return build()


def requests_with_fds(device, spec: str = "0.9.1") -> SearchStrategy[WireMessage]:
    """Requests that carry fds the server must take or give back: DMA_MAP with a memfd,
    SET_IRQS with eventfds (valid ones, with one eventfd a sub-index or one more, one
    fewer, none, more than the server's max_msg_fds), and any request with fds that do
    not belong or fewer than it needs."""
    carrying = requests(device, spec, (Command.DMA_MAP, Command.DEVICE_SET_IRQS), no_reply=False)
    fd_ops = ("fds_extra", "fds_missing")
    any_request = requests(device, spec)

    @st.composite
    def damaged(draw):
        return mutate_request(draw, draw(any_request), device, fd_ops)

    choices = [carrying, damaged()]
    eventfd_irqs = sorted(
        (i, q.count) for i, q in device.irqs.items() if q.count and q.flags & 1
    )  # IrqInfoFlags.EVENTFD
    if eventfd_irqs:
        choices.append(_set_irqs_eventfds(eventfd_irqs, device_max_msg_fds(device)))
    return st.one_of(*choices)


@st.composite
def _set_irqs_eventfds(draw, irqs: list[tuple[int, int]], max_fds: int):
    """A valid SET_IRQS DATA_EVENTFD of an index and range the device has, with as many
    eventfds as sub-indexes, or one more, one fewer, none, more than max_msg_fds."""
    index, n = draw(st.sampled_from(irqs))
    start = draw(st.integers(0, n - 1))
    count = draw(st.integers(1, n - start))
    action = draw(
        st.sampled_from(
            (int(IrqSetFlags.ACTION_TRIGGER),) * 2
            + tuple(int(a) for a in (IrqSetFlags.ACTION_MASK, IrqSetFlags.ACTION_UNMASK))
        )
    )
    nfds = draw(st.sampled_from((count, count, count + 1, count - 1, 0, max_fds + 1)))
    payload = SetIrqs(
        SetIrqs.FIXED_SIZE, int(IrqSetFlags.DATA_EVENTFD) | action, index, start, count
    ).pack()
    label = "" if nfds == count else f"{nfds} eventfds for {count} sub-indexes"
    return WireMessage(
        draw(st.integers(0, 0xFFFF)),
        int(Command.DEVICE_SET_IRQS),
        payload,
        nfds=min(max(nfds, 0), 253),
        mutation=label,
    )


# ---- garbage and the handshake


def garbage(max_size: int = 256) -> SearchStrategy[RawBytes]:
    """Bytes that are no message: random; a random header (any msg_size) with random
    bytes after it; a header whose msg_size matches random payload bytes; now and
    then with fds."""
    random_bytes = st.binary(min_size=1, max_size=max_size)
    header_then_bytes = st.builds(
        lambda h, tail: h.pack() + tail, headers(), st.binary(max_size=64)
    )
    framed_junk = st.builds(
        lambda msg_id, command, flags, payload: encode(msg_id, command, payload, flags),
        st.integers(0, 0xFFFF),
        enum_or_any(Command, 16),
        st.one_of(st.just(0), st.just(0), u32s()),
        st.binary(max_size=max_size),
    )
    nfds = st.sampled_from((0, 0, 0, 0, 1, 2))
    return st.builds(RawBytes, st.one_of(random_bytes, header_then_bytes, framed_junk), nfds)


_JSON_HOSTILE = [
    b"",
    b"{",
    b"}",
    b"[]",
    b"null",
    b"0",
    b'"x"',
    b"{}{}",
    b'{"capabilities":',
    b'{"capabilities":null}',
    b'{"capabilities":[]}',
    b'{"capabilities":"x"}',
    b'{"capabilities":{"max_msg_fds":-1}}',
    b'{"capabilities":{"max_msg_fds":1.5}}',
    b'{"capabilities":{"max_msg_fds":"16"}}',
    b'{"capabilities":{"max_msg_fds":18446744073709551616}}',
    b'{"capabilities":{"max_data_xfer_size":0}}',
    b'{"capabilities":{"max_data_xfer_size":1e999}}',
    b'{"capabilities":{"migration":{"pgsize":3}}}',
    b'{"capabilities":{"migration":{"pgsize":0}}}',
    b'{"capabilities":{"migration":[]}}',
    b'{"capabilities":{"max_msg_fds":1,"max_msg_fds":2}}',
    b'{"capabilities":{}, "capabilities":{"max_msg_fds":99999999999}}',
    b'{"a":NaN}',
    b'{"a":Infinity}',
    b'{"\xff\xfe":1}',
    b'{"a":"\xed\xa0\x80"}',
    b"[" * 100000 + b"]" * 100000,
    b'{"a":' * 50000 + b"1" + b"}" * 50000,
    b'{"a":"' + b"x" * 60000 + b'"}',
    b"1" * 5000,
]


def _json_bytes() -> SearchStrategy[bytes]:
    """The version data: valid JSON objects, and JSON-ish text a parser can choke on,
    NUL-terminated or not."""
    valid = version_json().map(lambda obj: json.dumps(obj, separators=(",", ":")).encode())
    hostile_text = st.one_of(st.sampled_from(_JSON_HOSTILE), mutated(valid), st.binary(max_size=64))
    return st.builds(
        lambda text, nul: text + nul,
        st.one_of(valid, hostile_text),
        st.sampled_from((b"\0", b"\0", b"", b"\0\0", b"\0x")),
    )


def version_proposals() -> SearchStrategy[WireMessage]:
    """VERSION requests for a connection not yet negotiated: major 0 mostly (others
    now and then), any minor, valid and hostile version data, mutated framing."""

    def build(msg_id, major, minor, text):
        return WireMessage(msg_id, int(Command.VERSION), struct.pack("<HH", major, minor) + text)

    plain = st.builds(
        build,
        st.integers(0, 0xFFFF),
        st.one_of(st.just(0), st.just(0), st.just(0), u16s()),
        u16s(),
        st.one_of(st.just(b""), _json_bytes()),
    )

    @st.composite
    def damaged(draw):
        msg = draw(plain)
        ops = (
            "msg_size_short",
            "msg_size_long",
            "truncate",
            "trailing",
            "type",
            "header_flags",
            "error_bit",
            "no_reply",
            "fds_extra",
            "bytes",
        )
        return mutate_request(draw, msg, None, ops)

    return st.one_of(plain, plain, damaged())


# ---- transmissions


def transmissions(
    items: SearchStrategy, max_items: int = 3, split: bool | None = None
) -> SearchStrategy[Transmission]:
    """1..``max_items`` of ``items`` back to back; cut into several writes
    (``split=True``), sent whole (False), or either (None)."""
    some_items = st.lists(items, min_size=1, max_size=max_items)

    @st.composite
    def build(draw):
        its = tuple(draw(some_items))
        total = sum(len(i.encode()) for i in its)
        cuts: tuple[int, ...] = ()
        if total > 1 and (split or (split is None and draw(st.booleans()))):
            cuts = tuple(sorted(set(draw(_cut_lists(total)))))
        return Transmission(its, cuts)

    return build()


@functools.lru_cache(maxsize=4096)
def _cut_lists(total: int) -> SearchStrategy[list[int]]:
    """1-4 cut positions in a stream of ``total`` bytes, often at the header's edges."""
    positions = st.one_of(
        st.integers(1, total - 1),
        st.sampled_from(tuple(p for p in (1, 4, 8, 15, 16, 17, total - 1) if 0 < p < total)),
    )
    return st.lists(positions, min_size=1, max_size=4)


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
