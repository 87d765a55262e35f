"""Header: the 16-byte header every message starts with, replies, No_reply,
pipelining (Command Concurrency), and what a server does with headers it
cannot use."""

from __future__ import annotations

import os
import struct

import pytest

from pytest_vfiouser import MAY, MUST, SHOULD, case
from pytest_vfiouser.client import ClientError, ConnectionClosed, MalformedReply, Timeout
from pytest_vfiouser.protocol import (
    COMMANDS_BY_REVISION,
    FLAG_ERROR,
    HEADER_SIZE,
    HEADER_STRUCT,
    TYPE_MASK,
    Command,
    DeviceInfo,
    IrqInfo,
    MsgType,
    RegionFlags,
    RegionInfo,
    RegionRead,
    RegionWrite,
    Version,
    command_name,
    encode,
)

from ._support import (
    answer,
    answer_or_silence,
    assert_new_connection_works,
    first_scratch,
    refused,
)

GET_INFO = Command.DEVICE_GET_INFO
_NO_INDEX = 0xFFFFFFFF  # a region / IRQ index no device has

# -- requests the header cases send, by name: (command, payload, reply payload size
#    or None when it varies). Error requests are ones no device can grant.

OK_REQUESTS = ["device_get_info", "region_info", "irq_info", "region_read"]
ERROR_REQUESTS = [
    "region_info_no_such_region",
    "irq_info_no_such_irq",
    "region_read_no_such_region",
    # The device's own refusal, past the checks of the message: every rule of replies
    # holds whatever the stage at which a request fails.
    "region_read_refused_by_device",
]


def _refused_by_device(client, device) -> tuple[int, int, int]:
    """(region, offset, count) of an in-bounds REGION_READ of a readable region that the
    device refuses (a width or alignment its registers do not take); skips if none."""
    for region in device.regions_with(RegionFlags.READ):
        for offset in (0, 1):
            for count in (1, 2, 3, 4, 8):
                if offset + count <= region.size:
                    reply = client.region_read(region.index, offset, count)
                    reply.close_fds()
                    if not reply.ok:
                        return region.index, offset, count
    pytest.skip(
        "the device serves every small in-bounds REGION_READ tried (widths 1-8 at offsets "
        "0 and 1): no refusal of the device's own to look at"
    )


def _request(name: str, device, client=None) -> tuple[int, bytes, int | None]:
    if name == "device_get_info":
        return GET_INFO, DeviceInfo(DeviceInfo.SIZE).pack(), DeviceInfo.SIZE
    if name == "region_info":
        # A region without MMAP: its reply carries no fd.
        index = next(
            (i for i, r in sorted(device.regions.items()) if not r.flags & RegionFlags.MMAP), 0
        )
        return Command.DEVICE_GET_REGION_INFO, RegionInfo(32, index=index).pack(), None
    if name == "irq_info":
        if not device.num_irqs:
            pytest.skip("the device has no IRQ types")
        return Command.DEVICE_GET_IRQ_INFO, IrqInfo(IrqInfo.SIZE, index=0).pack(), IrqInfo.SIZE
    if name == "region_read":
        region = next((r for r in device.regions_with(RegionFlags.READ) if r.size >= 4), None)
        if region is None:
            pytest.skip("the device has no readable region")
        return Command.REGION_READ, RegionRead(0, region.index, 4).pack(), RegionRead.SIZE + 4
    if name == "region_info_no_such_region":
        return Command.DEVICE_GET_REGION_INFO, RegionInfo(32, index=_NO_INDEX).pack(), None
    if name == "irq_info_no_such_irq":
        return Command.DEVICE_GET_IRQ_INFO, IrqInfo(IrqInfo.SIZE, index=_NO_INDEX).pack(), None
    if name == "region_read_no_such_region":
        return Command.REGION_READ, RegionRead(0, _NO_INDEX, 4).pack(), None
    if name == "region_read_refused_by_device":
        region, offset, count = _refused_by_device(client, device)
        return Command.REGION_READ, RegionRead(offset, region, count).pack(), None
    raise ValueError(name)


def _what(name: str) -> str:
    return name.replace("_", " ")


