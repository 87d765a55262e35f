"""VFIO_USER_DMA_READ and VFIO_USER_DMA_WRITE: the server's accesses to client memory.

The device is made to copy through the implementer's DMA hook (``vfu_trigger_dma``):
"read" makes it read client memory into its own buffer, "write" makes it write
that buffer to client memory. A round trip (read a pattern from one mapping,
write it to another) shows the data moved both ways without knowing the device.
The client serves the server's requests from its memory model and records them
(``client.dma_requests``).
"""

from __future__ import annotations

import mmap
import os

from pytest_vfiouser import MUST, case
from pytest_vfiouser.client import ConnectionClosed
from pytest_vfiouser.protocol import Command, command_name

from ._dma import LENGTH, SIZE, SMALL_XFER, base, describe, dma, pattern, round_trip, two_maps
from ._support import accepted, assert_framed, assert_new_connection_works

__all__ = ["base"]  # a fixture of the module's cases

# ---------------------------------------------------------------------------
# memory mapped without a file descriptor: DMA_READ / DMA_WRITE messages


@case("dma_rw/requests-well-formed", MUST, requires=("dma_engine",))
def test_requests_well_formed(vfu_client, vfu_hooks, base):
    """The device's accesses to memory mapped without an fd come as DMA_READ (reading) and
    DMA_WRITE (writing) requests that decode: address, count, and count bytes of data.

    Spec (VFIO_USER_DMA_MAP): "if the DMA region cannot be directly mapped by the server,
    ... the DMA region can be accessed by the server using VFIO_USER_DMA_READ and
    VFIO_USER_DMA_WRITE messages"; (VFIO_USER_DMA_WRITE): "count is the size of the data to
    be transferred." "data is the data to write"
    """
    a, b = two_maps(vfu_client, base)
    _, requests = round_trip(vfu_hooks, vfu_client, a + 0x100, b + 0x200)
    bad = [f"{describe(r)}: {r.detail}" for r in requests if r.address is None]
    assert not bad, f"requests that do not decode: {bad}"
    for command, direction in ((Command.DMA_READ, "read"), (Command.DMA_WRITE, "write")):
        assert any(r.command == command for r in requests), (
            f"the device's DMA {direction} of memory mapped without an fd completed without a "
            f"single {command_name(command)} request"
        )


@case("dma_rw/mapped-ranges-only", MUST, requires=("dma_engine",))
def test_mapped_ranges_only(vfu_client, vfu_hooks, base):
    """Every DMA_READ/DMA_WRITE addresses client memory inside a DMA_MAP'ed range.

    Spec (VFIO_USER_DMA_READ): "address is the client DMA memory address being accessed.
    This address must have been previously exported to the server with a VFIO_USER_DMA_MAP
    message."
    """
    a, b = two_maps(vfu_client, base)
    _, requests = round_trip(vfu_hooks, vfu_client, a + 0x100, b + 0x200)
    outside = [
        describe(r)
        for r in requests
        if r.address is not None
        and not any(m <= r.address and r.address + r.count <= m + SIZE for m in (a, b))
    ]
    assert not outside, (
        f"requests outside the mappings [{a:#x}, +{SIZE:#x}) and [{b:#x}, +{SIZE:#x}): {outside}"
    )


@case("dma_rw/data-moved", MUST, requires=("dma_engine",))
def test_data_moved(vfu_client, vfu_hooks, base):
    """DMA_READ fetches the client's data and DMA_WRITE stores it: a pattern read by the
    device from one mapping arrives intact in another.

    Spec (VFIO_USER_DMA_READ): "data is the data read."; (VFIO_USER_DMA_WRITE): "data is
    the data to write"
    """
    a, b = two_maps(vfu_client, base)
    data, requests = round_trip(vfu_hooks, vfu_client, a + 0x100, b + 0x200)
    refused = [f"{describe(r)}: {r.detail}" for r in requests if not r.ok]
    assert not refused, f"the client had to refuse requests: {refused}"
    got = vfu_client.memory.read(b + 0x200, len(data))
    first = next((i for i, (x, y) in enumerate(zip(got, data, strict=True)) if x != y), None)
    assert got == data, (
        "the data the device wrote back to client memory is not what it read: first "
        f"difference at byte {first}"
    )


