"""The message header, as the client fills it: flags, the error field, and its answers
to the server's own requests."""

from __future__ import annotations

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import HEADER_FLAGS_DEFINED, Command, command_name

from ._support import dma_requests, listed, need


def _client_messages(sessions):
    return [(s, m) for s in sessions for m in s.messages if m.direction == "c2s"]


@case("client/header/flags-defined", SHOULD)
def test_flags_defined(vfu_sessions):
    """The client's messages set only the flag bits the spec defines, and their type is
    command or reply.

    Spec (Header): "Flags | 8 | 4 | Bit 0-3 Type | 4 No_reply | 5 Error"; "Command (value
    0x0) indicates a command message."; "Reply (value 0x1) indicates a reply message"
    """
    bad = [
        f"{m.describe()}: flags {m.flags:#x}"
        for _, m in _client_messages(vfu_sessions)
        if m.flags & ~HEADER_FLAGS_DEFINED or (m.flags & 0xF) > 1
    ]
    assert not bad, listed(bad)


@case("client/header/command-error-zero", SHOULD)
def test_command_error_zero(vfu_sessions):
    """The error field of the client's commands is 0.

    Spec (Header): "Error in a reply message is an optional UNIX errno value. ... It is
    reserved in a command message."
    """
    bad = [
        f"{m.describe()}: error {m.error}"
        for _, m in _client_messages(vfu_sessions)
        if m.is_command and m.error
    ]
    assert not bad, listed(bad)


@case("client/header/server-requests-answered", MUST)
def test_server_requests_answered(vfu_sessions):
    """Every DMA_READ/DMA_WRITE of the server's (without No_reply) got a reply from the
    client, on the socket it came on, echoing its msg_id and command.

    Spec (Header): "Each command message in Commands must be replied to with a reply
    message, unless the message sets the No_Reply bit."; "Message ID identifies the
    message, and is echoed in the command's reply message."
    """
    requests = need(
        [(s, m) for s in vfu_sessions for m in s.server_requests() if not m.no_reply],
        "reply to a DMA_READ/DMA_WRITE (the server asked none)",
    )
    missing = [
        f"{req.describe()} ({req.channel} socket) of session {s.number}"
        for s, req in requests
        if s.reply_to(req) is None
    ]
    assert not missing, f"requests of the server's left without a reply: {listed(missing)}"


@case("client/header/requests-between-answered", MUST)
def test_requests_between_answered(vfu_scenario):
    """A DMA_READ/DMA_WRITE of the server's that comes while one of the client's commands
    waits for its reply is answered all the same. (Scenario dma-between: after each
    DMA_MAP the server reads and writes back the new mapping's first bytes before it
    answers the client's next command.)

    Spec (Concurrency): "Note that unrelated messages sent from the server to the client
    can appear in between a client to server request/reply"; (Header): "Each command
    message in Commands must be replied to with a reply message, unless the message sets
    the No_Reply bit."
    """
    judged, missing = 0, []
    for s in vfu_scenario("dma-between"):
        for req, _, _ in dma_requests(s):
            if req.no_reply or not _awaited_across(s, req):
                continue
            judged += 1
            if s.reply_to(req) is None:
                missing.append(f"{req.describe()} ({req.channel} socket) of session {s.number}")
    if not judged:
        need([], "command after a DMA_MAP (the server's DMA requests come before its reply)")
    assert not missing, f"requests of the server's left without a reply: {listed(missing)}"


def _awaited_across(session, request) -> bool:
    """A command of the client's was sent before ``request`` and answered after it."""
    for m in session.sent():
        if m.index > request.index:
            return False
        reply = session.reply_to(m)
        if not m.no_reply and (reply is None or reply.index > request.index):
            return True
    return False


@case("client/header/errno-zero-is-an-error", MUST)
def test_errno_zero_is_an_error(vfu_scenario):
    """A reply with the Error bit and errno 0 is an error all the same: after the server
    refuses DEVICE_GET_IRQ_INFO so (scenario errno-zero) the client goes on as it does
    when it is refused with EINVAL (scenario errno-einval, the control), not as after a
    success.

    Spec (Header): "Error in a reply message indicates the command being acknowledged had
    an error. In this case, the Error field will be valid." ... "Error in a reply message
    is an optional UNIX errno value. It may be zero even if the Error bit is set in Flags."
    """
    zero = _after_refusal(vfu_scenario("errno-zero"))
    control = _after_refusal(vfu_scenario("errno-einval"))
    if zero is None or control is None:
        need([], "DEVICE_GET_IRQ_INFO (the scenarios refuse it)")
    n = min(len(zero), len(control), _COMPARED)
    if zero[:n] != control[:n] or (not n and len(zero) != len(control)):
        at = next((i for i in range(n) if zero[i] != control[i]), n)
        raise AssertionError(
            "after DEVICE_GET_IRQ_INFO refused with errno 0 the client sent "
            f"{_names(zero[at : at + 3]) or 'nothing more'}, where refused with EINVAL it "
            f"sent {_names(control[at : at + 3]) or 'nothing more'} (its command {at + 1} "
            "after the refusal): it took the error reply for a success"
        )


_COMPARED = 40  # commands after the refusal: a client stopped at its time sends a few more


def _after_refusal(sessions) -> list[int] | None:
    """The commands the client sent after its first refused DEVICE_GET_IRQ_INFO (in the
    first session that has one), or None."""
    for s in sessions:
        for m in s.sent(Command.DEVICE_GET_IRQ_INFO):
            reply = s.reply_to(m)
            if reply is not None and reply.is_error:
                return [x.command for x in s.sent() if x.index > m.index]
    return None


def _names(commands) -> str:
    return ", ".join(command_name(c) for c in commands)


@case("client/header/error-reply-header-only", MUST)
def test_error_reply_header_only(vfu_sessions):
    """The client's error replies (to the server's requests) are the header alone.

    Spec (Header): "If an error occurs, the reply message must only include the reply
    header."
    """
    errors = need(
        [(s, m) for s in vfu_sessions for m in s.answers() if m.is_error],
        "error reply (it refused none of the server's requests)",
    )
    bad = [f"{m.describe()}: {len(m.payload)} payload bytes" for _, m in errors if m.payload]
    assert not bad, listed(bad)


@case("client/header/replies-answer-requests", MUST)
def test_replies_answer_requests(vfu_sessions):
    """Each reply the client sends answers a request of the server's not answered before:
    the same msg_id and command, on the socket the request came on.

    Spec (Header): "Reply (value 0x1) indicates a reply message acknowledging a previous
    command with the same message ID."; "Command ... It is also set in the reply header."
    """
    need([m for s in vfu_sessions for m in s.answers()], "reply to a request of the server's")
    bad = []
    for s in vfu_sessions:
        waiting: list = []  # the server's requests not answered yet
        for m in s.messages:
            if m.direction == "s2c" and m.is_command and not m.no_reply:
                waiting.append((m.channel, m.msg_id, m.command))
            elif m.direction == "c2s" and m.is_reply:
                key = (m.channel, m.msg_id, m.command)
                if key in waiting:
                    waiting.remove(key)
                else:
                    bad.append(f"{m.describe()} on the {m.channel} socket answers no request")
    assert not bad, listed(bad)
