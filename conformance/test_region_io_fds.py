"""VFIO_USER_DEVICE_GET_REGION_IO_FDS: ioeventfds and ioregionfds for sub-regions.

Every fd a reply carries is closed by the case. Entries are located as errata
3 says: from payload offset 16, each (argsz - 16) / count bytes (at least the
40 bytes both entry formats have today).
"""

from __future__ import annotations

import contextlib
import os
import struct

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import (
    Command,
    IoEventFdFlags,
    IoFdSubRegion,
    IoFdType,
    IoRegionFdFlags,
    RegionIoFdsRequest,
)

from ._support import answer, refused

HEAD = 16  # argsz, flags, index, count
BIG_ARGSZ = 1 << 16
_REQUEST = struct.Struct("<IIII")
# Plain ints: ~ on an IntFlag complements within its members only (always 0 here).
_IOEVENTFD_FLAGS = int(
    IoEventFdFlags.DATAMATCH | IoEventFdFlags.PIO | IoEventFdFlags.VIRTIO_CCW_NOTIFY
)
_IOREGIONFD_FLAGS = int(IoRegionFdFlags.PIO | IoRegionFdFlags.POSTED_WRITES)


class IoFds:
    """One decoded reply: head fields, the entries (by errata 3) and the fds received."""

    def __init__(self, reply, fds: list[int]):
        self.reply, self.fds, self.payload = reply, fds, reply.payload
        assert len(self.payload) >= HEAD, (
            f"the GET_REGION_IO_FDS reply payload is {len(self.payload)} bytes, shorter than "
            "its 16-byte head"
        )
        self.argsz, self.flags, self.index, self.count = _REQUEST.unpack_from(self.payload)

    def entries(self) -> list[IoFdSubRegion]:
        body = self.payload[HEAD:]
        if not self.count or not body:
            return []
        size, rest = divmod(len(body), self.count)
        assert not rest and size >= IoFdSubRegion.SIZE, (
            f"{len(body)} bytes of sub-regions follow the head, which do not divide into "
            f"count {self.count} entries of at least 40 bytes"
        )
        return [
            IoFdSubRegion.unpack(body[i * size : i * size + IoFdSubRegion.SIZE])
            for i in range(self.count)
        ]


@contextlib.contextmanager
def _io_fds(client, index: int, argsz: int = BIG_ARGSZ, need_entries: bool = False):
    """The GET_REGION_IO_FDS reply of ``index`` as IoFds; skips the region on an error
    reply (or, with ``need_entries``, when it has no sub-regions); closes every fd
    received afterwards."""
    reply = client.region_io_fds(index, argsz)
    fds = reply.take_fds()
    try:
        if not reply.ok:
            pytest.skip(
                f"the server refuses GET_REGION_IO_FDS of region {index} (errno "
                f"{reply.error}): it has no io fds to check"
            )
        got = IoFds(reply, fds)
        if need_entries and not got.count:
            pytest.skip(f"region {index} has no io fd sub-regions")
        yield got
    finally:
        for fd in fds:
            os.close(fd)


@case("region_io_fds/reply-head", MUST, requires=("io_fds",))
def test_reply_head(vfu_client, vfu_region_index):
    """The reply's flags are 0, index is the one queried, and argsz covers the head and
    count sub-regions (the whole payload, given a large request argsz).

    Spec (VFIO_USER_DEVICE_GET_REGION_IO_FDS): "argsz is the size of the region
    IO FD info structure plus the total size of the sub-region array." "flags
    must be zero" "index is the index of memory region being queried" "count
    is the number of sub-regions in the array"
    """
    with _io_fds(vfu_client, vfu_region_index) as got:
        assert got.flags == 0, f"the reply's flags are {got.flags:#x}; they must be zero"
        assert got.index == vfu_region_index, (
            f"the reply for region {vfu_region_index} states index {got.index}"
        )
        assert len(got.payload) == got.argsz, (
            f"the reply payload is {len(got.payload)} bytes but states argsz {got.argsz} "
            f"(the request allowed {BIG_ARGSZ})"
        )
        if got.count == 0:
            assert got.argsz == HEAD, f"count is 0 but argsz is {got.argsz}, not the 16-byte head"
        else:
            assert len(got.entries()) == got.count


@case("region_io_fds/fds-received", MUST, requires=("io_fds",))
def test_fds_received(vfu_client, vfu_region_index):
    """With sub-regions, the reply carries at least one fd and every fd_index refers to
    one of the fds received.

    Spec (VFIO_USER_DEVICE_GET_REGION_IO_FDS): "The reply message will
    additionally include at least one file descriptor in the ancillary data."
    "fd_index is the index in the ancillary data of the FD to use"
    """
    with _io_fds(vfu_client, vfu_region_index, need_entries=True) as got:
        assert got.fds, (
            f"region {vfu_region_index}: the reply has {got.count} sub-regions "
            "but carries no file descriptor"
        )
        for i, sub in enumerate(got.entries()):
            assert sub.fd_index < len(got.fds), (
                f"region {vfu_region_index}: sub-region {i} has fd_index {sub.fd_index}, but "
                f"the reply carries {len(got.fds)} fds"
            )