@case("dma_rw/max-data-xfer-size", MUST, requires=("dma_engine",))
def test_max_data_xfer_size(vfu_connect, vfu_hooks, base):
    """DMA_READ and DMA_WRITE never ask for more than the client's max_data_xfer_size: a
    transfer larger than it is split.

    Spec (Read and Write Operations): "The count field must not exceed the value of
    max_data_xfer_size of the peer, for both reads and writes."
    """
    client = vfu_connect(max_data_xfer_size=SMALL_XFER)
    reply = client.negotiate()
    assert reply.ok
    a, b = base, base + 0x10000
    for address in (a, b):
        accepted(client.dma_map(address, 0x8000), f"DMA_MAP of [{address:#x}, +0x8000)")
    length = 3 * SMALL_XFER + 0x200
    data, requests = round_trip(vfu_hooks, client, a + 0x80, b + 0x40, length)
    big = [describe(r) for r in requests if r.count is not None and r.count > SMALL_XFER]
    assert not big, (
        f"the client negotiated max_data_xfer_size {SMALL_XFER}; the server sent "
        f"larger requests: {big}"
    )
    assert client.memory.read(b + 0x40, length) == data, (
        "a transfer split into several requests did not move the data intact"
    )


# ---------------------------------------------------------------------------
# memory mapped with a file descriptor


@case("dma_rw/fd-mapped", MUST, requires=("dma_engine",))
def test_fd_mapped(vfu_client, vfu_hooks, vfu_observe, base):
    """Memory mapped with a file descriptor is read and written correctly; the server is
    expected to access it directly (messages there are noted, not failed).

    Spec (Client memory access): "Actual direct memory access of client memory from the
    server is possible if the client provides file descriptors the server can mmap()."
    (Read and Write Operations): "all of these operations must be supported by the client
    and/or server, even if the corresponding memory or device region has been shared as
    mappable."
    """
    a, b = base, base + 2 * SIZE
    for address in (a, b):
        fd = vfu_client.memory.create_memfd_region(address, SIZE)
        accepted(
            vfu_client.dma_map(address, SIZE, fd=fd),
            f"DMA_MAP of [{address:#x}, +{SIZE:#x}) with a memfd",
        )
    data, requests = round_trip(vfu_hooks, vfu_client, a + 0x100, b + 0x200, seed=3)
    assert vfu_client.memory.read(b + 0x200, len(data)) == data, (
        "the data the device wrote back to fd-mapped client memory is not what it read"
    )
    if requests:
        vfu_observe(
            f"the server sent {len(requests)} DMA_READ/DMA_WRITE requests for memory "
            "the client mapped with a file descriptor, instead of accessing it directly"
        )


@case("dma_rw/fd-offset-used", MUST, requires=("dma_engine",))
def test_fd_offset_used(vfu_client, vfu_hooks, base):
    """A mapping made at a file offset shows the file from that offset: what the device
    reads at the mapping's address is the file's bytes there, not those at offset 0 (the
    positive side of dma/map-with-fd-offset, which only sees the map accepted).

    Spec (VFIO_USER_DMA_MAP): "offset is the file offset of the region with respect to the
    associated file descriptor"
    """
    a, b = base, base + 4 * SIZE
    fd = os.memfd_create("vfio-user-conformance-offset", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 3 * SIZE)
        at_zero, at_offset = pattern(LENGTH, 1), pattern(LENGTH, 2)
        os.pwrite(fd, at_zero, 0)
        os.pwrite(fd, at_offset, SIZE)
        accepted(
            vfu_client.dma_map(a, SIZE, fd=fd, offset=SIZE),
            f"DMA_MAP of [{a:#x}, +{SIZE:#x}) with a memfd at offset {SIZE:#x}",
        )
    finally:
        os.close(fd)  # the client's model keeps its own mapping
    accepted(vfu_client.dma_map(b, SIZE), f"DMA_MAP of [{b:#x}, +{SIZE:#x})")
    dma(vfu_hooks, vfu_client, "read", a, LENGTH)
    dma(vfu_hooks, vfu_client, "write", b, LENGTH)
    got = vfu_client.memory.read(b, LENGTH)
    assert got != at_zero, (
        f"the device read the file from offset 0 at [{a:#x}, ...), mapped at file offset "
        f"{SIZE:#x}: the DMA_MAP offset was ignored"
    )
    assert got == at_offset, "the device read other bytes than the file holds at the offset"


# ---------------------------------------------------------------------------
# errors and unmapping


