"""File descriptors the client sends: never more than the server takes."""

from __future__ import annotations

from pytest_vfiouser import MUST, case

from ._support import listed, need, server_limit


def _within_limit(sessions) -> None:
    """The case fails for each message of the client's carrying more fds than its
    session's server takes; it cannot judge a run without fds."""
    need([m for s in sessions for m in s.messages if m.direction == "c2s" and m.fds], "fd")
    bad = [
        f"{m.describe()}: {m.fds} fds, the server takes {server_limit(s, 'max_msg_fds')}"
        for s in sessions
        for m in s.messages
        if m.direction == "c2s" and m.fds > server_limit(s, "max_msg_fds")
    ]
    assert not bad, listed(bad)


@case("client/fds/within-max-msg-fds", MUST)
def test_within_max_msg_fds(vfu_sessions):
    """No message of the client's carries more fds than the server's max_msg_fds (1 if
    its VERSION reply does not say).

    Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file descriptors
    that can be received by the sender in one message. Optional. If not specified then
    the receiver must assume a value of 1."
    """
    _within_limit(vfu_sessions)


@case("client/fds/within-max-msg-fds-1", MUST)
def test_within_max_msg_fds_1(vfu_scenario):
    """Against a server that states max_msg_fds 1, no message of the client's carries more
    than one fd. (Scenario small-limits.)

    Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file descriptors
    that can be received by the sender in one message."
    """
    _within_limit(vfu_scenario("small-limits"))
