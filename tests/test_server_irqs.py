"""DEVICE_SET_IRQS and interrupts: eventfds, device-raised and client-triggered
interrupts, masking, AUTOMASKED, NORESIZE, disable, and the refusals."""

from __future__ import annotations

import errno
import os

import pytest
from test_server_support import client, eventfd, eventfd_value, ref_server, write32  # noqa: F401

from pytest_vfiouser.protocol import Command, IrqSetFlags, SetIrqs
from reference_server import registers as R

NONE, BOOL, EVENTFD = IrqSetFlags.DATA_NONE, IrqSetFlags.DATA_BOOL, IrqSetFlags.DATA_EVENTFD
MASK, UNMASK, TRIGGER = (
    IrqSetFlags.ACTION_MASK,
    IrqSetFlags.ACTION_UNMASK,
    IrqSetFlags.ACTION_TRIGGER,
)
INTX, MSI, MSIX, ERR, REQ = range(5)


@pytest.fixture
def efds():
    made = []

    def make(n=1):
        fds = [eventfd() for _ in range(n)]
        made.extend(fds)
        return fds

    yield make
    for fd in made:
        os.close(fd)


@pytest.fixture
def c(client):  # noqa: F811
    """A client whose IRQ types start (and end) disabled and unmasked."""
    for index in range(5):
        client.set_irqs(index, NONE | TRIGGER, 0, 0).check()
    yield client
    for index in range(5):
        client.set_irqs(index, NONE | TRIGGER, 0, 0).check()


def raise_irq(c, index, sub):
    write32(c, R.REG_IRQ_TRIGGER, R.irq_trigger_value(index, sub)).check()


def test_device_raised_interrupt_signals_eventfd(c, efds):
    fds = efds(8)
    c.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 8, fds=fds).check()
    raise_irq(c, MSIX, 5)
    assert [eventfd_value(fd) for fd in fds] == [0, 0, 0, 0, 0, 1, 0, 0]
    raise_irq(c, MSIX, 5)
    raise_irq(c, MSIX, 5)
    assert eventfd_value(fds[5]) == 2


def test_client_triggered_interrupts(c, efds):
    fds = efds(4)
    c.set_irqs(MSI, EVENTFD | TRIGGER, 0, 4, fds=fds).check()
    c.set_irqs(MSI, NONE | TRIGGER, 1, 2).check()
    assert [eventfd_value(fd) for fd in fds] == [0, 1, 1, 0]
    c.set_irqs(MSI, BOOL | TRIGGER, 0, 4, data=b"\x01\x00\x00\x07").check()
    assert [eventfd_value(fd) for fd in fds] == [1, 0, 0, 1]


def test_partial_assignment_and_deassignment(c, efds):
    a, b = efds(2)
    c.set_irqs(MSIX, EVENTFD | TRIGGER, 2, 2, fds=[a, b]).check()
    raise_irq(c, MSIX, 3)
    assert eventfd_value(b) == 1
    c.set_irqs(MSIX, EVENTFD | TRIGGER, 3, 1).check()  # no fds: de-assign 3
    raise_irq(c, MSIX, 3)
    raise_irq(c, MSIX, 2)
    assert (eventfd_value(a), eventfd_value(b)) == (1, 0)


def test_masking_keeps_interrupt_pending_until_unmask(c, efds):
    trig, on_mask, on_unmask = efds(3)
    c.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 1, fds=[trig]).check()
    c.set_irqs(MSIX, EVENTFD | MASK, 0, 1, fds=[on_mask]).check()
    c.set_irqs(MSIX, EVENTFD | UNMASK, 0, 1, fds=[on_unmask]).check()
    c.set_irqs(MSIX, NONE | MASK, 0, 1).check()
    assert eventfd_value(on_mask) == 1
    raise_irq(c, MSIX, 0)
    c.set_irqs(MSIX, NONE | TRIGGER, 0, 1).check()
    assert eventfd_value(trig) == 0  # masked: pending
    c.set_irqs(MSIX, BOOL | UNMASK, 0, 1, data=b"\x01").check()
    assert eventfd_value(on_unmask) == 1
    assert eventfd_value(trig) == 1  # the pending interrupt, once
    raise_irq(c, MSIX, 0)
    assert eventfd_value(trig) == 1


def test_bool_mask_selects_sub_indexes(c, efds):
    fds = efds(3)
    c.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 3, fds=fds).check()
    c.set_irqs(MSIX, BOOL | MASK, 0, 3, data=b"\x01\x00\x01").check()
    for sub in range(3):
        raise_irq(c, MSIX, sub)
    assert [eventfd_value(fd) for fd in fds] == [0, 1, 0]
    c.set_irqs(MSIX, NONE | UNMASK, 0, 3).check()
    assert [eventfd_value(fd) for fd in fds] == [1, 0, 1]


def test_intx_is_automasked(c, efds):
    trig, on_mask = efds(2)
    c.set_irqs(INTX, EVENTFD | TRIGGER, 0, 1, fds=[trig]).check()
    c.set_irqs(INTX, EVENTFD | MASK, 0, 1, fds=[on_mask]).check()
    raise_irq(c, INTX, 0)
    assert eventfd_value(trig) == 1 and eventfd_value(on_mask) == 1  # the device masked it
    raise_irq(c, INTX, 0)
    assert eventfd_value(trig) == 0
    c.set_irqs(INTX, NONE | UNMASK, 0, 1).check()
    assert eventfd_value(trig) == 1  # the pending one fires, and masks again
    raise_irq(c, INTX, 0)
    assert eventfd_value(trig) == 0


