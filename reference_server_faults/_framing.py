"""Header and framing faults: a Connection whose loop, header checks and replies
carry the faults of connection.py's area, and whose checks for the handlers
(argsz, must-be-zero fields, indexes, region access) carry those of
commands.py's; also the connection-level ones of others (disconnect cleanup,
fds over the limit, fds nobody asked for, VERSION first)."""

from __future__ import annotations

import errno
import logging
import os
import struct
from dataclasses import replace

from pytest_vfiouser.protocol import (
    FLAG_ERROR,
    HEADER_SIZE,
    CodecError,
    Command,
    Header,
    encode,
)
from reference_server.connection import _REPLY
from reference_server.errors import ClientGone, VfioError

from . import _commands, _negotiation
from ._catalogue import FAULTS, crash
from ._device import FaultyDmaMapTable
from ._twin import TwinFaults

log = logging.getLogger("reference_server")
_FLAG_ERROR = int(FLAG_ERROR)
_ERROR_REPLY_FAULTS = {"error-field-negative", "error-reply-zeroed-header", "error-reply-payload"}


class FaultyConnection(TwinFaults):
    handlers = _commands.HANDLERS
    dma_map_table = FaultyDmaMapTable

    def __init__(self, sock, device, *args, **kwargs):
        super().__init__(sock, device, *args, **kwargs)
        if "dispatch-table-wrong" in FAULTS:
            self.dispatch.pop(int(Command.DEVICE_GET_REGION_IO_FDS), None)
        if "disconnect-cleanup-wrong" in FAULTS:  # the table outlives the connection
            self.dma_map = device.__dict__.setdefault("kept_dma_map", self.dma_map)
        self._short_reads = 0  # fault split-message-single-recv
        if "max-dma-maps-short" in FAULTS:  # states max_dma_maps, holds one map less
            self.dma_map.max_maps -= 1
        if "max-dma-maps-unenforced" in FAULTS:
            self.dma_map.max_maps += 1

    def dma_page(self) -> int:
        return 1 if "dma-map-pgsizes-unchecked" in FAULTS else super().dma_page()

    def _next_message(self):
        self._short_reads = 0
        return super()._next_message()

    def _recv_more(self) -> bool:
        if "split-message-single-recv" in FAULTS and (
            self.reader.buffered or self.reader.pending_header
        ):
            # Part of a message is here: one recv() was all it got for the rest.
            self._short_reads += 1
            if self._short_reads > 1:
                raise ClientGone("short read: a message came in pieces")
        return super()._recv_more()

    def _read_message(self):
        try:
            return super()._read_message()
        except ClientGone:  # the stream cannot be framed
            if "framing-unchecked" in FAULTS:
                size = int.from_bytes(self.reader.unread[4:8], "little")
                crash("segv" if size < HEADER_SIZE else "abort")
            raise

    def cut_off(self, when: str) -> str:
        if "framing-unchecked" in FAULTS:
            crash("abort")  # assert(idle) at EOF
        return super().cut_off(when)

    def wants_reply(self, hdr: Header) -> bool:
        return "header-flags-misread" in FAULTS or super().wants_reply(hdr)

    def _not_a_command(self, hdr: Header) -> bool:
        if "header-flags-misread" in FAULTS:  # "an error reply": dropped; nothing else checked
            return bool(hdr.flags & _FLAG_ERROR or hdr.error)
        return super()._not_a_command(hdr)

    def check_fds(self, fds: list[int]) -> None:
        if "max-msg-fds-ignored" in FAULTS:
            return
        try:
            super().check_fds(fds)
        except VfioError:
            if "refused-fds-leaked" in FAULTS:
                fds.clear()  # the error path forgets them: never closed
            raise

    def handler(self, command: int):
        if "dispatch-table-wrong" in FAULTS and command > max(self.dispatch):
            crash("segv")  # handlers[command] past the table's end
        return super().handler(command)

    def check_negotiated(self, command: int) -> None:
        if "version-handling-lax" not in FAULTS:
            super().check_negotiated(command)

    # ---- what handlers ask of the connection

    def negotiate(self, payload: bytes):
        return _negotiation.negotiate(self, payload)

    def decode(self, cls, payload: bytes):
        try:
            return super().decode(cls, payload)
        except VfioError:
            if "payload-size-unchecked" in FAULTS:  # read into a zeroed struct of its size
                size = cls._layout.size
                try:
                    return cls.unpack(payload[:size].ljust(size, b"\0"))
                except CodecError:
                    pass
            raise

    def argsz_covers(self, argsz: int, need: int) -> bool:
        return "argsz-ignored" in FAULTS or super().argsz_covers(argsz, need)

    def must_be_zero(self, value: int, fields: str) -> None:
        if "must-be-zero-unchecked" not in FAULTS:
            super().must_be_zero(value, fields)

    def can_send_fds(self, n: int) -> bool:
        return "max-msg-fds-ignored" in FAULTS or super().can_send_fds(n)

    def region(self, index: int):
        if "index-wraps" in FAULTS:
            index %= self.device.num_regions
        return super().region(index)

    def irq_type(self, index: int):
        if "index-wraps" in FAULTS:
            index %= self.device.num_irqs
        return super().irq_type(index)

    def check_access(self, offset: int, index: int, count: int, need: int, what: str):
        region = self.region(index)
        if "region-access-unchecked" in FAULTS:
            return region  # the index is all that is checked
        if "xfer-limit-overstated" in FAULTS and count > 4096:
            raise VfioError(errno.E2BIG, f"count {count} is above max_data_xfer_size 4096")
        return super().check_access(offset, index, count, need, what)

    # ---- replies

    def _send(self, msg: bytes, fds=()) -> None:
        if "unsolicited-fds" in FAULTS and not fds:
            self._flush()
            self._sendall(msg)  # on its own, with its eventfd (below)
            return
        super()._send(msg, fds)

    def _sendall(self, data: bytes, fds=()) -> None:
        if "unsolicited-fds" not in FAULTS or fds:
            super()._sendall(data, fds)
            return
        efd = os.eventfd(0, os.EFD_CLOEXEC)  # sent, then closed: the client holds the copy
        try:
            super()._sendall(data, (efd,))
        finally:
            os.close(efd)

    def _reply(self, hdr: Header, result) -> None:
        if "msg-id-8bit" in FAULTS:
            hdr = replace(hdr, msg_id=hdr.msg_id & 0xFF)
        if result.__class__ is not VfioError or not FAULTS & _ERROR_REPLY_FAULTS:
            super()._reply(hdr, result)
            return
        log.debug("refused %s: %s", hdr.describe(), result)
        err = result.errno
        if "error-field-negative" in FAULTS:
            err = -err & 0xFFFFFFFF
        if "error-reply-zeroed-header" in FAULTS:
            self._send(Header(hdr.msg_id, 0, HEADER_SIZE, _FLAG_ERROR, 0).pack())
        else:
            body = struct.pack("<I", result.errno) if "error-reply-payload" in FAULTS else b""
            self._send(encode(hdr.msg_id, hdr.command, body, _REPLY | _FLAG_ERROR, err))

    def take_next_message(self) -> None:
        """Fault empty-payload-reads-next: the next message is read as this one's body."""
        self._flush()
        while self._read_message() is None:
            if not self._recv():
                raise ClientGone("disconnected while the server read a request's body")

    def stall(self) -> None:
        """Fault short-region-access-hang: wait for bytes that never come (until EOF)."""
        self._flush()
        while self._recv():
            pass
        raise ClientGone("disconnected while the server waited for the rest of a request")

    def release_device(self) -> None:
        if "disconnect-cleanup-wrong" not in FAULTS:
            super().release_device()
            return
        if self.device.client is self:
            self.device.client = None  # its eventfds and DMA maps stay
        self.device.reset()