@case("dma_rw/client-error-reply", MUST, requires=("dma_engine",))
def test_client_error_reply(vfu_client, vfu_connect, vfu_hooks, vfu_observe, base):
    """An error reply from the client to DMA_READ/DMA_WRITE is handled: the server goes on
    serving the connection, and later DMA works.

    Spec (Header): "Each command message in Commands must be replied to with a reply
    message" ... "Error in a reply message indicates the command being acknowledged had an
    error." The spec is silent on what the server then does; robustness.
    """
    a, b = two_maps(vfu_client, base)
    vfu_client.memory.remove(a, SIZE)  # still mapped in the server: the client now refuses
    mark = len(vfu_client.dma_requests)
    try:
        dma(vfu_hooks, vfu_client, "read", a, 0x100, expect_ok=False)
        dma(vfu_hooks, vfu_client, "write", a, 0x100, expect_ok=False)
    except ConnectionClosed:
        vfu_observe("the server closed the connection after the client refused its DMA request")
        assert_new_connection_works(vfu_connect, "an error reply to a DMA request")
        return
    refused = [r for r in vfu_client.dma_requests[mark:] if not r.ok]
    assert refused, "the device did not access client memory: no DMA request was refused"
    assert_framed(vfu_client, "error replies to its DMA requests")
    data, _ = round_trip(vfu_hooks, vfu_client, b, b + SIZE // 2, SIZE // 2, seed=5)
    assert vfu_client.memory.read(b + SIZE // 2, SIZE // 2) == data, (
        "after the client refused DMA requests, a later DMA did not move the data intact"
    )


@case("dma_rw/none-after-unmap", MUST, requires=("dma_engine",))
def test_none_after_unmap(vfu_client, vfu_hooks, base):
    """Once DMA_UNMAP is answered, no DMA_READ/DMA_WRITE touches the unmapped range.

    Spec (VFIO_USER_DMA_UNMAP): "a DMA region, previously made available via a
    VFIO_USER_DMA_MAP command message, is no longer available for DMA."; (VFIO_USER_DMA_READ):
    "This address must have been previously exported to the server with a VFIO_USER_DMA_MAP
    message."
    """
    a, b = two_maps(vfu_client, base)
    round_trip(vfu_hooks, vfu_client, b, a)  # DMA to ``a`` works while it is mapped
    accepted(vfu_client.dma_unmap(a, SIZE), f"DMA_UNMAP of [{a:#x}, +{SIZE:#x})")
    mark = len(vfu_client.dma_requests)
    for direction in ("read", "write"):
        dma(vfu_hooks, vfu_client, direction, a, LENGTH, expect_ok=False)
    touched = [
        describe(r)
        for r in vfu_client.dma_requests[mark:]
        if r.address is not None and r.address < a + SIZE and a < r.address + r.count
    ]
    assert not touched, (
        f"after DMA_UNMAP of [{a:#x}, +{SIZE:#x}) was answered, the server still sent {touched}"
    )
    assert_framed(vfu_client, "DMA attempts on unmapped memory")


@case("dma_rw/none-after-unmap-fd", MUST, requires=("dma_engine",))
def test_none_after_unmap_fd(vfu_client, vfu_hooks, base):
    """Once DMA_UNMAP of an fd-backed mapping is answered, the server no longer writes to
    that memory (directly or with messages).

    Spec (VFIO_USER_DMA_UNMAP): "if the file descriptor is mapped then the server must
    release all references to that DMA region before replying, which potentially includes
    in-flight DMA transactions."
    """
    a, b = base, base + 2 * SIZE
    accepted(vfu_client.dma_map(b, SIZE), f"DMA_MAP of [{b:#x}, +{SIZE:#x})")
    fd = os.memfd_create("vfio-user-conformance-unmap", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, SIZE)
        view = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
        try:
            accepted(
                vfu_client.dma_map(a, SIZE, fd=fd), f"DMA_MAP of [{a:#x}, +{SIZE:#x}) with a memfd"
            )
            data, _ = round_trip(vfu_hooks, vfu_client, b, a, seed=7)
            assert view[:LENGTH] == data, "DMA to the fd-mapped memory did not arrive"
            view[:LENGTH] = bytes(LENGTH)
            accepted(vfu_client.dma_unmap(a, SIZE), f"DMA_UNMAP of [{a:#x}, +{SIZE:#x})")
            mark = len(vfu_client.dma_requests)
            # The device's buffer still holds the pattern.
            dma(vfu_hooks, vfu_client, "write", a, LENGTH, expect_ok=False)
            assert view[:LENGTH] == bytes(LENGTH), (
                "after DMA_UNMAP was answered, the server still wrote to the memory the file "
                "descriptor maps"
            )
            touched = [
                describe(r)
                for r in vfu_client.dma_requests[mark:]
                if r.address is not None and r.address < a + SIZE and a < r.address + r.count
            ]
            assert not touched, f"after DMA_UNMAP was answered, the server still sent {touched}"
        finally:
            view.close()
    finally:
        os.close(fd)
