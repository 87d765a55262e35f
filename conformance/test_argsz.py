"""Message sizes: argsz in the requests that have one (DEVICE_GET_INFO,
GET_REGION_INFO, GET_REGION_IO_FDS, GET_IRQ_INFO, DMA_UNMAP, DIRTY_PAGES
GET_BITMAP) and in their replies, and msg_size as what sizes a request."""

from __future__ import annotations

import itertools
import struct

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.client import Timeout
from pytest_vfiouser.protocol import (
    REGION_INFO_SIZE,
    BitmapRange,
    Command,
    DeviceInfo,
    DirtyPages,
    DirtyPagesFlags,
    DmaMap,
    DmaMapFlags,
    DmaUnmap,
    IrqInfo,
    RegionFlags,
    RegionInfo,
    RegionIoFdsReply,
    RegionIoFdsRequest,
    VfioBitmap,
    bitmap_bytes,
    command_name,
)

from ._support import answer_or_silence, refused

BIG_ARGSZ = 0x10000
_DMA_SIZE = 0x10000
_addresses = itertools.count(0x1_0000_0000, 0x100_0000)  # a fresh DMA range for each mapping

_DIRTY = pytest.param(
    "dirty_pages",
    marks=[pytest.mark.vfu_revision("0.9.1"), pytest.mark.vfu_requires("dirty_pages")],
)
NAMES = ["device_get_info", "region_info", "region_io_fds", "irq_info", "dma_unmap", _DIRTY]
# For cases that do not need the command to work (framing, refusals): no feature needed.
_DIRTY_ANY = pytest.param("dirty_pages", marks=pytest.mark.vfu_revision("0.9.1"))
ALL_NAMES = [*NAMES[:-1], _DIRTY_ANY]


_COMMANDS = {
    "device_get_info": Command.DEVICE_GET_INFO,
    "region_info": Command.DEVICE_GET_REGION_INFO,
    "region_io_fds": Command.DEVICE_GET_REGION_IO_FDS,
    "irq_info": Command.DEVICE_GET_IRQ_INFO,
    "dma_unmap": Command.DMA_UNMAP,
    "dirty_pages": Command.DIRTY_PAGES,
}
# The fixed reply structure of each (the request structure has the same size).
_FIXED = {
    "device_get_info": DeviceInfo.SIZE,
    "region_info": REGION_INFO_SIZE,
    "region_io_fds": RegionIoFdsReply.HEAD_SIZE,
    "irq_info": IrqInfo.SIZE,
    "dma_unmap": DmaUnmap.ENTRY_SIZE,
    "dirty_pages": DirtyPages.FIXED_SIZE + BitmapRange.SIZE,
}


class Subject:
    """One command with argsz, ready to be sent with any argsz.

    ``fixed`` is the size of the fixed reply structure (also the request's size).
    A DMA_UNMAP gets a fresh mapping (DMA_MAP without fd) before each request; a
    DIRTY_PAGES GET_BITMAP covers a mapping made once, with logging started.
    """

    def __init__(self, name: str, client, index: int = 0, setup: bool = True):
        self.name, self.client, self.index = name, client, index
        self.command, self.fixed = _COMMANDS[name], _FIXED[name]
        self.setup = setup
        self.range = None
        if name == "dirty_pages":
            self.range = self._map() if setup else (next(_addresses), _DMA_SIZE)
            if setup:
                reply = client.dirty_pages(DirtyPagesFlags.START)
                if not reply.ok:
                    pytest.skip(f"DIRTY_PAGES START failed (errno {reply.error})")

    @property
    def what(self) -> str:
        name = command_name(self.command)
        if self.name in ("region_info", "region_io_fds"):
            return f"{name} of region {self.index}"
        if self.name == "irq_info":
            return f"{name} of IRQ type {self.index}"
        if self.name == "dirty_pages":
            return f"{name} GET_BITMAP"
        return name

    def _map(self) -> tuple[int, int]:
        address = next(_addresses)
        reply = self.client.request(
            Command.DMA_MAP,
            DmaMap(DmaMap.SIZE, DmaMapFlags.READ | DmaMapFlags.WRITE, 0, address, _DMA_SIZE),
        )
        if not reply.ok:
            pytest.skip(
                f"DMA_MAP without an fd failed (errno {reply.error}): nothing to "
                f"send {command_name(self.command)} for"
            )
        return address, _DMA_SIZE

    def payload(self, argsz: int) -> bytes:
        if self.name == "device_get_info":
            return DeviceInfo(argsz).pack()
        if self.name == "region_info":
            return RegionInfo(argsz, index=self.index).pack()
        if self.name == "region_io_fds":
            return RegionIoFdsRequest(argsz, index=self.index).pack()
        if self.name == "irq_info":
            return IrqInfo(argsz, index=self.index).pack()
        if self.name == "dma_unmap":
            address, size = self._map() if self.setup else (next(_addresses), _DMA_SIZE)
            return DmaUnmap(argsz, 0, address, size).pack()
        address, size = self.range
        pgsize = 4096
        caps = self.client.server_caps
        if caps is not None and caps.migration_pgsize:
            pgsize = caps.migration_pgsize
        bitmap = VfioBitmap(pgsize, bitmap_bytes(size, pgsize))
        return DirtyPages(
            argsz, DirtyPagesFlags.GET_BITMAP, BitmapRange(address, size, bitmap)
        ).pack()

    def send(self, argsz: int):
        reply = self.client.request(self.command, self.payload(argsz))
        reply.close_fds()
        return reply


