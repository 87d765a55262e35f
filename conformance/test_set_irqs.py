"""VFIO_USER_DEVICE_SET_IRQS: eventfds, triggers, masks, and what is refused.

Cases run once per IRQ index the device reports (``vfu_irq_index``); an index
a case does not apply to (count 0, no VFIO_IRQ_INFO_EVENTFD, ...) is skipped
with the reason. Eventfds are read without blocking, after a short poll.
"""

from __future__ import annotations

import os
import time

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.client import ErrorReply
from pytest_vfiouser.protocol import (
    HEADER_SIZE,
    Command,
    IrqInfoFlags,
    IrqSetFlags,
    SetIrqs,
)

from ._support import (
    QUIET_WAIT,
    SIGNAL_WAIT,
    accepted,
    answer,
    eventfd_value,
    make_eventfd,
    send_refused,
    server_max_msg_fds,
    wait_server_fds,
)

NONE, BOOL, EVENTFD = IrqSetFlags.DATA_NONE, IrqSetFlags.DATA_BOOL, IrqSetFlags.DATA_EVENTFD
MASK, UNMASK, TRIGGER = (
    IrqSetFlags.ACTION_MASK,
    IrqSetFlags.ACTION_UNMASK,
    IrqSetFlags.ACTION_TRIGGER,
)


@pytest.fixture
def eventfds():
    """``eventfds(n)``: n new eventfds, closed at teardown (the server holds its own copies)."""
    made: list[int] = []

    def make(n: int = 1) -> list[int]:
        fds = [make_eventfd() for _ in range(n)]
        made.extend(fds)
        return fds

    yield make
    for fd in made:
        os.close(fd)


def _irq(vfu_device, index: int, *, eventfd: bool = False, maskable: bool | None = None):
    """The IrqInfo of ``index``, skipping the case when the index does not fit it."""
    info = vfu_device.irq(index)
    if info is None:
        pytest.skip(f"IRQ index {index} could not be queried during discovery")
    if info.count == 0:
        pytest.skip(f"IRQ index {index} has count 0")
    if eventfd and not info.flags & IrqInfoFlags.EVENTFD:
        pytest.skip(f"IRQ index {index} lacks VFIO_IRQ_INFO_EVENTFD")
    if maskable is not None and bool(info.flags & IrqInfoFlags.MASKABLE) != maskable:
        pytest.skip(f"IRQ index {index} is {'not ' if maskable else ''}MASKABLE")
    return info


def _prepare(client, info) -> None:
    """Start from a disabled, unmasked index (the device keeps its mask state across
    clients, so an AUTOMASKED interrupt fired by an earlier case may still be masked)."""
    client.set_irqs(info.index, NONE | TRIGGER, 0, 0)
    if info.flags & IrqInfoFlags.MASKABLE:
        client.set_irqs(info.index, NONE | UNMASK, 0, info.count)


def _assign(client, info, eventfds, limit: int | None = None) -> list[int]:
    """Prepare the index and assign trigger eventfds to its first sub-indexes (as many as
    one message may carry); returns the eventfds, drained."""
    _prepare(client, info)
    n = min(info.count, server_max_msg_fds(client), limit or info.count)
    if n < 1:
        pytest.skip("the server takes no fds (max_msg_fds 0)")
    fds = eventfds(n)
    reply = client.set_irqs(info.index, EVENTFD | TRIGGER, 0, n, fds=fds)
    accepted(
        reply,
        f"SET_IRQS DATA_EVENTFD|ACTION_TRIGGER of IRQ {info.index} "
        f"sub-indexes 0..{n - 1} with {n} eventfds",
    )
    for fd in fds:
        eventfd_value(fd)
    return fds


def _signals(fds: list[int], expect: set[int]) -> list[int]:
    """Each eventfd's counter (read, so reset): the expected ones after waiting for them,
    the others after one short quiet period."""
    got = {i: eventfd_value(fds[i], SIGNAL_WAIT) for i in sorted(expect)}
    time.sleep(QUIET_WAIT)
    return [got[i] if i in got else eventfd_value(fd) for i, fd in enumerate(fds)]


