"""Interrupts: per IRQ type, the client's eventfds and the mask/pending state.

One path raises an interrupt, whoever asks (the device through BAR0's
IRQ_TRIGGER, or the client with SET_IRQS DATA_NONE/BOOL + TRIGGER):
``IrqIndex.fire``. A sub-index without a trigger eventfd is not enabled and
drops the interrupt; a masked one records it as pending and fires on unmask;
an AUTOMASKED type masks itself after firing.

Eventfds come from the client, so writing to them must not block us: an
eventfd whose counter is full is skipped (logged) rather than waited on.
"""

from __future__ import annotations

import errno
import logging
import os
import select

from pytest_vfiouser._unix import fd_kind
from pytest_vfiouser.protocol import (
    IRQ_SET_ACTION_MASK,
    IRQ_SET_DATA_MASK,
    IrqInfoFlags,
    IrqSetFlags,
    SetIrqs,
)

from .errors import VfioError

log = logging.getLogger("reference_server")

_ALL_SET_FLAGS = int(IRQ_SET_DATA_MASK | IRQ_SET_ACTION_MASK)


def is_eventfd(fd: int) -> bool:
    return fd_kind(fd) == "eventfd"


def signal_eventfd(fd: int) -> bool:
    """Add 1 to an eventfd without ever blocking; False if it could not be done."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not poller.poll(0):
            log.warning("eventfd %d is full; interrupt dropped", fd)
            return False
        os.eventfd_write(fd, 1)
        return True
    except OSError as e:
        log.warning("cannot signal eventfd %d: %s", fd, e)
        return False


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class IrqIndex:
    """One IRQ type (INTx, MSI, ...): ``count`` sub-indexes."""

    def __init__(self, index: int, count: int, flags: int):
        self.index = index
        self.count = count
        self.flags = flags
        self.trigger: list[int | None] = [None] * count
        self.mask_fd: list[int | None] = [None] * count
        self.unmask_fd: list[int | None] = [None] * count
        self.masked = [False] * count
        self.pending = [False] * count
        self.fired = [0] * count  # interrupts delivered (for logs and debugging)

    @property
    def maskable(self) -> bool:
        return bool(self.flags & IrqInfoFlags.MASKABLE)

    def fire(self, sub: int) -> None:
        fd = self.trigger[sub]
        if fd is None:
            log.debug("irq %d.%d raised but not enabled: dropped", self.index, sub)
            return
        if self.masked[sub]:
            self.pending[sub] = True
            return
        if self.signal(fd):
            self.fired[sub] += 1
        if self.flags & IrqInfoFlags.AUTOMASKED:
            self.mask(sub)

    def signal(self, fd: int) -> bool:
        """Deliver one interrupt to its trigger eventfd; False if it could not be done."""
        return signal_eventfd(fd)

    def eventfds(self, action: int) -> list[int | None]:
        """The eventfds an ACTION_TRIGGER, ACTION_MASK or ACTION_UNMASK assigns."""
        return {
            IrqSetFlags.ACTION_TRIGGER: self.trigger,
            IrqSetFlags.ACTION_MASK: self.mask_fd,
            IrqSetFlags.ACTION_UNMASK: self.unmask_fd,
        }[action]

    def act(self, action: int, subs) -> None:
        """ACTION_TRIGGER, ACTION_MASK or ACTION_UNMASK on each of ``subs``."""
        op = {
            IrqSetFlags.ACTION_TRIGGER: self.fire,
            IrqSetFlags.ACTION_MASK: self.mask,
            IrqSetFlags.ACTION_UNMASK: self.unmask,
        }[action]
        for s in subs:
            op(s)

    def mask(self, sub: int) -> None:
        self.masked[sub] = True
        if self.mask_fd[sub] is not None:
            signal_eventfd(self.mask_fd[sub])

    def unmask(self, sub: int) -> None:
        self.masked[sub] = False
        if self.unmask_fd[sub] is not None:
            signal_eventfd(self.unmask_fd[sub])
        if self.pending[sub]:
            self.pending[sub] = False
            self.fire(sub)

    def close_fds(self) -> None:
        for table in (self.trigger, self.mask_fd, self.unmask_fd):
            for i, fd in enumerate(table):
                _close(fd)
                table[i] = None

    def disable(self) -> None:
        """SET_IRQS count=0 start=0 DATA_NONE: drop every eventfd, forget masks."""
        self.close_fds()
        self.masked = [False] * self.count
        self.pending = [False] * self.count

    def save(self) -> bytes:
        return bytes(self.masked[i] | self.pending[i] << 1 for i in range(self.count))

    def load(self, data: bytes) -> None:
        if len(data) != self.count or any(b & ~3 for b in data):
            raise ValueError(f"irq {self.index}: state does not fit {self.count} sub-indexes")
        self.masked = [bool(b & 1) for b in data]
        self.pending = [bool(b & 2) for b in data]


class Irqs:
    index_type = IrqIndex  # what an IRQ type is made of (a subclass may change it)

    def __init__(self, specs: list[tuple[int, int]]):
        """``specs[i]`` is (count, VFIO_IRQ_INFO flags) of IRQ type i."""
        self.indexes = [self.index_type(i, count, flags) for i, (count, flags) in enumerate(specs)]

    def __len__(self) -> int:
        return len(self.indexes)

    def raise_irq(self, index: int, sub: int) -> None:
        """The device raises an interrupt (BAR0 IRQ_TRIGGER)."""
        if index >= len(self.indexes) or sub >= self.indexes[index].count:
            raise VfioError(errno.EINVAL, f"no interrupt {index}.{sub}")
        self.indexes[index].fire(sub)

    def set_irqs(self, req: SetIrqs, payload_size: int, fds: list[int]) -> None:
        """DEVICE_SET_IRQS. Takes the fds (clears ``fds``) only when it keeps them."""
        if req.argsz != payload_size:
            raise VfioError(
                errno.EINVAL, f"argsz {req.argsz} is not the payload size {payload_size}"
            )
        if req.flags & ~_ALL_SET_FLAGS:
            raise VfioError(errno.EINVAL, f"undefined flag bits {req.flags & ~_ALL_SET_FLAGS:#x}")
        data = req.flags & IRQ_SET_DATA_MASK
        action = req.flags & IRQ_SET_ACTION_MASK
        if data.bit_count() != 1 or action.bit_count() != 1:
            raise VfioError(errno.EINVAL, "flags need exactly one DATA and one ACTION bit")
        irq = self.irq(req.index)
        if data == IrqSetFlags.DATA_BOOL:
            if len(req.data) != req.count:
                raise VfioError(
                    errno.EINVAL, f"DATA_BOOL needs {req.count} bytes of data, got {len(req.data)}"
                )
        elif req.data:
            raise VfioError(errno.EINVAL, "data bytes without DATA_BOOL")
        if action != IrqSetFlags.ACTION_TRIGGER and not irq.maskable:
            raise VfioError(errno.EINVAL, f"IRQ type {req.index} is not MASKABLE")
        if req.count == 0:
            if req.start == 0 and data == IrqSetFlags.DATA_NONE:
                irq.disable()
                return
            raise VfioError(errno.EINVAL, "count 0 is only for start 0 with DATA_NONE")
        subs = self.sub_indexes(irq, req)
        if data == IrqSetFlags.DATA_EVENTFD:
            self._assign(irq, action, subs, fds)
        elif data == IrqSetFlags.DATA_BOOL:
            irq.act(action, [s for s, b in zip(subs, req.data, strict=True) if b])
        else:
            irq.act(action, subs)

    def irq(self, index: int) -> IrqIndex:
        """IRQ type ``index``; EINVAL if the device has none (or none of its sub-indexes)."""
        if index >= len(self.indexes) or self.indexes[index].count == 0:
            raise VfioError(errno.EINVAL, f"no IRQ type {index}")
        return self.indexes[index]

    @staticmethod
    def sub_indexes(irq: IrqIndex, req: SetIrqs) -> range:
        """The sub-indexes a request with count > 0 names; EINVAL past the type's count."""
        if req.start >= irq.count or req.start + req.count > irq.count:
            raise VfioError(
                errno.EINVAL,
                f"sub-indexes {req.start}+{req.count} exceed the "
                f"{irq.count} of IRQ type {req.index}",
            )
        return range(req.start, req.start + req.count)

    def _assign(self, irq: IrqIndex, action: int, subs: range, fds: list[int]) -> None:
        if fds and len(fds) != len(subs):
            raise VfioError(
                errno.EINVAL, f"DATA_EVENTFD for {len(subs)} sub-indexes came with {len(fds)} fds"
            )
        for fd in fds:
            if not is_eventfd(fd):
                raise VfioError(errno.EINVAL, f"fd {fd} is not an eventfd")
        table = irq.eventfds(action)
        if (
            fds
            and action == IrqSetFlags.ACTION_TRIGGER
            and irq.flags & IrqInfoFlags.NORESIZE
            and any(fd is not None for fd in irq.trigger)
            and any(irq.trigger[s] is None for s in subs)
        ):
            raise VfioError(
                errno.EINVAL,
                f"IRQ type {irq.index} is NORESIZE: disable it before enabling more sub-indexes",
            )
        for i, s in enumerate(subs):
            _close(table[s])
            table[s] = fds[i] if fds else None
        fds.clear()

    def close_client_fds(self) -> None:
        """Client disconnect: its eventfds go, the device's mask state stays."""
        for irq in self.indexes:
            irq.close_fds()

    def reset(self) -> None:
        """DEVICE_RESET: unmask, forget pending; the client's eventfds stay assigned."""
        for irq in self.indexes:
            irq.masked = [False] * irq.count
            irq.pending = [False] * irq.count