def _indexes(name: str, device) -> list[int]:
    if name in ("region_info", "region_io_fds"):
        return list(range(device.num_regions))
    if name == "irq_info":
        return list(range(device.num_irqs))
    return [0]


def _reply_argsz(reply, what: str) -> int:
    assert len(reply.payload) >= 4, (
        f"the {what} reply payload is {len(reply.payload)} bytes: too short to hold argsz"
    )
    return struct.unpack_from("<I", reply.payload)[0]


# -- the reply's argsz


@case("argsz/reply-argsz-full-size", MUST)
@pytest.mark.parametrize("name", NAMES)
def test_reply_argsz_full_size(vfu_client, vfu_device, vfu_observe, name):
    """With a request argsz large enough, the reply's argsz is the size of the full
    reply payload, which is all there.

    Spec (Message sizes): "In a reply, the server sets argsz field to the size
    needed for a full payload size. This may be less than the requested
    maximum size." (DMA_UNMAP: "The server responds with the original DMA
    entry in the request"; a reply echoing the request's argsz is accepted.)
    """
    checked = []
    for index in _indexes(name, vfu_device):
        subject = Subject(name, vfu_client, index)
        reply = subject.send(BIG_ARGSZ)
        if not reply.ok and name in ("region_info", "region_io_fds", "irq_info"):
            continue  # refusing an index is judged elsewhere (io fds are optional)
        assert reply.ok, f"{subject.what} with argsz {BIG_ARGSZ:#x} failed: errno {reply.error}"
        argsz = _reply_argsz(reply, subject.what)
        checked.append(index)
        if name == "dma_unmap" and argsz == BIG_ARGSZ:
            vfu_observe(
                "the DMA_UNMAP reply echoes the request's argsz (the original DMA "
                "entry) rather than stating the size of its payload"
            )
            continue
        assert argsz == len(reply.payload), (
            f"the {subject.what} reply states argsz {argsz}, but its payload is "
            f"{len(reply.payload)} bytes: argsz is the size needed for the full payload"
        )
    if not checked:
        pytest.skip(f"the server refused {command_name(_COMMANDS[name])} for every index")


@case("argsz/reply-within-request-argsz", MUST)
@pytest.mark.parametrize("name", NAMES)
def test_reply_within_request_argsz(vfu_client, vfu_device, name):
    """A reply payload is never larger than the request's argsz (here argsz is the
    fixed reply structure, or one byte short of a full reply that is larger).

    Spec (Message sizes): "Some requests have an argsz field. In a request, it
    defines the maximum expected reply payload size" ... "in that case, the
    full payload is not included in the reply"
    """
    for index in _indexes(name, vfu_device):
        subject = Subject(name, vfu_client, index)
        sizes = {subject.fixed}
        full = subject.send(BIG_ARGSZ)
        if full.ok and len(full.payload) > subject.fixed + 1:
            sizes.add(len(full.payload) - 1)
        for argsz in sorted(sizes):
            reply = subject.send(argsz)
            assert not reply.ok or len(reply.payload) <= argsz, (
                f"{subject.what} with argsz {argsz} got a {len(reply.payload)}-byte reply "
                "payload: argsz is the maximum expected reply payload size"
            )


# -- a request argsz too small for the full reply


