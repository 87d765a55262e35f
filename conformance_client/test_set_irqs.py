"""VFIO_USER_DEVICE_SET_IRQS, as the client sends it: its argsz, and the interrupts the
device has."""

from __future__ import annotations

from pytest_vfiouser import MAY, MUST, case
from pytest_vfiouser.protocol import Command, IrqInfo, IrqSetFlags, SetIrqs

from ._support import decode, listed, need, sent


@case("client/set_irqs/argsz-is-payload", MUST)
def test_argsz_is_payload(vfu_sessions):
    """Each SET_IRQS's argsz is the size of its payload, data included.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "argsz is the size of the VFIO IRQ set request
    payload, including any data field."
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.DEVICE_SET_IRQS), "SET_IRQS"):
        body = decode(SetIrqs, m, "the SET_IRQS")
        if body.argsz != len(m.payload):
            bad.append(f"{m.describe()}: argsz {body.argsz}, payload {len(m.payload)} bytes")
    assert not bad, listed(bad)


@case("client/set_irqs/within-irq-info", MUST)
def test_within_irq_info(vfu_sessions):
    """Each SET_IRQS names sub-indexes the device has: index below num_irqs and start +
    count within the count GET_IRQ_INFO gave for it (where the session asked).

    Spec (VFIO_USER_DEVICE_SET_IRQS): "The client must know the capabilities of the
    device and IRQ index before it sends a VFIO_USER_DEVICE_SET_IRQ message."
    """
    need(sent(vfu_sessions, Command.DEVICE_SET_IRQS), "SET_IRQS")
    bad = []
    for s in vfu_sessions:
        counts: dict[int, int] = {}  # IRQ index -> count, as the server answered
        for m in s.sent():
            reply = s.reply_to(m)
            if m.command == Command.DEVICE_GET_IRQ_INFO and reply and not reply.is_error:
                info = decode(IrqInfo, reply, "the GET_IRQ_INFO reply")
                counts[info.index] = info.count
            elif m.command == Command.DEVICE_SET_IRQS:
                body = decode(SetIrqs, m, "the SET_IRQS")
                if body.index in counts and body.start + body.count > counts[body.index]:
                    bad.append(
                        f"{m.describe()}: index {body.index} start {body.start} count "
                        f"{body.count}; GET_IRQ_INFO gave count {counts[body.index]}"
                    )
    assert not bad, listed(bad)


_DATA = {1: "DATA_NONE", 2: "DATA_BOOL", 4: "DATA_EVENTFD"}
_ACTION = {8: "ACTION_MASK", 16: "ACTION_UNMASK", 32: "ACTION_TRIGGER"}


@case("client/set_irqs/one-data-one-action", MUST)
def test_one_data_one_action(vfu_sessions):
    """Each SET_IRQS sets exactly one DATA flag and one ACTION flag, and no other bit.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "flags defines the action performed on the interrupt
    range. The DATA flags describe the data field sent in the message; the ACTION flags
    describe the action to be performed. The flags are mutually exclusive for both sets."
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.DEVICE_SET_IRQS), "SET_IRQS"):
        flags = decode(SetIrqs, m, "the SET_IRQS").flags
        data = [n for bit, n in _DATA.items() if flags & bit]
        action = [n for bit, n in _ACTION.items() if flags & bit]
        if len(data) != 1 or len(action) != 1 or flags & ~0x3F:
            bad.append(f"{m.describe()}: flags {flags:#x} ({'|'.join(data + action) or 'none'})")
    assert not bad, listed(bad)


