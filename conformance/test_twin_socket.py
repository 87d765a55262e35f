"""Twin-socket mode (0.9.2): the server's commands to the client on a socket of their own.

A client that sets ``twin_socket.supported`` in VERSION may be given the client end of
a fresh socket pair with the reply; the server's DMA_READ/DMA_WRITE requests and their
replies then travel there, and neither side may stall one channel waiting on the
other. Enabling the mode is the server's choice ("may optionally"): the cases of what
it does once enabled need ``twin_socket`` (discovery proposes it at 0.9.2, on a
connection of its own); the cases of when it must not be enabled, and of what the
capability holds, run on every 0.9.2 server. The client serves the twin socket in a
thread (``client.twin``) and lists anything but a DMA request that comes
there (``client.twin.unexpected``).
"""

from __future__ import annotations

import socket

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.client import ErrorReply, MalformedReply, Timeout, UnexpectedReply
from pytest_vfiouser.device import TWIN_PROBE
from pytest_vfiouser.protocol import Command, Version, command_name

from ._dma import SMALL_XFER, base, describe, dma, pattern, round_trip, two_maps
from ._support import accepted

__all__ = ["base"]  # a fixture of the module's cases

NEEDS = ("twin_socket",)
REVS = ("0.9.2",)
SUPPORTED = {"supported": True}
STALL_BOUND = 5.0  # seconds a command on the main socket may wait while a DMA request does


def _twin_client(vfu_connect, **kwargs):
    """A client that proposed twin-socket support, and the VERSION reply."""
    client = vfu_connect(**kwargs)
    try:
        reply = client.negotiate(capabilities=client.proposal(twin_socket=SUPPORTED))
    except MalformedReply as e:
        raise AssertionError(
            f"the VERSION reply to a proposal of twin_socket.supported does not decode: {e}"
        ) from None
    return client, reply


def _claimed(client) -> dict:
    """The reply's twin_socket object, if it claims the mode; else the case cannot run."""
    twin = client.server_caps.twin_socket
    if not (isinstance(twin, dict) and twin.get("supported") is True):
        pytest.skip(
            "the server did not enable twin-socket mode on this connection (it may: "
            '"the server may optionally set up a separate command channel")'
        )
    return twin


def _enabled(vfu_connect, **kwargs):
    """A client in twin-socket mode; the case fails if the reply claims the mode but
    cannot be used (twin_refused)."""
    client, _ = _twin_client(vfu_connect, **kwargs)
    _claimed(client)
    assert client.twin is not None, (
        f"the VERSION reply claims twin-socket mode but is inconsistent: {client.twin_refused}"
    )
    return client


# ---- negotiation


@case("twin_socket/capability-types", MUST, revisions=REVS)
def test_capability_types(vfu_connect):
    """The reply's twin_socket capability is an object whose supported is a boolean and
    whose fd_index is a number.

    Spec (VFIO_USER_VERSION): "twin_socket | object | Parameters for twin-socket mode";
    "supported | boolean | Indicates whether the sender supports twin-socket mode.";
    "fd_index | number | Specifies an index in the file descriptor array included with
    the message."
    """
    client, reply = _twin_client(vfu_connect)  # the codec checks the types as it decodes
    if client.server_caps.twin_socket is None:
        pytest.skip("the server did not state twin_socket in this reply (it may)")


@case("twin_socket/fd-index-names-fd", MUST, requires=NEEDS, revisions=REVS)
def test_fd_index_names_fd(vfu_connect):
    """A reply that sets twin_socket.supported names, in fd_index, one of the fds that came
    with it.

    Spec (VFIO_USER_VERSION): "Keep the server end of the socket pair and pass the client
    end in the file descriptor array included with the reply message."; "Indicate the
    index in the file descriptor array by the twin_socket.fd_index capability field in
    the reply"; "Otherwise, the reply from the server is inconsistent."
    """
    client, reply = _twin_client(vfu_connect)
    twin = _claimed(client)
    index = twin.get("fd_index")
    assert index is not None, (
        f"the reply sets twin_socket.supported but has no fd_index: twin_socket is {twin}"
    )
    assert 0 <= index < reply.fd_count, (
        f"twin_socket.fd_index is {index}; the reply carried {reply.fd_count} fds"
    )


