"""Twin-socket mode (0.9.2), the client's side of its negotiation."""

from __future__ import annotations

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import Command

from ._support import dma_requests, listed, need


@case("client/twin_socket/aborts-on-inconsistent", MUST, revisions=("0.9.2",))
def test_aborts_on_inconsistent(vfu_sessions, vfu_scenario):
    """A client that asked for twin-socket mode and got a reply that sets
    twin_socket.supported with an fd_index naming no fd sends nothing more: it aborts and
    closes the connection. (Scenario twin-inconsistent.)

    Spec (VFIO_USER_VERSION): "If twin_socket.supported is true and twin_socket.fd_index is
    present and refers to a valid file descriptor, twin-socket mode negotiation has
    succeeded." ... "Otherwise, the reply from the server is inconsistent. The client
    must abort and close the connection since it is potentially unable to receive
    commands from the server."
    """
    if not any(_asks(s) for s in vfu_sessions):  # no need to run the scenario to know
        need([], "VERSION asking for twin-socket mode (twin_socket.supported true)")
    asked, bad = 0, []
    for s in vfu_scenario("twin-inconsistent"):
        if not _asks(s) or s.version()[1] is None:
            continue
        asked += 1
        answer = s.reply_to(s.sent(Command.VERSION)[0])
        if (after := s.sent_after(answer)) is not None:
            bad.append(f"session {s.number} went on with {after.describe()}")
    if not asked:
        need([], "VERSION asking for twin-socket mode (twin_socket.supported true)")
    assert not bad, listed(bad)


def _asks(session) -> bool:
    """The session's VERSION proposal sets twin_socket.supported."""
    proposal, _ = session.version()
    twin = proposal.capabilities.twin_socket if proposal is not None else None
    return isinstance(twin, dict) and twin.get("supported") is True


@case("client/twin_socket/refused-goes-on-main", MUST, revisions=("0.9.2",))
def test_refused_goes_on_main(vfu_sessions, vfu_scenario):
    """A client that asked for twin-socket mode and got a reply without it either goes on
    without the mode, answering the server's DMA requests on the main socket, or closes
    the connection. (Scenario twin-refused: the server's reply has no twin_socket, and it
    reads each new mapping on the main socket.)

    Spec (VFIO_USER_VERSION): "If twin_socket.supported is false, the field is missing,
    or the entire twin_socket object is absent, the server does not support twin-socket
    mode and the client can proceed without twin-socket mode, or close the connection if
    not."
    """
    if not any(_asks(s) for s in vfu_sessions):
        need([], "VERSION asking for twin-socket mode (twin_socket.supported true)")
    judged, bad = 0, []
    for s in vfu_scenario("twin-refused"):
        if not _asks(s):
            continue
        for req, _, _ in dma_requests(s):
            if req.channel != "main" or req.no_reply:
                continue
            judged += 1
            if (after := s.went_on_past(req)) is not None:
                bad.append(
                    f"{req.describe()} on the main socket had no reply; the client went on "
                    f"with {after.describe()}"
                )
    if not judged:
        need([], "command after a DMA_MAP in a session that asked for twin-socket mode")
    assert not bad, listed(bad)