def _recv(client, what: str):
    """The next message, with framing trouble turned into spec-worded failures."""
    try:
        reply = client.recv_message()
    except Timeout as e:
        if e.partial_bytes >= HEADER_SIZE:
            pytest.fail(
                f"the reply to {what} is incomplete: {e.partial_bytes} bytes came, "
                "fewer than its msg_size promises (Message size is the size of the "
                "entire message, including the header)"
            )
        raise
    except MalformedReply as e:
        pytest.fail(f"the reply to {what} cannot be framed: {e}")
    reply.close_fds()
    return reply


def _error_reply(client, name: str, device, vfu_connect, vfu_observe):
    """Send one of ERROR_REQUESTS; its error reply, or None (observed) if the server
    closed the connection or granted the request (other sections judge that)."""
    command, payload, _ = _request(name, device, client)
    msg_id = client.send(command, payload)
    # Each case judges one rule of the error reply (error-reply-header-only its size).
    reply = answer(client, msg_id, command, vfu_connect, _what(name), header_only=False)
    if reply is None:
        vfu_observe(
            f"the server closed the connection on {_what(name)} instead of "
            "replying with an error: no error reply to check"
        )
    elif reply.ok:
        vfu_observe(
            f"{_what(name)} succeeded ({len(reply.payload)} payload bytes): no error reply to check"
        )
        reply = None
    return reply


# -- replies


@case("header/reply-echoes-msg-id", MUST)
@pytest.mark.parametrize("msg_id", [0, 1, 0x8000, 0xFFFF])
def test_reply_echoes_msg_id(vfu_client, msg_id):
    """The reply carries the msg_id of its command, over the whole u16 range.

    Spec (Header): "Message ID identifies the message, and is echoed in the
    command's reply message."
    """
    vfu_client.send(GET_INFO, DeviceInfo(DeviceInfo.SIZE), msg_id=msg_id)
    reply = _recv(vfu_client, f"DEVICE_GET_INFO msg_id {msg_id}")
    assert reply.msg_id == msg_id, (
        f"the reply to msg_id {msg_id} carries msg_id {reply.msg_id}: Message ID is "
        "echoed in the command's reply message"
    )


@case("header/reply-echoes-msg-id-on-error", MUST)
@pytest.mark.parametrize("msg_id", [0, 0xFFFF])
def test_error_reply_echoes_msg_id(vfu_client, msg_id):
    """An error reply carries the msg_id of its command too.

    Spec (Header): "Message ID identifies the message, and is echoed in the
    command's reply message."
    """
    command, payload, _ = _request("region_info_no_such_region", None)
    vfu_client.send(command, payload, msg_id=msg_id)
    reply = _recv(vfu_client, f"GET_REGION_INFO of no region, msg_id {msg_id}")
    assert reply.msg_id == msg_id, (
        f"the error reply to msg_id {msg_id} carries msg_id {reply.msg_id}: Message ID is "
        "echoed in the command's reply message"
    )


@case("header/reply-echoes-command", MUST)
@pytest.mark.parametrize("name", OK_REQUESTS + ERROR_REQUESTS)
def test_reply_echoes_command(vfu_client, vfu_device, name):
    """The reply header carries the command of the message it answers, error or not.

    Spec (Header): "Command specifies the command to be executed, listed in
    Commands_. It is also set in the reply header."
    """
    command, payload, _ = _request(name, vfu_device, vfu_client)
    msg_id = vfu_client.send(command, payload)
    reply = _recv(vfu_client, _what(name))
    assert reply.msg_id == msg_id, f"the reply carries msg_id {reply.msg_id}, not {msg_id}"
    assert reply.command == command, (
        f"the reply to {command_name(command)} carries command {command_name(reply.command)}: "
        "the command is also set in the reply header"
    )


@case("header/reply-type", MUST)
@pytest.mark.parametrize("name", OK_REQUESTS + ERROR_REQUESTS)
def test_reply_type(vfu_client, vfu_device, name):
    """A reply (success or error) has Type 1, Reply, in its flags.

    Spec (Header): "Reply (value 0x1) indicates a reply message acknowledging
    a previous command with the same message ID." ... "The reply consists of
    the header with the Reply bit set, plus any additional data."
    """
    command, payload, _ = _request(name, vfu_device, vfu_client)
    vfu_client.send(command, payload)
    reply = _recv(vfu_client, _what(name))
    assert reply.flags & TYPE_MASK == MsgType.REPLY, (
        f"the reply to {_what(name)} has flags {reply.flags:#x}: type "
        f"{reply.flags & TYPE_MASK}, not Reply (1)"
    )