@case("twin_socket/fd-is-socket", MUST, requires=NEEDS, revisions=REVS)
def test_fd_is_socket(vfu_connect):
    """The fd that fd_index names is a connected socket.

    Spec (VFIO_USER_VERSION): "fd_index ... The designated file descriptor is a socket
    which is to be used for the server-to-client command channel."; "Create a fresh socket
    pair."
    """
    client, reply = _twin_client(vfu_connect)
    twin = _claimed(client)
    index = twin.get("fd_index")
    if index is None or not 0 <= index < reply.fd_count:
        pytest.skip("cannot judge: fd_index names no fd (twin_socket/fd-index-names-fd)")
    assert client.twin is not None, f"the fd at fd_index {index}: {client.twin_refused}"
    sock = client.twin.sock
    try:
        sock.getpeername()
    except OSError as e:
        raise AssertionError(f"the socket at fd_index {index} is not connected: {e}") from None


@case("twin_socket/fresh-socket-pair", MUST, requires=NEEDS, revisions=REVS)
def test_fresh_socket_pair(vfu_connect):
    """The twin socket is a socket of its own: neither the server's listening socket nor
    its end of the main connection.

    Spec (VFIO_USER_VERSION): "The server enables twin-socket mode as follows: Create a
    fresh socket pair. Keep the server end of the socket pair and pass the client end in
    the file descriptor array included with the reply message."
    """
    client = _enabled(vfu_connect)
    sock = client.twin.sock
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    assert not listening, "the twin socket is a listening socket (the server's own?)"
    main = client.sock.getpeername()
    assert not main or sock.getsockname() != main, (
        f"the twin socket is bound to {main!r}: the server's end of the main connection, "
        "not the client end of a fresh socket pair"
    )


@pytest.mark.parametrize(
    "proposal", [{"supported": False}, {}], ids=["supported-false", "supported-absent"]
)
@case("twin_socket/only-when-supported", MUST, revisions=REVS)
def test_only_when_supported(vfu_connect, proposal):
    """A client whose twin_socket object does not set supported to true is not given a
    twin socket: the reply neither claims the mode nor carries an fd.

    Spec (VFIO_USER_VERSION): "If and only if the client has indicated support for
    twin-socket mode by setting twin_socket.supported to true in its capabilities, the
    server may optionally set up a separate command channel"; "supported ... Optional,
    defaults to false."
    """
    client = vfu_connect()
    reply = client.negotiate(capabilities=client.proposal(twin_socket=proposal))
    twin = client.server_caps.twin_socket
    assert not (isinstance(twin, dict) and twin.get("supported") is True), (
        f"the client proposed twin_socket {proposal}; the reply enables the mode: {twin}"
    )
    assert not reply.fd_count + reply.closed_fds, (
        f"the reply to a proposal of twin_socket {proposal} carried "
        f"{reply.fd_count + reply.closed_fds} fds"
    )


@case("twin_socket/not-beyond-max-msg-fds", MUST, requires=NEEDS, revisions=REVS)
def test_not_beyond_max_msg_fds(vfu_connect):
    """A client that takes no fds (max_msg_fds 0) gets no twin socket fd, though it
    supports the mode. (The control: discovery's probe, the same proposal with
    max_msg_fds 16 in this run, was given the mode.)

    Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file descriptors
    that can be received by the sender in one message."
    """
    client = vfu_connect()
    proposal = client.proposal(max_msg_fds=0, twin_socket=SUPPORTED)
    reply = client.request(Command.VERSION, Version(0, 0, {"capabilities": proposal}))
    accepted(reply, "VERSION with max_msg_fds 0 and twin_socket.supported")
    sent = reply.fd_count + reply.closed_fds
    assert not sent, f"the client stated max_msg_fds 0; the VERSION reply carried {sent} fds"


