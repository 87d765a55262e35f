"""VFIO_USER_REGION_READ and VFIO_USER_REGION_WRITE: device region access over the socket.

Writes go only where the device profile allows (scratch ranges); where a
case must write elsewhere to see the server refuse it, it writes back the
bytes the region already holds (when it can read them) or touches no byte
inside the region at all.
"""

from __future__ import annotations

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import Command, RegionAccess, RegionFlags, RegionRead, RegionWrite

from ._support import accepted, answer, first_scratch, pattern, send_refused

_U64 = 1 << 64
ACCESS = 4  # bytes per probing access: the size every register region accepts
SAMPLE = 64  # bytes written in a scratch range


def _region(vfu_device, index: int):
    info = vfu_device.region(index)
    if info is None:
        pytest.skip(
            f"region {index} could not be queried: "
            f"{vfu_device.errors.get(f'region {index}', 'no GET_REGION_INFO reply')}"
        )
    return info


def _need(cond, reason: str) -> None:
    if not cond:
        pytest.skip(reason)


def _first_region(vfu_device, flags: int, prefer_scratch: bool = False):
    """A region of non-zero size with ``flags`` (one with scratch ranges first, if asked)."""
    regions = vfu_device.regions_with(flags)
    if prefer_scratch:
        regions.sort(key=lambda r: not vfu_device.scratch(r.index))
    _need(regions, f"the device has no region with flags {RegionFlags(flags)!r} and a size")
    return regions[0]


def _read(client, index: int, offset: int, count: int) -> bytes:
    what = f"REGION_READ of region {index} [{offset:#x}, +{count:#x})"
    reply = accepted(client.region_read(index, offset, count), what)
    assert len(reply.payload) == RegionAccess.SIZE + count, (
        f"the reply to {what} has a {len(reply.payload)}-byte payload; it must be 16 + count "
        f"({16 + count})"
    )
    body = reply.body
    assert (body.offset, body.region, body.count) == (offset, index, count), (
        f"the reply to {what} states offset {body.offset:#x}, region {body.region}, count "
        f"{body.count}: not the request's"
    )
    return body.data


def _write(client, index: int, offset: int, data: bytes) -> None:
    what = f"REGION_WRITE of region {index} [{offset:#x}, +{len(data):#x})"
    reply = accepted(client.region_write(index, offset, data), what)
    assert len(reply.payload) == RegionAccess.SIZE, (
        f"the reply to {what} has a {len(reply.payload)}-byte payload; it is offset, region "
        "and count (16 bytes), with no data"
    )
    body = RegionAccess.unpack(reply.payload)
    assert (body.offset, body.region, body.count) == (offset, index, len(data)), (
        f"the reply to {what} states offset {body.offset:#x}, region {body.region}, count "
        f"{body.count}: not the request's"
    )


WIDTHS = (4, 8, 2, 1)  # access widths to try, the likeliest first


def _width(client, index: int, offset: int, size: int) -> int:
    """The first of WIDTHS (at most ``size``) that a REGION_READ at ``offset`` of region
    ``index`` is served with; skips (cannot judge) when none is. The spec requires no
    particular width, and registers often take only their own."""
    widths = [w for w in WIDTHS if w <= size - offset] or [size - offset]
    for n in widths:
        if client.region_read(index, offset, n).ok:
            return n
    pytest.skip(
        f"cannot judge: region {index} refuses a REGION_READ at {offset:#x} of each width "
        f"{widths}; the spec requires no particular access width"
    )


def _pattern(n: int, seed: int) -> bytes:
    return pattern(n, seed, 29)


# ---------------------------------------------------------------- replies


@case("region_rw/read-reply", MUST)
def test_read_reply(vfu_client, vfu_device, vfu_region_index):
    """A REGION_READ reply echoes offset, region and count and carries count bytes (at the
    start and at the end of each readable region).

    Spec (VFIO_USER_REGION_READ): Reply "offset into the region accessed.
    region is the index of the region accessed. count is the size of the data
    transferred. data is the data that was read from the device region."
    """
    info = _region(vfu_device, vfu_region_index)
    _need(
        info.flags & RegionFlags.READ and info.size,
        f"region {vfu_region_index} is not readable or has size 0",
    )
    n = _width(vfu_client, vfu_region_index, 0, info.size)
    _read(vfu_client, vfu_region_index, 0, n)
    _read(vfu_client, vfu_region_index, info.size - n, n)


