"""VFIO_USER_DEVICE_GET_REGION_INFO: what each region is, its mmap fd and capabilities."""

from __future__ import annotations

import contextlib
import mmap
import os
import struct

import pytest

from pytest_vfiouser import MAY, MUST, SHOULD, case
from pytest_vfiouser.protocol import (
    CAP_HEADER_SIZE,
    REGION_INFO_SIZE,
    VFIO_REGION_SUBTYPE_MIGRATION,
    VFIO_REGION_TYPE_MIGRATION,
    Command,
    RegionCapId,
    RegionFlags,
    RegionInfo,
    RegionTypeCap,
    SparseMmapCap,
)

from ._support import accepted, refused

BIG_ARGSZ = 1 << 16  # a request argsz large enough for any capability chain
# A plain int: ~ on an IntFlag complements within its members only (always 0 here).
_DEFINED_FLAGS = int(RegionFlags.READ | RegionFlags.WRITE | RegionFlags.MMAP | RegionFlags.CAPS)
_CAP_HEADER = struct.Struct("<HHI")
COMPARE = 4096  # bytes compared at each end of a mapped area


def _info(client, index: int, argsz: int = BIG_ARGSZ):
    """The full GET_REGION_INFO reply of ``index``, fds closed."""
    reply = accepted(
        client.region_info(index, argsz),
        f"DEVICE_GET_REGION_INFO of region {index} (below num_regions)",
    )
    reply.close_fds()
    return reply


@contextlib.contextmanager
def _info_with_fd(client, index: int):
    """(reply, fd) of ``index``: the first fd the reply carried (None if none); all closed after."""
    reply = accepted(
        client.region_info(index, BIG_ARGSZ),
        f"DEVICE_GET_REGION_INFO of region {index} (below num_regions)",
    )
    fds = reply.take_fds()
    try:
        yield reply, (fds[0] if fds else None)
    finally:
        for fd in fds:
            os.close(fd)


def _need(cond: bool, reason: str) -> None:
    if not cond:
        pytest.skip(reason)


def _areas(info: RegionInfo) -> tuple[tuple[int, int], ...]:
    """The mmappable (offset, size) areas: the sparse mmap areas, else the whole region."""
    sparse = info.cap(SparseMmapCap)
    if sparse is not None:
        return tuple((o, s) for o, s in sparse.areas if s)
    return ((0, info.size),)


def _prot(flags: int) -> int:
    prot = mmap.PROT_READ if flags & RegionFlags.READ or not flags & RegionFlags.WRITE else 0
    return prot | (mmap.PROT_WRITE if flags & RegionFlags.WRITE else 0)


def _mmap_area(fd: int, info: RegionInfo, area_offset: int, size: int) -> mmap.mmap:
    try:
        return mmap.mmap(
            fd, size, mmap.MAP_SHARED, _prot(info.flags), offset=info.offset + area_offset
        )
    except (OSError, ValueError, OverflowError) as e:
        raise AssertionError(
            f"mmap() of region {info.index}'s fd at offset {info.offset:#x} + "
            f"{area_offset:#x}, {size:#x} bytes, failed: {e}"
        ) from e


def _region_read(client, index: int, offset: int, count: int) -> bytes:
    """REGION_READ of [offset, +count) in pieces within the server's max_data_xfer_size."""
    step = max(1, min(client.server_caps.max_data_xfer_size, 1 << 16))
    out = bytearray()
    for pos in range(offset, offset + count, step):
        n = min(step, offset + count - pos)
        reply = accepted(
            client.region_read(index, pos, n), f"REGION_READ of region {index} [{pos:#x}, +{n:#x})"
        )
        out += reply.body.data
    return bytes(out)