@case(
    "twin_socket/recommended-for-dma-requests",
    SHOULD,
    requires=("dma_engine",),
    revisions=REVS,
)
def test_recommended_for_dma_requests(vfu_client, vfu_hooks, vfu_device, base):
    """A server that sends DMA_READ/DMA_WRITE enabled twin-socket mode for discovery's
    probe, a client that set twin_socket.supported.

    Spec (VFIO_USER_VERSION): "The twin-socket feature is optional, so some servers may not
    support it. However, for server implementations that do send server-to-client commands
    it is strongly recommended to implement twin-socket support."
    """
    a, b = two_maps(vfu_client, base)
    _, requests = round_trip(vfu_hooks, vfu_client, a + 0x10, b + 0x20, 0x100)
    if not requests:
        pytest.skip("cannot judge: the device's DMA sent no DMA_READ/DMA_WRITE request")
    assert vfu_device.probed.get(TWIN_PROBE), (
        f"the server sends server-to-client commands ({len(requests)} DMA requests here) "
        "but did not enable twin-socket mode for a client that set twin_socket.supported"
    )


# ---- the server's requests on the twin socket


def _requests_on(client, mark: int, mark_twin: int) -> tuple[list, list]:
    """The DMA requests since the marks: (on the main socket, on the twin socket)."""
    return client.dma_requests[mark:], client.twin.requests[mark_twin:]


@case("twin_socket/dma-read-on-twin", MUST, requires=(*NEEDS, "dma_engine"), revisions=REVS)
def test_dma_read_on_twin(vfu_connect, vfu_hooks, base):
    """The device's reads of memory mapped without an fd come as DMA_READ requests on the
    twin socket, none on the main socket.

    Spec (VFIO_USER_DMA_READ): "This message and its reply are passed over the separate
    server-to-client socket if twin-socket mode has been negotiated during connection
    setup."
    """
    client = _enabled(vfu_connect)
    a, _ = two_maps(client, base)
    client.memory.write(a, pattern(0x800))
    mark, mark_twin = len(client.dma_requests), len(client.twin.requests)
    dma(vfu_hooks, client, "read", a, 0x800)
    main, twin = _requests_on(client, mark, mark_twin)
    on_main = [describe(r) for r in main if r.command == Command.DMA_READ]
    assert not on_main, f"DMA_READ requests came on the main socket: {on_main}"
    assert any(r.command == Command.DMA_READ for r in twin), (
        "the device's DMA read completed without a DMA_READ request on the twin socket"
    )


@case("twin_socket/dma-write-on-twin", MUST, requires=(*NEEDS, "dma_engine"), revisions=REVS)
def test_dma_write_on_twin(vfu_connect, vfu_hooks, base):
    """The device's writes to memory mapped without an fd come as DMA_WRITE requests on the
    twin socket, none on the main socket, and the data arrives.

    Spec (VFIO_USER_DMA_WRITE): "This message and its reply are passed over the separate
    server-to-client socket if twin-socket mode has been negotiated during connection
    setup."; "data is the data to write"
    """
    client = _enabled(vfu_connect)
    a, b = two_maps(client, base)
    mark, mark_twin = len(client.dma_requests), len(client.twin.requests)
    data, _ = round_trip(vfu_hooks, client, a + 0x40, b + 0x80, 0x800, seed=3)
    main, twin = _requests_on(client, mark, mark_twin)
    on_main = [describe(r) for r in main if r.command == Command.DMA_WRITE]
    assert not on_main, f"DMA_WRITE requests came on the main socket: {on_main}"
    assert any(r.command == Command.DMA_WRITE for r in twin), (
        "the device's DMA write completed without a DMA_WRITE request on the twin socket"
    )
    assert client.memory.read(b + 0x80, len(data)) == data, (
        "the data the device wrote over the twin socket is not what it read"
    )


@case(
    "twin_socket/requests-within-max-data-xfer-size",
    MUST,
    requires=(*NEEDS, "dma_engine"),
    revisions=REVS,
)
def test_requests_within_max_data_xfer_size(vfu_connect, vfu_hooks, base):
    """DMA requests on the twin socket never ask for more than the client's
    max_data_xfer_size: a larger transfer is split.

    Spec (Read and Write Operations): "The count field must not exceed the value of
    max_data_xfer_size of the peer, for both reads and writes."
    """
    client = _enabled(vfu_connect, max_data_xfer_size=SMALL_XFER)
    a, b = base, base + 0x10000
    for address in (a, b):
        accepted(client.dma_map(address, 0x8000), f"DMA_MAP of [{address:#x}, +0x8000)")
    mark_twin = len(client.twin.requests)
    length = 3 * SMALL_XFER + 0x200
    data, _ = round_trip(vfu_hooks, client, a + 0x80, b + 0x40, length, seed=5)
    big = [describe(r) for r in client.twin.requests[mark_twin:] if (r.count or 0) > SMALL_XFER]
    assert not big, (
        f"the client negotiated max_data_xfer_size {SMALL_XFER}; the server sent larger "
        f"requests on the twin socket: {big}"
    )
    assert client.memory.read(b + 0x40, length) == data, (
        "a transfer split into several requests did not move the data intact"
    )