@case("header/reply-msg-size", MUST)
@pytest.mark.parametrize("name", OK_REQUESTS + ERROR_REQUESTS)
def test_reply_msg_size(vfu_client, vfu_device, name):
    """A reply's msg_size is at least 16 and covers exactly the bytes sent: the
    whole reply arrives and nothing follows it.

    Spec (Header): "Message size contains the size of the entire message,
    including the header."
    """
    command, payload, size = _request(name, vfu_device, vfu_client)
    vfu_client.send(command, payload)
    reply = _recv(vfu_client, _what(name))
    assert reply.msg_size >= HEADER_SIZE
    if reply.ok and size is not None:
        assert reply.msg_size == HEADER_SIZE + size, (
            f"the {command_name(command)} reply has msg_size {reply.msg_size}; its payload is "
            f"{size} bytes, so msg_size must be {HEADER_SIZE + size}"
        )
    try:
        vfu_client.expect_no_message(0.2)
    except ClientError as e:
        pytest.fail(
            f"bytes followed the reply to {_what(name)} beyond its msg_size "
            f"{reply.msg_size} ({e}): msg_size must cover the entire message"
        )


# -- error replies


@case("header/error-reply-header-only", MUST)
@pytest.mark.parametrize("name", ERROR_REQUESTS)
def test_error_reply_header_only(vfu_client, vfu_device, vfu_connect, vfu_observe, name):
    """An error reply is the 16-byte header alone: Error bit set, no payload.

    Spec (Header): "If an error occurs, the reply message must only include the
    reply header."
    """
    reply = _error_reply(vfu_client, name, vfu_device, vfu_connect, vfu_observe)
    if reply is not None:
        assert reply.flags & FLAG_ERROR
        assert reply.msg_size == HEADER_SIZE, (
            f"the error reply has msg_size {reply.msg_size}: an error reply must only "
            "include the reply header (16 bytes)"
        )


@case("header/error-field-valid", MUST)
@pytest.mark.parametrize("name", ERROR_REQUESTS)
def test_error_field_valid(vfu_client, vfu_device, vfu_connect, vfu_observe, name):
    """The error field of an error reply is 0 or a UNIX errno (1..4095).

    Spec (Header): "Error in a reply message indicates the command being
    acknowledged had an error. In this case, the Error field will be valid."
    ... "Error in a reply message is an optional UNIX errno value. It may be
    zero even if the Error bit is set in Flags."
    """
    reply = _error_reply(vfu_client, name, vfu_device, vfu_connect, vfu_observe)
    if reply is not None:
        assert 0 <= reply.errno < 4096, (
            f"the error reply's error field is {reply.errno:#x}, which is no UNIX errno "
            "(errno values are below 4096); it must be 0 or an errno"
        )


@case("header/error-field-nonzero", MAY)
@pytest.mark.parametrize("name", ERROR_REQUESTS)
def test_error_field_nonzero(vfu_client, vfu_device, vfu_connect, vfu_observe, name):
    """An error reply says what went wrong: its error field holds a nonzero errno.

    Spec (Header): "Error in a reply message is an optional UNIX errno value.
    It may be zero even if the Error bit is set in Flags."
    """
    reply = _error_reply(vfu_client, name, vfu_device, vfu_connect, vfu_observe)
    if reply is not None:
        assert reply.errno != 0, "the error reply's error field is 0: no errno given"


# -- No_reply and pipelining (Command Concurrency)


@case("header/no-reply-success", SHOULD)
def test_no_reply_success(vfu_client):
    """A command with No_reply that succeeds gets no reply: the reply to the next
    command is the next thing on the wire.

    Spec (Header): "No_reply in a command message indicates that no reply is
    needed for this command." ... "Each command message in Commands_ must be
    replied to with a reply message, unless the message sets the No_Reply bit."
    """
    silent = vfu_client.send(GET_INFO, DeviceInfo(DeviceInfo.SIZE), no_reply=True)
    probe = vfu_client.send(GET_INFO, DeviceInfo(DeviceInfo.SIZE))
    reply = _recv(vfu_client, "DEVICE_GET_INFO")
    assert reply.msg_id != silent, (
        f"the server replied ({reply.header.describe()}) to a DEVICE_GET_INFO sent with "
        "No_reply: no reply is needed for it"
    )
    assert reply.msg_id == probe and reply.ok
    _nothing_more(vfu_client, "a DEVICE_GET_INFO sent with No_reply")


