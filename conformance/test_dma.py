"""VFIO_USER_DMA_MAP and VFIO_USER_DMA_UNMAP: the client memory the server may access.

Each case maps its own range of client addresses (the ``base`` fixture), so a
server that keeps a mapping it should have dropped fails the case that is
about it rather than every later one.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import (
    Command,
    DirtyPagesFlags,
    DmaMap,
    DmaMapFlags,
    DmaUnmap,
    DmaUnmapFlags,
    VfioBitmap,
    bitmap_bytes,
)

from ._support import accepted, answer, refused, send_refused

PAGE = 4096
SIZE = 4 * PAGE  # the size of the mapping most cases make
RW = DmaMapFlags.READ | DmaMapFlags.WRITE
_U64 = 1 << 64
_bases = itertools.count()


@pytest.fixture
def base() -> int:
    """A client DMA address range no other case of this module uses (256 MiB apart)."""
    return 0x10_0000_0000 + next(_bases) * 0x1000_0000


def _memfd(size: int) -> int:
    fd = os.memfd_create("vfio-user-conformance-dma", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def _map(client, address: int, size: int, what: str | None = None, **kwargs):
    reply = client.dma_map(address, size, **kwargs)
    accepted(reply, what or f"DMA_MAP of [{address:#x}, +{size:#x})")
    assert reply.payload == b"", (
        f"the DMA_MAP reply carries {len(reply.payload)} payload bytes; "
        "there is no payload in the reply message"
    )
    return reply


def _unmap(client, address: int, size: int, what: str | None = None):
    return accepted(
        client.dma_unmap(address, size),
        what or f"DMA_UNMAP of the mapping [{address:#x}, +{size:#x})",
    )


# ---------------------------------------------------------------- DMA_MAP


@case("dma/map-without-fd", MUST)
@pytest.mark.parametrize(
    "flags",
    [RW, DmaMapFlags.READ, DmaMapFlags.WRITE],
    ids=["read-write", "read-only", "write-only"],
)
def test_map_without_fd(vfu_client, base, flags):
    """DMA_MAP without a file descriptor succeeds, with a header-only reply.

    Spec (VFIO_USER_DMA_MAP): "Otherwise, if the DMA region cannot be directly
    mapped by the server, no file descriptor must be sent as part of the
    message meta-data and the DMA region can be accessed by the server using
    VFIO_USER_DMA_READ and VFIO_USER_DMA_WRITE messages". Reply: "There is no
    payload in the reply message."
    """
    _map(vfu_client, base, SIZE, flags=flags)


@case("dma/map-with-fd", MUST)
def test_map_with_fd(vfu_client, base):
    """DMA_MAP with a file descriptor (a memfd) succeeds, with a header-only reply.

    Spec (VFIO_USER_DMA_MAP): "If the DMA region being added can be directly
    mapped by the server, a file descriptor must be sent as part of the message
    meta-data. The region can be mapped via the mmap() system call."
    """
    fd = vfu_client.memory.create_memfd_region(base, SIZE)
    _map(vfu_client, base, SIZE, fd=fd)


@case("dma/map-with-fd-offset", MUST)
def test_map_with_fd_offset(vfu_client, base):
    """DMA_MAP of part of a file, at a page-aligned file offset, succeeds.

    Spec (VFIO_USER_DMA_MAP): "offset is the file offset of the region with
    respect to the associated file descriptor"
    """
    fd = _memfd(3 * SIZE)
    try:
        _map(vfu_client, base, SIZE, fd=fd, offset=SIZE)
    finally:
        os.close(fd)


@case("dma/map-adjacent", MUST)
def test_map_adjacent(vfu_client, base):
    """Regions that touch but do not overlap an existing one (just above, just below) map.

    Spec (VFIO_USER_DMA_MAP): "It is normally sent directly after the version
    handshake is completed, but may also occur when memory is added to the
    client" (only "a command to map over an existing region" is refused).
    """
    _map(vfu_client, base + SIZE, SIZE)
    _map(
        vfu_client,
        base + 2 * SIZE,
        SIZE,
        what="DMA_MAP of a region that starts where an existing mapping ends",
    )
    _map(
        vfu_client,
        base,
        SIZE,
        what="DMA_MAP of a region that ends where an existing mapping starts",
    )


# The existing mapping is [base + 4 pages, +4 pages); (start, length) in pages.
_OVERLAPS = {
    "identical": (4, 4),
    "overlaps-start": (2, 3),
    "overlaps-end": (7, 3),
    "containing": (2, 8),
    "contained": (5, 2),
}


@case("dma/map-overlap-eexist", MUST)
@pytest.mark.parametrize("with_fd", [False, True], ids=["no-fd", "fd"])
@pytest.mark.parametrize("overlap", list(_OVERLAPS))
def test_map_overlap_is_eexist(vfu_client, vfu_observe, base, overlap, with_fd):
    """A DMA_MAP over an existing region fails with EEXIST, leaving the existing one mapped.

    Spec (VFIO_USER_DMA_MAP): "A command to map over an existing region must be
    failed by the server with EEXIST set in error field in the reply." (Header: "Error
    in a reply message is an optional UNIX errno value. It may be zero even if the
    Error bit is set": errno 0 is noted, not failed.)
    """
    existing = base + 4 * PAGE
    _map(vfu_client, existing, SIZE)
    start, pages = _OVERLAPS[overlap]
    address, size = base + start * PAGE, pages * PAGE
    fd = _memfd(size) if with_fd else None
    try:
        reply = vfu_client.request(
            Command.DMA_MAP, DmaMap(DmaMap.SIZE, RW, 0, address, size), () if fd is None else (fd,)
        )
    finally:
        if fd is not None:
            os.close(fd)
    what = (
        f"DMA_MAP of [{address:#x}, +{size:#x}) ({overlap} the existing mapping "
        f"[{existing:#x}, +{SIZE:#x}))"
    )
    assert not reply.ok, f"the server accepted {what}; it must fail with EEXIST"
    if reply.error == 0:  # "Error ... is an optional UNIX errno value. It may be zero"
        vfu_observe(f"the server refused {what} with errno 0, not EEXIST (the Error field is "
                    "optional: 'It may be zero even if the Error bit is set')")  # fmt: skip
    else:
        assert reply.error == errno.EEXIST, (
            f"the server refused {what} with errno {reply.error}; the spec requires EEXIST"
        )
    assert reply.payload == b"", "an error reply must only include the reply header"
    _unmap(
        vfu_client,
        existing,
        SIZE,
        "DMA_UNMAP of the existing mapping after a refused "
        "overlapping DMA_MAP (the refusal must leave it as it was)",
    )


@case("dma/remap-after-unmap", MUST)
def test_remap_after_unmap(vfu_client, base):
    """After DMA_UNMAP the same range maps again (with and without an fd).

    Spec (VFIO_USER_DMA_UNMAP): "This command message is sent by the client to
    the server to inform it that a DMA region, previously made available via a
    VFIO_USER_DMA_MAP command message, is no longer available for DMA."
    """
    _map(vfu_client, base, SIZE)
    _unmap(vfu_client, base, SIZE)
    fd = vfu_client.memory.create_memfd_region(base, SIZE)
    _map(vfu_client, base, SIZE, fd=fd, what="DMA_MAP of a range that was unmapped")
    _unmap(vfu_client, base, SIZE)
    _map(vfu_client, base, SIZE, what="DMA_MAP of a range that was unmapped")


def _map_payload(argsz=DmaMap.SIZE, flags=RW, offset=0, address=None, size=SIZE):
    return DmaMap(argsz, flags, offset, address, size).pack()


# name -> (payload maker taking base, what it is)
_BAD_MAPS = {
    "size-zero": (lambda b: _map_payload(address=b, size=0), "a DMA_MAP of size 0"),
    "past-2-64": (
        lambda b: _map_payload(address=_U64 - PAGE, size=2 * PAGE),
        "a DMA_MAP whose address + size passes 2**64",
    ),
    "flag-bit-2": (
        lambda b: _map_payload(flags=RW | 1 << 2, address=b),
        "a DMA_MAP with undefined flag bit 2",
    ),
    "flag-bit-31": (
        lambda b: _map_payload(flags=RW | 1 << 31, address=b),
        "a DMA_MAP with undefined flag bit 31",
    ),
    "offset-without-fd": (
        lambda b: _map_payload(offset=PAGE, address=b),
        "a DMA_MAP without an fd whose offset is not zero",
    ),
    "argsz-small": (
        lambda b: _map_payload(argsz=16, address=b),
        "a DMA_MAP whose argsz (16) is not the 32-byte structure size",
    ),
    "payload-24": (
        lambda b: _map_payload(address=b)[:24],
        "a DMA_MAP with a 24-byte payload (the structure is 32)",
    ),
    "payload-31": (
        lambda b: _map_payload(address=b)[:31],
        "a DMA_MAP with a 31-byte payload (the structure is 32)",
    ),
    "payload-40": (
        lambda b: _map_payload(address=b) + bytes(8),
        "a DMA_MAP with a 40-byte payload (the structure is 32)",
    ),
}


@case("dma/map-invalid-refused", SHOULD)
@pytest.mark.parametrize("bad", list(_BAD_MAPS))
def test_map_invalid_refused(vfu_client, vfu_connect, vfu_observe, base, bad):
    """An invalid DMA_MAP (size 0, past 2**64, undefined flags, wrong sizes) is refused.

    Spec (VFIO_USER_DMA_MAP): "This structure is 32 bytes in size, so the
    message size is 16 + 32 bytes." The flags define bits 0 (readable) and 1
    (writeable) only; "offset is the file offset ... or zero if the region is
    not mappable". The spec does not name the refusal of a zero-sized or
    wrapping region; Security Considerations: "Standard tools and mechanisms
    should be used on both sides to validate input". After an error reply
    nothing is mapped: the valid DMA_MAP of the range succeeds.
    """
    make, what = _BAD_MAPS[bad]
    reply = send_refused(vfu_client, Command.DMA_MAP, make(base), vfu_connect, what, vfu_observe)
    if reply is not None:
        _map(vfu_client, base, SIZE, what=f"DMA_MAP of the range after the refusal of {what}")


@case("dma/map-unaligned-to-pgsizes", SHOULD, revisions=("0.9.2",))
def test_map_unaligned_to_pgsizes(vfu_connect, vfu_observe, base):
    """A DMA_MAP whose address is not a multiple of the smallest page size the server
    supports (its pgsizes; 4096 when it states none) is refused; aligned, the same map
    is accepted.

    Spec (VFIO_USER_VERSION): "pgsizes | number | Page sizes supported in DMA map
    operations or'ed together. Optional, with a default value of supporting only 4k
    pages." Security Considerations: "Standard tools and mechanisms should be used on
    both sides to validate input".
    """
    client = vfu_connect()
    client.negotiate(capabilities=client.proposal(pgsizes=PAGE))
    pgsizes = client.server_caps.pgsizes
    page = pgsizes & -pgsizes
    size = 4 * page
    _map(client, base, size, f"DMA_MAP of [{base:#x}, +{size:#x}) aligned to {page} bytes")
    _unmap(client, base, size)
    bad = DmaMap(DmaMap.SIZE, RW, 0, base + page // 2, size).pack()
    what = f"a DMA_MAP at {base + page // 2:#x}, not a multiple of the {page}-byte pages of pgsizes"
    send_refused(client, Command.DMA_MAP, bad, vfu_connect, what, vfu_observe)


MAX_MAPS_JUDGED = 65535  # the spec's default; more would cost a run too long
BATCH = 256  # maps sent before their replies are read


def _max_maps_client(vfu_connect):
    """A client that proposed max_dma_maps, and the server's limit (its stated one, else the
    spec's default); skips when the limit is too large to reach in a run."""
    client = vfu_connect()
    client.negotiate(capabilities=client.proposal(max_dma_maps=MAX_MAPS_JUDGED))
    limit = client.server_caps.max_dma_maps
    if limit > MAX_MAPS_JUDGED:
        pytest.skip(f"cannot judge: max_dma_maps {limit} is more maps than a run can make")
    return client, limit