@case("region_rw/write-reply", MUST)
def test_write_reply(vfu_client, vfu_device, vfu_region_index):
    """A REGION_WRITE reply echoes offset, region and count, with no data (in a scratch range).

    Spec (VFIO_USER_REGION_WRITE): Reply "offset into the region accessed.
    region is the index of the region accessed. count is the size of the data
    transferred."
    """
    scratch = vfu_device.scratch(vfu_region_index)
    _need(scratch, f"needs profile: a scratch range of region {vfu_region_index}")
    offset, length = scratch[0]
    _write(vfu_client, vfu_region_index, offset, _pattern(min(length, SAMPLE), 0x11))


@case("region_rw/write-read-back", MUST)
def test_write_read_back(vfu_client, vfu_device, vfu_region_index):
    """What REGION_WRITE wrote to a scratch range, REGION_READ returns (start and end of each
    range).

    Spec (Device Read and Write): "The server will reply with data from the
    device on read operations or an acknowledgement on write operations."
    (The profile's scratch ranges are memory tests may write and read back.)
    """
    scratch = vfu_device.scratch(vfu_region_index)
    _need(scratch, f"needs profile: a scratch range of region {vfu_region_index}")
    for n, (offset, length) in enumerate(scratch):
        size = min(length, SAMPLE)
        for at in sorted({offset, offset + length - size}):
            data = _pattern(size, 0x40 + n + at)
            _write(vfu_client, vfu_region_index, at, data)
            got = _read(vfu_client, vfu_region_index, at, size)
            assert got == data, (
                f"region {vfu_region_index} scratch [{at:#x}, +{size:#x}): REGION_READ returns "
                f"{got.hex()} after REGION_WRITE of {data.hex()}"
            )