def _signalled_after_unmask(client, vfu_hooks, info, fd: int, how: str) -> bool:
    """After UNMASK: an interrupt held while masked may be delivered now (the spec does not
    say); if none is, a new one must be."""
    if eventfd_value(fd, QUIET_WAIT):
        return True
    _fire(client, vfu_hooks, info.index, 0, how)
    return bool(eventfd_value(fd, SIGNAL_WAIT))


def _fire(client, vfu_hooks, index: int, sub: int, how: str | None = None) -> str:
    """Make interrupt ``sub`` of ``index`` happen; how it was done ("client" or "device").

    Without ``how``: a client trigger (DATA_NONE|TRIGGER), or, if the server refuses that,
    the device through the irq trigger hook (the case is UNIMPLEMENTED without one). With
    ``how``, that way only, whatever the answer (the interrupt may be disabled by then)."""
    if how != "device":
        if client.set_irqs(index, NONE | TRIGGER, sub, 1).ok or how == "client":
            return "client"
    try:
        vfu_hooks.trigger_irq(client, index, sub)
    except ErrorReply:
        if how is None:
            raise
    return "device"


def _rearm(client, info, sub: int) -> None:
    """Unmask an AUTOMASKED sub-index after it fired."""
    if info.flags & IrqInfoFlags.AUTOMASKED and info.flags & IrqInfoFlags.MASKABLE:
        client.set_irqs(info.index, NONE | UNMASK, sub, 1)


def _set_irqs_payload(index, flags, start, count, data=b"", argsz=None) -> bytes:
    if argsz is None:
        argsz = SetIrqs.FIXED_SIZE + len(data)
    return SetIrqs(argsz, int(flags), index, start, count, data).pack()


# ---------------------------------------------------------------------------
# VFIO_USER_DEVICE_SET_IRQS: assigning eventfds and interrupts


@case("set_irqs/eventfd-assign", MUST)
def test_assign_eventfds(vfu_client, vfu_device, vfu_irq_index, eventfds):
    """DATA_EVENTFD|ACTION_TRIGGER with one eventfd per sub-index succeeds, with a
    header-only reply.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "VFIO_IRQ_SET_DATA_EVENTFD indicates an array of
    event file descriptors was sent in the message meta-data. These descriptors will be
    signalled when the action defined by the action flags occurs."; (Reply): "There is no
    payload in the reply."; (GET_IRQ_INFO): "VFIO_IRQ_INFO_EVENTFD indicates the IRQ type
    can support server eventfd signalling."
    """
    info = _irq(vfu_device, vfu_irq_index, eventfd=True)
    _prepare(vfu_client, info)
    n = min(info.count, server_max_msg_fds(vfu_client))
    if n < 1:
        pytest.skip("the server takes no fds (max_msg_fds 0)")
    reply = vfu_client.set_irqs(info.index, EVENTFD | TRIGGER, 0, n, fds=eventfds(n))
    accepted(
        reply,
        f"SET_IRQS DATA_EVENTFD|ACTION_TRIGGER of IRQ {info.index} sub-indexes "
        f"0..{n - 1} with {n} eventfds",
    )
    assert not reply.payload and reply.msg_size == HEADER_SIZE, (
        f"the SET_IRQS reply carries {len(reply.payload)} payload bytes; there is no payload "
        "in the reply"
    )