def _map_many(client, base: int, n: int) -> list:
    """Map ``n`` adjacent one-page windows from ``base``; the replies."""
    replies = []
    for first in range(0, n, BATCH):
        batch = [
            (Command.DMA_MAP, DmaMap(DmaMap.SIZE, int(RW), 0, base + PAGE * i, PAGE))
            for i in range(first, min(n, first + BATCH))
        ]
        replies += client.pipeline(batch)
    return replies


@case("dma/max-dma-maps-honoured", MUST, revisions=("0.9.2",))
def test_max_dma_maps_honoured(vfu_connect, base):
    """As many DMA maps as the server's max_dma_maps (65535 when it states none) can be
    valid at once.

    Spec (VFIO_USER_VERSION): "max_dma_maps | number | Maximum number DMA map windows that
    can be valid simultaneously. Optional, with a value of 65535 (64k-1)."
    """
    client, limit = _max_maps_client(vfu_connect)
    replies = _map_many(client, base, limit)
    refused = [i for i, r in enumerate(replies) if not r.ok]
    assert not refused, (
        f"the server refused the DMA_MAP of window {refused[0] + 1} of the {limit} its "
        f"max_dma_maps allows (errno {replies[refused[0]].error})"
    )


@case("dma/beyond-max-dma-maps-refused", SHOULD, revisions=("0.9.2",))
def test_beyond_max_dma_maps_refused(vfu_connect, vfu_observe, base):
    """With max_dma_maps windows mapped, one more DMA_MAP is refused; after an unmap it is
    accepted.

    Spec (VFIO_USER_VERSION): "max_dma_maps | number | Maximum number DMA map windows that
    can be valid simultaneously." Security Considerations: "Standard tools and mechanisms
    should be used on both sides to validate input and prevent against denial of service
    scenarios".
    """
    client, limit = _max_maps_client(vfu_connect)
    replies = _map_many(client, base, limit)
    if not all(r.ok for r in replies):
        pytest.skip("cannot judge: the server refused maps below its max_dma_maps")
    extra = base + PAGE * limit  # still inside the 256 MiB of base
    payload = DmaMap(DmaMap.SIZE, int(RW), 0, extra, PAGE).pack()
    what = f"DMA_MAP of window {limit + 1}, one more than max_dma_maps {limit}"
    if send_refused(client, Command.DMA_MAP, payload, vfu_connect, what, vfu_observe):
        _unmap(client, base, PAGE)
        _map(client, extra, PAGE, f"{what} once a window was unmapped")