def _subjects_with_more(name: str, client, device) -> list[Subject]:
    """Subjects whose full reply is larger than the fixed structure: regions with
    capabilities (GET_REGION_INFO), with sub-regions (GET_REGION_IO_FDS); a
    GET_BITMAP (the bitmap)."""
    if name == "dirty_pages":
        return [Subject(name, client)]
    indexes = []
    for index in _indexes(name, device):
        reply = Subject(name, client, index).send(BIG_ARGSZ)
        if (
            reply.ok
            and len(reply.payload) > max(4, _FIXED[name])
            and (_reply_argsz(reply, name) > _FIXED[name])
        ):
            indexes.append(index)
    if not indexes:
        pytest.skip(
            "device has no region with capabilities (a GET_REGION_INFO reply larger than 32 bytes)"
            if name == "region_info"
            else "no region has io fds (a GET_REGION_IO_FDS reply with sub-regions)"
        )
    return [Subject(name, client, index) for index in indexes]


_MORE = [
    "region_info",
    pytest.param("region_io_fds", marks=pytest.mark.vfu_requires("io_fds")),
    _DIRTY,
]


@case("argsz/short-argsz-reply", MUST)
@pytest.mark.parametrize("name", _MORE)
def test_short_argsz_reply(vfu_client, vfu_device, name):
    """A request argsz that holds the fixed structure but not the full reply gets a
    success reply with the fixed structure only, whose argsz states the size
    needed (larger than the request's).

    Spec (Message sizes): "This may be larger than the requested maximum size:
    in that case, the full payload is not included in the reply, but the argsz
    field in the reply indicates the needed size, allowing a client to allocate
    a larger buffer for holding the reply before trying again."
    """
    for subject in _subjects_with_more(name, vfu_client, vfu_device):
        reply = subject.send(subject.fixed)
        assert reply.ok, (
            f"{subject.what} with argsz {subject.fixed} (the fixed structure) "
            f"failed with errno {reply.error}: the reply should carry what fits "
            "and state the size needed"
        )
        assert len(reply.payload) == subject.fixed, (
            f"{subject.what} with argsz {subject.fixed} got a {len(reply.payload)}-byte payload: "
            f"the fixed {subject.fixed}-byte structure fits, the rest does not"
        )
        needed = _reply_argsz(reply, subject.what)
        assert needed > subject.fixed, (
            f"{subject.what} with argsz {subject.fixed} states argsz {needed}, but the full reply "
            "is larger: argsz indicates the needed size"
        )


@case("argsz/retry-with-stated-argsz", MUST)
@pytest.mark.parametrize("name", _MORE)
def test_retry_with_stated_argsz(vfu_client, vfu_device, name):
    """Retrying with the argsz a short reply stated gets the full reply: argsz bytes,
    with the capabilities (GET_REGION_INFO), the sub-regions and their fds
    (GET_REGION_IO_FDS), the bitmap (DIRTY_PAGES GET_BITMAP).

    Spec (Message sizes): "the argsz field in the reply indicates the needed
    size, allowing a client to allocate a larger buffer for holding the reply
    before trying again."
    """
    for subject in _subjects_with_more(name, vfu_client, vfu_device):
        short = subject.send(subject.fixed)
        assert short.ok, f"{subject.what} with argsz {subject.fixed} failed: errno {short.error}"
        needed = _reply_argsz(short, subject.what)
        reply = vfu_client.request(subject.command, subject.payload(needed))
        try:
            assert reply.ok, (
                f"{subject.what} with the stated argsz {needed} failed: errno {reply.error}"
            )
            assert len(reply.payload) == needed, (
                f"{subject.what} with the stated argsz {needed} got a {len(reply.payload)}-byte "
                "payload, not the full reply"
            )
            body = reply.body
            if name == "region_info":
                assert body.flags & RegionFlags.CAPS and body.caps, (
                    f"{subject.what} with the stated argsz {needed} has no capabilities"
                )
            elif name == "dirty_pages":
                assert body.range is not None and (
                    len(body.bitmap_data) == body.range.bitmap.size
                ), f"{subject.what} with the stated argsz {needed} has no bitmap"
            else:
                assert body.count and len(body.sub_regions) == body.count, (
                    f"{subject.what} with the stated argsz {needed}: count {body.count}, "
                    f"{len(body.sub_regions)} sub-regions"
                )
                assert reply.fd_count >= 1, (
                    f"{subject.what} with the stated argsz {needed} came without an fd: the "
                    "reply will include at least one file descriptor"
                )
        finally:
            reply.close_fds()