@case("set_irqs/device-interrupt-signals-eventfd", MUST, requires=("irq_trigger",))
def test_device_interrupt_signals_eventfd(
    vfu_client, vfu_device, vfu_hooks, vfu_irq_index, eventfds
):
    """An interrupt the device raises signals the eventfd assigned to that sub-index, and
    no other.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "This associates the IRQ with a particular eventfd on
    the server side." ... "The server may trigger the IRQ by writing 1 to the eventfd."
    """
    info = _irq(vfu_device, vfu_irq_index, eventfd=True)
    fds = _assign(vfu_client, info, eventfds)
    sub = len(fds) - 1
    vfu_hooks.trigger_irq(vfu_client, info.index, sub)
    got = _signals(fds, {sub})
    assert got[sub], (
        f"the device raised interrupt {info.index}.{sub}, but its eventfd was not signalled"
    )
    others = {i: v for i, v in enumerate(got) if v and i != sub}
    assert not others, (
        f"the device raised interrupt {info.index}.{sub}, but the eventfds "
        f"of sub-indexes {sorted(others)} were signalled too"
    )


@case("set_irqs/client-trigger-data-none", MUST)
def test_client_trigger_none(vfu_client, vfu_device, vfu_irq_index, eventfds):
    """DATA_NONE|ACTION_TRIGGER signals the eventfds of the sub-indexes start..start+count-1
    only.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "A client may trigger a device IRQ itself, by sending
    a VFIO_USER_DEVICE_SET_IRQ message with flags=(VFIO_IRQ_SET_DATA_NONE/BOOL|
    VFIO_IRQ_SET_ACTION_TRIGGER)." ... "VFIO_IRQ_SET_DATA_NONE indicates there is no data
    field in the command. The action is performed unconditionally."
    """
    info = _irq(vfu_device, vfu_irq_index, eventfd=True)
    fds = _assign(vfu_client, info, eventfds)
    sub = len(fds) - 1
    reply = vfu_client.set_irqs(info.index, NONE | TRIGGER, sub, 1)
    if not reply.ok:
        pytest.skip(
            f"the server refuses DATA_NONE|ACTION_TRIGGER on IRQ {info.index} (the spec "
            'allows it: "Not all interrupt types support every combination of data '
            'and action flags.")'
        )
    got = _signals(fds, {sub})
    assert got[sub], (
        f"SET_IRQS DATA_NONE|ACTION_TRIGGER of {info.index}.{sub} succeeded, but "
        "its eventfd was not signalled"
    )
    others = sorted(i for i, v in enumerate(got) if v and i != sub)
    assert not others, (
        f"SET_IRQS DATA_NONE|ACTION_TRIGGER of {info.index}.{sub} also "
        f"signalled sub-indexes {others}"
    )


@case("set_irqs/client-trigger-data-bool", MUST)
def test_client_trigger_bool(vfu_client, vfu_device, vfu_irq_index, eventfds):
    """DATA_BOOL|ACTION_TRIGGER signals the eventfds of the sub-indexes whose boolean is
    true, and only those.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "VFIO_IRQ_SET_DATA_BOOL indicates the data field is an
    array of boolean bytes. The action is performed if the corresponding boolean is true."
    """
    info = _irq(vfu_device, vfu_irq_index, eventfd=True)
    fds = _assign(vfu_client, info, eventfds)
    n = len(fds)
    reply = vfu_client.set_irqs(info.index, BOOL | TRIGGER, 0, n, data=bytes(n))
    if not reply.ok:
        pytest.skip(
            f"the server refuses DATA_BOOL|ACTION_TRIGGER on IRQ {info.index} (the spec "
            'allows it: "Not all interrupt types support every combination of data '
            'and action flags.")'
        )
    got = _signals(fds, set())
    fired = sorted(i for i, v in enumerate(got) if v)
    assert not fired, (
        f"DATA_BOOL|ACTION_TRIGGER with every boolean false signalled "
        f"sub-indexes {fired} of IRQ {info.index}"
    )
    sub = n - 1
    data = bytes(n - 1) + b"\x01"
    accepted(
        vfu_client.set_irqs(info.index, BOOL | TRIGGER, 0, n, data=data),
        f"DATA_BOOL|ACTION_TRIGGER of IRQ {info.index} with booleans {list(data)}",
    )
    got = _signals(fds, {sub})
    assert got[sub], (
        f"DATA_BOOL|ACTION_TRIGGER with booleans {list(data)} did not signal sub-index {sub}"
    )
    others = sorted(i for i, v in enumerate(got) if v and i != sub)
    assert not others, (
        f"DATA_BOOL|ACTION_TRIGGER with booleans {list(data)} also signalled "
        f"sub-indexes {others}, whose boolean is false"
    )


