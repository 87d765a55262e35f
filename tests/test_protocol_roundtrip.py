"""Property tests: every payload type decodes what it encodes, ``unpack(pack(x)) == x``.

One test per payload class draws from ``PAYLOAD_STRATEGIES`` and also checks
what the encoding's size must be. The shapes that the strategies produce only
some of the time (several capabilities, padded IO FD entries, bitmaps with
data, DATA_BOOL, each DMA_WRITE reply size, feature data) get tests of their
own, with strategies that always produce them.
"""

from __future__ import annotations

import sys
from dataclasses import is_dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vfiouser import protocol as p
from pytest_vfiouser import strategies as s
from pytest_vfiouser.protocol import Payload

PROPS = s.CODEC_SETTINGS
# The shape tests repeat the generic test's work for one shape of a class.
SHAPES = settings(PROPS, max_examples=100)


def _concrete_payload_classes() -> set[type]:
    """Public Payload subclasses, as their modules export them.

    ``dataclass(slots=True)`` replaces the class it decorates; the replaced
    class lingers in ``__subclasses__``, so keep only what the module names.
    """
    found, todo = set(), [Payload]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            exported = getattr(sys.modules[sub.__module__], sub.__name__, None)
            # Abstract bases (TrailingData, CountedData) are not dataclasses.
            if not sub.__name__.startswith("_") and exported is sub and is_dataclass(sub):
                found.add(sub)
    return found


def test_strategies_cover_every_payload_class():
    assert set(s.PAYLOAD_STRATEGIES) == _concrete_payload_classes()


def assert_roundtrip(obj) -> bytes:
    data = obj.pack()
    back = type(obj).unpack(data)
    assert back == obj
    assert back.pack() == data
    return data


# ---- the size each encoding must have, by class


def _unmap_size(u: p.DmaUnmap) -> int:
    return 24 + (0 if u.bitmap is None else 16 + len(u.bitmap_data))


def _dirty_size(d: p.DirtyPages) -> int:
    return 8 + (0 if d.range is None else 32 + len(d.bitmap_data))  # errata 4


def _region_info_size(i: p.RegionInfo) -> int:
    return 32 if not i.caps else i.full_size()


def _version_size(v: p.Version) -> int | None:
    return 4 if v.json is None else None


EXPECTED_SIZE = {
    p.Version: _version_size,
    p.DmaMap: lambda _: 32,
    p.VfioBitmap: lambda _: 16,
    p.DmaUnmap: _unmap_size,
    p.DmaRead: lambda _: 16,
    p.DmaReadReply: lambda r: 16 + len(r.data),
    p.DmaWrite: lambda r: 16 + len(r.data),
    p.DmaWriteReply: lambda r: 8 + r.count_size,
    p.DeviceInfo: lambda _: 16,
    p.IrqInfo: lambda _: 16,
    p.SetIrqs: lambda r: 20 + len(r.data),
    p.RegionIoFdsRequest: lambda _: 16,
    p.IoFdSubRegion: lambda _: 40,
    p.RegionIoFdsReply: lambda r: 16 + r.entry_size * len(r.sub_regions),
    p.RegionInfo: _region_info_size,
    p.RegionAccess: lambda _: 16,
    p.RegionRead: lambda _: 16,
    p.RegionReadReply: lambda r: 16 + len(r.data),
    p.RegionWrite: lambda r: 16 + len(r.data),
    p.RegionWriteReply: lambda _: 16,
    p.RegionWriteMulti: lambda r: 8 + 24 * len(r.writes),
    p.RegionWriteMultiReply: lambda _: 8,
    p.BitmapRange: lambda _: 32,
    p.DirtyPages: _dirty_size,
    p.MigrationInfo: lambda _: 32,
    p.DeviceFeature: lambda r: 8 + len(r.data),
    p.FeatureMigration: lambda _: 8,
    p.FeatureMigDeviceState: lambda _: 8,
    p.DmaLoggingControl: lambda r: 16 + 16 * len(r.ranges),
    p.DmaLoggingReport: lambda r: 24 + len(r.bitmap),
    p.MigDataRead: lambda _: 8,
    p.MigDataReadReply: lambda r: 8 + len(r.data),
    p.MigDataWrite: lambda r: 8 + len(r.data),
}


def test_expected_sizes_cover_every_payload_class():
    assert set(EXPECTED_SIZE) == set(s.PAYLOAD_STRATEGIES)


@pytest.mark.parametrize(
    "cls", sorted(s.PAYLOAD_STRATEGIES, key=lambda c: c.__name__), ids=lambda c: c.__name__
)
@PROPS
@given(data=st.data())
def test_every_payload_roundtrips(cls, data):
    obj = data.draw(s.PAYLOAD_STRATEGIES[cls])
    encoded = assert_roundtrip(obj)
    size = EXPECTED_SIZE[cls](obj)
    if size is not None:
        assert len(encoded) == size


@PROPS
@given(s.headers())
def test_header_roundtrips(header):
    assert len(assert_roundtrip(header)) == p.HEADER_SIZE