def _windows(offset: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the first and last COMPARE bytes of an area."""
    if size <= 2 * COMPARE:
        return [(offset, size)]
    return [(offset, COMPARE), (offset + size - COMPARE, COMPARE)]


# ---------------------------------------------------------------- the structure


@case("region_info/index-echoed", MUST)
def test_index_echoed(vfu_client, vfu_region_index):
    """The reply's index is the index queried.

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "index is the index of memory
    region being queried"
    """
    info = _info(vfu_client, vfu_region_index).body
    assert info.index == vfu_region_index, (
        f"the reply for region {vfu_region_index} states index {info.index}"
    )


@case("region_info/flags-defined", MUST)
def test_flags_defined(vfu_client, vfu_region_index):
    """The reply's flags use only READ, WRITE, MMAP and CAPS (bits 0-3).

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "flags are attributes of the
    region: VFIO_REGION_INFO_FLAG_READ ... VFIO_REGION_INFO_FLAG_WRITE ...
    VFIO_REGION_INFO_FLAG_MMAP ... VFIO_REGION_INFO_FLAG_CAPS"
    """
    info = _info(vfu_client, vfu_region_index).body
    assert not info.flags & ~_DEFINED_FLAGS, (
        f"region {vfu_region_index} flags {info.flags:#x} set undefined bits "
        f"{info.flags & ~_DEFINED_FLAGS:#x}"
    )


@case("region_info/argsz-full", MUST)
def test_argsz_full(vfu_client, vfu_region_index):
    """With a large request argsz, the reply is complete: its size is its argsz, 32 without
    capabilities, more with them.

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "argsz is the size required for the
    full reply payload (region info structure plus the size of any region
    capabilities)"; "VFIO_REGION_INFO_FLAG_CAPS indicates additional
    capabilities found in the reply."
    """
    reply = _info(vfu_client, vfu_region_index)
    info = reply.body
    assert len(reply.payload) == info.argsz, (
        f"region {vfu_region_index}: the reply payload is {len(reply.payload)} bytes but "
        f"states argsz {info.argsz} (the request allowed {BIG_ARGSZ})"
    )
    if info.flags & RegionFlags.CAPS:
        assert info.argsz > REGION_INFO_SIZE, (
            f"region {vfu_region_index} sets VFIO_REGION_INFO_FLAG_CAPS but argsz "
            f"{info.argsz} leaves no room for capabilities"
        )
    else:
        assert info.argsz == REGION_INFO_SIZE, (
            f"region {vfu_region_index} has no VFIO_REGION_INFO_FLAG_CAPS, yet argsz is "
            f"{info.argsz}, not the 32-byte structure"
        )


@case("region_info/small-argsz", MUST)
def test_small_argsz(vfu_client, vfu_observe, vfu_region_index):
    """A request argsz of 32 for a region with capabilities gets the 32-byte structure and
    the argsz needed for the full reply. Whether CAPS stays set there is the server's
    choice (noted when it does: QEMU's client refuses it).

    Spec (Message sizes): "In a reply, the server sets argsz field to the size
    needed for a full payload size. ... This may be larger than the requested
    maximum size: in that case, the full payload is not included in the reply,
    but the argsz field in the reply indicates the needed size"
    """
    full = _info(vfu_client, vfu_region_index).body
    _need(
        full.argsz > REGION_INFO_SIZE,
        f"region {vfu_region_index} has no capabilities: 32 bytes is its full reply",
    )
    reply = accepted(
        vfu_client.region_info(vfu_region_index, REGION_INFO_SIZE),
        f"DEVICE_GET_REGION_INFO of region {vfu_region_index} with argsz 32",
    )
    fds = reply.fd_count
    reply.close_fds()
    assert len(reply.payload) == REGION_INFO_SIZE, (
        f"with argsz 32 the reply payload is {len(reply.payload)} bytes, more than the "
        "requested maximum"
        if len(reply.payload) > REGION_INFO_SIZE
        else f"with argsz 32 the reply payload is {len(reply.payload)} bytes"
    )
    info = RegionInfo.unpack(reply.payload)
    assert info.argsz == full.argsz, (
        f"with argsz 32 the reply states argsz {info.argsz}; the full reply needs {full.argsz}"
    )
    assert info.index == vfu_region_index
    if info.flags & RegionFlags.CAPS:
        # "VFIO_REGION_INFO_FLAG_CAPS indicates additional capabilities found in the
        # reply", and none is; the kernel answers so too (the struct is its), so no FAIL.
        vfu_observe(
            f"region {vfu_region_index}: the reply to argsz 32 keeps CAPS (cap_offset "
            f"{info.cap_offset}) though no capability is in it; QEMU's vfio-user client "
            "refuses a CAPS reply whose cap_offset is outside it (EINVAL), libvfio-user "
            "clears CAPS there"
        )
    if info.flags & RegionFlags.MMAP and not fds:
        # "When this flag is set, the reply will include a file descriptor", yet
        # libvfio-user sends it with the capabilities only (and its client expects it
        # there): noted, not failed, while the spec's authors' peers agree on it.
        vfu_observe(
            f"region {vfu_region_index}: the reply to argsz 32 sets MMAP but carries no file "
            "descriptor (it comes with the full reply)"
        )


@case("region_info/mmap-offset-usable", MUST)
def test_mmap_offset_usable(vfu_client, vfu_region_index):
    """A region with the MMAP flag has a size and an offset mmap() can take (page-aligned,
    offset + size within off_t).

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "offset is the offset that should
    be given to the mmap() system call for regions with the MMAP attribute."
    """
    info = _info(vfu_client, vfu_region_index).body
    _need(info.flags & RegionFlags.MMAP, f"region {vfu_region_index} has no MMAP flag")
    assert info.size > 0, f"region {vfu_region_index} has the MMAP flag but size 0"
    assert info.offset % mmap.PAGESIZE == 0, (
        f"region {vfu_region_index}'s mmap offset {info.offset:#x} is not a multiple of "
        f"the page size {mmap.PAGESIZE:#x}: mmap() cannot take it"
    )
    assert info.offset + info.size <= 1 << 63, (
        f"region {vfu_region_index}'s offset {info.offset:#x} + size {info.size:#x} "
        "does not fit mmap()'s off_t"
    )


@case("region_info/matches-profile", MUST)
@pytest.mark.parametrize("field", ["size", "flags"])
def test_matches_profile(vfu_client, vfu_device, vfu_region_index, field):
    """GET_REGION_INFO reports the size and flags the device profile expects.

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "size is the size of the region."
    "flags are attributes of the region"
    """
    profile = vfu_device.region_profile(vfu_region_index)
    expected = getattr(profile, field) if profile is not None else None
    _need(expected is not None, f"needs profile: regions[index={vfu_region_index}].{field}")
    info = _info(vfu_client, vfu_region_index).body
    got = getattr(info, field)
    assert got == expected, (
        f"region {vfu_region_index} reports {field} {got:#x}, the profile expects {expected:#x}"
    )


@case("region_info/index-out-of-range", MUST)
@pytest.mark.parametrize("past", [0, 1, None], ids=["num_regions", "num_regions+1", "u32-max"])
def test_index_out_of_range(vfu_client, vfu_connect, vfu_observe, vfu_device, past):
    """GET_REGION_INFO of an index at or past num_regions fails.

    Spec (VFIO_USER_DEVICE_GET_INFO): "num_regions is the number of memory
    regions that the device exposes." (there is no region to describe)
    """
    index = 0xFFFFFFFF if past is None else vfu_device.num_regions + past
    msg_id = vfu_client.send(Command.DEVICE_GET_REGION_INFO, RegionInfo(BIG_ARGSZ, index=index))
    refused(
        vfu_client,
        msg_id,
        Command.DEVICE_GET_REGION_INFO,
        vfu_connect,
        f"GET_REGION_INFO of region {index} (num_regions is {vfu_device.num_regions})",
        vfu_observe,
    )


# ---------------------------------------------------------------- mmap


@case("region_info/mmap-fd", MUST, requires=("mmap",))
def test_mmap_fd(vfu_client, vfu_region_index):
    """The reply for a region with the MMAP flag carries a file descriptor.

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "VFIO_REGION_INFO_FLAG_MMAP
    specifies the client can mmap() the region. When this flag is set, the
    reply will include a file descriptor in its meta-data."
    """
    with _info_with_fd(vfu_client, vfu_region_index) as (reply, fd):
        _need(reply.body.flags & RegionFlags.MMAP, f"region {vfu_region_index} has no MMAP flag")
        assert fd is not None, (
            f"region {vfu_region_index} has the MMAP flag but its reply carries no file descriptor"
        )


@case("region_info/mmap-maps", MUST, requires=("mmap",))
def test_mmap_maps(vfu_client, vfu_region_index):
    """The fd mmap()s at the reply's offset over the region, or over each sparse mmap area.

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "offset is the offset that should
    be given to the mmap() system call for regions with the MMAP attribute. It
    is also used as the base offset when mapping a VFIO sparse mmap area"
    """
    with _info_with_fd(vfu_client, vfu_region_index) as (reply, fd):
        info = reply.body
        _need(info.flags & RegionFlags.MMAP, f"region {vfu_region_index} has no MMAP flag")
        assert fd is not None, f"region {vfu_region_index}'s reply carries no file descriptor"
        for offset, size in _areas(info):
            _mmap_area(fd, info, offset, size).close()


@case("region_info/mmap-same-bytes", MUST, requires=("mmap",))
def test_mmap_same_bytes(vfu_client, vfu_region_index):
    """What the mmap shows is what REGION_READ returns (each end of each mapped area).

    Spec (Read and Write Operations): "Note that all of these operations must
    be supported by the client and/or server, even if the corresponding memory
    or device region has been shared as mappable." (Region Information: "When
    a device region can be mapped by the client, the server provides a file
    descriptor which the client can mmap().")
    """
    with _info_with_fd(vfu_client, vfu_region_index) as (reply, fd):
        info = reply.body
        _need(info.flags & RegionFlags.MMAP, f"region {vfu_region_index} has no MMAP flag")
        _need(info.flags & RegionFlags.READ, f"region {vfu_region_index} is not readable")
        assert fd is not None, f"region {vfu_region_index}'s reply carries no file descriptor"
        for area, size in _areas(info):
            with _mmap_area(fd, info, area, size) as m:
                for off, n in _windows(0, size):
                    wire = _region_read(vfu_client, vfu_region_index, area + off, n)
                    assert m[off : off + n] == wire, (
                        f"region {vfu_region_index} [{area + off:#x}, +{n:#x}): the mmap "
                        "shows other bytes than REGION_READ returns"
                    )


def _scratch_in_mapped(vfu_device, info: RegionInfo, limit: int = 64):
    """(region offset, length) of a scratch range inside a mapped area, at most ``limit``."""
    for s_off, s_len in vfu_device.scratch(info.index):
        for a_off, a_len in _areas(info):
            lo, hi = max(s_off, a_off), min(s_off + s_len, a_off + a_len)
            if lo < hi:
                return lo, min(hi - lo, limit), a_off, a_len
    return None


@case("region_info/mmap-writes-visible", MUST, requires=("mmap",))
def test_mmap_writes_visible(vfu_client, vfu_device, vfu_region_index):
    """A write through the mmap is seen by REGION_READ, a REGION_WRITE is seen in the mmap
    (in a scratch range of the profile; the bytes are restored).

    Spec (Region Information): "The server is responsible for polling for
    client updates to memory mapped regions." (Read and Write Operations:
    "all of these operations must be supported ... even if the corresponding
    memory or device region has been shared as mappable.")
    """
    with _info_with_fd(vfu_client, vfu_region_index) as (reply, fd):
        info = reply.body
        rw = RegionFlags.MMAP | RegionFlags.READ | RegionFlags.WRITE
        _need(
            info.flags & rw == rw,
            f"region {vfu_region_index} is not mmappable, readable and writable",
        )
        found = _scratch_in_mapped(vfu_device, info)
        _need(
            found is not None,
            f"needs profile: a scratch range of region {vfu_region_index} inside an mmappable area",
        )
        offset, n, area, area_size = found
        assert fd is not None, f"region {vfu_region_index}'s reply carries no file descriptor"
        with _mmap_area(fd, info, area, area_size) as m:
            at = offset - area
            original = bytes(m[at : at + n])
            try:
                one = bytes((0xA5 ^ i) & 0xFF for i in range(n))
                m[at : at + n] = one
                assert _region_read(vfu_client, vfu_region_index, offset, n) == one, (
                    f"region {vfu_region_index} [{offset:#x}, +{n:#x}): REGION_READ does not "
                    "return what was written through the mmap"
                )
                two = bytes((0x3C + 7 * i) & 0xFF for i in range(n))
                accepted(
                    vfu_client.region_write(vfu_region_index, offset, two),
                    f"REGION_WRITE of region {vfu_region_index} [{offset:#x}, +{n:#x})",
                )
                assert bytes(m[at : at + n]) == two, (
                    f"region {vfu_region_index} [{offset:#x}, +{n:#x}): the mmap does not show "
                    "what REGION_WRITE wrote"
                )
            finally:
                m[at : at + n] = original


# ---------------------------------------------------------------- capabilities


def _chain(payload: bytes, cap_offset: int) -> tuple[list[tuple[int, int, int, int]], str]:
    """Walk the capability chain: ([(offset, id, version, next)], problem or "")."""
    out, seen, pos = [], set(), cap_offset
    while pos:
        if pos in seen:
            return out, f"the capability chain loops back to offset {pos}"
        if pos < REGION_INFO_SIZE:
            return out, f"a capability at offset {pos} overlaps the 32-byte region info"
        if pos + CAP_HEADER_SIZE > len(payload):
            return out, (
                f"a capability header at offset {pos} lies outside the {len(payload)}-byte reply"
            )
        seen.add(pos)
        cap_id, version, nxt = _CAP_HEADER.unpack_from(payload, pos)
        out.append((pos, cap_id, version, nxt))
        pos = nxt
    return out, ""


@case("region_info/caps-chain", MUST)
def test_caps_chain(vfu_client, vfu_observe, vfu_region_index):
    """With CAPS set: cap_offset is at least 32 and the chain is well formed (every header
    inside argsz, next zero or in bounds, no loop).

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "cap_offset describes where
    additional region capabilities can be found. cap_offset is relative to the
    beginning of the VFIO region info structure." "next specifies the offset of
    the next capability in the capability list. It is relative to the
    beginning of the VFIO region info structure."
    """
    reply = _info(vfu_client, vfu_region_index)
    info = RegionInfo.unpack(reply.payload[:REGION_INFO_SIZE])
    _need(info.flags & RegionFlags.CAPS, f"region {vfu_region_index} has no CAPS flag")
    assert info.cap_offset >= REGION_INFO_SIZE, (
        f"region {vfu_region_index} sets CAPS but cap_offset is {info.cap_offset}, inside the "
        "32-byte region info structure"
    )
    payload = reply.payload[: info.argsz]
    caps, problem = _chain(payload, info.cap_offset)
    assert not problem, f"region {vfu_region_index}: {problem}"
    ends = sorted(p for p, *_ in caps) + [len(payload)]
    for pos, cap_id, _version, nxt in caps:
        if nxt and nxt <= pos:
            vfu_observe(
                f"region {vfu_region_index}: the capability at {pos} links backwards "
                f"to {nxt} (the spec does not forbid it; <linux/vfio.h> chains go "
                "forward)"
            )
        room = ends[ends.index(pos) + 1] - pos
        need = {
            RegionCapId.SPARSE_MMAP: CAP_HEADER_SIZE + 8,
            RegionCapId.TYPE: CAP_HEADER_SIZE + 8,
        }.get(cap_id, CAP_HEADER_SIZE)
        if cap_id == RegionCapId.SPARSE_MMAP and room >= CAP_HEADER_SIZE + 4:
            (nr_areas,) = struct.unpack_from("<I", payload, pos + CAP_HEADER_SIZE)
            need += 16 * nr_areas
        assert need <= room, (
            f"region {vfu_region_index}: the capability id {cap_id} at offset {pos} needs "
            f"{need} bytes, only {room} lie before the next capability or the end of argsz"
        )


@case("region_info/sparse-mmap-cap", MUST, requires=("sparse_mmap",))
def test_sparse_mmap_cap(vfu_client, vfu_region_index):
    """A sparse mmap capability is version 1, on a region with the MMAP flag, and its areas
    lie inside the region.

    Spec (VFIO sparse mmap cap header): "version 0x1"; "This capability is
    defined when only a subrange of the region supports direct access by the
    client via mmap()." "offset and size describe a single area that can be
    mapped by the client."
    """
    info = _info(vfu_client, vfu_region_index).body
    sparse = info.cap(SparseMmapCap)
    _need(sparse is not None, f"region {vfu_region_index} has no sparse mmap capability")
    assert sparse.version == 1, f"the sparse mmap capability has version {sparse.version}, not 1"
    assert info.flags & RegionFlags.MMAP, (
        f"region {vfu_region_index} has a sparse mmap capability but no MMAP flag"
    )
    for offset, size in sparse.areas:
        assert offset + size <= info.size, (
            f"region {vfu_region_index}: sparse mmap area [{offset:#x}, +{size:#x}) ends past "
            f"the region's size {info.size:#x}"
        )


@case("region_info/sparse-areas-disjoint", MAY, requires=("sparse_mmap",))
def test_sparse_areas_disjoint(vfu_client, vfu_region_index):
    """The sparse mmap areas of a region do not overlap each other.

    Spec (VFIO region info cap sparse mmap): "offset and size describe a single
    area that can be mapped by the client. There will be nr_areas pairs of
    offset and size." (The spec is silent on overlapping areas.)
    """
    info = _info(vfu_client, vfu_region_index).body
    sparse = info.cap(SparseMmapCap)
    _need(sparse is not None, f"region {vfu_region_index} has no sparse mmap capability")
    areas = sorted(sparse.areas)
    for (a_off, a_size), (b_off, _) in zip(areas, areas[1:], strict=False):
        assert a_off + a_size <= b_off, (
            f"region {vfu_region_index}: sparse mmap areas at {a_off:#x} (+{a_size:#x}) and "
            f"{b_off:#x} overlap"
        )


@case("region_info/type-cap", MUST, revisions=("0.9.1",))
def test_type_cap(vfu_client, vfu_region_index):
    """A region type capability is version 1 and names the migration region (type 3,
    subtype 1), the only device-specific type vfio-user supports.

    Spec (VFIO region info type cap): "The only device-specific region type and
    subtype supported by vfio-user is VFIO_REGION_TYPE_MIGRATION (3) and
    VFIO_REGION_SUBTYPE_MIGRATION (1)."
    """
    info = _info(vfu_client, vfu_region_index).body
    cap = info.cap(RegionTypeCap)
    _need(cap is not None, f"region {vfu_region_index} has no region type capability")
    assert cap.version == 1, f"the region type capability has version {cap.version}, not 1"
    assert (cap.type, cap.subtype) == (VFIO_REGION_TYPE_MIGRATION, VFIO_REGION_SUBTYPE_MIGRATION), (
        f"region {vfu_region_index} has region type {cap.type}/{cap.subtype}; the only one "
        "vfio-user supports is 3/1 (migration)"
    )


def _migration_view(vfu_connect, device):
    """(the server offers the migration capability, indexes of migration regions), asked on a
    connection that proposes migration, of each region the device reports."""
    client = vfu_connect()
    client.negotiate(capabilities=client.proposal(migration={"pgsize": mmap.PAGESIZE}))
    offered = client.server_caps.migration is not None
    regions = []
    for index in range(device.num_regions):
        cap = _info(client, index).body.cap(RegionTypeCap)
        if cap is not None and (cap.type, cap.subtype) == (
            VFIO_REGION_TYPE_MIGRATION,
            VFIO_REGION_SUBTYPE_MIGRATION,
        ):
            regions.append(index)
    return offered, regions


@case("region_info/migration-cap-has-region", MAY, revisions=("0.9.1",))
def test_migration_cap_has_region(vfu_connect, vfu_device):
    """A server that answers the migration capability has a migration region (type 3/1);
    without one, a 0.9.1 client cannot migrate it (an observation: no sentence says the
    capability needs the region).

    Spec (VFIO Device Migration Info): "A device may contain a migration region
    (of type VFIO_REGION_TYPE_MIGRATION)." (In 0.9.1 migration goes through
    that region; VERSION: "migration: Migration capability parameters. If
    missing then migration is not supported by the sender.")
    """
    offered, regions = _migration_view(vfu_connect, vfu_device)
    _need(offered, "the server does not offer the migration capability")
    assert regions, (
        "the server answers the migration capability but no region carries a "
        "region type capability 3/1 (VFIO_REGION_TYPE_MIGRATION)"
    )


@case("region_info/migration-region-has-cap", SHOULD, revisions=("0.9.1",))
def test_migration_region_has_cap(vfu_connect, vfu_device):
    """A device with a migration region answers the migration capability when proposed.

    Spec (VFIO_USER_VERSION): "migration: Migration capability parameters. If
    missing then migration is not supported by the sender."
    """
    offered, regions = _migration_view(vfu_connect, vfu_device)
    _need(bool(regions), "the device has no migration region")
    assert offered, (
        f"region {regions[0]} is a migration region (type 3/1), but the server "
        "does not answer the migration capability the client proposed"
    )