@case("argsz/below-fixed-refused", SHOULD)
@pytest.mark.parametrize("argsz", ["zero", "fixed-minus-one"])
@pytest.mark.parametrize("name", NAMES)
def test_below_fixed_refused(vfu_client, vfu_device, vfu_connect, vfu_observe, name, argsz):
    """A request argsz below the fixed reply structure is refused: an error reply,
    or a close.

    Spec (Message sizes): "In a request, it defines the maximum expected reply
    payload size, which should be at least the size of the fixed reply payload
    headers defined here."
    """
    index = _indexes(name, vfu_device)[0]
    subject = Subject(name, vfu_client, index)
    value = 0 if argsz == "zero" else subject.fixed - 1
    msg_id = vfu_client.send(subject.command, subject.payload(value))
    refused(
        vfu_client,
        msg_id,
        subject.command,
        vfu_connect,
        f"{subject.what} with argsz {value} (the fixed reply structure is {subject.fixed} bytes)",
        vfu_observe,
    )


# -- msg_size, not argsz, sizes the request


@case("argsz/large-argsz-not-read", MUST)
@pytest.mark.parametrize("name", NAMES)
def test_large_argsz_not_read(vfu_client, vfu_device, vfu_connect, name):
    """A request whose argsz is far larger than its payload is answered at once: the
    server reads msg_size bytes, not argsz, and the request that follows is
    answered too.

    Spec (Message sizes): "The request payload size is defined by the usual
    msg_size field in the header, not the argsz field."
    """
    subject = Subject(name, vfu_client, _indexes(name, vfu_device)[0])
    what = f"{subject.what} with argsz {BIG_ARGSZ:#x} and a {subject.fixed}-byte payload"
    msg_id = vfu_client.send(subject.command, subject.payload(BIG_ARGSZ))
    try:
        reply = answer_or_silence(vfu_client, msg_id, subject.command, vfu_connect, what)
    except Timeout as e:
        pytest.fail(
            f"{what} and the DEVICE_GET_INFO after it got no reply ({e}): the server "
            "seems to wait for argsz bytes; msg_size defines the request size"
        )
    assert reply is not None, f"the server closed the connection on {what}"
    assert reply is not False, f"the server did not answer {what}"


_CUTS = ["empty", "one-byte-short"]


def _short_payload(name: str, client, device, cut: str) -> tuple[Subject, bytes]:
    subject = Subject(name, client, _indexes(name, device)[0], setup=False)
    payload = subject.payload(subject.fixed)
    return subject, b"" if cut == "empty" else payload[:-1]


@case("argsz/short-payload-framed", MUST)
@pytest.mark.parametrize("cut", _CUTS)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_short_payload_framed(vfu_client, vfu_device, vfu_connect, vfu_observe, name, cut):
    """A request whose payload (per msg_size) is shorter than its structure does not
    make the server read into the next message: the request after it gets its
    correct reply.

    Spec (Message sizes): "The request payload size is defined by the usual
    msg_size field in the header, not the argsz field."
    """
    subject, payload = _short_payload(name, vfu_client, vfu_device, cut)
    what = (
        f"{subject.what} with a {len(payload)}-byte payload (its structure is "
        f"{len(subject.payload(subject.fixed))} bytes)"
    )
    msg_id = vfu_client.send(subject.command, payload)
    try:
        reply = answer_or_silence(vfu_client, msg_id, subject.command, vfu_connect, what)
    except Timeout as e:
        pytest.fail(
            f"after {what}, the DEVICE_GET_INFO that followed got no reply ({e}): the "
            "server read past msg_size into the next message"
        )
    if reply is None:
        vfu_observe(f"the server closed the connection on {what}")


@case("argsz/short-payload-refused", SHOULD)
@pytest.mark.parametrize("cut", _CUTS)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_short_payload_refused(vfu_client, vfu_device, vfu_connect, vfu_observe, name, cut):
    """A request whose payload is shorter than its structure is refused (error reply
    or close).

    Spec (Message sizes): "The request payload size is defined by the usual
    msg_size field in the header, not the argsz field." (A payload too short for
    its structure is not a request the spec defines; refusing it is what
    validating input means.)
    """
    subject, payload = _short_payload(name, vfu_client, vfu_device, cut)
    what = f"{subject.what} with a {len(payload)}-byte payload"
    msg_id = vfu_client.send(subject.command, payload)
    reply = answer_or_silence(vfu_client, msg_id, subject.command, vfu_connect, what)
    assert reply is not False, f"the server did not answer {what}: a command must be replied to"
    if reply is None:
        vfu_observe(f"the server closed the connection on {what}")
    else:
        assert not reply.ok, f"the server accepted {what} ({len(reply.payload)}-byte reply)"