# ---- shapes the generic strategies produce only some of the time


@SHAPES
@given(s.versions(with_json=True))
def test_version_capabilities_and_unknown_keys_kept(version):
    back = p.Version.unpack(version.pack())
    assert back.json == version.json
    assert back.capabilities.raw == version.json.get("capabilities", {})
    assert version.pack().endswith(b"}\0")


def test_version_unknown_keys_kept_at_every_level():
    v = p.Version(
        0,
        1,
        {
            "capabilities": {
                "max_msg_fds": 4,
                "future": {"x": [1, 2.5, None]},
                "migration": {"pgsize": 4096, "vendor": "y"},
                "twin_socket": {"supported": True, "new": 1},
            },
            "top_level_extension": True,
        },
    )
    assert_roundtrip(v)


UNMAPS = {kind: s.dma_unmaps(bitmap=(kind,)) for kind in s.BITMAP_KINDS}
DIRTY = {kind: s.dirty_pages(bitmap=(kind,)) for kind in s.BITMAP_KINDS}


@pytest.mark.parametrize("kind", s.BITMAP_KINDS)
@SHAPES
@given(data=st.data())
def test_dma_unmap_with_and_without_bitmap(kind, data):
    unmap = data.draw(UNMAPS[kind])
    encoded = assert_roundtrip(unmap)
    assert len(encoded) == {"none": 24, "header": 40, "data": 40 + len(unmap.bitmap_data)}[kind]
    if kind == "data":
        assert encoded[40:] == unmap.bitmap_data and unmap.bitmap.size == len(unmap.bitmap_data)


@pytest.mark.parametrize("kind", s.BITMAP_KINDS)
@SHAPES
@given(data=st.data())
def test_dirty_pages_with_range_and_bitmap(kind, data):
    dp = data.draw(DIRTY[kind])
    encoded = assert_roundtrip(dp)
    assert len(encoded) == {"none": 8, "header": 40, "data": 40 + len(dp.bitmap_data)}[kind]
    if kind == "data":
        assert encoded[40:] == dp.bitmap_data  # errata 4: the bitmap at payload offset 40


@SHAPES
@given(s.region_infos(min_caps=2))
def test_region_info_chains_of_several_caps(info):
    back = p.RegionInfo.unpack(assert_roundtrip(info))
    assert [type(c) for c in back.caps] == [type(c) for c in info.caps]
    assert back.cap_offsets[0] == info.cap_offset
    # pack lays the chain out back to back, each next pointing past its cap.
    assert list(back.cap_offsets[1:]) == [
        o + c.size for o, c in zip(back.cap_offsets, info.caps[:-1], strict=False)
    ]


@SHAPES
@given(s.region_io_fds_replies(min_entries=1, min_padding=1))
def test_region_io_fds_reply_entries_larger_than_40(reply):
    back = p.RegionIoFdsReply.unpack(assert_roundtrip(reply))
    assert back.entry_size == reply.entry_size > 40


@SHAPES
@given(s.set_irqs(data_bool=True))
def test_set_irqs_data_bool(req):
    back = p.SetIrqs.unpack(assert_roundtrip(req))
    assert back.flags & p.IrqSetFlags.DATA_BOOL
    assert back.bools == [b != 0 for b in req.data] and len(back.data) == back.count


DMA_WRITE_REPLIES = {4: s.dma_write_replies(4), 8: s.dma_write_replies(8)}


@pytest.mark.parametrize("count_size, size", [(4, 12), (8, 16)])
@SHAPES
@given(data=st.data())
def test_dma_write_reply_both_count_sizes(count_size, size, data):
    reply = data.draw(DMA_WRITE_REPLIES[count_size])
    assert len(assert_roundtrip(reply)) == size


FEATURE_DATA = {
    p.FeatureMigration: s.feature_migrations(),
    p.FeatureMigDeviceState: s.feature_mig_device_states(),
    p.DmaLoggingControl: s.dma_logging_controls(),
    p.DmaLoggingReport: s.dma_logging_reports(),
}


@pytest.mark.parametrize("cls", list(FEATURE_DATA), ids=lambda c: c.__name__)
@SHAPES
@given(data=st.data())
def test_feature_data_inside_device_feature(cls, data):
    """Feature data survives the trip through DEVICE_FEATURE's data field."""
    inner = data.draw(FEATURE_DATA[cls])
    flags = data.draw(s.u32s())
    outer = p.DeviceFeature(8 + len(inner.pack()), flags, inner.pack())
    back = p.DeviceFeature.unpack(outer.pack())
    assert back.feature == flags & 0xFFFF
    assert cls.unpack(back.data) == inner


# ---- whole messages


@SHAPES
@given(s.messages())
def test_decode_of_every_command_roundtrips(message):
    header, body = message
    decoded = p.decode(header.command, header.is_reply, body)
    if decoded is None:
        assert body == b""
    else:
        assert decoded.pack() == body