@case("dma/map-fd-shorter-than-region", MUST)
def test_map_fd_shorter_than_region(vfu_client, vfu_connect, vfu_observe, base):
    """A DMA_MAP whose file is shorter than offset + size does not crash the server.

    Spec (Security Considerations): "vfio-user clients should not trust
    servers, and vice versa." The spec is silent on what the server answers;
    robustness: an error reply or a clean close, and the connection still works.
    """
    fd = _memfd(PAGE)
    try:
        msg_id = vfu_client.send(Command.DMA_MAP, _map_payload(address=base), (fd,))
    finally:
        os.close(fd)
    reply = answer(
        vfu_client,
        msg_id,
        Command.DMA_MAP,
        vfu_connect,
        f"a DMA_MAP of {SIZE} bytes backed by a {PAGE}-byte file",
    )
    if reply is not None and reply.ok:
        vfu_observe(f"the server accepted a DMA_MAP of {SIZE} bytes backed by a {PAGE}-byte file")
        _unmap(vfu_client, base, SIZE)


# ---------------------------------------------------------------- DMA_UNMAP


@case("dma/unmap-reply-entry", MUST)
@pytest.mark.parametrize("with_fd", [False, True], ids=["no-fd", "fd"])
def test_unmap_reply_is_entry(vfu_client, base, with_fd):
    """The DMA_UNMAP reply is the original 24-byte DMA entry (argsz, flags, address, size).

    Spec (VFIO_USER_DMA_UNMAP): "The server responds with the original DMA entry
    in the request." ... "The total size of the total reply message is:
    16 + 24 + (16 + size in VFIO Bitmap if get dirty page bitmap is set)."
    """
    fd = vfu_client.memory.create_memfd_region(base, SIZE) if with_fd else None
    _map(vfu_client, base, SIZE, fd=fd)
    reply = _unmap(vfu_client, base, SIZE)
    assert reply.msg_size == 16 + DmaUnmap.ENTRY_SIZE and len(reply.payload) == 24, (
        f"the DMA_UNMAP reply is {reply.msg_size} bytes; without the dirty bitmap flag it "
        "must be 16 + 24"
    )
    entry = DmaUnmap.unpack(reply.payload)
    assert (entry.address, entry.size) == (base, SIZE), (
        f"the DMA_UNMAP reply holds address {entry.address:#x} size {entry.size:#x}, not the "
        f"request's {base:#x} {SIZE:#x}"
    )
    assert entry.flags == 0, (
        f"the DMA_UNMAP reply holds flags {entry.flags:#x}, not the request's 0"
    )
    assert entry.argsz == DmaUnmap.ENTRY_SIZE, (
        f"the DMA_UNMAP reply holds argsz {entry.argsz}, not the request's "
        f"{DmaUnmap.ENTRY_SIZE} (the full reply size)"
    )


