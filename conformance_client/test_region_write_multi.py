"""VFIO_USER_REGION_WRITE_MULTI (0.9.2), as the client sends it."""

from __future__ import annotations

import struct

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import Command

from ._support import listed, need, sent

_ENTRY = struct.Struct("<QII8s")  # offset, region, count, data


def _multis(sessions):
    return need(sent(sessions, Command.REGION_WRITE_MULTI), "REGION_WRITE_MULTI")


@case("client/region_write_multi/only-when-negotiated", SHOULD, revisions=("0.9.2",))
def test_only_when_negotiated(vfu_sessions):
    """The client sends REGION_WRITE_MULTI only after the server's VERSION reply set
    write_multiple.

    Spec (VFIO_USER_VERSION): "write_multiple | boolean | VFIO_USER_REGION_WRITE_MULTI
    messages are supported if the value is true."
    """
    bad = []
    for s, m in _multis(vfu_sessions):
        _, reply = s.version()
        if reply is None or reply.capabilities.raw.get("write_multiple") is not True:
            bad.append(f"{m.describe()} of session {s.number}")
    assert not bad, f"the server's VERSION reply did not set write_multiple: {listed(bad)}"


@case("client/region_write_multi/wr-cnt-is-entries", MUST, revisions=("0.9.2",))
def test_wr_cnt_is_entries(vfu_sessions):
    """Each REGION_WRITE_MULTI's wr_cnt is the number of 24-byte writes it carries.

    Spec (VFIO_USER_REGION_WRITE_MULTI): "wr_cnt is the number of device writes coalesced
    in the message"; "wrs is an array of device writes"
    """
    bad = []
    for _, m in _multis(vfu_sessions):
        (count,) = struct.unpack_from("<Q", m.payload) if len(m.payload) >= 8 else (None,)
        entries, rest = divmod(len(m.payload) - 8, _ENTRY.size)
        if count != entries or rest:
            bad.append(f"{m.describe()}: wr_cnt {count}, {len(m.payload) - 8} bytes of writes")
    assert not bad, listed(bad)


@case("client/region_write_multi/counts-at-most-8", MUST, revisions=("0.9.2",))
def test_counts_at_most_8(vfu_sessions):
    """Each write of a REGION_WRITE_MULTI is of 1 to 8 bytes.

    Spec (VFIO_USER_REGION_WRITE_MULTI): "count is the size of the data to be transferred.
    This format can only describe writes of 8 bytes or less."
    """
    bad = []
    for _, m in _multis(vfu_sessions):
        for i in range(8, len(m.payload) - _ENTRY.size + 1, _ENTRY.size):
            _, _, count, _ = _ENTRY.unpack_from(m.payload, i)
            if not 1 <= count <= 8:
                bad.append(f"{m.describe()}: a write of count {count}")
    assert not bad, listed(bad)