@case("set_irqs/eventfd-deassign", MUST)
def test_deassign(vfu_client, vfu_device, vfu_hooks, vfu_irq_index, eventfds):
    """DATA_EVENTFD|ACTION_TRIGGER without fds de-assigns: the eventfd is signalled no more.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "If no file descriptors are provided, this de-assigns
    the specified previously configured interrupts."
    """
    info = _irq(vfu_device, vfu_irq_index, eventfd=True)
    fds = _assign(vfu_client, info, eventfds)
    sub = len(fds) - 1
    how = _fire(vfu_client, vfu_hooks, info.index, sub)
    assert _signals(fds, {sub})[sub], (
        f"interrupt {info.index}.{sub} did not signal its eventfd even before the de-assign"
    )
    _rearm(vfu_client, info, sub)
    reply = vfu_client.set_irqs(info.index, EVENTFD | TRIGGER, 0, len(fds))
    accepted(
        reply, f"SET_IRQS DATA_EVENTFD|ACTION_TRIGGER of IRQ {info.index} without fds (de-assign)"
    )
    _fire(vfu_client, vfu_hooks, info.index, sub, how)
    got = _signals(fds, set())
    fired = sorted(i for i, v in enumerate(got) if v)
    assert not fired, (
        f"after the de-assign, interrupt {info.index}.{sub} still signalled the "
        f"eventfds of sub-indexes {fired}"
    )


@case("set_irqs/disable-index", MUST)
def test_disable_index(vfu_client, vfu_device, vfu_hooks, vfu_irq_index, eventfds):
    """count 0, start 0 and DATA_NONE disables the whole index: no eventfd is signalled.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "As a special case, a count (and start) of 0, with
    data flags of VFIO_IRQ_SET_DATA_NONE disables all interrupts of the index."
    """
    info = _irq(vfu_device, vfu_irq_index, eventfd=True)
    fds = _assign(vfu_client, info, eventfds)
    sub = len(fds) - 1
    how = _fire(vfu_client, vfu_hooks, info.index, sub)
    assert _signals(fds, {sub})[sub], (
        f"interrupt {info.index}.{sub} did not signal its eventfd even before the disable"
    )
    _rearm(vfu_client, info, sub)
    reply = vfu_client.set_irqs(info.index, NONE | TRIGGER, 0, 0)
    accepted(
        reply,
        f"SET_IRQS DATA_NONE|ACTION_TRIGGER count 0 start 0 of IRQ {info.index} "
        "(disable the index)",
    )
    assert not reply.payload, "the SET_IRQS reply carries a payload; there is none"
    for s in range(len(fds)):
        _fire(vfu_client, vfu_hooks, info.index, s, how)
    got = _signals(fds, set())
    fired = sorted(i for i, v in enumerate(got) if v)
    assert not fired, (
        f"after the index was disabled, the eventfds of sub-indexes {fired} of "
        f"IRQ {info.index} were still signalled"
    )