@case("dma/unmap-flags-unused", MUST, revisions=("0.9.2",))
def test_unmap_flags_unused(vfu_client, base):
    """At 0.9.2 a DMA_UNMAP with flag bit 0 set (0.9.1's dirty bitmap request) is refused
    (the mapping stays) or served as any unmap: its reply is the one a plain DMA_UNMAP
    gets (the control, just before), the 24-byte entry, no bitmap.

    Spec (VFIO_USER_DMA_UNMAP, 0.9.2): "flags is unused in this version."; "The server
    responds with the original DMA entry in the request." (Errata 7: either answer
    conforms; a bitmap in the reply is 0.9.1's format, which 0.9.2 no longer has.)
    """
    _map(vfu_client, base, SIZE)
    control = _unmap(vfu_client, base, SIZE, "the plain DMA_UNMAP (the control)")
    _map(vfu_client, base, SIZE)
    entry = DmaUnmap(DmaUnmap.ENTRY_SIZE, int(DmaUnmapFlags.GET_DIRTY_BITMAP), base, SIZE)
    reply = vfu_client.request(Command.DMA_UNMAP, entry.pack())
    if not reply.ok:
        _unmap(vfu_client, base, SIZE, "DMA_UNMAP of the mapping after the flagged one was refused")
        return
    assert len(reply.payload) == len(control.payload), (
        f"the reply to a DMA_UNMAP with flag bit 0 carries {len(reply.payload)} bytes, the "
        f"plain one's {len(control.payload)}: the flag, unused at 0.9.2, changed the reply"
    )
    if len(control.payload) != DmaUnmap.ENTRY_SIZE:
        pytest.skip(
            f"cannot judge: a plain DMA_UNMAP's reply is {len(control.payload)} bytes too "
            "(dma/unmap-reply-entry judges that)"
        )
    again = vfu_client.dma_unmap(base, SIZE)
    assert not again.ok, "the mapping is still there after the DMA_UNMAP that succeeded"