def test_disable_drops_eventfds(c, efds, ref_server):  # noqa: F811
    before = ref_server.fds()
    fds = efds(8)
    c.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 8, fds=fds).check()
    c.set_irqs(MSIX, EVENTFD | MASK, 0, 2, fds=efds(2)).check()
    assert ref_server.fds() == before + 10
    c.set_irqs(MSIX, NONE | TRIGGER, 0, 0).check()
    assert ref_server.fds() == before
    raise_irq(c, MSIX, 0)
    assert eventfd_value(fds[0]) == 0


def test_reassigning_closes_the_old_eventfd(c, efds, ref_server):  # noqa: F811
    before = ref_server.fds()
    for fd in efds(3):
        c.set_irqs(ERR, EVENTFD | TRIGGER, 0, 1, fds=[fd]).check()
    assert ref_server.fds() == before + 1


def test_noresize(c, efds):
    a, b, x, y, z, w = efds(6)
    c.set_irqs(MSI, EVENTFD | TRIGGER, 0, 2, fds=[a, b]).check()
    r = c.set_irqs(MSI, EVENTFD | TRIGGER, 2, 1, fds=[x])
    assert r.error == errno.EINVAL
    c.set_irqs(MSI, EVENTFD | TRIGGER, 0, 1, fds=[x]).check()  # replacing is fine
    c.set_irqs(MSI, NONE | TRIGGER, 0, 0).check()
    c.set_irqs(MSI, EVENTFD | TRIGGER, 0, 4, fds=[x, y, z, w]).check()


@pytest.mark.parametrize(
    "index, flags, start, count, data, nfds",
    [
        (MSIX, NONE | BOOL | TRIGGER, 0, 1, b"", 0),  # two DATA bits
        (MSIX, NONE, 0, 1, b"", 0),  # no ACTION
        (MSIX, NONE | MASK | UNMASK, 0, 1, b"", 0),  # two ACTION bits
        (MSIX, NONE | TRIGGER | 0x40, 0, 1, b"", 0),  # undefined bit
        (5, NONE | TRIGGER, 0, 1, b"", 0),  # no such index
        (MSIX, NONE | TRIGGER, 8, 1, b"", 0),  # start past the end
        (MSIX, NONE | TRIGGER, 7, 2, b"", 0),
        (MSIX, NONE | TRIGGER, 0xFFFFFFFF, 2, b"", 0),
        (MSIX, NONE | TRIGGER, 1, 0, b"", 0),  # count 0 needs start 0
        (MSIX, BOOL | TRIGGER, 0, 0, b"", 0),  # ... and DATA_NONE
        (MSIX, BOOL | TRIGGER, 0, 2, b"\x01", 0),  # short bool data
        (MSIX, BOOL | TRIGGER, 0, 1, b"\x01\x01", 0),
        (MSIX, NONE | TRIGGER, 0, 1, b"\x01", 0),  # data without DATA_BOOL
        (MSI, NONE | MASK, 0, 1, b"", 0),  # MSI is not MASKABLE
        (ERR, EVENTFD | UNMASK, 0, 1, b"", 1),
        (MSIX, EVENTFD | TRIGGER, 0, 2, b"", 1),  # fd count != count
        (MSIX, EVENTFD | TRIGGER, 0, 1, b"", 2),
    ],
)
def test_refused(c, efds, ref_server, index, flags, start, count, data, nfds):  # noqa: F811
    before = ref_server.fds()
    r = c.set_irqs(index, flags, start, count, fds=efds(nfds), data=data)
    assert r.error == errno.EINVAL and not r.payload
    assert ref_server.fds() == before  # the fds sent were closed


def test_argsz_must_be_payload_size(c):
    for argsz in (19, 21, 0):
        assert c.set_irqs(MSIX, NONE | TRIGGER, 0, 1, argsz=argsz).error == errno.EINVAL
    assert c.set_irqs(MSIX, BOOL | TRIGGER, 0, 1, data=b"\1", argsz=20).error == errno.EINVAL
    assert c.request(Command.DEVICE_SET_IRQS, b"\0" * 19).error == errno.EINVAL


def test_non_eventfd_fd_is_refused_and_closed(c, ref_server):  # noqa: F811
    before = ref_server.fds()
    r, w = os.pipe()
    try:
        assert c.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 2, fds=[r, w]).error == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
    assert ref_server.fds() == before


def test_too_many_fds_for_the_server(c, efds, ref_server):  # noqa: F811
    before = ref_server.fds()
    fds = efds(R.DEFAULT_MAX_MSG_FDS + 1)
    r = c.request(Command.DEVICE_SET_IRQS, SetIrqs(20, EVENTFD | TRIGGER, MSIX, 0, len(fds)), fds)
    assert r.error == errno.EINVAL
    assert ref_server.fds() == before


@pytest.mark.parametrize(
    "value",
    [
        R.irq_trigger_value(5, 0),
        R.irq_trigger_value(MSIX, 8),
        R.irq_trigger_value(INTX, 1),
        0xFFFFFFFF,
    ],
)
def test_trigger_register_refuses_missing_interrupts(c, value):
    r = write32(c, R.REG_IRQ_TRIGGER, value)
    assert r.error == errno.EINVAL


def test_disconnect_closes_eventfds_but_keeps_masks(ref_server, efds):  # noqa: F811
    with ref_server.connect() as c:
        c.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 8, fds=efds(8)).check()
        c.set_irqs(MSIX, NONE | MASK, 0, 1).check()
    ref_server.wait_idle()
    with ref_server.connect() as c:
        (fd,) = efds(1)
        c.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 1, fds=[fd]).check()
        raise_irq(c, MSIX, 0)
        assert eventfd_value(fd) == 0  # still masked
        c.set_irqs(MSIX, NONE | UNMASK, 0, 1).check()
        assert eventfd_value(fd) == 1
        c.set_irqs(MSIX, NONE | TRIGGER, 0, 0).check()