@case("set_irqs/automasked-masks-itself", MUST)
def test_automasked(vfu_client, vfu_device, vfu_hooks, vfu_irq_index, eventfds):
    """An AUTOMASKED interrupt masks itself when it fires: the next one is not signalled
    until UNMASK.

    Spec (VFIO_USER_DEVICE_GET_IRQ_INFO): "VFIO_IRQ_INFO_AUTOMASKED indicates the IRQ type
    masks itself after being triggered, and the client must send an UNMASK action to
    receive new interrupts."
    """
    info = _irq(vfu_device, vfu_irq_index, eventfd=True)
    if not info.flags & IrqInfoFlags.AUTOMASKED:
        pytest.skip(f"IRQ index {info.index} is not AUTOMASKED")
    fds = _assign(vfu_client, info, eventfds, limit=1)
    how = _fire(vfu_client, vfu_hooks, info.index, 0)
    assert _signals(fds, {0})[0], f"interrupt {info.index}.0 did not signal its eventfd"
    _fire(vfu_client, vfu_hooks, info.index, 0, how)
    assert not _signals(fds, set())[0], (
        f"IRQ {info.index} is AUTOMASKED, yet a second interrupt was signalled without UNMASK"
    )
    accepted(
        vfu_client.set_irqs(info.index, NONE | UNMASK, 0, 1),
        f"SET_IRQS DATA_NONE|ACTION_UNMASK of {info.index}.0",
    )
    assert _signalled_after_unmask(vfu_client, vfu_hooks, info, fds[0], how), (
        f"after UNMASK, interrupt {info.index}.0 did not signal its eventfd"
    )


@case("set_irqs/mask-holds-interrupt", MUST)
def test_mask_holds_interrupt(vfu_client, vfu_device, vfu_hooks, vfu_irq_index, eventfds):
    """A masked interrupt is not signalled; after UNMASK interrupts are signalled again.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "VFIO_IRQ_SET_ACTION_MASK indicates a masking event.
    It can be used with VFIO_IRQ_SET_DATA_BOOL or VFIO_IRQ_SET_DATA_NONE to mask an
    interrupt"; (GET_IRQ_INFO): "VFIO_IRQ_INFO_MASKABLE indicates that the IRQ type supports
    the MASK and UNMASK actions"
    """
    info = _irq(vfu_device, vfu_irq_index, eventfd=True, maskable=True)
    fds = _assign(vfu_client, info, eventfds, limit=1)
    accepted(
        vfu_client.set_irqs(info.index, NONE | MASK, 0, 1),
        f"SET_IRQS DATA_NONE|ACTION_MASK of {info.index}.0 (the index is MASKABLE)",
    )
    how = _fire(vfu_client, vfu_hooks, info.index, 0)
    assert not _signals(fds, set())[0], (
        f"interrupt {info.index}.0 is masked, yet its eventfd was signalled"
    )
    accepted(
        vfu_client.set_irqs(info.index, NONE | UNMASK, 0, 1),
        f"SET_IRQS DATA_NONE|ACTION_UNMASK of {info.index}.0",
    )
    assert _signalled_after_unmask(vfu_client, vfu_hooks, info, fds[0], how), (
        f"after UNMASK, interrupt {info.index}.0 was not signalled"
    )


# ---------------------------------------------------------------------------
# VFIO_USER_DEVICE_SET_IRQS: what must be refused

# name: (build(count, max_fds) -> request fields or None when not applicable, what is wrong)
# Request fields: flags, start, count, data, number of eventfds, argsz (None: payload size).
_MUTEX = "the DATA and ACTION flags are each mutually exclusive"


def _v(flags, start, count, data=b"", nfds=0, argsz=None):
    return {
        "flags": int(flags),
        "start": start,
        "count": count,
        "data": data,
        "nfds": nfds,
        "argsz": argsz,
    }