def _nothing_more(client, what: str) -> None:
    try:
        client.expect_no_message(0.1)
    except ClientError as e:
        pytest.fail(f"a message came after the last reply ({e}): the server answered {what} late")


@case("header/no-reply-failure", SHOULD)
@pytest.mark.parametrize("name", ["region_info_no_such_region", "region_read_refused_by_device"])
def test_no_reply_failure(vfu_client, vfu_device, vfu_connect, vfu_observe, name):
    """A command with No_reply that fails gets no reply either (not even an error
    reply): the reply to the next command is the next thing on the wire. Whether it
    fails in the checks of the message or in the device.

    Spec (Header): "No_reply in a command message indicates that no reply is
    needed for this command." ... "Each command message in Commands_ must be
    replied to with a reply message, unless the message sets the No_Reply bit."
    """
    command, payload, _ = _request(name, vfu_device, vfu_client)
    silent = vfu_client.send(command, payload, no_reply=True)
    probe = vfu_client.send(GET_INFO, DeviceInfo(DeviceInfo.SIZE))
    try:
        reply = _recv(vfu_client, "DEVICE_GET_INFO")
    except ConnectionClosed:
        vfu_observe("the server closed the connection on a failing command sent with No_reply")
        assert_new_connection_works(vfu_connect, "a failing command with No_reply")
        return
    assert reply.msg_id != silent, (
        f"the server replied ({reply.header.describe()}) to a failing {_what(name)} sent "
        "with No_reply: no reply is needed for it, error or not"
    )
    assert reply.msg_id == probe and reply.ok
    _nothing_more(vfu_client, "a failing command sent with No_reply")


@case("header/no-reply-processed-in-order", MUST)
def test_no_reply_processed_in_order(vfu_client, vfu_device):
    """Writes sent with No_reply are processed, in order, before the reply to the
    read that follows them: the read returns the last write's data.

    Spec (Command Concurrency): "The server will process commands in the order
    they are received. A consequence of this is if a client issues a command
    with the No_reply bit, then subsequently issues a command without
    No_reply, the older command will have been processed before the reply to
    the younger command is sent by the server."
    """
    region, offset, length = first_scratch(vfu_device, most=64)
    first, last = os.urandom(length), os.urandom(length)
    for data in (first, last):
        vfu_client.send(
            Command.REGION_WRITE, RegionWrite(offset, region, length, data), no_reply=True
        )
    reply = vfu_client.region_read(region, offset, length).check()
    assert reply.body.data == last, (
        f"REGION_READ of region {region} [{offset:#x}, +{length}) right after two REGION_WRITEs "
        "with No_reply did not return the second write's data: "
        + (
            "it returned the first's, so they were processed out of order"
            if reply.body.data == first
            else "they were not processed before the read's reply"
        )
    )


@case("header/pipeline-burst", MUST)
def test_pipeline_burst(vfu_client, vfu_device):
    """Hundreds of pipelined commands all get their reply, in the order sent, each
    the right answer.

    Spec (Command Concurrency): "A client may pipeline multiple commands
    without waiting for previous command replies. The server will process
    commands in the order they are received."
    """
    plain = sorted(i for i, r in vfu_device.regions.items() if not r.flags & RegionFlags.MMAP)
    requests, expect = [], []
    for n in range(300):
        kind = n % 3
        if kind == 1 and vfu_device.num_irqs:
            index = n % vfu_device.num_irqs
            requests.append((Command.DEVICE_GET_IRQ_INFO, IrqInfo(IrqInfo.SIZE, index=index)))
            expect.append(("irq", index))
        elif kind == 2 and plain:
            index = plain[n % len(plain)]
            requests.append((Command.DEVICE_GET_REGION_INFO, RegionInfo(32, index=index)))
            expect.append(("region", index))
        else:
            requests.append((GET_INFO, DeviceInfo(DeviceInfo.SIZE)))
            expect.append(("info", None))
    try:
        replies = vfu_client.pipeline(requests)
    except ClientError as e:
        pytest.fail(
            f"{len(requests)} pipelined commands did not get their replies in the order sent: {e}"
        )
    for n, (reply, (kind, index)) in enumerate(zip(replies, expect, strict=True)):
        assert reply.ok, f"pipelined command #{n} ({kind} {index}) failed: errno {reply.error}"
        if kind == "info":
            assert reply.body == vfu_device.info, f"pipelined DEVICE_GET_INFO #{n}: {reply.body}"
        else:  # both replies have index at offset 8
            got = (
                struct.unpack_from("<I", reply.payload, 8)[0] if len(reply.payload) >= 12 else None
            )
            assert got == index, (
                f"pipelined {kind} info #{n} for index {index} answered index {got}"
            )


