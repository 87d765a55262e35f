"""VFIO_DEVICE_FEATURE_DMA_LOGGING_START / STOP / REPORT (0.9.2): DMA logging.

Every case needs the ``dma_logging`` feature (discovered by a DEVICE_FEATURE PROBE of
SET DMA_LOGGING_START, or said by the profile). The client maps PAGES pages of memory
and asks for logging of them with page size 4096. The bitmap of a report has one bit
per page from ``iova``, in u64s (errata 8).
"""

from __future__ import annotations

import struct

import pytest

from conformance._support import accepted, send_refused
from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import (
    Command,
    DeviceFeature,
    DeviceFeatureFlags,
    DmaLoggingControl,
    DmaLoggingReport,
    Feature,
)

GET, SET = int(DeviceFeatureFlags.GET), int(DeviceFeatureFlags.SET)
START = SET | int(Feature.DMA_LOGGING_START)
STOP = SET | int(Feature.DMA_LOGGING_STOP)
REPORT = GET | int(Feature.DMA_LOGGING_REPORT)
PAGE = 4096
PAGES = 16
BASE = 0x20000000  # the client memory the cases map


def _bitmap_bytes(length: int, page: int) -> int:
    pages = -(-length // page)
    return -(-pages // 64) * 8


class Logging:
    """A negotiated connection with PAGES pages of client memory mapped at BASE."""

    def __init__(self, client):
        self.client = client
        self.page = PAGE

    def start(self, page: int = PAGE, ranges=((BASE, PAGES * PAGE),)):
        reply = self.client.device_feature(START, DmaLoggingControl.of(page, tuple(ranges)).pack())
        return accepted(reply, "DMA_LOGGING_START")

    def report(self, iova: int = BASE, length: int = PAGES * PAGE, page: int = PAGE):
        data = DmaLoggingReport(iova, length, page).pack()
        return self.client.device_feature(REPORT, data)

    def bits(self, reply) -> set[int]:
        body = reply.body
        report = DmaLoggingReport.unpack(body.data)
        n = int.from_bytes(report.bitmap, "little")
        return {i for i in range(len(report.bitmap) * 8) if n >> i & 1}


@pytest.fixture
def log(vfu_client):
    fd = vfu_client.memory.create_memfd_region(BASE, PAGES * PAGE)
    accepted(vfu_client.dma_map(BASE, PAGES * PAGE, fd=fd), "DMA_MAP of the case's memory")
    yield Logging(vfu_client)
    if not vfu_client.closed:
        try:  # leave the device as found
            vfu_client.device_feature(STOP)
        except Exception:
            pass


def _dma(vfu_hooks, client, direction: str, address: int, length: int) -> None:
    result = vfu_hooks.trigger_dma(client, direction, address, length, 0)
    assert getattr(result, "ok", True), (
        f"the device's DMA {direction} of {length} bytes at {address:#x} failed ({result!r}); "
        "the case cannot check DMA logging without it"
    )


@case("dma_logging/start-reply", MUST, requires=("dma_logging",), revisions=("0.9.2",))
def test_start_reply(log):
    """DMA_LOGGING_START succeeds and its reply is the request, but for the page size the
    device chose (a power of two).

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "Upon success, the response data field
    will be the same as the request, unless the page size was changed, in which case this
    will be reflected in the response."
    """
    sent = DmaLoggingControl.of(PAGE, ((BASE, PAGES * PAGE),))
    reply = log.start()
    body = reply.body
    assert body.flags == START, f"the reply's flags are {body.flags:#x}, not the request's"
    got = DmaLoggingControl.unpack(body.data)
    assert (got.num_ranges, got.ranges) == (sent.num_ranges, sent.ranges), (
        f"the reply's ranges {got.ranges} are not the request's {sent.ranges}"
    )
    assert got.page_size and not got.page_size & (got.page_size - 1), (
        f"the page size the device chose, {got.page_size:#x}, is not a power of two"
    )
    accepted(log.client.device_feature(STOP), "DMA_LOGGING_STOP after START")


@case("dma_logging/report-format", MUST, requires=("dma_logging",), revisions=("0.9.2",))
def test_report_format(log):
    """A report's data is the request's 24 bytes, then one bit per page in u64s; argsz
    is the whole reply.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "The data field of the response is
    identical, except with the bitmap added on the end at offset 24."
    """
    log.start()
    for pages in (PAGES, 3):
        length = pages * PAGE
        reply = accepted(log.report(length=length), f"DMA_LOGGING_REPORT of {pages} pages")
        body = reply.body
        sent = DmaLoggingReport(BASE, length, PAGE).pack()
        need = _bitmap_bytes(length, PAGE)
        assert body.data[:24] == sent, (
            f"the report's first 24 data bytes {body.data[:24].hex()} are not the request's "
            f"{sent.hex()}"
        )
        assert len(body.data) == 24 + need, (
            f"the report of {pages} pages carries {len(body.data) - 24} bitmap bytes, not {need}"
        )
        assert body.argsz == len(reply.payload), (
            f"the reply's argsz is {body.argsz}, its payload {len(reply.payload)} bytes"
        )


@case(
    "dma_logging/logs-dma-writes",
    MUST,
    requires=("dma_logging", "dma_engine"),
    revisions=("0.9.2",),
)
def test_logs_dma_writes(log, vfu_hooks):
    """The pages the device writes by DMA while logging are set in the report; the
    others are not (nothing else wrote to them).

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "Upon VFIO_DEVICE_FEATURE_SET,
    start/stop DMA logging." (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "returns the
    dirty bitmap for a specific IOVA range."
    """
    log.start()
    accepted(log.report(), "DMA_LOGGING_REPORT (clearing what came before)")
    _dma(vfu_hooks, log.client, "write", BASE + 5 * PAGE + 100, 2 * PAGE)  # pages 5, 6, 7
    bits = log.bits(accepted(log.report(), "DMA_LOGGING_REPORT after a DMA write"))
    assert bits == {5, 6, 7}, f"the report sets bits {sorted(bits)}; the device wrote pages 5-7"


@case(
    "dma_logging/bits-outside-range-zero",
    MUST,
    requires=("dma_logging", "dma_engine"),
    revisions=("0.9.2",),
)
def test_bits_outside_range_zero(log, vfu_hooks):
    """A report of 3 pages, with every page of the mapping written, sets bits 0-2 and
    no bit beyond them in its u64.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "The bits outside of the requested
    range must be zero."
    """
    log.start()
    _dma(vfu_hooks, log.client, "write", BASE, PAGES * PAGE)
    bits = log.bits(accepted(log.report(length=3 * PAGE), "DMA_LOGGING_REPORT of 3 pages"))
    assert bits == {0, 1, 2}, f"the report of 3 written pages sets bits {sorted(bits)}"


@case(
    "dma_logging/reads-not-logged",
    SHOULD,
    requires=("dma_logging", "dma_engine"),
    revisions=("0.9.2",),
)
def test_reads_not_logged(log, vfu_hooks):
    """A DMA read by the device sets no bit.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "Only DMA writes are logged."
    """
    log.start()
    accepted(log.report(), "DMA_LOGGING_REPORT (clearing what came before)")
    _dma(vfu_hooks, log.client, "read", BASE + 2 * PAGE, PAGE)
    bits = log.bits(accepted(log.report(), "DMA_LOGGING_REPORT after a DMA read"))
    assert not bits, f"after a DMA read only, the report sets bits {sorted(bits)}"


@case("dma_logging/report-before-start", SHOULD, requires=("dma_logging",), revisions=("0.9.2",))
def test_report_before_start(log, vfu_connect, vfu_observe):
    """REPORT without logging started is refused; after START the same report works.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "This operation is only valid if
    logging of dirty pages has been previously started by setting
    VFIO_DEVICE_FEATURE_DMA_LOGGING_START."
    """
    data = DmaLoggingReport(BASE, PAGES * PAGE, PAGE).pack()
    request = DeviceFeature(8 + 24 + (1 << 12), REPORT, data).pack()
    what = "DMA_LOGGING_REPORT before DMA_LOGGING_START"
    if send_refused(log.client, Command.DEVICE_FEATURE, request, vfu_connect, what, vfu_observe):
        log.start()
        accepted(log.report(), "the same DMA_LOGGING_REPORT after DMA_LOGGING_START")


@case("dma_logging/report-page-size", SHOULD, requires=("dma_logging",), revisions=("0.9.2",))
def test_report_page_size(log, vfu_connect, vfu_observe):
    """A report whose page_size is not a power of two is refused; with 4096 it works.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "page_size is the unit of granularity
    of the bitmap, and must be a power of two."
    """
    log.start()
    accepted(log.report(), "DMA_LOGGING_REPORT with page_size 4096")
    data = DmaLoggingReport(BASE, PAGES * PAGE, 3000).pack()
    request = DeviceFeature(8 + 24 + (1 << 12), REPORT, data).pack()
    send_refused(
        log.client,
        Command.DEVICE_FEATURE,
        request,
        vfu_connect,
        "a report with page_size 3000",
        vfu_observe,
    )


@case("dma_logging/stop", MUST, requires=("dma_logging",), revisions=("0.9.2",))
def test_stop(log):
    """DMA_LOGGING_STOP succeeds with its request as the reply, and logging can start again.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP): "Upon VFIO_DEVICE_FEATURE_SET,
    start/stop DMA logging." (VFIO_USER_DEVICE_FEATURE): "The reply payload must be the
    same as the request payload for setting or probing a feature."
    """
    log.start()
    request = struct.pack("<II", 8, STOP)
    reply = accepted(log.client.device_feature(STOP, argsz=8), "DMA_LOGGING_STOP")
    assert reply.payload == request, (
        f"the reply to DMA_LOGGING_STOP is {reply.payload.hex()}, not the request {request.hex()}"
    )
    log.start()