@case("twin_socket/main-not-stalled", MUST, requires=(*NEEDS, "dma_engine"), revisions=REVS)
def test_main_not_stalled(vfu_connect, vfu_hooks, base):
    """While a DMA_READ of the server's waits unanswered on the twin socket, a command on
    the main socket is answered.

    Spec (Socket): "Note that it is still illegal for implementations to stall command or
    reply processing indefinitely while waiting for replies on the other channel, as this
    may lead to deadlocks."
    """
    client = _enabled(vfu_connect)
    a, _ = two_maps(client, base)
    dma(vfu_hooks, client, "read", a, 0x100)  # the device is programmed; the doorbell next
    client.twin.hold()
    try:
        before = client.twin.arrived  # counted before the doorbell: its request may be quick
        doorbell = _ring_again(client)
        if not client.twin.wait_arrived(before + 1, client.timeout):
            pytest.skip("cannot judge: the doorbell brought no DMA request on the twin socket")
        try:
            info = client.request(Command.DEVICE_GET_INFO, b"", timeout=STALL_BOUND)
        except Timeout:
            raise AssertionError(
                f"DEVICE_GET_INFO on the main socket had no reply in {STALL_BOUND:g} s while "
                "the server's DMA_READ waited for its reply on the twin socket"
            ) from None
        except UnexpectedReply as e:
            pytest.skip(
                "cannot judge: the server answered the doorbell before DEVICE_GET_INFO "
                f"(it gave up its DMA request?): {e}"
            )
    finally:
        client.twin.release()
    assert info.is_reply, f"DEVICE_GET_INFO: {info.header.describe()}"
    client.recv_reply(doorbell[0], command=doorbell[1])


def _ring_again(client) -> tuple[int, int]:
    """The last REGION_WRITE the DMA hook sent (its doorbell), sent again without waiting
    for the reply: (msg_id, command)."""
    write = client.wire_log.last_sent(Command.REGION_WRITE)
    if write is None:
        pytest.skip("cannot judge: the DMA hook rings no doorbell with REGION_WRITE")
    return client.send(Command.REGION_WRITE, write), Command.REGION_WRITE


@case("twin_socket/replies-on-main", MUST, requires=NEEDS, revisions=REVS)
def test_replies_on_main(vfu_connect, vfu_device):
    """In twin-socket mode the replies to the client's commands still come on the main
    socket, and nothing but the server's own requests comes on the twin socket.

    Spec (Socket): "Commands in the client-to-server direction are handled on the main
    communication socket which the client connects to, and replies to these commands are
    passed on the same socket. Commands sent in the other direction from the server to the
    client as well as their corresponding replies can optionally be passed across a
    separate socket"
    """
    client = _enabled(vfu_connect)
    commands = [Command.DEVICE_GET_INFO]
    try:
        accepted(client.device_get_info(), "DEVICE_GET_INFO")
        for index in range(min(vfu_device.info.num_regions, 3)):
            commands.append(Command.DEVICE_GET_REGION_INFO)
            client.region_info(index).check()
        for index in range(min(vfu_device.info.num_irqs, 2)):
            commands.append(Command.DEVICE_GET_IRQ_INFO)
            client.irq_info(index).check()
    except (Timeout, ErrorReply) as e:
        names = ", ".join(command_name(c) for c in commands)
        raise AssertionError(f"in twin-socket mode, of {names}: {e}") from None
    client.request(Command.DEVICE_GET_INFO, b"")  # a last round trip: the twin has had time
    assert not client.twin.unexpected, (
        f"messages other than the server's requests came on the twin socket: "
        f"{client.twin.unexpected}"
    )
