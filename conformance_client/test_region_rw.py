"""VFIO_USER_REGION_READ and VFIO_USER_REGION_WRITE, as the client sends them: within
the server's transfer size."""

from __future__ import annotations

import struct

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import Command

from ._support import listed, need, sent, server_limit

_COUNT = struct.Struct("<12xI")  # offset u64, region u32, count u32


def _within_limit(sessions) -> None:
    """The case fails for each REGION_READ/WRITE above its session's server's
    max_data_xfer_size; it cannot judge a run without one."""
    need(
        sent(sessions, Command.REGION_READ) + sent(sessions, Command.REGION_WRITE),
        "REGION_READ or REGION_WRITE",
    )
    bad = []
    for s in sessions:
        limit = server_limit(s, "max_data_xfer_size")
        for m in s.sent(Command.REGION_READ) + s.sent(Command.REGION_WRITE):
            if len(m.payload) >= _COUNT.size and _COUNT.unpack_from(m.payload)[0] > limit:
                count = _COUNT.unpack_from(m.payload)[0]
                bad.append(f"{m.describe()}: count {count}, the server's limit {limit}")
    assert not bad, listed(bad)


@case("client/region_rw/within-max-data-xfer-size", MUST)
def test_within_max_data_xfer_size(vfu_sessions):
    """No REGION_READ or REGION_WRITE of the client's asks for more than the server's
    max_data_xfer_size (1 MiB when its VERSION reply does not say).

    Spec (Read and Write Operations): "The count field must not exceed the value of
    max_data_xfer_size of the peer, for both reads and writes."
    """
    _within_limit(vfu_sessions)


@case("client/region_rw/within-max-data-xfer-size-4096", MUST)
def test_within_max_data_xfer_size_4096(vfu_scenario):
    """Against a server that states max_data_xfer_size 4096, no REGION_READ or REGION_WRITE
    of the client's asks for more than its VERSION reply allows. (Scenario small-limits.)

    Spec (Read and Write Operations): "The count field must not exceed the value of
    max_data_xfer_size of the peer, for both reads and writes."
    """
    _within_limit(vfu_scenario("small-limits"))


@case("client/region_rw/write-count-is-data", MUST)
def test_write_count_is_data(vfu_sessions):
    """Each REGION_WRITE's count is the number of data bytes it carries.

    Spec (VFIO_USER_REGION_WRITE): "count is the size of the data to be transferred.";
    "data is the data to write"
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.REGION_WRITE), "REGION_WRITE"):
        if len(m.payload) < _COUNT.size:
            continue
        (count,) = _COUNT.unpack_from(m.payload)
        if count != len(m.payload) - _COUNT.size:
            bad.append(f"{m.describe()}: count {count}, {len(m.payload) - 16} data bytes")
    assert not bad, listed(bad)


@case("client/region_rw/read-carries-no-data", MUST)
def test_read_carries_no_data(vfu_sessions):
    """Each REGION_READ is the 16-byte request: offset, region, count, no data.

    Spec (VFIO_USER_REGION_READ): the request is "offset | 0 | 8", "region | 8 | 4",
    "count | 12 | 4"; "count is the size of the data to be transferred." (The data comes in
    the reply: "data is the data that was read from the device region.")
    """
    bad = [
        f"{m.describe()}: {len(m.payload)} bytes"
        for _, m in need(sent(vfu_sessions, Command.REGION_READ), "REGION_READ")
        if len(m.payload) != _COUNT.size
    ]
    assert not bad, listed(bad)
