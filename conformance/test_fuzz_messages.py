"""Fuzzing messages: valid requests across their whole range, structure-aware mutations
of them, garbage, requests split across writes, hostile VERSION proposals, fds.

Every example goes over one connection, reused while it stays framed, and is
followed by a DEVICE_GET_INFO whose correct reply shows that the connection
still works. For every message the server can frame, the properties are the
Header rules: a command is answered with a reply (Reply type, its msg_id and
command echoed; an error reply is the header alone), unless it sets No_reply;
the server may instead close the connection (cleanly: between messages). No
crash, no hang (an answer or a close within 2 s). After the run a new
connection negotiates and is served. A failing example is shown as decoded
messages and raw bytes, and written as a standalone reproducer (see
conformance/_fuzz.py); ``--vfu-fuzz campaign`` runs many more examples.
"""

from __future__ import annotations

import pytest

from pytest_vfiouser import MUST, SHOULD, Unmet, case
from pytest_vfiouser import strategies as s
from pytest_vfiouser.fuzz import FuzzFailure, run_examples
from pytest_vfiouser.protocol import Command, RegionAccess

from ._fuzz import end_of_run, fuzz_for


def _describe(tx) -> str:
    return tx.describe()


@case("fuzz/valid-requests", MUST)
def test_valid_requests(request, fuzzer, vfu_device, vfu_spec, vfu_observe):
    """Requests of every command the client sends, well framed, with every field across
    its range and weighted to the edges (0, 1, maxima, powers of two, the device's region
    sizes, IRQ counts and index counts), 1-3 pipelined: each is answered with a
    well-formed reply, or the connection is closed cleanly; no crash, no hang, and the
    server still serves afterwards.

    Spec (Header): "Each command message in Commands_ must be replied to with a reply
    message, unless the message sets the No_Reply bit. The reply consists of the header
    with the Reply bit set, plus any additional data." "If an error occurs, the reply
    message must only include the reply header." "Message ID identifies the message, and
    is echoed in the command's reply message." "Command ... is also set in the reply
    header." Security Considerations: "Standard tools and mechanisms should be used on
    both sides to validate input and prevent against denial of service scenarios, buffer
    overflow, etc."
    """
    run_examples(
        fuzzer,
        s.transmissions(s.requests(vfu_device, vfu_spec), 3, split=False),
        fuzzer.transmit,
        fuzz_for(request, 0.8),
        _describe,
    )
    end_of_run(fuzzer, vfu_device, vfu_observe)


@case("fuzz/mutated-requests", MUST)
def test_mutated_requests(request, fuzzer, vfu_device, vfu_spec, vfu_observe):
    """Valid requests damaged the ways that matter to a parser (msg_size shorter or
    longer than what follows, argsz off by a little or a lot,
    undefined flag bits, indexes past the end, offset + count past 2**64, truncated
    payloads, trailing bytes, wrong Type bits, the Error bit on a command, No_reply on
    commands that return data, fds where none belong and missing where required), 1-3
    back to back, sometimes cut into several writes: every message the server can frame
    is answered with a well-formed reply, or the connection is closed cleanly; no crash,
    no hang.

    Spec (Header): "Each command message in Commands_ must be replied to with a reply
    message, unless the message sets the No_Reply bit. The reply consists of the header
    with the Reply bit set, plus any additional data." "If an error occurs, the reply
    message must only include the reply header." "Message ID identifies the message, and
    is echoed in the command's reply message." "Command ... is also set in the reply
    header." Security Considerations: "Standard tools and mechanisms should be used on
    both sides to validate input and prevent against denial of service scenarios, buffer
    overflow, etc."
    """
    run_examples(
        fuzzer,
        s.transmissions(s.mutated_requests(vfu_device, vfu_spec), 3),
        fuzzer.transmit,
        fuzz_for(request, 1.25),
        _describe,
    )
    end_of_run(fuzzer, vfu_device, vfu_observe)


@case("fuzz/garbage", MUST)
def test_garbage(request, fuzzer, vfu_device, vfu_observe):
    """Bytes that are no message (random bytes, random headers with any msg_size,
    framed junk of any command and flags): the server answers what it can
    frame with well-formed replies, or closes the connection; it does not crash or hang,
    and a new connection is served. (What a server does with bytes it cannot frame is not
    said: robustness.)

    Spec (Header): "Each command message in Commands_ must be replied to with a reply
    message, unless the message sets the No_Reply bit. The reply consists of the header
    with the Reply bit set, plus any additional data." "If an error occurs, the reply
    message must only include the reply header." "Message ID identifies the message, and
    is echoed in the command's reply message." "Command ... is also set in the reply
    header." Security Considerations: "Standard tools and mechanisms should be used on
    both sides to validate input and prevent against denial of service scenarios, buffer
    overflow, etc."
    """
    run_examples(
        fuzzer, s.transmissions(s.garbage(), 2), fuzzer.transmit, fuzz_for(request, 0.6), _describe
    )
    end_of_run(fuzzer, vfu_device, vfu_observe)