BAD_REQUESTS = {
    "data-none-and-bool": (lambda n, m: _v(NONE | BOOL | TRIGGER, 0, 1, b"\x01"), _MUTEX),
    "data-none-and-eventfd": (lambda n, m: _v(NONE | EVENTFD | TRIGGER, 0, 1, nfds=1), _MUTEX),
    "data-bool-and-eventfd": (
        lambda n, m: _v(BOOL | EVENTFD | TRIGGER, 0, 1, b"\x01", nfds=1),
        _MUTEX,
    ),
    "action-mask-and-trigger": (lambda n, m: _v(NONE | MASK | TRIGGER, 0, 1), _MUTEX),
    "action-unmask-and-trigger": (
        lambda n, m: _v(EVENTFD | UNMASK | TRIGGER, 0, 1, nfds=1),
        _MUTEX,
    ),
    "no-data-flag": (lambda n, m: _v(TRIGGER, 0, 1), "there is no DATA flag"),
    "no-action-flag": (lambda n, m: _v(NONE, 0, 1), "there is no ACTION flag"),
    "no-action-flag-eventfd": (lambda n, m: _v(EVENTFD, 0, 1, nfds=1), "there is no ACTION flag"),
    "no-flags": (lambda n, m: _v(0, 0, 1), "there is neither a DATA nor an ACTION flag"),
    "start-at-count": (
        lambda n, m: _v(EVENTFD | TRIGGER, n, 1, nfds=1),
        "start is past the index's sub-indexes",
    ),
    "range-past-count": (
        lambda n, m: _v(NONE | TRIGGER, 0, n + 1),
        "start + count is past the index's count",
    ),
    "bool-range-past-count": (
        lambda n, m: _v(BOOL | TRIGGER, 0, n + 1, bytes(n + 1)),
        "start + count is past the index's count",
    ),
    "start-overflows": (
        lambda n, m: _v(EVENTFD | TRIGGER, 0xFFFFFFFF, 1, nfds=1),
        "start + count overflows 32 bits",
    ),
    "count-overflows": (
        lambda n, m: _v(NONE | TRIGGER, 1, 0xFFFFFFFF),
        "start + count overflows 32 bits",
    ),
    "fewer-fds-than-count": (
        lambda n, m: _v(EVENTFD | TRIGGER, 0, 2, nfds=1) if n >= 2 else None,
        "it carries 1 eventfd for 2 sub-indexes",
    ),
    "more-fds-than-count": (
        lambda n, m: _v(EVENTFD | TRIGGER, 0, 1, nfds=2) if m >= 2 else None,
        "it carries 2 eventfds for 1 sub-index",
    ),
    "bool-data-short": (
        lambda n, m: _v(BOOL | TRIGGER, 0, n, bytes(n - 1)),
        "the DATA_BOOL array is shorter than count",
    ),
    "bool-data-long": (
        lambda n, m: _v(BOOL | TRIGGER, 0, n, bytes(n + 1)),
        "the DATA_BOOL array is longer than count",
    ),
}
# argsz must be the request payload size (a SHOULD: msg_size still frames the request).
BAD_ARGSZ = {
    "argsz-below-fixed-part": (
        lambda n, m: _v(EVENTFD | TRIGGER, 0, 1, nfds=1, argsz=16),
        "argsz 16 is below the 20-byte request",
    ),
    "argsz-above-payload": (
        lambda n, m: _v(EVENTFD | TRIGGER, 0, 1, nfds=1, argsz=24),
        "argsz 24 is above the 20-byte payload",
    ),
    "argsz-without-bool-data": (
        lambda n, m: _v(BOOL | TRIGGER, 0, n, bytes(n), argsz=20),
        "argsz 20 leaves out the DATA_BOOL array",
    ),
}
# The spec does not say fds on these must be refused; they must not break anything.
FDS_WITHOUT_EVENTFD = {
    "fd-with-data-none": (lambda n, m: _v(NONE | TRIGGER, 0, 1, nfds=1), "an fd with DATA_NONE"),
    "fd-with-data-bool": (
        lambda n, m: _v(BOOL | TRIGGER, 0, 1, b"\x00", nfds=1),
        "an fd with DATA_BOOL",
    ),
}
WITH_FDS = {
    name: v
    for table in (BAD_REQUESTS, BAD_ARGSZ, FDS_WITHOUT_EVENTFD)
    for name, v in table.items()
    if v[0](4, 4)["nfds"]
}