@case("header/msg-id-reused", MUST)
def test_msg_id_reused(vfu_client, vfu_device):
    """Pipelined commands that all carry the same msg_id are each answered, in
    order, with that msg_id.

    Spec (Header): "Message IDs belong entirely to the sender, can be re-used
    (even concurrently) and the receiver must not make any assumptions about
    their uniqueness."
    """
    msg_id = 0x4242
    sent = [(GET_INFO, DeviceInfo(DeviceInfo.SIZE))]
    if vfu_device.num_irqs:
        sent.append((Command.DEVICE_GET_IRQ_INFO, IrqInfo(IrqInfo.SIZE, index=0)))
    sent += [
        (GET_INFO, DeviceInfo(DeviceInfo.SIZE)),
        (Command.DEVICE_GET_REGION_INFO, RegionInfo(32, index=_NO_INDEX)),
        (GET_INFO, DeviceInfo(DeviceInfo.SIZE)),
    ]
    for command, payload in sent:
        vfu_client.send(command, payload, msg_id=msg_id)
    for n, (command, _) in enumerate(sent):
        reply = _recv(vfu_client, f"pipelined command #{n}")
        assert (reply.msg_id, reply.command) == (msg_id, command), (
            f"pipelined command #{n} ({command_name(command)}, msg_id {msg_id} like all the "
            f"others) was answered by {reply.header.describe()}"
        )
        if command == GET_INFO:
            assert reply.ok and reply.body == vfu_device.info


# -- framing: a message split across writes


def _split(data: bytes, how: str) -> list[bytes]:
    if how == "header-then-body":
        return [data[:HEADER_SIZE], data[HEADER_SIZE:]]
    if how == "inside-header":
        return [data[:7], data[7 : HEADER_SIZE + 3], data[HEADER_SIZE + 3 :]]
    return [data[i : i + 1] for i in range(len(data))]


@case("header/split-message", SHOULD)
@pytest.mark.parametrize("how", ["header-then-body", "inside-header", "byte-by-byte"])
@pytest.mark.parametrize("message", ["version", "device_get_info"])
def test_split_message(vfu_connect, vfu_device, vfu_settings, message, how):
    """A message that arrives in several writes (the header alone, then the body;
    a cut inside the header; byte by byte) is processed like one written at once.

    Spec (Header): "All messages, both command messages and reply messages, are
    preceded by a 16-byte header" ... "Message size contains the size of the
    entire message, including the header." (The spec is silent on how a
    message is cut into writes: on a stream socket only msg_size delimits it, and a
    large message may be cut by the kernel itself. A server that needs each message
    in one piece breaks no MUST; it is fragile: SHOULD.)
    """
    client = vfu_connect()
    if message == "version":
        command = Command.VERSION
        payload = Version(0, 0, {"capabilities": {"max_msg_fds": 1}}).pack()
    else:
        client.negotiate()
        command, payload = GET_INFO, DeviceInfo(DeviceInfo.SIZE).pack()
    msg_id = 0x5151
    for piece in _split(encode(msg_id, command, payload), how):
        client.wait_peer_read(vfu_settings.timeout)  # it gets the pieces apart
        client.send_raw(piece)
    reply = _recv(client, f"{command_name(command)} sent in pieces ({how})")
    assert (reply.msg_id, reply.command) == (msg_id, command), reply.header.describe()
    assert reply.ok, (
        f"{command_name(command)} sent in pieces ({how}) failed with errno "
        f"{reply.error}; written at once it succeeds"
    )
    if message == "version":
        assert reply.payload[:2] == b"\0\0", f"VERSION 0.0 was answered with {reply.payload[:4]!r}"
    else:
        assert reply.body == vfu_device.info


# -- headers the server cannot use: robustness