@case("dma/unmap-large-argsz", MUST)
def test_unmap_large_argsz(vfu_client, base):
    """A DMA_UNMAP whose argsz is larger than the reply needs succeeds; the reply is 24 bytes.

    Spec (VFIO_USER_DMA_UNMAP): "argsz is the maximum size of the reply
    payload." (Message sizes: the reply's argsz is the size needed, "This may
    be less than the requested maximum size"; the reply is also "the original
    DMA entry in the request": either argsz is accepted.)
    """
    _map(vfu_client, base, SIZE)
    reply = accepted(
        vfu_client.dma_unmap(base, SIZE, argsz=4096),
        "DMA_UNMAP with argsz 4096 of an existing mapping",
    )
    assert len(reply.payload) == DmaUnmap.ENTRY_SIZE, (
        f"the DMA_UNMAP reply payload is {len(reply.payload)} bytes; without the dirty "
        "bitmap flag it is the 24-byte entry: The server responds with the original DMA "
        "entry in the request."
    )
    entry = DmaUnmap.unpack(reply.payload)
    assert entry.argsz in (DmaUnmap.ENTRY_SIZE, 4096), (
        f"the DMA_UNMAP reply holds argsz {entry.argsz}: neither the size needed (24) nor the "
        "request's (4096)"
    )
    assert (entry.address, entry.size) == (base, SIZE)


