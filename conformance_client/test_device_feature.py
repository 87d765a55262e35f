"""VFIO_USER_DEVICE_FEATURE (0.9.2), as the client sends it."""

from __future__ import annotations

import struct

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import Command, DeviceFeatureFlags, Feature

from ._support import listed, need, sent

_HEAD = struct.Struct("<II")  # argsz, flags
_GET, _SET, _PROBE = (int(f) for f in DeviceFeatureFlags)
_REPORT = struct.Struct("<QQQ")  # DMA_LOGGING_REPORT: iova, length, page_size


def _features(sessions):
    return [
        (m, *_HEAD.unpack_from(m.payload))
        for _, m in need(sent(sessions, Command.DEVICE_FEATURE), "DEVICE_FEATURE")
        if len(m.payload) >= _HEAD.size
    ]


@case("client/device_feature/get-set-exclusive", MUST, revisions=("0.9.2",))
def test_get_set_exclusive(vfu_sessions):
    """No DEVICE_FEATURE sets both GET and SET but with PROBE.

    Spec (VFIO_USER_DEVICE_FEATURE): "VFIO_DEVICE_FEATURE_GET and VFIO_DEVICE_FEATURE_SET
    are mutually exclusive, except for use with VFIO_DEVICE_FEATURE_PROBE."
    """
    bad = [
        f"{m.describe()}: flags {flags:#x}"
        for m, _, flags in _features(vfu_sessions)
        if flags & _GET and flags & _SET and not flags & _PROBE
    ]
    assert not bad, listed(bad)


@case("client/device_feature/probe-no-data", SHOULD, revisions=("0.9.2",))
def test_probe_no_data(vfu_sessions):
    """A PROBE carries no feature data.

    Spec (VFIO_USER_DEVICE_FEATURE): "data is specific to the particular feature. It is not
    used for probing."
    """
    bad = [
        f"{m.describe()}: {len(m.payload) - _HEAD.size} data bytes"
        for m, _, flags in _features(vfu_sessions)
        if flags & _PROBE and len(m.payload) > _HEAD.size
    ]
    assert not bad, listed(bad)


@case("client/device_feature/argsz-covers-reply", SHOULD, revisions=("0.9.2",))
def test_argsz_covers_reply(vfu_sessions):
    """A SET or PROBE's argsz covers its reply, which is the request itself.

    Spec (VFIO_USER_DEVICE_FEATURE): "argsz is the maximum size of the reply payload.";
    "The reply payload must be the same as the request payload for setting or probing a
    feature."
    """
    bad = [
        f"{m.describe()}: argsz {argsz}, the request (and its reply) {len(m.payload)} bytes"
        for m, argsz, flags in _features(vfu_sessions)
        if flags & (_SET | _PROBE) and argsz < len(m.payload)
    ]
    assert not bad, listed(bad)


@case("client/dma_logging/report-page-size", MUST, revisions=("0.9.2",))
def test_report_page_size(vfu_sessions):
    """Each DMA_LOGGING_REPORT asks for a page size that is a power of two.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "page_size is the unit of granularity
    of the bitmap, and must be a power of two."
    """
    reports = [
        (m, _REPORT.unpack_from(m.payload, _HEAD.size))
        for m, _, flags in _features(vfu_sessions)
        if flags & 0xFFFF == Feature.DMA_LOGGING_REPORT
        and flags & _GET
        and len(m.payload) >= _HEAD.size + _REPORT.size
    ]
    need(reports, "DMA_LOGGING_REPORT")
    bad = [
        f"{m.describe()}: page_size {page:#x}"
        for m, (_, _, page) in reports
        if not page or page & (page - 1)
    ]
    assert not bad, listed(bad)


_START = struct.Struct("<QII")  # DMA_LOGGING_START: page_size, num_ranges, reserved


@case("client/dma_logging/start-ranges-follow", MUST, revisions=("0.9.2",))
def test_start_ranges_follow(vfu_sessions):
    """Each DMA_LOGGING_START carries num_ranges 16-byte ranges after its 16 bytes.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "num_ranges is the number of IOVA ranges
    to monitor."; "ranges is an array of vfio_user_device_feature_dma_logging_range
    entries" ("iova | 0 | 8", "length | 8 | 8")
    """
    starts = need(
        [
            m
            for m, _, flags in _features(vfu_sessions)
            if flags & 0xFFFF == Feature.DMA_LOGGING_START and flags & _SET
        ],
        "DMA_LOGGING_START",
    )
    bad = []
    for m in starts:
        data = m.payload[_HEAD.size :]
        ranges = _START.unpack_from(data)[1] if len(data) >= _START.size else None
        if ranges is None or len(data) != _START.size + 16 * ranges:
            bad.append(f"{m.describe()}: num_ranges {ranges}, {len(data)} bytes of data")
    assert not bad, listed(bad)
