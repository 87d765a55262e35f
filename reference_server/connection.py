"""One client connection: framing, fds, validation of the header, dispatch,
replies, and the server's own requests to the client (DMA_READ/DMA_WRITE).

Blocking socket, one client at a time, polled briefly before each blocking
receive while the client keeps talking (pytest_vfiouser/client/busy_poll.py).
Replies are gathered and written in one send when no further whole message
is already buffered, so pipelined clients cost one syscall per batch.

Which message do received fds belong to? A stream recvmsg() returns the fds
of at most one sendmsg(), and stops right after the bytes they came with; it
may have glued earlier fd-less bytes in front. So the fds belong to the
message holding the chunk's *last* byte: whole-message senders and
byte-by-byte senders alike get their fds attached to the right message.

In twin-socket mode (0.9.2, twin.py) the server's requests and their replies
travel on the twin socket instead, and commands that arrive on the main socket
meanwhile are served at once (up to MAX_NESTED waits deep), not queued.

Header rules (all EINVAL, connection kept): undefined flag bits, a type
other than command (except a late reply to a DMA request the server gave up
on: dropped silently), the Error bit on a command, more fds than the
server's max_msg_fds; any command but VERSION before negotiation. Unknown
command: ENOSYS. Fds the kernel could not deliver (MSG_CTRUNC): EMFILE. A
command with No_reply is processed and never answered. The error field of a
command is reserved and ignored. Fds on a command that takes none are closed
and the command is served. msg_size below 16 or above the server's maximum
(16 + 16 + max_data_xfer_size + 4096): the stream cannot be framed any more,
the connection is closed.

What a client may cost in time and memory is bounded (limits.py): a message
that takes too long to arrive, a client that sends nothing while another
waits, a reply the client does not read, or too many bytes of commands sent
while the server waits for a DMA reply end the connection.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import socket
import struct
import time
from collections import deque

from pytest_vfiouser._unix import ANC_SPACE, CEILING_NS, BusyPoll, fd_kind, fds_of, rights
from pytest_vfiouser.protocol import (
    FLAG_ERROR,
    FLAG_NO_REPLY,
    HEADER_FLAGS_DEFINED,
    HEADER_SIZE,
    TYPE_MASK,
    CodecError,
    Command,
    DmaRead,
    DmaReadReply,
    DmaWrite,
    DmaWriteReply,
    Header,
    MessageReader,
    MsgType,
    command_name,
    decode,
    encode,
    encode_error,
    encode_reply,
)

from . import commands, negotiation
from .conduct import Conduct
from .dma_map import DmaMapTable
from .errors import ClientGone, VfioError
from .limits import DEFAULT, MAX_QUEUED, Limits
from .negotiation import ClientLimits
from .record import Recorder
from .twin import TwinChannel

log = logging.getLogger("reference_server")

RECV_SIZE = 256 * 1024
FLUSH_AT = 256 * 1024  # gathered reply bytes that force a send
MSG_SLACK = 4096
_DROP = object()  # a message that gets no reply at all
_NO_REPLY = int(FLAG_NO_REPLY)
_COMMAND, _REPLY = int(MsgType.COMMAND), int(MsgType.REPLY)
_VERSION = int(Command.VERSION)
_SEND_NOW = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL  # the send timeout is ours (_sendall)
_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR
_TIMEVAL = struct.Struct("@ll")
# Header flag bits beyond the type and No_reply: anything set here needs a closer look.
_NOT_PLAIN_COMMAND = ~_NO_REPLY & 0xFFFFFFFF
# Twin-socket mode: how many of the server's requests may wait at once, each with the
# main socket's commands served meanwhile (a command served may start a DMA of its own).
# Deeper, the main socket waits for the innermost reply, as without a twin socket.
MAX_NESTED = 4


class Connection(Conduct):
    """One client. ``handlers`` (command -> handler) and ``dma_map_table`` are what a
    subclass changes to serve commands or keep DMA mappings otherwise."""

    handlers = commands.HANDLERS
    dma_map_table = DmaMapTable

    def __init__(
        self,
        sock: socket.socket,
        device,
        revision: str,
        trace: bool = False,
        busy_poll_ns: int = CEILING_NS,
        limits: Limits = DEFAULT,
        listener: socket.socket | None = None,
        recorder: Recorder | None = None,
    ):
        """``listener``: where other clients wait to be served (for idle_timeout);
        ``recorder``: --record's (record.py)."""
        self.sock = sock
        self.recorder = recorder
        self.number = recorder.connection() if recorder is not None else 0
        self.limits = limits
        self.listener = listener
        self.device = device
        self.settings = device.settings
        self.revision = revision
        self.trace = trace
        self.dispatch = commands.dispatch_table(revision, self.handlers)
        self.negotiated = False
        self.client = ClientLimits()  # the spec's defaults until VERSION says otherwise
        self.dirty_logging = False  # DIRTY_PAGES START/STOP (dirty.py)
        self.dma_map = self.dma_map_table(self.settings.max_dma_maps)
        self.reader = MessageReader(HEADER_SIZE + 16 + self.settings.max_data_xfer_size + MSG_SLACK)
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        self._fed = 0  # stream bytes received so far
        self._fd_marks: deque = deque()  # (offset of the chunk's last byte, fds, truncated)
        self._queue: deque = deque()  # messages that arrived while we waited for a DMA reply
        self._queued_bytes = 0  # their headers' and payloads' bytes
        self._recorded = False  # the message about to be handled is in the record already
        self._waited_since: float | None = None  # when the server began to wait for a message
        self._message_since: float | None = None  # when a partial message was first seen
        self._recv_timeout = 0.0  # SO_RCVTIMEO (0: none)
        self._idle_bound = limits.idle_timeout if listener is not None else 0.0  # between messages
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._next_id = 0
        self._abandoned: set[tuple[int, int]] = set()  # our requests that timed out
        self.twin: TwinChannel | None = None  # 0.9.2 twin-socket mode (open_twin)
        self._awaiting: list[tuple[int, int]] = []  # our requests waiting on the twin socket
        self._poll = BusyPoll(busy_poll_ns)  # the receives' adaptive polling
        self.init_conduct(self.settings)

    # ---- the loop

    def serve(self) -> None:
        self.device.attach(self)
        if self.recorder is not None:
            self.recorder.event(self.number, "connect")
        reason = "disconnected"
        try:
            while True:
                msg = self._next_message()
                if msg is None:
                    if self.reader.buffered or self.reader.pending_header:
                        reason = self.cut_off("in the middle of a message")
                    break
                self._handle(*msg)
            self._flush()
        except ClientGone as e:
            reason = str(e)
        finally:
            self.close()
            if self.recorder is not None:
                self.recorder.event(self.number, "disconnect", reason)
        log.info("client %s", reason)

    def _next_message(self):
        if self._queue:
            m = self._queue.popleft()
            self._queued_bytes -= m[0].msg_size
            self._recorded = True  # when it arrived (_hold)
            return m
        while True:
            msg = self._read_message()
            if msg is not None:
                return msg
            self._flush()
            if not self._recv_more():
                return None

    def _recv_more(self) -> bool:
        """Receive more of the next message (or the start of one); False at EOF.

        ClientGone when the client takes longer than limits.py allows: every receive
        looks at the clocks, and a receive blocks no longer than the nearest bound
        (SO_RCVTIMEO: no extra system call while the client keeps to them).
        """
        reader = self.reader
        if self._waited_since is None and not reader.buffered and reader.pending_header is None:
            # The wait for a new message begins (the common case): only idle_timeout applies.
            self._waited_since = time.monotonic()
            if self._recv_timeout != self._idle_bound:
                self._set_recv_timeout(self._idle_bound)
            return self._recv()
        while True:
            now = time.monotonic()
            if self._waited_since is None:
                self._waited_since = now
            if self._message_since is None and (self.reader.buffered or self.reader.pending_header):
                self._message_since = now  # its first bytes came with the last receive
            self._check_patience(now)
            bound = self._wait_bound(now)
            if bound is None:  # idle past its bound, nobody waited: block until either comes
                if not _ready(self.sock, _READABLE, None, self.listener):
                    continue  # somebody came
                bound = 0.0
            self._set_recv_timeout(bound)
            return self._recv()

    def _check_patience(self, now: float) -> None:
        """ClientGone if the message being received, or the wait for one while another
        client waits, has taken longer than its bound."""
        limits = self.limits
        if self._message_since is not None and now - self._message_since >= limits.message_timeout:
            raise ClientGone(f"dropped: a message took over {limits.message_timeout:g} s to arrive")
        if now - self._waited_since >= limits.idle_timeout and self._others_wait():
            raise ClientGone(
                f"dropped: no whole message for {limits.idle_timeout:g} s "
                "while another client waited"
            )

    def _others_wait(self) -> bool:
        """Another client is waiting to be served (a connection in the listener's backlog)."""
        return self.listener is not None and _ready(self.listener, select.POLLIN, 0)

    def _wait_bound(self, now: float) -> float | None:
        """Seconds the next receive may block (0: no bound), or None: past the idle
        bound with nobody waiting (then a new client is to be watched for too)."""
        limits = self.limits
        idle_left = None
        if self.listener is not None:
            idle_left = self._waited_since + limits.idle_timeout - now
        if self._message_since is None:
            # Between messages, the wait began about now: a constant bound (set once).
            return self._idle_bound if idle_left is None or idle_left > 0 else None
        left = self._message_since + limits.message_timeout - now
        return min(left, idle_left) if idle_left is not None and idle_left > 0 else left

    def _set_recv_timeout(self, seconds: float) -> None:
        if seconds == self._recv_timeout:
            return
        self._recv_timeout = seconds
        sec = int(seconds)
        usec = int((seconds - sec) * 1e6)
        if seconds and not sec and not usec:
            usec = 1  # 0 would be no timeout at all
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(sec, usec))

    def _read_message(self):
        """The next whole message in the buffer with its fds, or None."""
        try:
            msg = self.reader.next_message()
        except CodecError as e:
            raise ClientGone(f"dropped: the stream cannot be framed ({e})") from None
        if msg is None:
            return None
        self._waited_since = self._message_since = None
        fds, truncated = [], False
        if self._fd_marks:
            end = self._fed - self.reader.buffered
            while self._fd_marks and self._fd_marks[0][0] < end:
                _, more, trunc = self._fd_marks.popleft()
                fds += more
                truncated |= trunc
        return msg[0], msg[1], fds, truncated

    def _recv(self) -> bool:
        """Read what is there (blocking); False at EOF. True with nothing read when the
        receive timeout (_set_recv_timeout) ran out."""
        try:
            n, anc, mflags, _ = self._poll.recvmsg_into(
                self.sock, [self._buf], ANC_SPACE, socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return True
        except OSError as e:
            raise ClientGone(f"recv failed: {e}") from None
        fds = fds_of(anc)
        truncated = bool(mflags & socket.MSG_CTRUNC)
        if n == 0:
            _close_all(fds)
            return False
        self._fed += n
        if fds or truncated:
            self._fd_marks.append((self._fed - 1, fds, truncated))
        self.reader.feed(self._view[:n])
        return True

    # ---- one message

    def _handle(self, hdr: Header, payload: bytes, fds: list[int], truncated: bool) -> None:
        if self._recorded:
            self._recorded = False
        else:
            self._record(hdr, payload, fds, truncated)
        if self.trace:
            self._trace("<-", hdr, payload, fds)
        result = None
        if hdr.type == MsgType.COMMAND:
            self.before_command(hdr)
        try:
            self.refuse_if_asked(hdr)
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
        if result is _DROP or not self.wants_reply(hdr):
            if result.__class__ is VfioError:
                log.debug("refused %s: %s", hdr.describe(), result)
            return
        self.before_reply(hdr)
        self._reply(hdr, result)
        if result.__class__ is not VfioError:
            self.after_success(hdr, payload)

    def _record(self, hdr: Header, payload: bytes, fds: list[int], truncated: bool) -> None:
        """--record: a message of the client's on the main socket, its fds' kinds too."""
        if self.recorder is not None:
            kinds = tuple(fd_kind(fd) for fd in fds)
            self.recorder.message(
                self.number, "c2s", "main", hdr, payload, len(fds), truncated, kinds
            )

    def wants_reply(self, hdr: Header) -> bool:
        return not hdr.flags & _NO_REPLY

    def _reply(self, hdr: Header, result) -> None:
        """Send a handler's result: reply payload, Out (payload and fds) or VfioError."""
        if result.__class__ is bytes:
            self._send(encode_reply(hdr.msg_id, hdr.command, result))
        elif result.__class__ is VfioError:
            log.debug("refused %s: %s", hdr.describe(), result)
            self._send(encode_error(hdr.msg_id, hdr.command, result.errno))
        else:
            try:
                self._send(encode_reply(hdr.msg_id, hdr.command, result.payload), result.fds)
            finally:
                if result.owned:
                    _close_all(list(result.fds))

    def _execute(self, hdr: Header, payload: bytes, fds: list[int], truncated: bool):
        if self._not_a_command(hdr):
            return _DROP
        if truncated:
            raise VfioError(errno.EMFILE, "the server could not receive every fd sent")
        self.check_fds(fds)
        handler = self.handler(hdr.command)
        self.check_negotiated(hdr.command)
        return handler(self, payload, fds)

    def _not_a_command(self, hdr: Header) -> bool:
        """Header flags beyond a plain command (No_reply aside): refuse, or True to
        drop the message silently (a late reply to a request we gave up on)."""
        flags = hdr.flags
        if not flags & _NOT_PLAIN_COMMAND:
            return False
        if flags & ~HEADER_FLAGS_DEFINED:
            raise VfioError(
                errno.EINVAL, f"undefined header flag bits {flags & ~HEADER_FLAGS_DEFINED:#x}"
            )
        kind = flags & TYPE_MASK
        if kind == _REPLY:
            if (hdr.msg_id, hdr.command) in self._abandoned:
                self._abandoned.discard((hdr.msg_id, hdr.command))
                log.info("late reply to timed-out request %d dropped", hdr.msg_id)
                return True
            raise VfioError(errno.EINVAL, "a reply, but no request of the server's is waiting")
        if kind != _COMMAND:
            raise VfioError(errno.EINVAL, f"message type {kind} is neither command nor reply")
        if flags & FLAG_ERROR:
            raise VfioError(errno.EINVAL, "the Error bit is set on a command")
        return False

    def check_fds(self, fds: list[int]) -> None:
        if len(fds) > self.settings.max_msg_fds:
            raise VfioError(
                errno.EINVAL,
                f"{len(fds)} fds; the server takes at most {self.settings.max_msg_fds}",
            )

    def handler(self, command: int):
        """The handler of ``command`` in this revision's dispatch table (ENOSYS if none)."""
        handler = self.dispatch.get(command)
        if handler is None:
            raise VfioError(errno.ENOSYS, f"command {command} is not in vfio-user {self.revision}")
        return handler

    def check_negotiated(self, command: int) -> None:
        if not self.negotiated and command != _VERSION:
            raise VfioError(errno.EINVAL, "VERSION must be negotiated first")

    # ---- what handlers ask of the connection (commands.py)

    def negotiate(self, payload: bytes):
        """VERSION: the reply and the client's limits (negotiation.py)."""
        return negotiation.negotiate(
            payload, self.settings, self.revision, self.device.supports_migration
        )

    def decode(self, cls, payload: bytes):
        """A request's payload as ``cls``; EINVAL if it does not decode."""
        try:
            return cls.unpack(payload)
        except CodecError as e:
            raise VfioError(errno.EINVAL, str(e)) from None

    def argsz_covers(self, argsz: int, need: int) -> bool:
        """The client's argsz leaves room for a ``need``-byte reply."""
        return argsz >= need

    def check_argsz(self, argsz: int, need: int) -> None:
        if not self.argsz_covers(argsz, need):
            raise VfioError(errno.EINVAL, f"argsz {argsz} is below the {need}-byte reply structure")

    def must_be_zero(self, value: int, fields: str) -> None:
        if value:
            raise VfioError(errno.EINVAL, f"{fields} must be 0")

    def dma_page(self) -> int:
        """What a DMA_MAP's address, size and offset must be multiples of: at 0.9.2 the
        smallest page size of the server's pgsizes; 1 (anything) at 0.9.1."""
        return 1 if self.revision == "0.9.1" else self.settings.min_pgsize

    def open_twin(self) -> int:
        """Twin-socket mode: a fresh socket pair; the server keeps one end, and the
        other (returned) goes to the client with the VERSION reply."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.twin = TwinChannel(mine, self.reader.max_msg_size)
        return theirs.detach()

    def can_send_fds(self, n: int) -> bool:
        """The client takes ``n`` fds with one message (its max_msg_fds)."""
        return n <= self.client.max_msg_fds

    def region(self, index: int):
        num = self.device.num_regions
        if index >= num:
            raise VfioError(errno.EINVAL, f"no region {index} (the device has {num})")
        return self.device.regions[index]

    def irq_type(self, index: int):
        if index >= self.device.num_irqs:
            raise VfioError(errno.EINVAL, f"no IRQ type {index}")
        return self.device.irqs.indexes[index]

    def check_xfer_size(self, size: int, what: str) -> None:
        """E2BIG when ``size`` bytes of data (``what``) are above the server's
        max_data_xfer_size."""
        if size > self.settings.max_data_xfer_size:
            raise VfioError(
                errno.E2BIG,
                f"{what} is above max_data_xfer_size {self.settings.max_data_xfer_size}",
            )

    def check_access(self, offset: int, index: int, count: int, need: int, what: str):
        """The region a REGION_READ/WRITE of [offset, +count) names, if it may be done."""
        region = self.region(index)
        self.check_xfer_size(count, f"count {count}")
        if offset + count > region.size:
            raise VfioError(
                errno.EINVAL,
                f"[{offset:#x}, +{count:#x}) is outside region {index} ({region.size:#x} bytes)",
            )
        if not region.flags & need:
            raise VfioError(errno.EPERM, f"region {index} is not {what}")
        return region

    # ---- sending

    def _send(self, msg: bytes, fds=()) -> None:
        if self.recorder is not None:
            self.recorder.sent(self.number, "main", msg, len(fds))
        if self.trace:
            self._trace("->", Header.unpack(msg[:HEADER_SIZE]), msg[HEADER_SIZE:], fds)
        if fds:
            self._flush()
            self._sendall(msg, fds)
            return
        self._out.append(msg)
        self._out_bytes += len(msg)
        if self._out_bytes >= FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self._sendall(data)

    def _sendall(self, data: bytes, fds=()) -> None:
        send_within(self.sock, data, fds, self.limits.send_timeout)

    # ---- requests to the client (the DMA engine's ClientLink)

    @property
    def dma_chunk(self) -> int:
        return min(self.client.max_data_xfer_size, self.settings.max_data_xfer_size)

    def dma_read(self, address: int, count: int) -> bytes:
        reply = self._request(Command.DMA_READ, DmaRead(address, count).pack())
        try:
            r = DmaReadReply.unpack(reply)
        except CodecError as e:
            raise VfioError(errno.EIO, f"malformed DMA_READ reply: {e}") from None
        if r.address != address or r.count != count:
            raise VfioError(
                errno.EIO,
                f"DMA_READ reply for {r.address:#x}+{r.count}, asked {address:#x}+{count}",
            )
        return r.data

    def dma_write(self, address: int, data: bytes) -> None:
        reply = self._request(Command.DMA_WRITE, DmaWrite(address, len(data), data).pack())
        try:
            r = DmaWriteReply.unpack(reply)
        except CodecError as e:
            raise VfioError(errno.EIO, f"malformed DMA_WRITE reply: {e}") from None
        if r.address != address or r.count != len(data):
            raise VfioError(
                errno.EIO,
                f"DMA_WRITE reply for {r.address:#x}+{r.count}, asked {address:#x}+{len(data)}",
            )

    def _request(self, command: int, payload: bytes) -> bytes:
        """Send a request, wait for its reply (on the twin socket in twin-socket mode)."""
        self._flush()
        msg_id = self._next_id
        self._next_id = (msg_id + 1) & 0xFFFF
        key = (msg_id, command)
        self._abandoned.discard(key)  # an id reused after 65536 requests
        msg = encode(msg_id, command, payload)
        if self.trace:
            self._trace("->", Header.unpack(msg[:HEADER_SIZE]), payload)
        if self.recorder is not None:
            self.recorder.sent(self.number, "twin" if self.twin else "main", msg)
        deadline = time.monotonic() + self.settings.dma_reply_timeout
        if self.twin is not None:
            hdr, body = self._await_twin(key, msg, deadline)
        else:
            self._sendall(msg)
            hdr, body = self._await_main(key, deadline)
        if self.trace:
            self._trace("<-", hdr, body)
        if hdr.is_error:
            raise VfioError(
                hdr.error or errno.EIO,
                f"the client refused {command_name(command)}: errno {hdr.error}",
            )
        return body

    def _await_main(self, key: tuple[int, int], deadline: float) -> tuple[Header, bytes]:
        """The reply to our request ``key`` on the main socket; commands arriving
        meanwhile are queued (served once the reply is in)."""
        while True:
            m = self._read_message()
            if m is None:
                if not self._wait_readable(deadline - time.monotonic()):
                    self._give_up(key)
                if not self._recv():
                    raise ClientGone(self.cut_off("while the server waited for a DMA reply"))
                continue
            hdr, body, fds, truncated = m
            if hdr.type == MsgType.REPLY and (hdr.msg_id, hdr.command) == key:
                if self.recorder is not None:
                    self.recorder.message(
                        self.number, "c2s", "main", hdr, body, len(fds), truncated
                    )
                _close_all(fds)
                return hdr, body
            self._hold(m)

    def _await_twin(self, key: tuple[int, int], msg: bytes, deadline: float):
        """Send our request ``key`` on the twin socket and wait there for its reply,
        serving the main socket's commands meanwhile."""
        twin = self.twin
        try:
            send_within(twin.sock, msg, (), self.limits.send_timeout)
        except ClientGone as e:  # the client closed its end, or does not read it
            raise ClientGone(f"twin socket: {e}") from None
        serve_main = self.serves_main_meanwhile()
        self._awaiting.append(key)
        try:
            while True:
                reply = twin.early.pop(key, None) or self._twin_replies(key)
                if reply is not None:
                    return reply
                m = self._read_message() if serve_main else None
                if m is not None:
                    self._handle(*m)
                    continue
                self._flush()
                ready = _ready_of(
                    (twin.sock, self.sock) if serve_main else (twin.sock,),
                    deadline - time.monotonic(),
                )
                if not ready:
                    self._give_up(key)
                if twin.sock in ready and not twin.receive():
                    raise ClientGone("disconnected: the client closed the twin socket")
                if self.sock in ready and not self._recv():
                    raise ClientGone(self.cut_off("while the server waited for a DMA reply"))
        finally:
            self._awaiting.remove(key)

    def serves_main_meanwhile(self) -> bool:
        """Whether a request about to wait on the twin socket serves the main socket's
        commands meanwhile (MAX_NESTED)."""
        return len(self._awaiting) < MAX_NESTED

    def _twin_replies(self, key: tuple[int, int]) -> tuple[Header, bytes] | None:
        """Take the twin socket's messages: the reply to ``key`` if it came; replies to
        the other requests waiting are kept, late ones dropped, anything else refused."""
        twin = self.twin
        for hdr, body in twin.messages():
            if self.recorder is not None:
                self.recorder.message(self.number, "c2s", "twin", hdr, body)
            got = (hdr.msg_id, hdr.command)
            if hdr.type == MsgType.REPLY and got == key:
                return hdr, body
            if hdr.type == MsgType.REPLY and got in self._awaiting:
                twin.early[got] = (hdr, body)
            elif hdr.type == MsgType.REPLY and got in self._abandoned:
                self._abandoned.discard(got)
                log.info("late reply to timed-out request %d dropped", hdr.msg_id)
            else:
                answer = twin.refuse(hdr)
                if answer is not None:
                    if self.recorder is not None:
                        self.recorder.sent(self.number, "twin", answer)
                    send_within(twin.sock, answer, (), self.limits.send_timeout)
        return None

    def _give_up(self, key: tuple[int, int]):
        """ETIMEDOUT for our request ``key``; its reply, should it come, is dropped."""
        if len(self._abandoned) > 1024:
            self._abandoned.clear()
        self._abandoned.add(key)
        raise VfioError(errno.ETIMEDOUT, f"no reply to {command_name(key[1])} {key[0]}")

    def _hold(self, m) -> None:
        """Queue a command that came while the server waits for a DMA reply (or delays
        one: conduct.py); ClientGone
        beyond MAX_QUEUED commands or max_queued_bytes of them (one is always held)."""
        self._record(*m)  # in the order it came (the client may be gone first)
        size = m[0].msg_size
        limit = self.limits.max_queued_bytes
        if len(self._queue) >= MAX_QUEUED or (self._queue and self._queued_bytes + size > limit):
            _close_all(m[2])
            raise ClientGone(
                f"dropped: over {MAX_QUEUED} commands or {limit} bytes of them sent "
                "while the server waited for a DMA reply"
            )
        self._queue.append(m)
        self._queued_bytes += size

    def _wait_readable(self, timeout: float) -> bool:
        return timeout > 0 and _ready(self.sock, _READABLE, timeout)

    # ---- the end

    def cut_off(self, when: str) -> str:
        """The client left in the middle of an exchange: why the connection ends."""
        return f"disconnected {when}"

    def close(self) -> None:
        """Disconnect cleanup: DMA mappings and their fds, IRQ eventfds, queued fds."""
        self.end_conduct()
        self.release_device()
        for m in self._queue:
            _close_all(m[2])
        self._queue.clear()
        self._queued_bytes = 0
        for _, fds, _ in self._fd_marks:
            _close_all(fds)
        self._fd_marks.clear()
        if self.twin is not None:
            self.twin.close()
        self.sock.close()

    def release_device(self) -> None:
        """Give the device back: its interrupts' eventfds and this client's DMA mappings."""
        if self.device.client is self:
            self.device.detach()
        self.dma_map.clear()

    def _trace(self, arrow: str, hdr: Header, payload: bytes, fds=()) -> None:
        try:
            body = None if hdr.is_error else decode(hdr.command, hdr.is_reply, payload)
            text = "" if body is None else repr(body)
        except CodecError as e:
            text = f"<{len(payload)} bytes: {e}>"
        if len(text) > 240:
            text = text[:240] + "...)"
        log.debug("%s %s %s%s", arrow, hdr.describe(), text, f" fds={list(fds)}" if fds else "")


def _ready(sock: socket.socket, events: int, timeout: float | None, also=None) -> bool:
    """Whether ``sock`` has ``events`` within ``timeout`` seconds (None: no limit);
    False too if the socket ``also`` becomes readable first."""
    poller = select.poll()
    poller.register(sock.fileno(), events)
    if also is not None:
        poller.register(also.fileno(), select.POLLIN)
    if timeout is not None:
        timeout = max(0, math.ceil(timeout * 1000))
    return any(fd == sock.fileno() for fd, _ in poller.poll(timeout))


def _ready_of(socks, timeout: float) -> list:
    """Which of ``socks`` are readable (or hung up) within ``timeout`` seconds."""
    if timeout <= 0:
        return []
    poller = select.poll()
    for sock in socks:
        poller.register(sock.fileno(), _READABLE)
    ready = {fd for fd, _ in poller.poll(math.ceil(timeout * 1000))}
    return [sock for sock in socks if sock.fileno() in ready]


def send_within(sock: socket.socket, data: bytes, fds, timeout: float) -> None:
    """Send ``data`` (``fds`` with its first bytes) within ``timeout`` seconds in all:
    a timeout per send() call (SO_SNDTIMEO) would restart after each partial send."""
    deadline = None
    try:
        while True:
            try:
                if fds:
                    sent = sock.sendmsg([data], rights(fds), _SEND_NOW)
                    fds = ()
                else:
                    sent = sock.send(data, _SEND_NOW)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            if deadline is None:
                deadline = time.monotonic() + timeout
            if not _ready(sock, _WRITABLE, deadline - time.monotonic()):
                raise ClientGone(
                    f"dropped: a message could not be sent in {timeout:g} s "
                    "(the client does not read)"
                )
    except OSError as e:
        raise ClientGone(f"send failed: {e}") from None


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()