@case("dma/unmap-small-argsz", MUST)
def test_unmap_small_argsz(vfu_client, vfu_connect, vfu_observe, base):
    """A DMA_UNMAP whose argsz (8) is below the 24-byte reply does not upset the server.

    Spec (Message sizes): argsz "defines the maximum expected reply payload
    size, which should be at least the size of the fixed reply payload
    headers defined here." The spec is silent on a smaller one; robustness.
    """
    _map(vfu_client, base, SIZE)
    msg_id = vfu_client.send(Command.DMA_UNMAP, DmaUnmap(8, 0, base, SIZE))
    reply = answer(vfu_client, msg_id, Command.DMA_UNMAP, vfu_connect, "a DMA_UNMAP with argsz 8")
    if reply is not None and reply.ok:
        vfu_observe(
            f"the server accepted a DMA_UNMAP with argsz 8 (reply payload "
            f"{len(reply.payload)} bytes)"
        )


# (start, length) in pages relative to base; the mapping is [base + 4 pages, +4 pages).
_MISMATCHES = {
    "sub-range-head": (4, 2),
    "sub-range-tail": (6, 2),
    "super-range": (2, 8),
    "shifted": (5, 4),
    "unknown-address": (64, 4),
}


@case("dma/unmap-must-match", SHOULD)
@pytest.mark.parametrize("mismatch", list(_MISMATCHES))
def test_unmap_must_match(vfu_client, vfu_connect, vfu_observe, base, mismatch):
    """A DMA_UNMAP that does not match a mapping exactly fails and unmaps nothing.

    Spec (VFIO_USER_DMA_UNMAP): "The address and size of the DMA region being
    unmapped must match exactly a previous mapping." (A rule of the request: the spec
    does not say how a server answers one that breaks it.) Security Considerations:
    "Standard tools and mechanisms should be used on both sides to validate input".
    """
    existing = base + 4 * PAGE
    _map(vfu_client, existing, SIZE)
    start, pages = _MISMATCHES[mismatch]
    address, size = base + start * PAGE, pages * PAGE
    what = (
        f"a DMA_UNMAP of [{address:#x}, +{size:#x}) ({mismatch}; the mapping is "
        f"[{existing:#x}, +{SIZE:#x}))"
    )
    msg_id = vfu_client.send(Command.DMA_UNMAP, DmaUnmap(DmaUnmap.ENTRY_SIZE, 0, address, size))
    if refused(vfu_client, msg_id, Command.DMA_UNMAP, vfu_connect, what, vfu_observe):
        _unmap(
            vfu_client,
            existing,
            SIZE,
            f"DMA_UNMAP of the mapping after {what} was refused (the refusal must leave it mapped)",
        )


