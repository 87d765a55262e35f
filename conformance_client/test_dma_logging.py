"""DMA logging (0.9.2): VFIO_DEVICE_FEATURE_DMA_LOGGING_START and _REPORT, as the client
sends them (in DEVICE_FEATURE)."""

from __future__ import annotations

import struct

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import DeviceFeatureFlags, Feature

from ._support import FEATURE_HEAD, features, listed, need

_GET, _SET = int(DeviceFeatureFlags.GET), int(DeviceFeatureFlags.SET)
_REPORT = struct.Struct("<QQQ")  # DMA_LOGGING_REPORT: iova, length, page_size


@case("client/dma_logging/report-page-size", MUST, revisions=("0.9.2",))
def test_report_page_size(vfu_sessions):
    """Each DMA_LOGGING_REPORT asks for a page size that is a power of two.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "page_size is the unit of granularity
    of the bitmap, and must be a power of two."
    """
    reports = [
        (m, _REPORT.unpack_from(m.payload, FEATURE_HEAD.size))
        for m, _, flags in features(vfu_sessions)
        if flags & 0xFFFF == Feature.DMA_LOGGING_REPORT
        and flags & _GET
        and len(m.payload) >= FEATURE_HEAD.size + _REPORT.size
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
            for m, _, flags in features(vfu_sessions)
            if flags & 0xFFFF == Feature.DMA_LOGGING_START and flags & _SET
        ],
        "DMA_LOGGING_START",
    )
    bad = []
    for m in starts:
        data = m.payload[FEATURE_HEAD.size :]
        ranges = _START.unpack_from(data)[1] if len(data) >= _START.size else None
        if ranges is None or len(data) != _START.size + 16 * ranges:
            bad.append(f"{m.describe()}: num_ranges {ranges}, {len(data)} bytes of data")
    assert not bad, listed(bad)
