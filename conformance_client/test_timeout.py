"""Request retry and response timeout: what a client does with a late reply."""

from __future__ import annotations

from pytest_vfiouser import MAY, case
from pytest_vfiouser.protocol import Command

from ._support import listed, need


@case("client/timeout/delayed-reply-awaited", MAY)
def test_delayed_reply_awaited(vfu_scenario):
    """The client waits for a reply the server sends 4 s late (scenario reply-delayed:
    the first DEVICE_GET_INFO's of a connection): it neither closes the connection nor
    sends the command again before the reply comes. Whether, and when, a client gives up
    is its own choice: one that does is INFORMATIONAL, never a failure.

    Spec (Request Retry and Response Timeout): "Defining a retry and timeout scheme is
    deferred to a future version of the protocol."
    """
    judged, gave_up = 0, []
    for s in vfu_scenario("reply-delayed"):
        sent = s.sent(Command.DEVICE_GET_INFO)
        if not sent:
            continue
        judged += 1
        reply = s.reply_to(sent[0])
        if reply is None:
            gave_up.append(
                f"session {s.number}: the connection ended before the reply to "
                f"{sent[0].describe()} came ({s.ended or 'the record stops'})"
            )
        elif again := [m for m in sent[1:] if m.index < reply.index]:
            gave_up.append(f"{again[0].describe()} was sent again before the late reply")
    if not judged:
        need([], "DEVICE_GET_INFO (the scenario delays its reply)")
    assert not gave_up, listed(gave_up)