@case("dma/unmap-spanning-two-maps", SHOULD)
def test_unmap_spanning_two(vfu_client, vfu_connect, vfu_observe, base):
    """A DMA_UNMAP covering two adjacent mappings at once is refused (it matches neither).

    Spec (VFIO_USER_DMA_UNMAP): "The address and size of the DMA region being
    unmapped must match exactly a previous mapping." (A rule of the request: the spec
    does not say how a server answers one that breaks it.) Security Considerations:
    "Standard tools and mechanisms should be used on both sides to validate input".
    """
    _map(vfu_client, base, SIZE)
    _map(vfu_client, base + SIZE, SIZE)
    msg_id = vfu_client.send(Command.DMA_UNMAP, DmaUnmap(DmaUnmap.ENTRY_SIZE, 0, base, 2 * SIZE))
    if refused(
        vfu_client,
        msg_id,
        Command.DMA_UNMAP,
        vfu_connect,
        "a DMA_UNMAP spanning two adjacent mappings",
        vfu_observe,
    ):
        _unmap(vfu_client, base, SIZE)
        _unmap(vfu_client, base + SIZE, SIZE)


@case("dma/unmap-twice", SHOULD)
def test_unmap_twice(vfu_client, vfu_connect, vfu_observe, base):
    """A second DMA_UNMAP of the same mapping fails: it no longer matches a mapping.

    Spec (VFIO_USER_DMA_UNMAP): "The address and size of the DMA region being
    unmapped must match exactly a previous mapping." (A rule of the request: the spec
    does not say how a server answers one that breaks it.) Security Considerations:
    "Standard tools and mechanisms should be used on both sides to validate input".
    """
    _map(vfu_client, base, SIZE)
    _unmap(vfu_client, base, SIZE)
    msg_id = vfu_client.send(Command.DMA_UNMAP, DmaUnmap(DmaUnmap.ENTRY_SIZE, 0, base, SIZE))
    refused(
        vfu_client,
        msg_id,
        Command.DMA_UNMAP,
        vfu_connect,
        "a second DMA_UNMAP of a mapping already unmapped",
        vfu_observe,
    )


def _unmap_payload(base, flags=0, argsz=DmaUnmap.ENTRY_SIZE):
    return DmaUnmap(argsz, flags, base, SIZE).pack()


_BAD_UNMAPS = {
    "flag-bit-1": (
        lambda b: _unmap_payload(b, flags=1 << 1),
        "a DMA_UNMAP with undefined flag bit 1",
    ),
    "flag-bit-31": (
        lambda b: _unmap_payload(b, flags=1 << 31),
        "a DMA_UNMAP with undefined flag bit 31",
    ),
    "payload-16": (
        lambda b: _unmap_payload(b)[:16],
        "a DMA_UNMAP with a 16-byte payload (the entry is 24)",
    ),
    "payload-32": (
        lambda b: _unmap_payload(b) + bytes(8),
        "a DMA_UNMAP with a 32-byte payload (24 without the dirty bitmap flag)",
    ),
    "payload-40": (
        lambda b: _unmap_payload(b) + VfioBitmap(PAGE, 8).pack(),
        "a DMA_UNMAP with a VFIO Bitmap but without the dirty bitmap flag",
    ),
}


@case("dma/unmap-invalid-refused", SHOULD)
@pytest.mark.parametrize(
    "bad",
    [
        # 0.9.2: "flags is unused in this version" (errata 7): ignoring them is no fault
        pytest.param(b, marks=pytest.mark.vfu_revision("0.9.1")) if b.startswith("flag") else b
        for b in _BAD_UNMAPS
    ],
)
def test_unmap_invalid_refused(vfu_client, vfu_connect, vfu_observe, base, bad):
    """An invalid DMA_UNMAP (undefined flags at 0.9.1, a payload that is not the entry)
    is refused and unmaps nothing.

    Spec (VFIO_USER_DMA_UNMAP): "The size of request message depends on
    whether or not the get dirty page bitmap bit is set in Flags: If not set,
    the size of the total request message is: 16 + 24." Only flag bit 0 is
    defined. (0.9.2: "The request payload for this message is a structure of the
    following format", 24 bytes; "flags is unused in this version".) Security
    Considerations: "Standard tools and mechanisms should be used on both sides to
    validate input".
    """
    _map(vfu_client, base, SIZE)
    make, what = _BAD_UNMAPS[bad]
    if send_refused(vfu_client, Command.DMA_UNMAP, make(base), vfu_connect, what, vfu_observe):
        _unmap(
            vfu_client,
            base,
            SIZE,
            f"DMA_UNMAP of the mapping after {what} was refused (the refusal must leave it mapped)",
        )


