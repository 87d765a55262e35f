"""Payloads of DEVICE_GET_INFO and of the regions: their info and capabilities,
their I/O fds, and the accesses to them (REGION_READ, REGION_WRITE,
REGION_WRITE_MULTI)."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    REGION_INFO_SIZE,
    DeviceInfo,
    IoFdSubRegion,
    IoFdType,
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
    SingleWrite,
    SparseMmapCap,
    UnknownCap,
)

from ._collections import MAX_ENTRIES, _tuples_of, data_bytes
from ._integers import enum_or_any, ints_between, u16s, u32s, u64s


def device_infos() -> SearchStrategy[DeviceInfo]:
    return st.builds(DeviceInfo, argsz=u32s(), flags=u32s(), num_regions=u32s(), num_irqs=u32s())


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