@case("region_io_fds/entry-types", MUST, requires=("io_fds",))
def test_entry_types(vfu_client, vfu_region_index):
    """Every sub-region is an ioeventfd or an ioregionfd, with only that type's flags; an
    ioregionfd of size 0 has KVM_IOREGION_POSTED_WRITES.

    Spec (VFIO_USER_DEVICE_GET_REGION_IO_FDS): "Each sub-region given in the
    response has one of two possible structures, depending whether type is
    VFIO_USER_IO_FD_TYPE_IOEVENTFD or VFIO_USER_IO_FD_TYPE_IOREGIONFD";
    ioregionfd size "may be zero if the access size is not relevant ...;
    KVM_IOREGION_POSTED_WRITES must be set in flags in this case". (The spec names the
    two types but gives no numbers: 0 and 1 are those of the header implementations
    share, libvfio-user's and QEMU's vfio-user.h.)
    """
    with _io_fds(vfu_client, vfu_region_index, need_entries=True) as got:
        for i, sub in enumerate(got.entries()):
            where = f"region {vfu_region_index} sub-region {i}"
            assert sub.type in (IoFdType.IOEVENTFD, IoFdType.IOREGIONFD), (
                f"{where} has type {sub.type}: neither ioeventfd (0) nor ioregionfd (1)"
            )
            allowed = _IOEVENTFD_FLAGS if sub.type == IoFdType.IOEVENTFD else _IOREGIONFD_FLAGS
            assert not sub.flags & ~allowed, (
                f"{where} ({IoFdType(sub.type).name.lower()}) has flags {sub.flags:#x}, with "
                f"bits {sub.flags & ~allowed:#x} its type does not define"
            )
            if sub.type == IoFdType.IOREGIONFD and sub.size == 0:
                assert sub.flags & IoRegionFdFlags.POSTED_WRITES, (
                    f"{where} is an ioregionfd of size 0 without KVM_IOREGION_POSTED_WRITES"
                )


@case("region_io_fds/ioeventfd-is-eventfd", MUST, requires=("io_fds",))
def test_ioeventfd_is_eventfd(vfu_client, vfu_region_index):
    """The fd of an ioeventfd sub-region is an eventfd (what KVM_IOEVENTFD takes).

    Spec (VFIO_USER_DEVICE_GET_REGION_IO_FDS): "clients are expected to
    configure each sub-region's file descriptor with the requested
    notification method. For example, a client could configure KVM with the
    requested ioeventfd via a KVM_IOEVENTFD ioctl()."
    """
    with _io_fds(vfu_client, vfu_region_index, need_entries=True) as got:
        subs = [
            s for s in got.entries() if s.type == IoFdType.IOEVENTFD and s.fd_index < len(got.fds)
        ]
        if not subs:
            pytest.skip(f"region {vfu_region_index} has no ioeventfd sub-region")
        for sub in subs:
            kind = os.readlink(f"/proc/self/fd/{got.fds[sub.fd_index]}")
            assert kind == "anon_inode:[eventfd]", (
                f"region {vfu_region_index}: the fd of the ioeventfd sub-region at "
                f"{sub.offset:#x} is {kind!r}, not an eventfd"
            )


@case("region_io_fds/some-region", MUST, requires=("io_fds",))
def test_some_region(vfu_client, vfu_device, vfu_profile):
    """A device with io fds (as its profile says) describes sub-regions for some region.

    Spec (Region I/O via file descriptors): "As an optimization, ioeventfds or
    ioregionfds may be configured for sub-regions of some regions. A client may
    request information on these sub-regions via
    VFIO_USER_DEVICE_GET_REGION_IO_FDS"
    """
    if vfu_profile.has_feature("io_fds") is not True:
        pytest.skip("needs profile: io_fds = true (the claim this case checks)")
    counts = {}
    for index in range(vfu_device.num_regions):
        reply = vfu_client.region_io_fds(index, BIG_ARGSZ)
        reply.close_fds()
        if reply.ok and len(reply.payload) >= HEAD:
            counts[index] = _REQUEST.unpack_from(reply.payload)[3]
    assert any(counts.values()), (
        "no region has io fd sub-regions (counts by region: "
        f"{counts or 'every request refused'}), yet the device is said to have io fds"
    )