def _check_known_good(vfu_device, frame, reply) -> None:
    what = frame.describe()
    if not reply.ok:
        raise Unmet(f"{what}, sent in pieces, was refused ({reply!r}); {SPLIT}", SHOULD)
    body = reply.body
    if frame.command == Command.DEVICE_GET_INFO:
        assert body == vfu_device.info, f"{what}, sent in pieces, got {body}"
    elif frame.command == Command.DEVICE_GET_REGION_INFO:
        want = vfu_device.regions[body.index]
        assert (body.index, body.flags, body.size, body.offset) == (
            want.index,
            want.flags,
            want.size,
            want.offset,
        ), f"{what}, sent in pieces, got {body}; sent whole: {want}"
    elif frame.command == Command.DEVICE_GET_IRQ_INFO:
        want = vfu_device.irqs[body.index]
        assert (body.index, body.flags, body.count) == (want.index, want.flags, want.count), (
            f"{what}, sent in pieces, got {body}; sent whole: {want}"
        )
    elif frame.command in (Command.REGION_READ, Command.REGION_WRITE):
        sent = RegionAccess.unpack(frame.payload[: RegionAccess.SIZE])
        assert (body.offset, body.region, body.count) == (sent.offset, sent.region, sent.count), (
            f"{what}, sent in pieces, was answered with {body}"
        )
        if frame.command == Command.REGION_READ:
            assert len(body.data) == sent.count


# The spec frames a message by msg_size and says nothing of how it is cut into writes: a
# server that needs each message in one piece breaks no MUST, but is fragile (SHOULD).
SPLIT = (
    "sent whole they are granted: a message is what msg_size says, however it is written "
    '("Message size contains the size of the entire message, including the header.")'
)


@case("fuzz/split-writes", MUST)
def test_split_writes(request, fuzzer, vfu_device, vfu_observe):
    """Requests the device grants (DEVICE_GET_INFO, GET_REGION_INFO and GET_IRQ_INFO of its
    indexes, REGION_READ of readable regions, REGION_WRITE of scratch ranges), 1-4 back to
    back and cut into several writes at any byte: each gets the reply it gets when sent
    whole, in order; the connection is not closed (a SHOULD: the spec is silent on how a
    message is written), and the replies are right (MUST).

    Spec (Header): "Message size contains the size of the entire message, including the
    header." (A message is framed by msg_size, not by how the client writes it.)
    (Command Concurrency): "The server will process commands in the order they are
    received."
    """

    def body(tx):
        ending = fuzzer.transmit(tx)
        if ending != "framed":
            how = "closed the connection on" if ending == "closed" else f"found {ending}"
            raise FuzzFailure(f"the server {how} requests cut into several writes; {SPLIT}", SHOULD)
        assert len(fuzzer.replies) == len(tx.items), "every request must be answered"
        for frame, reply in fuzzer.replies:
            _check_known_good(vfu_device, frame, reply)

    run_examples(
        fuzzer,
        s.transmissions(s.known_good_requests(vfu_device), 4, split=True),
        body,
        fuzz_for(request, 0.5),
        _describe,
    )
    end_of_run(fuzzer, vfu_device, vfu_observe)


@case("fuzz/version-handshake", MUST)
def test_version_handshake(request, fuzzer, vfu_device, vfu_observe):
    """Hostile VERSION proposals on new connections (any major and minor; version data
    that is valid JSON, unknown keys, wrong types and ranges, unterminated, not UTF-8,
    nested 100000 deep, huge numbers; damaged framing): each is answered with a
    well-formed reply (success or error) or the connection is closed; no crash, no hang,
    and a well-behaved client still negotiates afterwards.

    Spec (VFIO_USER_VERSION): "Upon establishing a connection, the client must send a
    VFIO_USER_VERSION message proposing a protocol version and a set of capabilities. The
    server compares these with the versions and capabilities it supports and sends a
    VFIO_USER_VERSION reply according to the following rules." (errata 5: an error
    reply or closing the connection are both conforming refusals.) Security
    Considerations: "Standard tools and mechanisms should be used on both sides to
    validate input and prevent against denial of service scenarios, buffer overflow,
    etc."
    """
    fuzzer.negotiate = False
    fuzzer.fresh_connections = True
    fuzzer.probe = False
    run_examples(
        fuzzer,
        s.transmissions(s.version_proposals(), 1, split=None),
        fuzzer.transmit,
        fuzz_for(request, 0.4),
        _describe,
    )
    fuzzer.negotiate = True
    end_of_run(fuzzer, vfu_device, vfu_observe)


@case("fuzz/fds-released", SHOULD)
def test_fds_released(
    request,
    fuzzer,
    vfu_target,
    vfu_device,
    vfu_spec,
    vfu_observe,
):
    """Requests that carry fds (DMA_MAP with a memfd, SET_IRQS with eventfds) and requests
    with fds where none belong or fewer than they need, fuzzed: once every client has
    disconnected, the server holds no more open fds than before.

    Spec (Client Disconnection): "all client memory regions are unmapped and cleaned up
    (including closing any passed file descriptors)" ... "all IRQ file descriptors passed
    from the old client are closed". Security Considerations: "Standard tools and
    mechanisms should be used on both sides to validate input and prevent against denial
    of service scenarios" (fds of refused requests that are kept let a client exhaust the
    server's).
    """
    if fuzzer.fd_baseline is None:
        pytest.skip("needs the server's pid to count its fds (--vfu-server, not --vfu-socket)")
    run_examples(
        fuzzer,
        s.transmissions(s.requests_with_fds(vfu_device, vfu_spec), 2),
        fuzzer.transmit,
        fuzz_for(request, 0.5),
        _describe,
    )
    baseline = fuzzer.fd_baseline
    growth = end_of_run(fuzzer, vfu_device, lambda text: None)
    if growth is None:
        pytest.skip("the server was restarted during the run: no fd count to compare")
    assert growth == 0, (
        f"after {fuzzer.examples} examples of requests with fds and every client gone, the "
        f"server holds {growth} more open fds than the {baseline} it had before: fds passed "
        "by a client must be closed when it disconnects (and those of refused requests "
        "when they are refused)"
    )