@case("header/unknown-command", MUST)
@pytest.mark.parametrize("which", ["zero", "other-revision", "nineteen", "0x100", "0xffff"])
def test_unknown_command(vfu_client, vfu_connect, vfu_observe, vfu_spec, which):
    """A command number the revision does not define gets an error reply, or the
    connection is closed; the connection stays framed (or a new one works).

    Spec: silent on unknown commands (Commands lists the known ones);
    robustness. Security Considerations: "Standard tools and mechanisms should
    be used on both sides to validate input"
    """
    if which == "other-revision":
        command = max(
            c
            for r in COMMANDS_BY_REVISION.values()
            for c in r
            if c not in COMMANDS_BY_REVISION[vfu_spec]
        )
    else:
        command = {"zero": 0, "nineteen": 19, "0x100": 0x100, "0xffff": 0xFFFF}[which]
    assert command not in COMMANDS_BY_REVISION[vfu_spec]
    msg_id = vfu_client.send(command, bytes(16))
    refused(
        vfu_client,
        msg_id,
        command,
        vfu_connect,
        f"command {command} (not in spec {vfu_spec})",
        vfu_observe,
    )


@case("header/server-to-client-command", MUST)
@pytest.mark.parametrize("command", [Command.DMA_READ, Command.DMA_WRITE])
def test_server_to_client_command(vfu_client, vfu_connect, vfu_observe, command):
    """DMA_READ / DMA_WRITE sent by the client (they go server -> client) get an
    error reply, or the connection is closed; never a crash.

    Spec (Commands): the table gives DMA_READ and DMA_WRITE the request
    direction "server -> client"; what a server does with one from the client
    is not said: robustness.
    """
    data = bytes(4) if command == Command.DMA_WRITE else b""
    msg_id = vfu_client.send(command, struct.pack("<QQ", 0, 4) + data)
    refused(
        vfu_client,
        msg_id,
        command,
        vfu_connect,
        f"{command_name(command)} sent by the client",
        vfu_observe,
    )


def _not_a_command(client, connect, observe, flags: int, what: str) -> None:
    """Send DEVICE_GET_INFO with header ``flags``: an error reply, no reply, or a
    close are fine; a success reply means the server executed it."""
    msg_id = client.send(GET_INFO, DeviceInfo(DeviceInfo.SIZE), flags=flags)
    reply = answer_or_silence(client, msg_id, GET_INFO, connect, what)
    if reply is None:
        observe(f"the server closed the connection on {what}")
    elif reply is False:
        observe(f"the server dropped {what} without a reply")
    else:
        assert not reply.ok, (
            f"the server executed {what} as a command (success reply): only type 0 is a command"
        )


@case("header/type-undefined", MUST)
@pytest.mark.parametrize("msg_type", range(2, 16))
def test_type_undefined(vfu_client, vfu_connect, vfu_observe, msg_type):
    """A message of a type that is neither Command (0) nor Reply (1) is not executed:
    error reply, no reply, or a close. Losing the framing after it (reading its payload
    as the next header) is a SHOULD not met: the spec does not say what a server does
    with a message it cannot use.

    Spec (Header): "The Type bits indicate the message type. Command (value
    0x0) indicates a command message. Reply (value 0x1) indicates a reply
    message" (other values are not defined: robustness). "Message size contains the
    size of the entire message, including the header."
    """
    _not_a_command(
        vfu_client,
        vfu_connect,
        vfu_observe,
        msg_type,
        f"a DEVICE_GET_INFO of message type {msg_type}",
    )


@case("header/reply-sent-to-server", MUST)
def test_reply_sent_to_server(vfu_client, vfu_connect, vfu_observe):
    """A Reply-typed message the server did not ask for is not executed: error
    reply, no reply, or a close. Losing the framing after it is a SHOULD not met.

    Spec (Header): "Reply (value 0x1) indicates a reply message acknowledging
    a previous command with the same message ID." (The server sent no command:
    the spec is silent; robustness.) "Message size contains the size of the entire
    message, including the header."
    """
    _not_a_command(
        vfu_client,
        vfu_connect,
        vfu_observe,
        int(MsgType.REPLY),
        "a Reply-typed DEVICE_GET_INFO no request of the server's asked for",
    )


