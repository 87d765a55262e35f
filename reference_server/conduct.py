"""What the server does, when its [server] table asks, that the spec allows and a
careless client does not expect: the client mode's scenarios (pytest_vfiouser.clientcheck).

  dma_between   after each DMA_MAP, a DMA_READ of the new mapping's first bytes and a
                DMA_WRITE of them back, before the client's next command is answered
  close_after   the first connection closed once its first reply to that command is sent
  refuse        every such command refused, with refuse_errno (0: the Error bit alone)
  delay         the first reply to that command of each connection, delay_seconds late

A mixin of Connection (which calls the hooks, and whose DMA and message plumbing they
use); the defaults do nothing.
"""

from __future__ import annotations

import logging
import time

from pytest_vfiouser.protocol import Command, DmaMap, Header, MsgType, command_name

from .errors import ClientGone, VfioError

log = logging.getLogger("reference_server")

DMA_BETWEEN_BYTES = 64  # what each new mapping's probe moves


class Conduct:
    def init_conduct(self, settings) -> None:
        named = {k: getattr(settings, k) for k in ("close_after", "refuse", "delay")}
        self.close_after = Command[named["close_after"]] if named["close_after"] else None
        self._refused = Command[named["refuse"]] if named["refuse"] else None
        self._delayed = Command[named["delay"]] if named["delay"] else None  # once
        self.closed_by_server = False  # the Server closes only the first connection
        self._fresh_maps: list[tuple[int, int]] = []  # dma_between: to read and write back

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
        if hdr.command == self.close_after:
            self._flush()
            self.closed_by_server = True
            raise ClientGone(
                f"closed by the server after its first {command_name(hdr.command)} reply"
            )

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