@case("dma/unmap-dirty-bitmap-logging-off", SHOULD, revisions=("0.9.1",))
def test_unmap_dirty_bitmap_while_logging_off(vfu_client, vfu_connect, vfu_observe, base):
    """DMA_UNMAP asking for the dirty page bitmap while dirty logging is off is refused.

    Spec (VFIO_USER_DIRTY_PAGES): the dirty bitmap "operation is only valid if
    logging of dirty pages has been previously started." (VFIO_USER_DMA_UNMAP:
    "get dirty page bitmap indicates that a dirty page bitmap must be
    populated before unmapping the DMA region.")
    """
    _map(vfu_client, base, SIZE)
    bitmap = VfioBitmap(PAGE, bitmap_bytes(SIZE, PAGE))
    payload = DmaUnmap(
        DmaUnmap.ENTRY_SIZE + 16 + bitmap.size, DmaUnmapFlags.GET_DIRTY_BITMAP, base, SIZE, bitmap
    ).pack()
    what = "a DMA_UNMAP with the dirty bitmap flag while dirty page logging is off"
    if send_refused(vfu_client, Command.DMA_UNMAP, payload, vfu_connect, what, vfu_observe):
        _unmap(
            vfu_client,
            base,
            SIZE,
            f"DMA_UNMAP of the mapping after {what} was refused (the refusal must leave it mapped)",
        )


@case("dma/unmap-dirty-bitmap", MUST, requires=("dirty_pages",), revisions=("0.9.1",))
def test_unmap_dirty_bitmap(vfu_connect, base):
    """With dirty logging on, DMA_UNMAP with the bitmap flag returns the entry, the VFIO
    Bitmap sent, and a bitmap of that size.

    Spec (VFIO_USER_DMA_UNMAP): "If the get dirty page bitmap bit is set in
    flags in the request, then the server also includes the VFIO Bitmap
    structure sent in the request, followed by the corresponding dirty page
    bitmap, where each bit represents one page of size pgsize in VFIO Bitmap."
    "The total size of the total reply message is: 16 + 24 + (16 + size in
    VFIO Bitmap if get dirty page bitmap is set)."
    """
    client = vfu_connect()
    client.negotiate(capabilities=client.proposal(migration={"pgsize": PAGE}))
    pgsize = client.server_caps.migration_pgsize or PAGE
    accepted(client.dirty_pages(DirtyPagesFlags.START), "DIRTY_PAGES START")
    try:
        _map(client, base, SIZE)
        bitmap = VfioBitmap(pgsize, bitmap_bytes(SIZE, pgsize))
        reply = accepted(
            client.dma_unmap(base, SIZE, DmaUnmapFlags.GET_DIRTY_BITMAP, bitmap),
            "DMA_UNMAP with the dirty bitmap flag while dirty logging is on",
        )
        want = DmaUnmap.ENTRY_SIZE + 16 + bitmap.size
        assert len(reply.payload) == want, (
            f"the DMA_UNMAP reply payload is {len(reply.payload)} bytes; with the dirty "
            f"bitmap flag it must be 24 + 16 + {bitmap.size} (the VFIO Bitmap size)"
        )
        entry = DmaUnmap.unpack(reply.payload)
        assert (entry.address, entry.size) == (base, SIZE), (
            "the reply does not hold the original entry"
        )
        assert entry.flags & DmaUnmapFlags.GET_DIRTY_BITMAP, (
            f"the reply's flags {entry.flags:#x} are not the request's"
        )
        assert entry.bitmap == bitmap, (
            f"the reply's VFIO Bitmap {entry.bitmap} is not the one sent, {bitmap}"
        )
        assert len(entry.bitmap_data) == bitmap.size
    finally:
        with contextlib.suppress(Exception):  # never hide the failure above
            client.dirty_pages(DirtyPagesFlags.STOP)


# Disconnection (maps gone, fds closed, a new client maps the same ranges) is
# the disconnect section's: conformance/test_disconnect.py.