@case("region_rw/mappable-serves-rw", MUST, requires=("mmap",))
def test_mappable_serves_rw(vfu_client, vfu_device, vfu_region_index):
    """A region shared as mappable still serves REGION_READ (and REGION_WRITE in scratch).

    Spec (Read and Write Operations): "Note that all of these operations must
    be supported by the client and/or server, even if the corresponding memory
    or device region has been shared as mappable."
    """
    info = _region(vfu_device, vfu_region_index)
    _need(info.flags & RegionFlags.MMAP and info.size, f"region {vfu_region_index} is not mappable")
    if info.flags & RegionFlags.READ:
        n = min(ACCESS, info.size)
        for offset in sorted({0, (info.size // 2) & ~(ACCESS - 1), info.size - n}):
            _read(vfu_client, vfu_region_index, offset, n)
    scratch = vfu_device.scratch(vfu_region_index)
    if info.flags & RegionFlags.WRITE and scratch:
        offset, length = scratch[0]
        data = _pattern(min(length, SAMPLE), 0x5A)
        _write(vfu_client, vfu_region_index, offset, data)
        if info.flags & RegionFlags.READ:
            assert _read(vfu_client, vfu_region_index, offset, len(data)) == data, (
                f"region {vfu_region_index} [{offset:#x}, +{len(data):#x}): REGION_READ does "
                "not return what REGION_WRITE wrote"
            )


@case("region_rw/count-at-max", MUST)
def test_count_at_max(vfu_client, vfu_device):
    """A REGION_READ of exactly the server's max_data_xfer_size succeeds.

    Spec (VFIO_USER_VERSION): "max_data_xfer_size: Maximum count for data
    transfer messages"; Read and Write Operations: "The count field must not
    exceed the value of max_data_xfer_size of the peer".
    """
    limit = vfu_client.server_caps.max_data_xfer_size
    regions = [r for r in vfu_device.regions_with(RegionFlags.READ) if r.size >= limit]
    _need(regions, f"no readable region holds max_data_xfer_size ({limit}) bytes")
    _read(vfu_client, regions[0].index, 0, limit)


@case("region_rw/count-zero", MUST)
@pytest.mark.parametrize("op", ["read", "write"])
def test_count_zero(vfu_client, vfu_connect, vfu_device, op):
    """An access of count 0 does not upset the server; a success reply is the reply's
    16-byte head (offset, region, count) with no data.

    Spec (VFIO_USER_REGION_READ): "count is the size of the data to be
    transferred." The spec is silent on count 0; robustness (success and an
    error reply are both conforming). A success reply has the Reply layout: offset
    (8 bytes), region (4), count (4), then the data.
    """
    flag = RegionFlags.READ if op == "read" else RegionFlags.WRITE
    info = _first_region(vfu_device, flag)
    command = Command.REGION_READ if op == "read" else Command.REGION_WRITE
    payload = (RegionRead if op == "read" else RegionWrite)(0, info.index, 0)
    msg_id = vfu_client.send(command, payload)
    what = f"a REGION_{op.upper()} of count 0 at offset 0 of region {info.index}"
    reply = answer(vfu_client, msg_id, command, vfu_connect, what)
    if reply is not None and reply.ok:
        assert len(reply.payload) == RegionAccess.SIZE, (
            f"the success reply to {what} has a {len(reply.payload)}-byte payload; the Reply "
            "is offset (8 bytes), region (4) and count (4), then count (0) bytes of data"
        )


# ---------------------------------------------------------------- refusals


@case("region_rw/count-above-max", SHOULD)
@pytest.mark.parametrize("op", ["read", "write"])
def test_count_above_max(vfu_client, vfu_connect, vfu_observe, vfu_device, op):
    """An access whose count is above the server's max_data_xfer_size is refused.

    Spec (Read and Write Operations): "The count field must not exceed the
    value of max_data_xfer_size of the peer, for both reads and writes."
    Security Considerations: "Standard tools and mechanisms should be used on
    both sides to validate input". (Writes go at a scratch range.)
    """
    limit = vfu_client.server_caps.max_data_xfer_size
    count = limit + 1
    # Only the count may be at fault: the access fits its region (or scratch range), and
    # the same access of max_data_xfer_size bytes is served (the positive control).
    if op == "read":
        _first_region(vfu_device, RegionFlags.READ)  # skips if there is none
        info = max(vfu_device.regions_with(RegionFlags.READ), key=lambda r: r.size)
        index, offset = info.index, 0
        _need(
            info.size >= count,
            f"cannot judge: no readable region holds max_data_xfer_size + 1 ({count}) bytes, "
            "so the read would also run past the region's end",
        )
        accepted(
            vfu_client.region_read(index, offset, limit),
            f"REGION_READ of region {index} with count {limit} (max_data_xfer_size, the control)",
        )
        command, payload = Command.REGION_READ, RegionRead(offset, index, count)
    else:
        first_scratch(vfu_device)  # skips if there is none
        index, offset, length = max(vfu_device.scratch_ranges(), key=lambda r: r[2])
        _need(
            length >= count,
            f"cannot judge: the scratch range [{offset:#x}, +{length:#x}) of region {index} "
            f"holds fewer than max_data_xfer_size + 1 ({count}) bytes",
        )
        accepted(
            vfu_client.region_write(index, offset, bytes(limit)),
            f"REGION_WRITE of region {index} with count {limit} (max_data_xfer_size, the control)",
        )
        command = Command.REGION_WRITE
        payload = RegionWrite(offset, index, count, bytes(count))
    send_refused(
        vfu_client,
        command,
        payload.pack(),
        vfu_connect,
        f"a REGION_{op.upper()} of region {index} with count {count}, above the "
        f"server's max_data_xfer_size",
        vfu_observe,
    )


# (offset from the region's size or absolute, count): None offsets are absolute.
_OUT_OF_BOUNDS = {
    "at-end": (0, None, 1),
    "across-end": (-2, None, ACCESS),
    "offset-2-63": (None, 1 << 63, ACCESS),
    "offset-wraps": (None, _U64 - 2, ACCESS),
}


def _in_bounds_control(client, op: str, info, count: int) -> None:
    """The positive control of an out-of-bounds case: the same access of ``count`` bytes
    ending at the region's end is served (a write writes back what the region holds), or
    the case cannot judge: a refusal would prove nothing about the bounds."""
    end = info.size - count
    what = f"region {info.index} [{end:#x}, +{count:#x})"
    readable = info.flags & RegionFlags.READ
    held = client.region_read(info.index, end, count) if readable else None
    if held is None or not held.ok:
        pytest.skip(
            f"cannot judge: the in-bounds REGION_READ of {what} (to {op} it as a control) "
            f"{'is refused' if readable else 'is not possible'}, so a refusal past the "
            "region's end would prove nothing"
        )
    if op == "write" and not client.region_write(info.index, end, held.body.data).ok:
        pytest.skip(
            f"cannot judge: the in-bounds REGION_WRITE of {what} (its own bytes written "
            "back) is refused, so a refusal past the region's end would prove nothing"
        )


@case("region_rw/out-of-bounds", MUST)
@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("where", list(_OUT_OF_BOUNDS))
def test_out_of_bounds(vfu_client, vfu_connect, vfu_observe, vfu_device, op, where):
    """An access that runs past the end of the region (or wraps past 2**64) is refused.

    Spec (VFIO_USER_REGION_READ): "offset into the region being accessed."
    (VFIO_USER_DEVICE_GET_REGION_INFO: "size is the size of the region."):
    bytes past the size are not part of the region.
    """
    rel, absolute, count = _OUT_OF_BOUNDS[where]
    flag = RegionFlags.READ if op == "read" else RegionFlags.WRITE
    info = _first_region(vfu_device, flag, prefer_scratch=op == "write")
    offset = absolute if absolute is not None else info.size + rel
    _in_bounds_control(vfu_client, op, info, min(count, info.size))
    what = (
        f"a REGION_{op.upper()} of region {info.index} [{offset:#x}, +{count:#x}) "
        f"(the region is {info.size:#x} bytes)"
    )
    if op == "read":
        payload = RegionRead(offset, info.index, count)
    else:
        inside = max(0, min(info.size - offset, count))
        data = bytes(count)
        if inside:  # write back what the region holds, in case the server accepts
            _need(
                info.flags & RegionFlags.READ,
                f"region {info.index} is not readable: cannot write its own bytes back",
            )
            if not vfu_client.region_read(info.index, offset, inside).ok:
                pytest.skip(
                    f"cannot judge: region {info.index} refuses a REGION_READ of the "
                    f"{inside} bytes at {offset:#x} inside it (a width it does not take), "
                    "so the write could not write back what the region holds"
                )
            data = _read(vfu_client, info.index, offset, inside) + bytes(count - inside)
        payload = RegionWrite(offset, info.index, count, data)
    command = Command.REGION_READ if op == "read" else Command.REGION_WRITE
    send_refused(vfu_client, command, payload.pack(), vfu_connect, what, vfu_observe)


@case("region_rw/unknown-region", MUST)
@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("past", [0, None], ids=["num_regions", "u32-max"])
def test_unknown_region(vfu_client, vfu_connect, vfu_observe, vfu_device, op, past):
    """An access to a region index at or past num_regions is refused.

    Spec (VFIO_USER_REGION_READ): "region is the index of the region being
    accessed." (VFIO_USER_DEVICE_GET_INFO: "num_regions is the number of
    memory regions that the device exposes.")
    """
    index = 0xFFFFFFFF if past is None else vfu_device.num_regions + past
    if op == "read":
        command, payload = Command.REGION_READ, RegionRead(0, index, ACCESS)
    else:
        command, payload = Command.REGION_WRITE, RegionWrite(0, index, ACCESS, bytes(ACCESS))
    send_refused(
        vfu_client,
        command,
        payload.pack(),
        vfu_connect,
        f"a REGION_{op.upper()} of region {index} (num_regions is {vfu_device.num_regions})",
        vfu_observe,
    )


_MISMATCHED = {
    "count-above-data": (8, 4),
    "count-below-data": (4, 8),
    "count-zero-with-data": (0, 4),
}


@case("region_rw/write-count-mismatch", SHOULD)
@pytest.mark.parametrize("mismatch", list(_MISMATCHED))
def test_write_count_mismatch(vfu_client, vfu_connect, vfu_observe, vfu_device, mismatch):
    """A REGION_WRITE whose data is not count bytes long is refused (at a scratch range).

    Spec (VFIO_USER_REGION_WRITE): "count is the size of the data to be
    transferred. data is the data to write". Security Considerations:
    "Standard tools and mechanisms should be used on both sides to validate
    input".
    """
    index, offset, length = first_scratch(vfu_device)
    _need(length >= 8, "needs profile: a scratch range of at least 8 bytes")
    count, size = _MISMATCHED[mismatch]
    payload = RegionAccess(offset, index, count).pack() + _pattern(size, 0x77)
    send_refused(
        vfu_client,
        Command.REGION_WRITE,
        payload,
        vfu_connect,
        f"a REGION_WRITE of region {index} with count {count} and {size} data bytes",
        vfu_observe,
    )


@case("region_rw/short-request", SHOULD)
@pytest.mark.parametrize("op", ["read", "write"])
def test_short_request(vfu_client, vfu_connect, vfu_observe, op):
    """A REGION_READ or REGION_WRITE shorter than its 16-byte offset/region/count is refused.

    Spec (VFIO_USER_REGION_READ): the request is "offset 0 8, region 8 4,
    count 12 4". Security Considerations: "Standard tools and mechanisms
    should be used on both sides to validate input".
    """
    command = Command.REGION_READ if op == "read" else Command.REGION_WRITE
    payload = RegionAccess(0, 0, 0).pack()[:12]
    send_refused(
        vfu_client,
        command,
        payload,
        vfu_connect,
        f"a REGION_{op.upper()} with a 12-byte payload",
        vfu_observe,
    )


@case("region_rw/read-not-readable", SHOULD)
def test_read_not_readable(vfu_client, vfu_connect, vfu_observe, vfu_device, vfu_region_index):
    """REGION_READ of a region without VFIO_REGION_INFO_FLAG_READ is refused.

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "VFIO_REGION_INFO_FLAG_READ allows
    client read access to the region."
    """
    info = _region(vfu_device, vfu_region_index)
    _need(
        info.size and not info.flags & RegionFlags.READ,
        f"region {vfu_region_index} is readable or has size 0",
    )
    n = min(ACCESS, info.size)
    send_refused(
        vfu_client,
        Command.REGION_READ,
        RegionRead(0, vfu_region_index, n).pack(),
        vfu_connect,
        f"a REGION_READ of region {vfu_region_index}, which lacks the READ flag",
        vfu_observe,
    )


@case("region_rw/write-not-writable", SHOULD)
def test_write_not_writable(vfu_client, vfu_connect, vfu_observe, vfu_device, vfu_region_index):
    """REGION_WRITE to a region without VFIO_REGION_INFO_FLAG_WRITE is refused (the data
    written is what the region holds, when it can be read).

    Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "VFIO_REGION_INFO_FLAG_WRITE allows
    client write access to the region."
    """
    info = _region(vfu_device, vfu_region_index)
    _need(
        info.size and not info.flags & RegionFlags.WRITE,
        f"region {vfu_region_index} is writable or has size 0",
    )
    n = min(ACCESS, info.size)
    data = _read(vfu_client, vfu_region_index, 0, n) if info.flags & RegionFlags.READ else bytes(n)
    send_refused(
        vfu_client,
        Command.REGION_WRITE,
        RegionWrite(0, vfu_region_index, n, data).pack(),
        vfu_connect,
        f"a REGION_WRITE to region {vfu_region_index}, which lacks the WRITE flag",
        vfu_observe,
    )
