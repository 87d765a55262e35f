"""File descriptors the client sends: never more than the server takes."""

from __future__ import annotations

from pytest_vfiouser import MUST, case

from ._support import listed, need, server_limit


@case("client/fds/within-max-msg-fds", MUST)
def test_within_max_msg_fds(vfu_sessions):
    """No message of the client's carries more fds than the server's max_msg_fds (1 if
    its VERSION reply does not say).

    Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file descriptors
    that can be received by the sender in one message. Optional. If not specified then
    the receiver must assume a value of 1."
    """
    carrying = need(
        [(s, m) for s in vfu_sessions for m in s.messages if m.direction == "c2s" and m.fds],
        "fd",
    )
    bad = [
        f"{m.describe()}: {m.fds} fds, the server takes {server_limit(s, 'max_msg_fds')}"
        for s, m in carrying
        if m.fds > server_limit(s, "max_msg_fds")
    ]
    assert not bad, listed(bad)
