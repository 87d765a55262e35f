"""What the server does, when its [server] table asks, that the spec allows and a
careless client does not expect: the client mode's scenarios (pytest_vfiouser.clientcheck).

  dma_between   after each DMA_MAP, a DMA_READ of the new mapping's first bytes and a
                DMA_WRITE of them back, before the client's next command is answered
  close_after   the first connection closed once its first reply to that command is sent
  refuse        every such command refused, with refuse_errno (0: the Error bit alone)
  delay         the first reply to that command of each connection, delay_seconds late
  raise_irqs    each interrupt raised once as soon as a SET_IRQS gives it an eventfd, and
                whether the client read that eventfd within IRQ_TAKEN_WITHIN (or before
                the connection ended) recorded

A mixin of Connection (which calls the hooks, and whose DMA and message plumbing they
use); the defaults do nothing.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import threading
import time

from pytest_vfiouser.protocol import (
    Command,
    DmaMap,
    Header,
    IrqSetFlags,
    MsgType,
    command_name,
)

from .errors import ClientGone, VfioError

log = logging.getLogger("reference_server")

DMA_BETWEEN_BYTES = 64  # what each new mapping's probe moves
IRQ_TAKEN_WITHIN = 2.0  # seconds a raised interrupt's eventfd is watched for the client's read
_TRIGGER_EVENTFD = IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER


class Conduct:
    def init_conduct(self, settings) -> None:
        named = {k: getattr(settings, k) for k in ("close_after", "refuse", "delay")}
        self.close_after = Command[named["close_after"]] if named["close_after"] else None
        self._refused = Command[named["refuse"]] if named["refuse"] else None
        self._delayed = Command[named["delay"]] if named["delay"] else None  # once
        self.closed_by_server = False  # the Server closes only the first connection
        self._fresh_maps: list[tuple[int, int]] = []  # dma_between: to read and write back
        self._watches: list[_Watch] = []  # raise_irqs: the interrupts raised, watched

    def end_conduct(self) -> None:
        """The connection ends: the interrupts still watched are recorded now (not taken)."""
        for watch in self._watches:
            watch.stop()
        self._watches.clear()

    def before_command(self, hdr: Header) -> None:
        if self._fresh_maps:
            self._dma_between()

    def refuse_if_asked(self, hdr: Header) -> None:
        if hdr.command == self._refused and hdr.type == MsgType.COMMAND:
            raise VfioError(self.settings.refuse_errno, "refused: [server] refuse")

    def before_reply(self, hdr: Header) -> None:
        if hdr.command == self._delayed:
            self._delayed = None
            self._wait_out(self.settings.delay_seconds)

    def after_success(self, hdr: Header, payload: bytes) -> None:
        """Keep a new mapping for dma_between; close the connection for close_after."""
        if hdr.command == Command.DMA_MAP and self.settings.dma_between:
            m = DmaMap.unpack(payload)
            self._fresh_maps.append((m.address, m.size))
        if hdr.command == Command.DEVICE_SET_IRQS and self.settings.raise_irqs:
            self._raise(*struct.unpack_from("<IIII", payload, 4))
        if hdr.command == self.close_after:
            self._flush()
            self.closed_by_server = True
            raise ClientGone(
                f"closed by the server after its first {command_name(hdr.command)} reply"
            )

    def _raise(self, flags: int, index: int, start: int, count: int) -> None:
        """Fire each sub-index that SET_IRQS gave a trigger eventfd; a thread of its own
        watches, on a copy of the eventfd, whether the client reads it."""
        if flags & _TRIGGER_EVENTFD != _TRIGGER_EVENTFD:
            return
        irq = self.irq_type(index)
        for vector in range(start, start + count):
            fd = irq.trigger[vector]
            if fd is None:
                continue
            irq.fire(vector)
            if self.recorder is None or not _readable(fd):  # masked: not raised
                continue
            self._watches = [w for w in self._watches if w.is_alive()]
            self._watches.append(_Watch(os.dup(fd), self.recorder, self.number, index, vector))

    def _wait_out(self, seconds: float) -> None:
        """``seconds`` before a reply, the client's messages meanwhile held (and recorded
        as they come), ClientGone if it leaves."""
        self._flush()
        deadline = time.monotonic() + seconds
        while True:
            m = self._read_message()
            if m is not None:
                self._hold(m)
                continue
            if not self._wait_readable(deadline - time.monotonic()):
                return
            if not self._recv():
                raise ClientGone(self.cut_off("while the server delayed a reply"))

    def _dma_between(self) -> None:
        """A DMA_READ of each new mapping's first bytes and a DMA_WRITE of them back,
        while the client's command waits: "unrelated messages sent from the server to the
        client can appear in between a client to server request/reply". A refusal or a
        silence costs the rest of this mapping's probe, never the command."""
        maps, self._fresh_maps = self._fresh_maps, []
        for address, size in maps:
            count = min(DMA_BETWEEN_BYTES, size, self.dma_chunk)
            try:
                self.dma_write(address, self.dma_read(address, count))
            except VfioError as e:
                log.info("dma_between at %#x: %s", address, e)


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Watch(threading.Thread):
    """Records whether the eventfd ``fd`` (a copy, closed here) is read within
    IRQ_TAKEN_WITHIN, or before stop()."""

    def __init__(self, fd: int, recorder, conn: int, index: int, vector: int):
        super().__init__(name="vfu-irq", daemon=True)
        self.fd, self.recorder, self.where = fd, recorder, (conn, index, vector)
        self._stop_now = threading.Event()
        self.start()

    def stop(self) -> None:
        self._stop_now.set()
        self.join()

    def run(self) -> None:
        started = time.monotonic()
        try:
            while True:  # looked at once more after a stop: the client's read may be just in
                taken = not _readable(self.fd)
                if (
                    taken
                    or self._stop_now.is_set()
                    or time.monotonic() - started > IRQ_TAKEN_WITHIN
                ):
                    break
                self._stop_now.wait(0.005)
        finally:
            os.close(self.fd)
        conn, index, vector = self.where
        after = round(time.monotonic() - started, 3)
        self.recorder.event(conn, "irq", index=index, vector=vector, taken=taken, after=after)
