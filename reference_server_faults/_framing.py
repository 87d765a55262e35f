"""Header and framing faults: a Connection whose loop, header checks and replies
carry the faults of connection.py's area (and the connection-level ones of
others: disconnect cleanup, fds over the limit, VERSION first)."""

from __future__ import annotations

import errno
import logging
import struct
import time

from pytest_vfiouser.protocol import (
    FLAG_ERROR,
    HEADER_SIZE,
    CodecError,
    Command,
    Header,
    MsgType,
    command_name,
    encode,
    encode_error,
    encode_reply,
)
from reference_server.connection import (
    _DROP,
    _NO_REPLY,
    _NOT_PLAIN_COMMAND,
    _REPLY,
    _VERSION,
    MAX_QUEUED,
    Connection,
    _close_all,
)
from reference_server.errors import ClientGone, VfioError

from . import _commands
from ._catalogue import FAULTS, crash
from ._device import FaultyDmaMapTable

log = logging.getLogger("reference_server")
_FLAG_ERROR = int(FLAG_ERROR)


class FaultyConnection(Connection):
    handlers = _commands.HANDLERS
    dma_map_table = FaultyDmaMapTable

    def __init__(self, sock, device, *args, **kwargs):
        super().__init__(sock, device, *args, **kwargs)
        if "dispatch-table-wrong" in FAULTS:
            self.dispatch.pop(int(Command.DEVICE_GET_REGION_IO_FDS), None)
        if "disconnect-cleanup-wrong" in FAULTS:  # the table outlives the connection
            self.dma_map = device.__dict__.setdefault("kept_dma_map", self.dma_map)
        self._short_reads = 0  # fault split-message-single-recv

    def serve(self) -> None:
        self.device.attach(self)
        reason = "disconnected"
        try:
            while True:
                msg = self._next_message()
                if msg is None:
                    if self.reader.buffered or self.reader.pending_header:
                        if "framing-unchecked" in FAULTS:
                            crash("abort")  # assert(idle) at EOF
                        reason = "disconnected in the middle of a message"
                    break
                self._handle(*msg)
            self._flush()
        except ClientGone as e:
            reason = str(e)
        finally:
            self.close()
        log.info("client %s", reason)

    def _next_message(self):
        if self._queue:
            return self._queue.popleft()
        while True:
            msg = self._read_message()
            if msg is not None:
                if FAULTS:
                    self._short_reads = 0
                return msg
            self._flush()
            if (
                FAULTS
                and "split-message-single-recv" in FAULTS
                and (self.reader.buffered or self.reader.pending_header)
            ):
                # Part of a message is here: one recv() was all it got for the rest.
                self._short_reads += 1
                if self._short_reads > 1:
                    raise ClientGone("short read: a message came in pieces")
            if not self._recv():
                return None

    def _read_message(self):
        """The next whole message in the buffer with its fds, or None."""
        try:
            msg = self.reader.next_message()
        except CodecError as e:
            if "framing-unchecked" in FAULTS:
                size = int.from_bytes(self.reader.unread[4:8], "little")
                crash("segv" if size < HEADER_SIZE else "abort")
            raise ClientGone(f"dropped: the stream cannot be framed ({e})") from None
        if msg is None:
            return None
        fds, truncated = [], False
        if self._fd_marks:
            end = self._fed - self.reader.buffered
            while self._fd_marks and self._fd_marks[0][0] < end:
                _, more, trunc = self._fd_marks.popleft()
                fds += more
                truncated |= trunc
        return msg[0], msg[1], fds, truncated

    def _handle(self, hdr: Header, payload: bytes, fds: list[int], truncated: bool) -> None:
        if self.trace:
            self._trace("<-", hdr, payload, fds)
        result = None
        try:
            result = self._execute(hdr, payload, fds, truncated)
        except VfioError as e:
            result = e
        except ClientGone:
            raise
        except Exception as e:  # a bug must cost one reply, not the server
            log.exception("internal error on %s", hdr.describe())
            result = VfioError(errno.EIO, f"internal error: {e!r}")
        finally:
            if fds:
                _close_all(fds)  # whatever the handler did not take
        if hdr.flags & _NO_REPLY or result is _DROP:
            if result is _DROP or "header-flags-misread" not in FAULTS:
                if result.__class__ is VfioError:
                    log.debug("refused %s: %s", hdr.describe(), result)
                return
        if FAULTS:
            self._send_faulty(hdr, result)
            return
        if result.__class__ is bytes:
            self._send(encode_reply(hdr.msg_id, hdr.command, result))
        elif result.__class__ is VfioError:
            log.debug("refused %s: %s", hdr.describe(), result)
            self._send(encode_error(hdr.msg_id, hdr.command, result.errno))
        else:
            self._send(encode_reply(hdr.msg_id, hdr.command, result.payload), result.fds)

    def _execute(self, hdr: Header, payload: bytes, fds: list[int], truncated: bool):
        if FAULTS and "header-flags-misread" in FAULTS:
            if hdr.flags & _FLAG_ERROR or hdr.error:
                return _DROP  # "an error reply": dropped
        elif hdr.flags & _NOT_PLAIN_COMMAND and self._not_a_command(hdr):
            return _DROP
        if truncated:
            raise VfioError(errno.EMFILE, "the server could not receive every fd sent")
        if len(fds) > self.settings.max_msg_fds and "max-msg-fds-ignored" not in FAULTS:
            if "refused-fds-leaked" in FAULTS:
                fds.clear()  # the error path forgets them: never closed
            raise VfioError(
                errno.EINVAL,
                f"{len(fds)} fds; the server takes at most {self.settings.max_msg_fds}",
            )
        handler = self.dispatch.get(hdr.command)
        if handler is None:
            if "dispatch-table-wrong" in FAULTS and hdr.command > max(self.dispatch):
                crash("segv")  # handlers[command] past the table's end
            raise VfioError(
                errno.ENOSYS, f"command {hdr.command} is not in vfio-user {self.revision}"
            )
        if (
            not self.negotiated
            and hdr.command != _VERSION
            and ("version-handling-lax" not in FAULTS)
        ):
            raise VfioError(errno.EINVAL, "VERSION must be negotiated first")
        return handler(self, payload, fds)

    def _send_faulty(self, hdr: Header, result) -> None:
        """_handle's replies with the reply-building faults."""
        msg_id = hdr.msg_id & 0xFF if "msg-id-8bit" in FAULTS else hdr.msg_id
        if result.__class__ is VfioError:
            log.debug("refused %s: %s", hdr.describe(), result)
            err = result.errno
            if "error-field-negative" in FAULTS:
                err = -err & 0xFFFFFFFF
            if "error-reply-zeroed-header" in FAULTS:
                self._send(Header(msg_id, 0, HEADER_SIZE, _FLAG_ERROR, 0).pack())
            elif "error-reply-payload" in FAULTS:
                self._send(
                    encode(
                        msg_id,
                        hdr.command,
                        struct.pack("<I", result.errno),
                        _REPLY | _FLAG_ERROR,
                        err,
                    )
                )
            else:
                self._send(encode(msg_id, hdr.command, b"", _REPLY | _FLAG_ERROR, err))
        elif result.__class__ is bytes:
            self._send(encode_reply(msg_id, hdr.command, result))
        else:
            self._send(encode_reply(msg_id, hdr.command, result.payload), result.fds)

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

    def _request(self, command: int, payload: bytes) -> bytes:
        """Send a request, wait for its reply; commands arriving meanwhile are queued."""
        self._flush()
        msg_id = self._next_id
        self._next_id = (msg_id + 1) & 0xFFFF
        self._abandoned.discard((msg_id, command))  # an id reused after 65536 requests
        msg = encode(msg_id, command, payload)
        if self.trace:
            self._trace("->", Header.unpack(msg[:HEADER_SIZE]), payload)
        self._sendall(msg)
        deadline = time.monotonic() + self.settings.dma_reply_timeout
        while True:
            m = self._read_message()
            if m is None:
                if not self._wait_readable(deadline - time.monotonic()):
                    if len(self._abandoned) > 1024:
                        self._abandoned.clear()
                    self._abandoned.add((msg_id, command))
                    raise VfioError(
                        errno.ETIMEDOUT, f"no reply to {command_name(command)} {msg_id}"
                    )
                if not self._recv():
                    if "framing-unchecked" in FAULTS:
                        crash("abort")  # assert(idle) at EOF
                    raise ClientGone("disconnected while the server waited for a DMA reply")
                continue
            hdr, body, fds, _ = m
            if hdr.type == MsgType.REPLY and hdr.msg_id == msg_id and hdr.command == command:
                _close_all(fds)
                if self.trace:
                    self._trace("<-", hdr, body)
                if hdr.is_error:
                    raise VfioError(
                        hdr.error or errno.EIO,
                        f"the client refused {command_name(command)}: errno {hdr.error}",
                    )
                return body
            if len(self._queue) >= MAX_QUEUED:
                _close_all(fds)
                raise ClientGone(
                    f"dropped: over {MAX_QUEUED} commands sent while the server "
                    "waited for a DMA reply"
                )
            self._queue.append(m)

    def close(self) -> None:
        """Disconnect cleanup: DMA mappings and their fds, IRQ eventfds, queued fds."""
        if "disconnect-cleanup-wrong" in FAULTS:
            if self.device.client is self:
                self.device.client = None  # its eventfds and DMA maps stay
            self.device.reset()
        else:
            if self.device.client is self:
                self.device.detach()
            self.dma_map.clear()
        for m in self._queue:
            _close_all(m[2])
        self._queue.clear()
        for _, fds, _ in self._fd_marks:
            _close_all(fds)
        self._fd_marks.clear()
        self.sock.close()
