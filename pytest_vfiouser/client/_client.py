"""The raw vfio-user client: message ids, replies, server DMA requests, typed commands.

It does what a test tells it and nothing more: no retries, no validation of
what is sent (tests send wrong things on purpose), and every wait bounded.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from typing import NamedTuple

from pytest_vfiouser._unix import CEILING_NS
from pytest_vfiouser.protocol import (
    COMMAND,
    FLAG_ERROR,
    FLAG_NO_REPLY,
    FLAGS,
    HEADER_SIZE,
    HEADER_STRUCT,
    MSG_ID,
    TYPE_MASK,
    BitmapRange,
    CodecError,
    Command,
    DeviceFeature,
    DeviceInfo,
    DirtyPages,
    DmaMap,
    DmaMapFlags,
    DmaRead,
    DmaReadReply,
    DmaUnmap,
    DmaWrite,
    DmaWriteReply,
    IrqInfo,
    MigDataRead,
    MigDataWrite,
    MsgType,
    Payload,
    RegionFlags,
    RegionInfo,
    RegionIoFdsRequest,
    RegionRead,
    RegionWrite,
    RegionWriteMulti,
    SetIrqs,
    SingleWrite,
    Version,
    VfioBitmap,
    command_name,
    encode_error,
    encode_reply,
)

from ._connection import _REPLY, DEFAULT_TIMEOUT, Connection
from ._errors import Timeout, UnexpectedReply, awaited
from ._memory import ClientMemory, DmaFault
from ._reply import Reply
from ._twin import Twin
from ._wirelog import SENT_RAW, WireLog

_HDR_PACK = HEADER_STRUCT.pack
_COMMAND = int(MsgType.COMMAND)
_DMA_READ = int(Command.DMA_READ)
_DMA_WRITE = int(Command.DMA_WRITE)
_FLAG_ERROR = int(FLAG_ERROR)
# Success replies that may carry fds: VERSION (0.9.2 twin socket: one that names its
# fd_index), REGION_INFO (one, of a region with the MMAP flag), REGION_IO_FDS. Any other
# message carries none.
_VERSION = int(Command.VERSION)
_REGION_IO_FDS = int(Command.DEVICE_GET_REGION_IO_FDS)
_REGION_INFO = int(Command.DEVICE_GET_REGION_INFO)
_REGION_FLAGS = struct.Struct("<4xI")  # RegionInfo: argsz, then flags
_MMAP = int(RegionFlags.MMAP)
DEFAULT_MAX_MSG_SIZE = 16 << 20


class DmaRequest(NamedTuple):
    """A DMA_READ or DMA_WRITE the server sent, and how the client answered."""

    command: int
    address: int | None  # None when the request did not decode
    count: int | None
    ok: bool
    errno: int  # the errno of the error reply, 0 when served
    msg_id: int
    detail: str = ""


class StrayFds(NamedTuple):
    """A message from the server that carried more fds than it may: none on most, one
    on GET_REGION_INFO of an mmappable region, some on GET_REGION_IO_FDS and on a
    VERSION reply that names a twin socket's fd_index, never more than the client's
    max_msg_fds. The fds were closed (or, by recv_message(), handed over)."""

    command: int
    msg_id: int
    reply: bool  # a reply (else a message the server sent of its own: DMA_READ/WRITE)
    error: bool  # an error reply
    received: int  # fds that came with it
    allowed: int  # fds it may carry

    def describe(self) -> str:
        kind = "error reply" if self.error else "reply" if self.reply else "request"
        return (
            f"the {command_name(self.command)} {kind} msg_id {self.msg_id} carried "
            f"{self.received} fds (it may carry {self.allowed or 'none'})"
        )


class Client(Connection):
    """One connection to a vfio-user server (not thread-safe: one thread drives it).

    See the package docstring for the API. ``memory`` (closed with the client
    unless given) is what the server's DMA requests are served from. ``twin``: the
    twin socket (Twin) once VERSION enabled twin-socket mode.
    """

    def __init__(
        self,
        sock: socket.socket,
        timeout: float = DEFAULT_TIMEOUT,
        max_msg_size: int | None = None,
        max_data_xfer_size: int = 1048576,
        max_msg_fds: int = 16,
        wire_log: WireLog | None = None,
        memory: ClientMemory | None = None,
        busy_poll_ns: int = CEILING_NS,
    ):
        if max_msg_size is None:
            max_msg_size = max(DEFAULT_MAX_MSG_SIZE, max_data_xfer_size + 4096)
        super().__init__(sock, timeout, max_msg_size, wire_log, busy_poll_ns)
        self.max_data_xfer_size = max_data_xfer_size
        self.max_msg_fds = max_msg_fds
        self._own_memory = memory is None
        self.memory = memory if memory is not None else ClientMemory()
        self.twin: Twin | None = None
        # Why a VERSION reply that claimed twin-socket mode could not be used (None: it
        # was not claimed, or it could).
        self.twin_refused: str | None = None
        self.next_msg_id = 0
        self.negotiated: Version | None = None
        self.server_caps = None  # protocol.Capabilities once negotiated
        self.dma_requests: list[DmaRequest] = []
        self.stray_fds = 0  # fds closed because they came on a message that should carry none
        # Every message that carried more fds than it may (StrayFds), in order; the
        # suite's verdicts read it (a server must not send what no message allows).
        self.stray: list[StrayFds] = []
        self.closed = False

    @classmethod
    def connect(cls, path: str, timeout: float = DEFAULT_TIMEOUT, **kwargs) -> Client:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(path))
            return cls(sock, timeout, **kwargs)
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        """Close the socket, fds received and not taken, and memfds the client created."""
        if not self.closed:
            self.closed = True
            if self.twin is not None:
                self.twin.close()
            super().close()
            if self._own_memory:
                self.memory.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sending

    def send(
        self,
        command: int,
        payload: Payload | bytes | None = None,
        fds=(),
        flags: int = 0,
        msg_id: int | None = None,
        no_reply: bool = False,
        error: int = 0,
    ) -> int:
        """One message in one sendmsg; returns its msg_id (the next u16 if None)."""
        if msg_id is None:
            msg_id = self.next_msg_id
            self.next_msg_id = (msg_id + 1) & 0xFFFF
        if payload.__class__ is not bytes:
            payload = _as_bytes(payload)
        if no_reply:
            flags |= FLAG_NO_REPLY
        self.send_bytes(
            _HDR_PACK(msg_id, command, HEADER_SIZE + len(payload), flags, error) + payload, fds
        )
        return msg_id

    def send_raw(self, data: bytes, fds=()) -> None:
        """Exactly ``data`` (any bytes: part of a message, several, garbage) in one sendmsg."""
        self.send_bytes(bytes(data), fds, SENT_RAW)

    # -- receiving

    def recv_reply(
        self, msg_id: int | None = None, timeout: float | None = None, command: int | None = None
    ) -> Reply:
        """The next reply, serving DMA_READ/DMA_WRITE requests that come first.

        UnexpectedReply if it is not for ``msg_id``/``command`` (when given), or if
        the server sends any other command.
        """
        while True:
            reply = self._accept(self.recv_frame(timeout, (msg_id, command)), msg_id, command)
            if reply is not None:
                return reply

    def _accept(self, frame: tuple, msg_id: int | None, command: int | None) -> Reply | None:
        """The Reply a frame is, if it is the one awaited; None for a DMA request
        (served here); UnexpectedReply for anything else."""
        hdr, payload, fds = frame
        kind = hdr[FLAGS] & TYPE_MASK
        if kind == _REPLY:
            reply = Reply(hdr, payload) if fds is None else self._reply(hdr, payload, fds)
            if (msg_id is not None and hdr[MSG_ID] != msg_id) or (
                command is not None and hdr[COMMAND] != command
            ):
                raise UnexpectedReply(f"expected {awaited((msg_id, command))}", reply)
            return reply
        if self.is_dma_request(hdr):
            self._serve_dma(hdr, payload, fds)
            return None
        raise UnexpectedReply(
            "the server sent a message that is neither a reply nor DMA_READ/DMA_WRITE",
            self._reply(hdr, payload, fds),
        )

    @staticmethod
    def is_dma_request(hdr: tuple) -> bool:
        """The message is a DMA_READ or DMA_WRITE request of the server's."""
        return hdr[FLAGS] & TYPE_MASK == _COMMAND and (
            hdr[COMMAND] == _DMA_READ or hdr[COMMAND] == _DMA_WRITE
        )

    def recv_message(self, timeout: float | None = None) -> Reply:
        """The next message of any kind, as it came (DMA requests are not served, and
        every fd that came with it is handed over)."""
        hdr, payload, fds = self.recv_frame(timeout, "a message")
        if not fds:
            return Reply(hdr, payload)
        allowed = self._fd_limit(hdr, payload)
        if len(fds) > allowed:
            self._note_stray(hdr, len(fds), allowed)
        return Reply.with_fds(hdr, payload, fds, self.owned_fds)

    def request(
        self,
        command: int,
        payload: Payload | bytes | None = None,
        fds=(),
        msg_id: int | None = None,
        timeout: float | None = None,
        flags: int = 0,
    ) -> Reply:
        """Send, then the reply to it (matched by msg_id and command)."""
        # send() inlined: this is the synchronous hot path.
        if msg_id is None:
            msg_id = self.next_msg_id
            self.next_msg_id = (msg_id + 1) & 0xFFFF
        if payload.__class__ is not bytes:
            payload = _as_bytes(payload)
        frame = self.exchange(
            _HDR_PACK(msg_id, command, HEADER_SIZE + len(payload), flags, 0) + payload,
            fds,
            timeout,
            (msg_id, command),
        )
        hdr = frame[0]
        if (
            hdr[MSG_ID] == msg_id
            and hdr[COMMAND] == command
            and hdr[FLAGS] & TYPE_MASK == _REPLY
            and (frame[2] is None)
        ):
            return Reply(hdr, frame[1])  # what _accept would make, checked inline
        reply = self._accept(frame, msg_id, command)
        return reply if reply is not None else self.recv_reply(msg_id, timeout, command)

    def pipeline(self, requests, timeout: float | None = None) -> list[Reply]:
        """Send every (command, payload[, fds]) then collect the replies, in order.

        Each request is its own sendmsg, with fresh msg_ids; replies must come in
        the same order (UnexpectedReply otherwise). DMA requests in between are
        served. The server may stop reading while its replies are unread, so keep
        a batch within the socket buffers (a few hundred small messages).
        """
        sent = []
        frames = []
        msg_id = self.next_msg_id
        for item in requests:
            command, payload = item[0], item[1]
            if len(item) > 2 and item[2]:  # with fds: sent on their own, in order
                self.send_many(frames)
                frames = []
                self.next_msg_id = msg_id
                sent.append((self.send(command, payload, item[2]), command))
                msg_id = self.next_msg_id
                continue
            if payload.__class__ is not bytes:
                payload = _as_bytes(payload)
            frames.append(_HDR_PACK(msg_id, command, HEADER_SIZE + len(payload), 0, 0) + payload)
            sent.append((msg_id, command))
            msg_id = (msg_id + 1) & 0xFFFF
        self.next_msg_id = msg_id
        self.send_many(frames)
        replies: list[Reply] = []
        while len(replies) < len(sent):
            # Replies already received are framed in one tight loop; the general
            # path waits, serves DMA requests, and raises on anything unexpected.
            self.take_buffered_replies(sent, replies, Reply)
            if len(replies) < len(sent):
                msg_id, command = sent[len(replies)]
                replies.append(self.recv_reply(msg_id, timeout, command))
        return replies

    def expect_no_message(self, timeout: float) -> None:
        """Wait ``timeout`` seconds; UnexpectedReply if any byte arrives meanwhile."""
        try:
            hdr, payload, fds = self.recv_frame(timeout, "silence")
        except Timeout as e:
            if e.partial_bytes:
                raise UnexpectedReply(
                    f"{e.partial_bytes} bytes of a message arrived where none was expected"
                ) from None
            return
        raise UnexpectedReply(
            "a message arrived where none was expected", self._reply(hdr, payload, fds)
        )

    def _reply(self, hdr: tuple, payload: bytes, fds: list[int] | None) -> Reply:
        """A Reply with the fds it may carry; the others are closed and counted."""
        closed = 0
        if fds:
            allowed = self._fd_limit(hdr, payload)
            if len(fds) > allowed:
                self._note_stray(hdr, len(fds), allowed)
                extra, fds = fds[allowed:], fds[:allowed] or None
                closed = self._close_stray(extra, hdr, allowed)
        return Reply.with_fds(hdr, payload, fds, self.owned_fds, closed)

    def _fd_limit(self, hdr: tuple, payload: bytes) -> int:
        """How many fds a message from the server may carry (see StrayFds)."""
        flags, command = hdr[FLAGS], hdr[COMMAND]
        if flags & TYPE_MASK != _REPLY or flags & _FLAG_ERROR:
            return 0
        if command == _REGION_IO_FDS:
            return self.max_msg_fds
        if command == _REGION_INFO and len(payload) >= _REGION_FLAGS.size:
            return min(1, self.max_msg_fds) if _REGION_FLAGS.unpack_from(payload)[0] & _MMAP else 0
        if command == _VERSION:
            try:
                twin = Version.unpack(payload).capabilities.twin_socket
            except CodecError:
                return 0
            return self.max_msg_fds if isinstance(twin, dict) and "fd_index" in twin else 0
        return 0

    def _note_stray(self, hdr: tuple, received: int, allowed: int) -> None:
        flags = hdr[FLAGS]
        self.stray.append(
            StrayFds(
                hdr[COMMAND],
                hdr[MSG_ID],
                flags & TYPE_MASK == _REPLY,
                bool(flags & TYPE_MASK == _REPLY and flags & _FLAG_ERROR),
                received,
                allowed,
            )
        )

    def _close_stray(self, fds: list[int], hdr: tuple, allowed: int) -> int:
        self.close_fds(fds)
        self.stray_fds += len(fds)
        self.wire_log.note(
            f"closed {len(fds)} fds that came with {command_name(hdr[COMMAND])} "
            f"msg_id {hdr[MSG_ID]}, which may carry {f'at most {allowed}' if allowed else 'none'}"
        )
        return len(fds)

    # -- serving the server's DMA requests from self.memory

    def _serve_dma(self, hdr: tuple, payload: bytes, fds: list[int] | None) -> None:
        msg_id, command, _, flags, _ = hdr
        if fds:
            self._note_stray(hdr, len(fds), 0)
            self._close_stray(fds, hdr, 0)
        address = count = None
        err, detail, out = 0, "", b""
        try:
            req = (DmaRead if command == _DMA_READ else DmaWrite).unpack(payload)
            address, count = req.address, req.count
            if count > self.max_data_xfer_size:
                err, detail = (
                    errno.E2BIG,
                    (f"count {count} is above max_data_xfer_size {self.max_data_xfer_size}"),
                )
            elif command == _DMA_READ:
                out = DmaReadReply(address, count, self.memory.read(address, count)).pack()
            else:
                self.memory.write(address, req.data)
                out = DmaWriteReply(address, count).pack()  # the 16-byte form (errata 2)
        except CodecError as e:
            err, detail = errno.EINVAL, str(e)
        except DmaFault as e:
            err, detail = e.errno, str(e)
        self.dma_requests.append(DmaRequest(command, address, count, not err, err, msg_id, detail))
        if detail:
            self.wire_log.note(f"refused {command_name(command)} msg_id {msg_id}: {detail}")
        if not flags & FLAG_NO_REPLY:
            self.send_bytes(
                encode_error(msg_id, command, err) if err else encode_reply(msg_id, command, out)
            )

    # -- negotiation

    def proposal(self, **more) -> dict:
        """VERSION capabilities: this client's max_msg_fds and max_data_xfer_size, and
        ``more`` (e.g. ``migration={"pgsize": 4096}``, ``write_multiple=True``)."""
        return {
            "max_msg_fds": self.max_msg_fds,
            "max_data_xfer_size": self.max_data_xfer_size,
            **more,
        }

    def negotiate(
        self,
        major: int = 0,
        minor: int = 0,
        capabilities: dict | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """VERSION: propose ``capabilities`` (default: this client's max_msg_fds and
        max_data_xfer_size; ``{}`` sends no version data at all). ErrorReply on an
        error reply, MalformedReply if the reply does not decode."""
        if capabilities is None:
            capabilities = self.proposal()
        version = Version(major, minor, {"capabilities": capabilities} if capabilities else None)
        reply = self.request(Command.VERSION, version, timeout=timeout).check()
        self.negotiated = reply.body
        self.server_caps = self.negotiated.capabilities
        proposed = capabilities.get("twin_socket")
        if isinstance(proposed, dict) and proposed.get("supported") is True:
            self._start_twin(reply)
        return reply

    def _start_twin(self, reply: Reply) -> None:
        """Use the twin socket a VERSION reply enables; else note why it cannot be used
        (twin_refused). The reply's fds are taken either way."""
        fds = reply.fds
        try:
            fd, self.twin_refused = twin_socket_fd(self.server_caps.twin_socket, fds)
            if fd is not None:
                self.twin = Twin(socket.socket(fileno=os.dup(fd)), self._twin_peer)
        finally:
            self.close_fds(fds)

    def _twin_peer(self, sock: socket.socket) -> Client:
        return Client(
            sock,
            self.timeout,
            max_data_xfer_size=self.max_data_xfer_size,
            max_msg_fds=self.max_msg_fds,
            memory=self.memory,
            busy_poll_ns=0,  # a thread that waits: spinning would take the test's CPU
        )

    # -- typed conveniences: they return the Reply, error or not (Reply.check() raises)

    def device_get_info(self, argsz: int = DeviceInfo.SIZE) -> Reply:
        return self.request(Command.DEVICE_GET_INFO, DeviceInfo(argsz))

    def region_info(self, index: int, argsz: int = 32) -> Reply:
        return self.request(Command.DEVICE_GET_REGION_INFO, RegionInfo(argsz, index=index))

    def irq_info(self, index: int, argsz: int = IrqInfo.SIZE) -> Reply:
        return self.request(Command.DEVICE_GET_IRQ_INFO, IrqInfo(argsz, index=index))

    def region_io_fds(self, index: int, argsz: int = 4096) -> Reply:
        return self.request(
            Command.DEVICE_GET_REGION_IO_FDS, RegionIoFdsRequest(argsz, index=index)
        )

    def set_irqs(
        self,
        index: int,
        flags: int,
        start: int,
        count: int,
        fds=(),
        data: bytes = b"",
        argsz: int | None = None,
    ) -> Reply:
        if argsz is None:
            argsz = SetIrqs.FIXED_SIZE + len(data)
        return self.request(
            Command.DEVICE_SET_IRQS, SetIrqs(argsz, flags, index, start, count, data), fds
        )

    def region_read(self, region: int, offset: int, count: int) -> Reply:
        return self.request(Command.REGION_READ, RegionRead(offset, region, count))

    def region_write(self, region: int, offset: int, data: bytes) -> Reply:
        return self.request(Command.REGION_WRITE, RegionWrite(offset, region, len(data), data))

    def dma_map(
        self,
        address: int,
        size: int,
        flags: int = DmaMapFlags.READ | DmaMapFlags.WRITE,
        fd: int | None = None,
        offset: int = 0,
        argsz: int = DmaMap.SIZE,
    ) -> Reply:
        """DMA_MAP; on success the region joins self.memory (unless already there,
        e.g. made by memory.create_memfd_region)."""
        reply = self.request(
            Command.DMA_MAP,
            DmaMap(argsz, flags, offset, address, size),
            () if fd is None else (fd,),
        )
        if reply.ok and self.memory.find(address, size) is None:
            try:
                self.memory.add(address, size, fd, offset, flags)
            except (OSError, ValueError) as e:
                # The server accepted a map the client cannot model (an fd that does
                # not mmap, an overlap): DMA there will be refused.
                self.wire_log.note(f"DMA_MAP {address:#x}+{size:#x} not modelled: {e}")
        return reply

    def dma_unmap(
        self,
        address: int,
        size: int,
        flags: int = 0,
        bitmap: VfioBitmap | None = None,
        argsz: int | None = None,
    ) -> Reply:
        """DMA_UNMAP; on success the region leaves self.memory."""
        if argsz is None:
            argsz = DmaUnmap.ENTRY_SIZE + (16 + bitmap.size if bitmap is not None else 0)
        reply = self.request(Command.DMA_UNMAP, DmaUnmap(argsz, flags, address, size, bitmap))
        if reply.ok and self.memory.find(address, size) is not None:
            self.memory.remove(address, size)
        return reply

    def reset(self) -> Reply:
        return self.request(Command.DEVICE_RESET)

    def dirty_pages(
        self, flags: int, range: BitmapRange | None = None, argsz: int | None = None
    ) -> Reply:
        if argsz is None:
            argsz = DirtyPages.FIXED_SIZE + (
                BitmapRange.SIZE + range.bitmap.size if range is not None else 0
            )
        return self.request(Command.DIRTY_PAGES, DirtyPages(argsz, flags, range))

    # -- 0.9.2

    def device_feature(
        self, flags: int, data: bytes = b"", argsz: int | None = None, timeout: float | None = None
    ) -> Reply:
        """DEVICE_FEATURE; argsz defaults to the request's size plus 64 KiB of room."""
        if argsz is None:
            argsz = DeviceFeature.FIXED_SIZE + len(data) + (1 << 16)
        return self.request(
            Command.DEVICE_FEATURE, DeviceFeature(argsz, flags, data), timeout=timeout
        )

    def mig_data_read(self, size: int, argsz: int | None = None) -> Reply:
        argsz = MigDataRead.SIZE + size if argsz is None else argsz
        return self.request(Command.MIG_DATA_READ, MigDataRead(argsz, size))

    def mig_data_write(self, data: bytes, argsz: int | None = None) -> Reply:
        argsz = MigDataRead.SIZE + len(data) if argsz is None else argsz
        return self.request(Command.MIG_DATA_WRITE, MigDataWrite(argsz, len(data), data))

    def region_write_multi(self, writes, flags: int = 0) -> Reply:
        """REGION_WRITE_MULTI of ``writes``: (region, offset, data of 1..8 bytes) each."""
        body = RegionWriteMulti(
            tuple(SingleWrite(o, r, len(d), d.ljust(8, b"\0")) for r, o, d in writes)
        )
        return self.request(Command.REGION_WRITE_MULTI, body, flags=flags)


def twin_socket_fd(twin, fds: list[int]) -> tuple[int | None, str | None]:
    """What a VERSION reply's ``twin_socket`` capability and fds come to: (the twin
    socket's fd, None) when they enable the mode, (None, None) when they do not
    claim it, (None, why) when they are inconsistent.

    Spec (VFIO_USER_VERSION): "If twin_socket.supported is true and
    twin_socket.fd_index is present and refers to a valid file descriptor,
    twin-socket mode negotiation has succeeded." "Otherwise, the reply from the
    server is inconsistent."
    """
    if not isinstance(twin, dict) or twin.get("supported") is not True:
        return None, None
    index = twin.get("fd_index")
    if index is None:
        return None, "twin_socket.supported is true but fd_index is missing"
    if not 0 <= index < len(fds):
        return None, f"twin_socket.fd_index {index} names none of the {len(fds)} fds received"
    try:
        mode = os.fstat(fds[index]).st_mode
    except OSError as e:
        return None, f"the fd at fd_index {index} cannot be examined: {e}"
    if not stat.S_ISSOCK(mode):
        return None, f"the fd at fd_index {index} is not a socket (st_mode {mode:#o})"
    return fds[index], None


def _as_bytes(payload) -> bytes:
    """A payload as sent: None is empty, a codec Payload is packed, bytes-likes copied."""
    if payload is None:
        return b""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    return payload.pack()