@case("client/set_irqs/data-as-flags-say", MUST)
def test_data_as_flags_say(vfu_sessions):
    """A SET_IRQS carries a data field (count booleans) with DATA_BOOL only; with DATA_NONE
    it carries neither data nor fds, with DATA_EVENTFD its eventfds go as fds.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "VFIO_IRQ_SET_DATA_NONE indicates there is no data
    field in the command."; "VFIO_IRQ_SET_DATA_BOOL indicates the data field is an array of
    boolean bytes."; "VFIO_IRQ_SET_DATA_EVENTFD indicates an array of event file
    descriptors was sent in the message meta-data."; "data is an optional field included
    when the VFIO_IRQ_SET_DATA_BOOL flag is present."
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.DEVICE_SET_IRQS), "SET_IRQS"):
        body = decode(SetIrqs, m, "the SET_IRQS")
        extra = len(m.payload) - SetIrqs.FIXED_SIZE
        if body.flags & 2 and extra != body.count:
            bad.append(f"{m.describe()}: DATA_BOOL with {extra} data bytes for count {body.count}")
        elif not body.flags & 2 and extra:
            bad.append(f"{m.describe()}: {extra} data bytes without DATA_BOOL")
        elif body.flags & 1 and m.fds:
            bad.append(f"{m.describe()}: DATA_NONE with {m.fds} fds")
    assert not bad, listed(bad)


@case("client/set_irqs/eventfds-are-eventfds", MUST)
def test_eventfds_are_eventfds(vfu_sessions):
    """The fds of a SET_IRQS with DATA_EVENTFD are eventfds (what the server's
    interrupts are raised through).

    Spec (VFIO_USER_DEVICE_SET_IRQS): "VFIO_IRQ_SET_DATA_EVENTFD indicates an array of
    event file descriptors"
    """
    messages = [
        m
        for _, m in sent(vfu_sessions, Command.DEVICE_SET_IRQS)
        if m.fd_kinds and len(m.payload) >= 8 and _flags(m) & IrqSetFlags.DATA_EVENTFD
    ]
    need(messages, "SET_IRQS with DATA_EVENTFD and fds (as the record names their kinds)")
    bad = [
        f"{m.describe()}: {', '.join(m.fd_kinds)}"
        for m in messages
        if set(m.fd_kinds) != {"eventfd"}
    ]
    assert not bad, listed(bad)


def _flags(message) -> int:
    return int.from_bytes(message.payload[4:8], "little")


@case("client/set_irqs/interrupts-taken", MAY)
def test_interrupts_taken(vfu_scenario):
    """The client takes the interrupts the server raises through its trigger eventfds:
    it reads each eventfd within 2 s. (Scenario irqs-raised: each interrupt raised once
    as soon as a DEVICE_SET_IRQS gives it an eventfd.) When it does is the client's (a
    guest may leave an interrupt pending): one that does not is INFORMATIONAL.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "VFIO_IRQ_SET_ACTION_TRIGGER indicates a triggering
    event. It can be used ... with VFIO_IRQ_SET_DATA_EVENTFD to generate an event when the
    server triggers the interrupt."
    """
    raised = [(s, i) for s in vfu_scenario("irqs-raised") for i in s.interrupts]
    need(raised, "DEVICE_SET_IRQS with a trigger eventfd (the server raises no interrupt)")
    # One whose trigger the client set again (or took back) meanwhile is not its to read.
    raised = [(s, i) for s, i in raised if not _set_again(s, i)]
    need(raised, "raised interrupt whose eventfd it kept while the server watched")
    untaken = [
        f"IRQ index {i.index} vector {i.vector} of session {s.number}: its eventfd was not "
        f"read in {i.after:g} s" + (" (the connection ended then)" if i.after < 2 else "")
        for s, i in raised
        if not i.taken
    ]
    assert not untaken, listed(untaken)


def _set_again(session, interrupt) -> bool:
    """The client sent a SET_IRQS TRIGGER of the interrupt's index while the server
    watched its eventfd (the record's event is written when the watch ends)."""
    raised = interrupt.t - interrupt.after
    return any(
        raised < m.t <= interrupt.t
        and len(m.payload) >= 12
        and _flags(m) & IrqSetFlags.ACTION_TRIGGER
        and int.from_bytes(m.payload[8:12], "little") == interrupt.index
        for m in session.sent(Command.DEVICE_SET_IRQS)
    )