@case("region_io_fds/small-argsz", MUST, requires=("io_fds",))
def test_small_argsz(vfu_client, vfu_region_index):
    """With argsz 16, the reply is the 16-byte head stating the argsz the full reply needs.

    Spec (Message sizes): "This may be larger than the requested maximum size:
    in that case, the full payload is not included in the reply, but the argsz
    field in the reply indicates the needed size". (GET_REGION_IO_FDS: "As
    elsewhere, this indicates the full reply payload size needed.")
    """
    with _io_fds(vfu_client, vfu_region_index, need_entries=True) as full:
        needed = full.argsz
    with _io_fds(vfu_client, vfu_region_index, argsz=HEAD) as got:
        assert len(got.payload) <= HEAD, (
            f"with argsz 16 the reply payload is {len(got.payload)} bytes, more than the "
            "requested maximum"
        )
        assert got.argsz == needed, (
            f"with argsz 16 the reply states argsz {got.argsz}; the full reply needs {needed}"
        )
        assert got.index == vfu_region_index


def _first_io_region(client, num_regions: int) -> int:
    for index in range(num_regions):
        reply = client.region_io_fds(index, BIG_ARGSZ)
        reply.close_fds()
        if reply.ok and len(reply.payload) >= HEAD and _REQUEST.unpack_from(reply.payload)[3]:
            return index
    return 0


@case("region_io_fds/request-fields-zero", SHOULD, requires=("io_fds",))
@pytest.mark.parametrize(
    "flags, count",
    [(1, 0), (1 << 31, 0), (0, 1), (0, 0xFFFFFFFF)],
    ids=["flags-bit-0", "flags-bit-31", "count-1", "count-u32-max"],
)
def test_request_fields_zero(vfu_client, vfu_connect, vfu_observe, vfu_device, flags, count):
    """A request with non-zero flags or count is refused.

    Spec (VFIO_USER_DEVICE_GET_REGION_IO_FDS): "all other fields must be zero"
    "The client must set flags to zero and specify the region being queried in
    the index." Security Considerations: "Standard tools and mechanisms should
    be used on both sides to validate input".
    """
    index = _first_io_region(vfu_client, vfu_device.num_regions)
    msg_id = vfu_client.send(
        Command.DEVICE_GET_REGION_IO_FDS, RegionIoFdsRequest(BIG_ARGSZ, flags, index, count)
    )
    refused(
        vfu_client,
        msg_id,
        Command.DEVICE_GET_REGION_IO_FDS,
        vfu_connect,
        f"GET_REGION_IO_FDS of region {index} with flags {flags:#x} and count {count}",
        vfu_observe,
    )


@case("region_io_fds/index-out-of-range", MUST, requires=("io_fds",))
@pytest.mark.parametrize("past", [0, None], ids=["num_regions", "u32-max"])
def test_index_out_of_range(vfu_client, vfu_connect, vfu_observe, vfu_device, past):
    """GET_REGION_IO_FDS of an index at or past num_regions fails.

    Spec (VFIO_USER_DEVICE_GET_INFO): "num_regions is the number of memory
    regions that the device exposes." (GET_REGION_IO_FDS: "index is the index
    of memory region being queried")
    """
    index = 0xFFFFFFFF if past is None else vfu_device.num_regions + past
    msg_id = vfu_client.send(
        Command.DEVICE_GET_REGION_IO_FDS, RegionIoFdsRequest(BIG_ARGSZ, 0, index, 0)
    )
    refused(
        vfu_client,
        msg_id,
        Command.DEVICE_GET_REGION_IO_FDS,
        vfu_connect,
        f"GET_REGION_IO_FDS of region {index} (num_regions is {vfu_device.num_regions})",
        vfu_observe,
    )


@case("region_io_fds/argsz-below-head", MUST, requires=("io_fds",))
def test_argsz_below_head(vfu_client, vfu_connect, vfu_observe, vfu_device):
    """A request argsz (8) below the 16-byte reply head does not upset the server.

    Spec (Message sizes): argsz "defines the maximum expected reply payload
    size, which should be at least the size of the fixed reply payload
    headers defined here." The spec is silent on a smaller one; robustness.
    """
    index = _first_io_region(vfu_client, vfu_device.num_regions)
    msg_id = vfu_client.send(Command.DEVICE_GET_REGION_IO_FDS, RegionIoFdsRequest(8, 0, index, 0))
    reply = answer(
        vfu_client,
        msg_id,
        Command.DEVICE_GET_REGION_IO_FDS,
        vfu_connect,
        f"GET_REGION_IO_FDS of region {index} with argsz 8",
    )
    if reply is not None:
        reply.close_fds()
        if reply.ok:
            vfu_observe(
                f"the server answered GET_REGION_IO_FDS with argsz 8 with a "
                f"{len(reply.payload)}-byte payload"
            )
