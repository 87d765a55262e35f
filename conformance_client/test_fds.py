"""File descriptors the client sends: never more than the server takes."""

from __future__ import annotations

from pytest_vfiouser import MUST, case

from ._support import listed, need, server_limit


def _beyond(sessions) -> list[str]:
    """The client's messages carrying more fds than their session's server takes."""
    return [
        f"{m.describe()}: {m.fds} fds, the server takes {server_limit(s, 'max_msg_fds')}"
        for s in sessions
        for m in s.messages
        if m.direction == "c2s" and m.fds > server_limit(s, "max_msg_fds")
    ]


@case("client/fds/within-max-msg-fds", MUST)
def test_within_max_msg_fds(vfu_sessions):
    """No message of the client's carries more fds than the server's max_msg_fds (1 if
    its VERSION reply does not say).

    Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file descriptors
    that can be received by the sender in one message. Optional. If not specified then
    the receiver must assume a value of 1."
    """
    need([m for s in vfu_sessions for m in s.messages if m.direction == "c2s" and m.fds], "fd")
    bad = _beyond(vfu_sessions)
    assert not bad, listed(bad)


@case("client/fds/within-max-msg-fds-1", MUST)
def test_within_max_msg_fds_1(vfu_scenario):
    """Against a server that states max_msg_fds 1, no message of the client's carries more
    than one fd. (Scenario small-limits.)

    Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file descriptors
    that can be received by the sender in one message."
    """
    sessions = vfu_scenario("small-limits")
    need([m for s in sessions for m in s.messages if m.direction == "c2s" and m.fds], "fd")
    bad = _beyond(sessions)
    assert not bad, listed(bad)