def _bad_request(client, vfu_device, index, table, name, eventfds):
    """(payload, fds, description) of variant ``name`` for IRQ ``index``."""
    info = _irq(vfu_device, index)
    build, why = table[name]
    fields = build(info.count, server_max_msg_fds(client))
    if fields is None:
        pytest.skip(
            f"{name} does not apply to IRQ index {index} (count {info.count}, server "
            f"max_msg_fds {server_max_msg_fds(client)})"
        )
    _prepare(client, info)
    payload = _set_irqs_payload(
        index, fields["flags"], fields["start"], fields["count"], fields["data"], fields["argsz"]
    )
    fds = eventfds(fields["nfds"]) if fields["nfds"] else []
    what = (
        f"SET_IRQS of IRQ {index} with flags {fields['flags']:#x}, start "
        f"{fields['start']:#x}, count {fields['count']:#x}, {len(fields['data'])} data "
        f"bytes, {len(fds)} fds ({why})"
    )
    return payload, fds, what


@case("set_irqs/refuse-invalid", MUST)
@pytest.mark.parametrize("variant", sorted(BAD_REQUESTS))
def test_refuse_invalid(
    vfu_client, vfu_connect, vfu_device, vfu_observe, vfu_irq_index, eventfds, variant
):
    """A SET_IRQS request whose flags, range, eventfds or DATA_BOOL array contradict each
    other or the index is refused (error reply, or the connection closed).

    Spec (VFIO_USER_DEVICE_SET_IRQS): "The flags are mutually exclusive for both sets." ...
    "start is the start of the sub-index being set." "count describes the number of
    sub-indexes being set." ... "data ... contains an array of booleans that specify
    whether the action is to be performed on the corresponding index."; (GET_IRQ_INFO):
    "count describes the number of interrupts of the queried type."
    """
    payload, fds, what = _bad_request(
        vfu_client, vfu_device, vfu_irq_index, BAD_REQUESTS, variant, eventfds
    )
    send_refused(
        vfu_client, Command.DEVICE_SET_IRQS, payload, vfu_connect, what, vfu_observe, fds=fds
    )


@case("set_irqs/refuse-argsz-mismatch", SHOULD)
@pytest.mark.parametrize("variant", sorted(BAD_ARGSZ))
def test_refuse_argsz(
    vfu_client, vfu_connect, vfu_device, vfu_observe, vfu_irq_index, eventfds, variant
):
    """A SET_IRQS request whose argsz is not the size of its payload is refused.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "argsz is the size of the VFIO IRQ set request
    payload, including any data field."
    """
    payload, fds, what = _bad_request(
        vfu_client, vfu_device, vfu_irq_index, BAD_ARGSZ, variant, eventfds
    )
    send_refused(
        vfu_client, Command.DEVICE_SET_IRQS, payload, vfu_connect, what, vfu_observe, fds=fds
    )


@case("set_irqs/fds-without-data-eventfd", MUST)
@pytest.mark.parametrize("variant", sorted(FDS_WITHOUT_EVENTFD))
def test_fds_without_data_eventfd(
    vfu_client, vfu_connect, vfu_device, vfu_observe, vfu_irq_index, eventfds, variant
):
    """Fds sent with DATA_NONE or DATA_BOOL are answered (either way) without harm.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "VFIO_IRQ_SET_DATA_NONE indicates there is no data
    field in the command." The spec is silent on fds that come with it; robustness
    (Security Considerations: "Standard tools and mechanisms should be used on both sides
    to validate input and prevent against denial of service scenarios").
    """
    payload, fds, what = _bad_request(
        vfu_client, vfu_device, vfu_irq_index, FDS_WITHOUT_EVENTFD, variant, eventfds
    )
    msg_id = vfu_client.send(Command.DEVICE_SET_IRQS, payload, fds)
    reply = answer(vfu_client, msg_id, Command.DEVICE_SET_IRQS, vfu_connect, what)
    if reply is None:
        vfu_observe(f"the server closed the connection on {what}")
    elif reply.ok:
        vfu_observe(f"the server accepted {what}")


