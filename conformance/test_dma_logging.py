"""VFIO_DEVICE_FEATURE_DMA_LOGGING_START / STOP / REPORT (0.9.2): DMA logging.

Every case needs the ``dma_logging`` feature (discovered by a DEVICE_FEATURE PROBE of
SET DMA_LOGGING_START, or said by the profile). The client maps PAGES pages of memory
and asks for logging of them with page size 4096. The bitmap of a report has one bit
per page from ``iova``, in u64s (errata 8).
"""

from __future__ import annotations

import struct

import pytest

from conformance._support import accepted, answer, send_refused
from pytest_vfiouser import MAY, MUST, SHOULD, case
from pytest_vfiouser.protocol import (
    Command,
    DeviceFeature,
    DeviceFeatureFlags,
    DmaLoggingControl,
    DmaLoggingReport,
    Feature,
    bitmap_bytes,
)

GET, SET = int(DeviceFeatureFlags.GET), int(DeviceFeatureFlags.SET)
START = SET | int(Feature.DMA_LOGGING_START)
STOP = SET | int(Feature.DMA_LOGGING_STOP)
REPORT = GET | int(Feature.DMA_LOGGING_REPORT)
PAGE = 4096
PAGES = 16
BASE = 0x20000000  # the client memory the cases map


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
    device chose (not 0: the spec asks no more of it, a power of two only of REPORT's).

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "Upon success, the response data field
    will be the same as the request, unless the page size was changed, in which case this
    will be reflected in the response."; "On output the device will return the page size
    it selected."
    """
    sent = DmaLoggingControl.of(PAGE, ((BASE, PAGES * PAGE),))
    reply = log.start()
    body = reply.body
    assert body.flags == START, f"the reply's flags are {body.flags:#x}, not the request's"
    got = DmaLoggingControl.unpack(body.data)
    assert (got.num_ranges, got.ranges) == (sent.num_ranges, sent.ranges), (
        f"the reply's ranges {got.ranges} are not the request's {sent.ranges}"
    )
    assert got.page_size, "the reply's page_size is 0: no page size the device selected"
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
        need = bitmap_bytes(length, PAGE)
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


@case("dma_logging/probe", MUST, requires=("dma_logging",), revisions=("0.9.2",))
def test_probe(log):
    """A PROBE of SET DMA_LOGGING_START and of SET DMA_LOGGING_STOP succeeds, its reply
    the request.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "These features can also be probed to
    determine whether the device supports DMA logging." (VFIO_USER_DEVICE_FEATURE): "The
    reply payload must be the same as the request payload for setting or probing a
    feature."
    """
    probe = int(DeviceFeatureFlags.PROBE)
    for flags in (probe | START, probe | STOP):
        sent = DeviceFeature(8, flags).pack()
        reply = accepted(log.client.request(Command.DEVICE_FEATURE, sent), f"PROBE {flags:#x}")
        assert reply.payload == sent, (
            f"the reply to the PROBE {flags:#x} is {reply.payload.hex()}, not its request "
            f"{sent.hex()}"
        )


@case("dma_logging/probe-get-refused", MUST, requires=("dma_logging",), revisions=("0.9.2",))
def test_probe_get_refused(log, vfu_connect, vfu_observe):
    """A PROBE of GET DMA_LOGGING_START (a feature only set) fails; the PROBE of SET
    succeeds.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "Upon VFIO_DEVICE_FEATURE_SET,
    start/stop DMA logging." (VFIO_USER_DEVICE_FEATURE): "If VFIO_DEVICE_FEATURE_GET
    and/or VFIO_DEVICE_FEATURE_SET are also set, the probe will only return success if
    all of the indicated methods are supported."
    """
    probe = int(DeviceFeatureFlags.PROBE)
    accepted(log.client.device_feature(probe | START, argsz=8), "PROBE of SET DMA_LOGGING_START")
    send_refused(
        log.client,
        Command.DEVICE_FEATURE,
        DeviceFeature(8, probe | GET | int(Feature.DMA_LOGGING_START)).pack(),
        vfu_connect,
        "a PROBE of GET DMA_LOGGING_START",
        vfu_observe,
    )


@case(
    "dma_logging/all-writes-logged",
    MUST,
    requires=("dma_logging", "dma_engine"),
    revisions=("0.9.2",),
)
def test_all_writes_logged(log, vfu_hooks):
    """START with no range logs the device's DMA writes anywhere: those to pages 2 and 3
    are set in the report.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "num_ranges is the number of IOVA
    ranges to monitor. A value of zero indicates that all writes should be logged."
    """
    log.start(ranges=())
    accepted(log.report(), "DMA_LOGGING_REPORT (clearing what came before)")
    _dma(vfu_hooks, log.client, "write", BASE + 2 * PAGE, 2 * PAGE)
    bits = log.bits(accepted(log.report(), "DMA_LOGGING_REPORT after a DMA write"))
    assert bits == {2, 3}, f"the report sets bits {sorted(bits)}; the device wrote pages 2-3"


@case(
    "dma_logging/report-coarser-page",
    MUST,
    requires=("dma_logging", "dma_engine"),
    revisions=("0.9.2",),
)
def test_report_coarser_page(log, vfu_hooks):
    """Logging at 4096, a report with page_size 8192 sets the bit of the 8192-byte unit
    holding the page written (page 5: bit 2), and no other.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "It doesn't have to match the value
    given to VFIO_DEVICE_FEATURE_DMA_LOGGING_START because the driver will format its
    internal logging to match the reporting page size" ... "with 1 bit reporting a
    page_size unit of IOVA."
    """
    log.start()
    accepted(log.report(), "DMA_LOGGING_REPORT (clearing what came before)")
    _dma(vfu_hooks, log.client, "write", BASE + 5 * PAGE + 100, 8)
    reply = accepted(log.report(page=2 * PAGE), "DMA_LOGGING_REPORT with page_size 8192")
    bits = log.bits(reply)
    assert bits == {2}, (
        f"the report of 8192-byte units sets bits {sorted(bits)}; the device wrote page 5 of "
        "4096 bytes (unit 2)"
    )


@case(
    "dma_logging/report-finer-page",
    MUST,
    requires=("dma_logging", "dma_engine"),
    revisions=("0.9.2",),
)
def test_report_finer_page(log, vfu_hooks):
    """Logging at 4096, a report with page_size 2048 sets both halves of the page written
    whole (page 5: bits 10 and 11), and no other.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "the driver will format its internal
    logging to match the reporting page size possibly by replicating bits" ... "with 1
    bit reporting a page_size unit of IOVA."
    """
    log.start()
    accepted(log.report(), "DMA_LOGGING_REPORT (clearing what came before)")
    _dma(vfu_hooks, log.client, "write", BASE + 5 * PAGE, PAGE)
    reply = accepted(log.report(page=PAGE // 2), "DMA_LOGGING_REPORT with page_size 2048")
    bits = log.bits(reply)
    assert bits == {10, 11}, (
        f"the report of 2048-byte units sets bits {sorted(bits)}; the device wrote the whole "
        "4096-byte page 5 (units 10 and 11)"
    )


@case("dma_logging/report-after-stop", SHOULD, requires=("dma_logging",), revisions=("0.9.2",))
def test_report_after_stop(log, vfu_connect, vfu_observe):
    """A REPORT after DMA_LOGGING_STOP is refused; while logging it works.

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "This operation is only valid if
    logging of dirty pages has been previously started by setting
    VFIO_DEVICE_FEATURE_DMA_LOGGING_START." (VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP): "Upon
    VFIO_DEVICE_FEATURE_SET, start/stop DMA logging."
    """
    log.start()
    accepted(log.report(), "DMA_LOGGING_REPORT while logging")
    accepted(log.client.device_feature(STOP, argsz=8), "DMA_LOGGING_STOP")
    data = DmaLoggingReport(BASE, PAGES * PAGE, PAGE).pack()
    request = DeviceFeature(8 + 24 + (1 << 12), REPORT, data).pack()
    what = "DMA_LOGGING_REPORT after DMA_LOGGING_STOP"
    send_refused(log.client, Command.DEVICE_FEATURE, request, vfu_connect, what, vfu_observe)


@case("dma_logging/report-empty-range", SHOULD, requires=("dma_logging",), revisions=("0.9.2",))
def test_report_empty_range(log, vfu_connect, vfu_observe):
    """A REPORT of a range of length 0 is refused; that of one page works.

    Spec (Security Considerations): "Standard tools and mechanisms should be used on both
    sides to validate input" (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "returns the dirty
    bitmap for a specific IOVA range."
    """
    log.start()
    accepted(log.report(length=PAGE), "DMA_LOGGING_REPORT of one page")
    data = DmaLoggingReport(BASE, 0, PAGE).pack()
    request = DeviceFeature(8 + 24 + (1 << 12), REPORT, data).pack()
    what = "a DMA_LOGGING_REPORT of length 0"
    send_refused(log.client, Command.DEVICE_FEATURE, request, vfu_connect, what, vfu_observe)


@case("dma_logging/report-small-argsz", MUST, requires=("dma_logging",), revisions=("0.9.2",))
def test_report_small_argsz(log, vfu_connect):
    """A REPORT whose argsz leaves no room for the bitmap gets no more than argsz bytes:
    an error, or a reply whose argsz says the size needed; with room it works.

    Spec (Message sizes): "This may be larger than the requested maximum size: in that
    case, the full payload is not included in the reply, but the argsz field in the reply
    indicates the needed size".
    """
    log.start()
    accepted(log.report(), "DMA_LOGGING_REPORT with room for the bitmap")
    small, need = 8 + 24, 8 + 24 + bitmap_bytes(PAGES * PAGE, PAGE)
    data = DmaLoggingReport(BASE, PAGES * PAGE, PAGE).pack()
    what = f"a DMA_LOGGING_REPORT with argsz {small}"
    msg_id = log.client.send(Command.DEVICE_FEATURE, DeviceFeature(small, REPORT, data).pack())
    reply = answer(log.client, msg_id, Command.DEVICE_FEATURE, vfu_connect, what)
    if reply is None or not reply.ok:
        return  # refused or closed: nothing was sent beyond argsz
    assert len(reply.payload) <= small, (
        f"the reply to {what} carries {len(reply.payload)} bytes; the full payload is not "
        "included when argsz is too small"
    )
    (argsz,) = struct.unpack_from("<I", reply.payload)
    assert argsz >= need, f"the reply's argsz {argsz} is not the size needed ({need})"


@case("dma_logging/start-page-size-hint", MAY, requires=("dma_logging",), revisions=("0.9.2",))
def test_start_page_size_hint(log, vfu_connect):
    """Noted: START with page_size 3000 (not a power of two) is refused, or succeeds with
    the page size the device selected in its reply: a power of two, which a REPORT
    takes (the spec does not say the selected page size is a power of two).

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "If the device cannot do the hinted
    page size then it's the driver's choice which page size to pick based on its
    support. On output the device will return the page size it selected."
    (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT): "page_size is the unit of granularity of
    the bitmap, and must be a power of two."
    """
    data = DmaLoggingControl.of(3000, ((BASE, PAGES * PAGE),)).pack()
    what = "DMA_LOGGING_START with page_size 3000"
    msg_id = log.client.send(Command.DEVICE_FEATURE, DeviceFeature(8 + len(data), START, data))
    reply = answer(log.client, msg_id, Command.DEVICE_FEATURE, vfu_connect, what)
    if reply is None or not reply.ok:
        return  # refused or closed: the hint was not taken
    page = DmaLoggingControl.unpack(reply.body.data).page_size
    assert page and not page & (page - 1), (
        f"the page size the device selected, {page}, is not a power of two"
    )
    accepted(log.report(page=page), f"DMA_LOGGING_REPORT with the selected page_size {page}")
