"""Disconnection: what a client brings back when it connects again."""

from __future__ import annotations

import pytest

from pytest_vfiouser import SHOULD, case
from pytest_vfiouser.protocol import Command, IrqSetFlags, SetIrqs

from ._support import listed, mappings, need, span

_TRIGGER = IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER


@case("client/disconnect/reconnect-re-establishes", SHOULD)
def test_reconnect_re_establishes(vfu_scenario):
    """A client that connects again after the server closed the connection maps again
    the DMA memory it had mapped and sets again the interrupts' eventfds it had set.
    (Scenario server-closes: the server closes the connection once it has answered the
    client's first DEVICE_SET_IRQS.)

    Spec (Client Disconnection): "The expectation is that when a client reconnects, it
    will re-establish IRQ and client memory mappings."
    """
    sessions = vfu_scenario("server-closes")
    closed = next((s for s in sessions if (s.ended or "").startswith("closed by the server")), None)
    if closed is None:
        need([], "DEVICE_SET_IRQS (the server closes the connection once it answered one)")
    again = next((s for s in sessions if s.number > closed.number), None)
    if again is None:
        pytest.skip(
            "cannot judge: the client did not connect again after the server closed the "
            "connection (whether it reconnects is its own choice)"
        )
    maps, irqs = {(m.start, m.end) for m in mappings(closed)}, _eventfds(closed)
    if not maps and not irqs:
        need([], "DMA_MAP or interrupt eventfd before the server closed the connection")
    mapped_again = {span(m) for m in again.sent(Command.DMA_MAP)}
    missing = [f"DMA_MAP of [{a:#x}, {b:#x})" for a, b in sorted(maps - mapped_again)]
    missing += [f"eventfd of IRQ index {i} vector {v}" for i, v in sorted(irqs - _set(again))]
    assert not missing, (
        f"connection {again.number}, after the server closed connection {closed.number}, "
        f"did not re-establish: {listed(missing)}"
    )


def _eventfds(session) -> set[tuple[int, int]]:
    """(index, vector) of the interrupts whose eventfds the session holds at its end:
    set by a DEVICE_SET_IRQS the server accepted, not taken back since."""
    held: set[tuple[int, int]] = set()
    for m in session.sent(Command.DEVICE_SET_IRQS):
        reply = session.reply_to(m)
        if reply is None or reply.is_error or len(m.payload) < SetIrqs.FIXED_SIZE:
            continue
        s = SetIrqs.unpack(m.payload[: SetIrqs.FIXED_SIZE])
        if s.flags & _TRIGGER == _TRIGGER and m.fds:
            held |= {(s.index, v) for v in range(s.start, s.start + s.count)}
        elif s.flags & IrqSetFlags.ACTION_TRIGGER and s.flags & IrqSetFlags.DATA_NONE:
            # count 0 takes back every trigger of the index; else those of the range
            held -= {
                (i, v)
                for i, v in held
                if i == s.index and (not s.count or s.start <= v < s.start + s.count)
            }
    return held


def _set(session) -> set[tuple[int, int]]:
    """(index, vector) of every eventfd trigger the session's DEVICE_SET_IRQS sent."""
    out: set[tuple[int, int]] = set()
    for m in session.sent(Command.DEVICE_SET_IRQS):
        if len(m.payload) >= SetIrqs.FIXED_SIZE and m.fds:
            s = SetIrqs.unpack(m.payload[: SetIrqs.FIXED_SIZE])
            if s.flags & _TRIGGER == _TRIGGER:
                out |= {(s.index, v) for v in range(s.start, s.start + s.count)}
    return out