@case("set_irqs/refused-fds-closed", SHOULD)
@pytest.mark.parametrize("variant", sorted(WITH_FDS))
def test_refused_fds_closed(
    vfu_client, vfu_connect, vfu_target, vfu_device, vfu_irq_index, eventfds, variant
):
    """Eventfds that came with a SET_IRQS request the server does not keep are closed: its
    open fd count does not grow.

    Spec (Security Considerations): "Standard tools and mechanisms should be used on both
    sides to validate input and prevent against denial of service scenarios". The spec is
    silent on fds of refused requests; leaking them lets a client exhaust the server's fds.
    """
    if vfu_target.snapshot().fds is None:
        pytest.skip("needs the server's pid to count its fds (--vfu-server, not --vfu-socket)")
    table = next(t for t in (BAD_REQUESTS, BAD_ARGSZ, FDS_WITHOUT_EVENTFD) if variant in t)
    payload, fds, what = _bad_request(
        vfu_client, vfu_device, vfu_irq_index, table, variant, eventfds
    )
    before = vfu_target.snapshot().fds
    msg_id = vfu_client.send(Command.DEVICE_SET_IRQS, payload, fds)
    reply = answer(vfu_client, msg_id, Command.DEVICE_SET_IRQS, vfu_connect, what)
    request = SetIrqs.unpack(payload)
    # An accepted request may keep one eventfd per sub-index it assigned (whether it
    # should have been accepted is set_irqs/refuse-* to judge, not this case).
    kept = min(len(fds), request.count) if reply and reply.ok and request.flags & EVENTFD else 0
    after = wait_server_fds(vfu_target, before + kept, vfu_client.timeout)
    assert after is None or after <= before + kept, (
        f"after {what}, {'accepted' if reply and reply.ok else 'refused'}, the server holds "
        f"{after - before} more fds than before: {len(fds) - kept} of the {len(fds)} "
        "eventfds it could not use were not closed"
    )


@case("set_irqs/index-past-end", MUST)
@pytest.mark.parametrize("past", [0, 0xFFFFFFFF], ids=["num_irqs", "u32-max"])
def test_set_irqs_index_past_end(vfu_client, vfu_connect, vfu_device, vfu_observe, eventfds, past):
    """SET_IRQS of an IRQ index the device does not have is refused.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "index is the index of IRQ type being setup.";
    (VFIO_USER_DEVICE_GET_INFO): "num_irqs is the number of IRQs"
    """
    index = past or vfu_device.num_irqs
    send_refused(
        vfu_client,
        Command.DEVICE_SET_IRQS,
        _set_irqs_payload(index, EVENTFD | TRIGGER, 0, 1),
        vfu_connect,
        f"SET_IRQS DATA_EVENTFD|ACTION_TRIGGER of IRQ index {index:#x} (num_irqs "
        f"{vfu_device.num_irqs})",
        vfu_observe,
        fds=eventfds(1),
    )


@case("set_irqs/mask-needs-maskable", SHOULD)
@pytest.mark.parametrize("action", [MASK, UNMASK], ids=["mask", "unmask"])
def test_mask_needs_maskable(
    vfu_client, vfu_connect, vfu_device, vfu_observe, vfu_irq_index, action
):
    """MASK and UNMASK are refused on an IRQ index without VFIO_IRQ_INFO_MASKABLE.

    Spec (VFIO_USER_DEVICE_GET_IRQ_INFO): "VFIO_IRQ_INFO_MASKABLE indicates that the IRQ
    type supports the MASK and UNMASK actions in a VFIO_USER_DEVICE_SET_IRQS message."
    """
    info = _irq(vfu_device, vfu_irq_index, maskable=False)
    send_refused(
        vfu_client,
        Command.DEVICE_SET_IRQS,
        _set_irqs_payload(info.index, NONE | action, 0, 1),
        vfu_connect,
        f"SET_IRQS DATA_NONE|{action.name} of IRQ {info.index}, which is not MASKABLE",
        vfu_observe,
    )
