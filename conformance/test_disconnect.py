"""Client Disconnection: what the server does when its client goes away.

The spec lets a server exit when its client disconnects ("the server can
automatically exit"); cases that need the server afterwards are skipped (with
the reason) for such a server, and ``disconnect/new-client-accepted`` reports it.
"""

from __future__ import annotations

import itertools
import os
import time

import pytest

from pytest_vfiouser import MAY, MUST, SHOULD, case
from pytest_vfiouser.client import ConnectionClosed, Timeout
from pytest_vfiouser.protocol import (
    HEADER_SIZE,
    HEADER_STRUCT,
    Command,
    DmaMap,
    DmaMapFlags,
    IrqInfoFlags,
    IrqSetFlags,
)

from ._support import (
    accepted,
    assert_framed,
    assert_new_connection_works,
    eventfd_value,
    make_eventfd,
    new_client,
    server_max_msg_fds,
    wait_server_fds,
)

SIZE = 0x4000
EXIT_ALLOWED = 'the spec allows it: "the server can automatically exit"'
_bases = itertools.count()


@pytest.fixture
def base() -> int:
    """A client DMA address range no other case of this module uses."""
    return 0x40_0000_0000 + next(_bases) * 0x1000_0000


@pytest.fixture
def baseline(vfu_device, vfu_target) -> int | None:
    """The server's open fd count with no client connected (None: cannot be counted)."""
    return vfu_target.snapshot().fds


def _disconnect(client, vfu_target, baseline: int | None) -> bool:
    """Close ``client`` once the server has read all it sent (so what it gets is the cut the
    case made, then the close), wait until it has let go of it; whether it still runs."""
    client.wait_peer_read(client.timeout)
    client.close()
    if vfu_target.exits_after_clients:
        pass  # it exits after its clients: new_client waits for that (or finds it left behind)
    elif baseline is not None:
        wait_server_fds(vfu_target, baseline, client.timeout)
    else:
        time.sleep(0.5)
    deadline = time.monotonic() + 0.1  # a server on its way out
    while vfu_target.alive and time.monotonic() < deadline:
        time.sleep(0.02)
    return vfu_target.alive


def _exited(vfu_target) -> str:
    crash = vfu_target.crash()
    assert crash is None, crash.message()
    if vfu_target.serves_one_client:
        return "the server stays alive after its client disconnects but serves no other client"
    return "the server exited after its client disconnected"


def _eventfd_irq(vfu_device):
    """The first IRQ index with VFIO_IRQ_INFO_EVENTFD and a count, or None."""
    for index in sorted(vfu_device.irqs):
        info = vfu_device.irqs[index]
        if info.count and info.flags & IrqInfoFlags.EVENTFD:
            return info
    return None


@case("disconnect/dma-maps-gone", SHOULD)
def test_dma_maps_gone(vfu_connect, vfu_target, baseline, base):
    """After the client disconnects, its DMA mappings are gone: a new client maps the same
    ranges without EEXIST.

    Spec (Client Disconnection): "the server should respond to a client disconnection as
    follows: all client memory regions are unmapped and cleaned up (including closing any
    passed file descriptors)"
    """
    client = vfu_connect()
    client.negotiate()
    fd = client.memory.create_memfd_region(base, SIZE)
    accepted(client.dma_map(base, SIZE, fd=fd), f"DMA_MAP of [{base:#x}, +{SIZE:#x}) with a memfd")
    accepted(client.dma_map(base + SIZE, SIZE), f"DMA_MAP of [{base + SIZE:#x}, +{SIZE:#x})")
    _disconnect(client, vfu_target, baseline)
    client = new_client(vfu_connect)
    if client is None:
        pytest.skip(f"{_exited(vfu_target)} ({EXIT_ALLOWED})")
    for address in (base, base + SIZE):
        reply = client.dma_map(address, SIZE)
        accepted(
            reply,
            f"DMA_MAP by a new client of [{address:#x}, +{SIZE:#x}), which the "
            "disconnected client had mapped (the old mapping was not removed)",
        )