@case("header/error-bit-on-command", MUST)
def test_error_bit_on_command(vfu_client, vfu_connect, vfu_observe):
    """A command with the Error bit set is answered (an error reply, or served
    ignoring the bit) or the connection is closed; it is never left unanswered.

    Spec (Header): "Error in a reply message indicates the command being
    acknowledged had an error." (The bit is defined for replies only; on a
    command the spec is silent: robustness.)
    """
    what = "a DEVICE_GET_INFO command with the Error bit set"
    msg_id = vfu_client.send(GET_INFO, DeviceInfo(DeviceInfo.SIZE), flags=FLAG_ERROR)
    reply = answer_or_silence(vfu_client, msg_id, GET_INFO, vfu_connect, what)
    assert reply is not False, f"the server did not answer {what}: a command must be replied to"
    if reply is None:
        vfu_observe(f"the server closed the connection on {what}")
    elif reply.ok:
        vfu_observe(f"the server ignored the Error bit on {what} and served it")


@case("header/error-field-on-command", MUST)
def test_error_field_on_command(vfu_client, vfu_device, vfu_connect, vfu_observe):
    """A command whose (reserved) error field is nonzero is answered, served or
    refused, or the connection is closed; it is never left unanswered.

    Spec (Header): "Error in a reply message is an optional UNIX errno value.
    ... It is reserved in a command message."
    """
    what = "a DEVICE_GET_INFO command with error field 22"
    msg_id = vfu_client.send(GET_INFO, DeviceInfo(DeviceInfo.SIZE), error=22)
    reply = answer_or_silence(vfu_client, msg_id, GET_INFO, vfu_connect, what)
    assert reply is not False, f"the server did not answer {what}: a command must be replied to"
    if reply is None:
        vfu_observe(f"the server closed the connection on {what}")
    elif reply.ok:
        assert reply.body == vfu_device.info, f"{what} was answered with {reply.body}"


def _after_garbage(client, connect, what: str) -> None:
    """Give the server a moment with what was sent, close, and check a new connection."""
    try:
        reply = client.recv_message(0.3)
        reply.close_fds()
    except (ClientError, OSError):
        pass  # nothing, a close, or bytes that do not frame: all fine here
    client.close()
    assert_new_connection_works(connect, what)


@case("header/msg-size-below-header", MUST)
@pytest.mark.parametrize("msg_size", [0, 1, 15])
def test_msg_size_below_header(vfu_client, vfu_connect, msg_size):
    """A header whose msg_size is below 16 (smaller than itself) does not crash or
    wedge the server: it still accepts a new connection.

    Spec (Header): "Message size contains the size of the entire message,
    including the header." (A smaller value cannot be framed; the spec is
    silent on it: robustness.)
    """
    vfu_client.send_raw(HEADER_STRUCT.pack(7, GET_INFO, msg_size, 0, 0) + DeviceInfo(16).pack())
    _after_garbage(vfu_client, vfu_connect, f"a header with msg_size {msg_size}")


@case("header/msg-size-truncated", MUST)
@pytest.mark.parametrize("sent", ["header-only", "part-of-body", "one-byte-short"])
def test_msg_size_truncated(vfu_client, vfu_connect, sent):
    """A message cut short (msg_size larger than what is sent before the client
    closes) does not crash or wedge the server: it accepts a new connection.

    Spec (Header): "Message size contains the size of the entire message,
    including the header." (The spec is silent on a client that leaves in the
    middle of a message: robustness.)
    """
    data = encode(9, GET_INFO, DeviceInfo(DeviceInfo.SIZE).pack())
    cut = {
        "header-only": HEADER_SIZE,
        "part-of-body": HEADER_SIZE + 6,
        "one-byte-short": len(data) - 1,
    }[sent]
    vfu_client.send_raw(data[:cut])
    _after_garbage(
        vfu_client, vfu_connect, f"a DEVICE_GET_INFO cut after {cut} of its {len(data)} bytes"
    )


@case("header/msg-size-huge", MUST)
@pytest.mark.parametrize("msg_size", [1 << 24, 0x7FFFFFFF, 0xFFFFFFFF])
def test_msg_size_huge(vfu_client, vfu_connect, msg_size):
    """A msg_size far above any sensible limit does not crash the server (no
    allocation of that size): it survives and accepts a new connection.

    Spec (Header): "Message size contains the size of the entire message,
    including the header." Security Considerations: "Standard tools and
    mechanisms should be used on both sides to validate input and prevent
    against denial of service scenarios, buffer overflow, etc." (robustness)
    """
    vfu_client.send_raw(HEADER_STRUCT.pack(11, GET_INFO, msg_size, 0, 0) + DeviceInfo(16).pack())
    _after_garbage(vfu_client, vfu_connect, f"a header with msg_size {msg_size:#x}")