@case("disconnect/client-fds-closed", SHOULD)
def test_client_fds_closed(vfu_connect, vfu_target, vfu_device, vfu_observe, baseline, base):
    """After the client disconnects, the server has closed every fd it passed (DMA memfds,
    IRQ eventfds): its open fd count is back to what it was before the client connected.

    Spec (Client Disconnection): "all client memory regions are unmapped and cleaned up
    (including closing any passed file descriptors)" ... "all IRQ file descriptors passed
    from the old client are closed"
    """
    if baseline is None:
        pytest.skip("needs the server's pid to count its fds (--vfu-server, not --vfu-socket)")
    client = vfu_connect()
    client.negotiate()
    passed = []
    for i in range(2):
        address = base + i * SIZE
        fd = client.memory.create_memfd_region(address, SIZE)
        accepted(
            client.dma_map(address, SIZE, fd=fd),
            f"DMA_MAP of [{address:#x}, +{SIZE:#x}) with a memfd",
        )
        passed.append("a DMA memfd")
    info = _eventfd_irq(vfu_device)
    eventfds = []
    try:
        if info is not None:
            n = min(info.count, server_max_msg_fds(client))
            eventfds = [make_eventfd() for _ in range(n)]
            client.set_irqs(info.index, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER, 0, 0)
            accepted(
                client.set_irqs(
                    info.index,
                    IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER,
                    0,
                    n,
                    fds=eventfds,
                ),
                f"SET_IRQS DATA_EVENTFD|ACTION_TRIGGER of IRQ {info.index} with {n} eventfds",
            )
            passed += ["an IRQ eventfd"] * n
        during = vfu_target.snapshot().fds
        alive = _disconnect(client, vfu_target, baseline)
        after = vfu_target.snapshot().fds
    finally:
        for fd in eventfds:
            os.close(fd)
    if not alive:
        vfu_observe(f"{_exited(vfu_target)}, which closed everything ({EXIT_ALLOWED})")
        return
    assert after is not None and after <= baseline, (
        f"the server held {baseline} fds before the client connected, {during} while it was "
        f"connected (having been passed {len(passed)} fds: {', '.join(sorted(set(passed)))}), "
        f"and still {after} two seconds after it disconnected: passed file descriptors were "
        "not closed"
    )


@case("disconnect/irq-eventfds-released", SHOULD, requires=("irq_trigger",))
def test_irq_eventfds_released(vfu_connect, vfu_target, vfu_device, vfu_hooks, baseline):
    """After the client disconnects, its IRQ eventfds are no longer signalled: an interrupt
    raised while a new client is connected does not reach them.

    Spec (Client Disconnection): "all IRQ file descriptors passed from the old client are
    closed"; "The expectation is that when a client reconnects, it will re-establish IRQ and
    client memory mappings."
    """
    info = _eventfd_irq(vfu_device)
    if info is None:
        pytest.skip("the device has no IRQ index with VFIO_IRQ_INFO_EVENTFD and a count")
    client = vfu_connect()
    client.negotiate()
    fd = make_eventfd()
    try:
        client.set_irqs(info.index, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER, 0, 0)
        if info.flags & IrqInfoFlags.MASKABLE:
            client.set_irqs(
                info.index, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_UNMASK, 0, info.count
            )
        accepted(
            client.set_irqs(
                info.index, IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER, 0, 1, fds=[fd]
            ),
            f"SET_IRQS DATA_EVENTFD|ACTION_TRIGGER of {info.index}.0",
        )
        vfu_hooks.trigger_irq(client, info.index, 0)
        assert eventfd_value(fd, 1.0), (
            f"interrupt {info.index}.0 did not signal its eventfd even before the disconnect"
        )
        _disconnect(client, vfu_target, baseline)
        client = new_client(vfu_connect)
        if client is None:
            pytest.skip(f"{_exited(vfu_target)} ({EXIT_ALLOWED})")
        if info.flags & IrqInfoFlags.MASKABLE:  # an AUTOMASKED interrupt masked itself
            client.set_irqs(info.index, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_UNMASK, 0, 1)
        vfu_hooks.trigger_irq(client, info.index, 0)
        assert not eventfd_value(fd, 0.2), (
            f"after its client disconnected, the server still signalled the eventfd that client "
            f"had assigned to interrupt {info.index}.0"
        )
    finally:
        os.close(fd)


@case("disconnect/device-state-retained", SHOULD)
def test_device_state_retained(vfu_connect, vfu_target, vfu_device, baseline):
    """After the client disconnects, the device keeps its state: a value written to a
    scratch range reads back through a new client.

    Spec (Client Disconnection): "the device state should otherwise be retained"
    """
    ranges = vfu_device.scratch_ranges()
    if not ranges:
        pytest.skip("needs profile: a region with scratch ranges")
    region, offset, length = ranges[0]
    value = os.urandom(min(length, 8))
    client = vfu_connect()
    client.negotiate()
    accepted(
        client.region_write(region, offset, value),
        f"REGION_WRITE of region {region} [{offset:#x}, +{len(value)}] (a scratch range)",
    )
    _disconnect(client, vfu_target, baseline)
    client = new_client(vfu_connect)
    if client is None:
        pytest.skip(f"{_exited(vfu_target)} ({EXIT_ALLOWED})")
    got = accepted(
        client.region_read(region, offset, len(value)),
        f"REGION_READ of region {region} [{offset:#x}, +{len(value)}]",
    ).body.data
    assert got == value, (
        f"region {region} at {offset:#x} held {value.hex()} when the client disconnected; a new "
        f"client reads {got.hex()}: the device state was not retained"
    )


@case("disconnect/new-client-accepted", MAY)
def test_new_client_accepted(vfu_connect, vfu_target, vfu_observe, baseline):
    """After a client disconnects, the server accepts and serves a new client (it may
    exit instead).

    Spec (Client Disconnection): "the guest is shut down so the device is no longer needed
    therefore the server can automatically exit. However, there can be cases where a client
    disconnection should not result in a server exit" ... "The expectation is that when a
    client reconnects, it will re-establish IRQ and client memory mappings."
    """
    client = vfu_connect()
    client.negotiate()
    assert_framed(client, "VERSION")
    _disconnect(client, vfu_target, baseline)
    client = new_client(vfu_connect)
    if client is None:
        vfu_observe(f"{_exited(vfu_target)} ({EXIT_ALLOWED})")
        return
    assert_framed(client, "the previous client's disconnect")


def _dma_map_head(payload_bytes: int) -> bytes:
    """A DMA_MAP header announcing the full 32-byte payload, and ``payload_bytes`` of it."""
    payload = DmaMap(
        DmaMap.SIZE, DmaMapFlags.READ | DmaMapFlags.WRITE, 0, 0x50_0000_0000, SIZE
    ).pack()
    header = HEADER_STRUCT.pack(0x4242, Command.DMA_MAP, HEADER_SIZE + len(payload), 0, 0)
    return header + payload[:payload_bytes]


PARTIAL = {
    "partial-header": lambda: HEADER_STRUCT.pack(0x4242, Command.DEVICE_GET_INFO, 32, 0, 0)[:7],
    "header-without-payload": lambda: HEADER_STRUCT.pack(0x4242, Command.DEVICE_GET_INFO, 32, 0, 0),
    "partial-payload": lambda: _dma_map_head(10),
}


@case("disconnect/abrupt-mid-message", MUST)
@pytest.mark.parametrize("cut", [*PARTIAL, "partial-payload-with-fd"])
def test_abrupt_mid_message(vfu_connect, vfu_target, vfu_observe, baseline, cut):
    """A client that disconnects in the middle of a message leaves the server running (or
    exiting cleanly, as after any disconnect), and a new client is served.

    Spec (Socket Disconnection Behavior): "The server and the client can disconnect from
    each other, either intentionally or unexpectedly. Both the client and the server need
    to know how to handle such events."
    """
    client = vfu_connect()
    client.negotiate()
    if cut == "partial-payload-with-fd":
        fd = os.memfd_create("vfio-user-conformance-abrupt", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, SIZE)
            client.send_raw(_dma_map_head(10), fds=[fd])
        finally:
            os.close(fd)
    else:
        client.send_raw(PARTIAL[cut]())
    alive = _disconnect(client, vfu_target, baseline)
    if not alive:
        vfu_observe(f"{_exited(vfu_target)} in the middle of a message ({EXIT_ALLOWED})")
        return
    assert_new_connection_works(vfu_connect, f"a client disconnecting after {cut}")


class _Abandon(Exception):
    """Raised instead of answering the server's DMA request."""


@case("disconnect/abrupt-during-server-dma", MUST, requires=("dma_engine",))
def test_abrupt_during_server_dma(vfu_connect, vfu_target, vfu_hooks, vfu_observe, baseline, base):
    """A client that disconnects while the server waits for its reply to DMA_READ leaves
    the server running (or exiting cleanly), and a new client is served.

    Spec (Socket Disconnection Behavior): "The server and the client can disconnect from
    each other, either intentionally or unexpectedly. Both the client and the server need
    to know how to handle such events."
    """
    client = vfu_connect()
    client.negotiate()
    accepted(client.dma_map(base, SIZE), f"DMA_MAP of [{base:#x}, +{SIZE:#x})")
    requests = []

    def abandon(hdr, payload, fds):  # instead of serving the request: hang up
        requests.append(hdr)
        raise _Abandon

    client._serve_dma = abandon  # the client's hook for the server's DMA requests
    try:
        vfu_hooks.trigger_dma(client, "read", base, 0x100, 0)
    except _Abandon:
        pass
    except (ConnectionClosed, Timeout) as e:
        raise AssertionError(f"the device's DMA read did not reach the client: {e}") from e
    if not requests:
        pytest.skip("the device's DMA read completed without a DMA_READ request")
    alive = _disconnect(client, vfu_target, baseline)
    if not alive:
        vfu_observe(f"{_exited(vfu_target)} while waiting for a DMA reply ({EXIT_ALLOWED})")
        return
    assert_new_connection_works(vfu_connect, "a client disconnecting instead of answering DMA_READ")
