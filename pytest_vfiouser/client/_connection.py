"""The socket: one sendmsg per message, framed receives, fds, timeouts.

Design notes (this is the hot path of every test and of the benchmark):

* The socket stays in blocking mode and waits are bounded by SO_RCVTIMEO and
  SO_SNDTIMEO, so a receive is one syscall (Python's own socket timeouts poll
  before every call). A send that does not fit the socket buffer finishes in
  a poll loop that takes in what the peer sends meanwhile (no deadlock with a
  peer that answers as it reads). The deadline of a whole message is enforced by
  shortening SO_RCVTIMEO when a message arrives in pieces.
* Before a receive blocks, the socket is polled for as long as recent waits
  say a reply is near (busy_poll.py: at most ``busy_poll_ns``, 0.2 ms by
  default, adaptive): a blocked process's vCPU halts, and its wakeup costs
  more than a whole round trip's work. A wait may so outlast its timeout by
  up to that much.
* Receives go into one preallocated buffer with recvmsg_into (always with
  room for fds, so that fds a server should not send are seen and counted,
  not silently dropped by the kernel); several pipelined messages are framed
  out of one receive. Only the payload is copied out.
* Linux delivers SCM_RIGHTS with the first read of the skb they were sent
  with and ends that read there, so fds belong to the message holding the
  last byte of the receive that brought them. They are kept, with that
  stream offset, until the message is framed.
* A msg_size below 16 or above max_msg_size is refused before anything is
  allocated for it, and leaves the stream unframeable: the connection is
  then broken and every later receive raises again.
* The wire log gets one entry per send and one per receive (see wirelog.py).
* Constants used per message are plain ints: enum arithmetic is slow.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from collections import deque

from pytest_vfiouser._unix import ANC_SPACE, CEILING_NS, BusyPoll, fds_of, rights, wait_read
from pytest_vfiouser.protocol import (
    COMMAND,
    FLAGS,
    HEADER_SIZE,
    HEADER_STRUCT,
    MSG_ID,
    MSG_SIZE,
    TYPE_MASK,
    CodecError,
    Header,
    MsgType,
    check_msg_size,
)

from ._errors import ClientError, ConnectionClosed, MalformedReply, Timeout
from ._wirelog import RECEIVED, SENT, SENT_BATCH, WireLog, describe

_HDR_UNPACK = HEADER_STRUCT.unpack_from
_now = time.monotonic
_REPLY = int(MsgType.REPLY)
_TIMEVAL = struct.Struct("@ll")
_CMSG_SPACE = ANC_SPACE
_BUF_SIZE = 1 << 16
_LOG_BIG = WireLog.BIG
DEFAULT_TIMEOUT = 5.0  # seconds any wait for the peer may take, unless told otherwise
_MSG_NOSIGNAL = int(getattr(socket, "MSG_NOSIGNAL", 0))
# Sends never block in the kernel: what does not fit waits in _send_rest's poll loop.
_SEND_FLAGS = _MSG_NOSIGNAL | socket.MSG_DONTWAIT
_RECV_FLAGS = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
# What a send takes in from the peer at most while it waits to send more.
_TAKE_IN_LIMIT = 64 << 20


class Connection:
    def __init__(
        self,
        sock: socket.socket,
        timeout: float = DEFAULT_TIMEOUT,
        max_msg_size: int = 16 << 20,
        wire_log: WireLog | None = None,
        busy_poll_ns: int = CEILING_NS,
    ):
        sock.settimeout(None)  # blocking: see the module docstring
        self.sock = sock
        self.timeout = timeout
        self.max_msg_size = max_msg_size
        self.wire_log = wire_log if wire_log is not None else WireLog()
        self.owned_fds: set[int] = set()  # received fds no caller has taken yet
        self.ctrunc = 0  # receives where the kernel dropped fds for lack of room
        self.broken: ClientError | None = None
        self._buf = bytearray(_BUF_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0  # first unframed byte in _buf
        self._end = 0  # end of received bytes in _buf
        self._stream = 0  # bytes received so far: the stream offset of _buf[_end]
        self._pending_fds: deque[tuple[int, list[int]]] = deque()
        self._sock_send = sock.send
        self.busy_poll = BusyPoll(busy_poll_ns)  # BusyPoll(0): receives always block
        self._rcvtimeo = -1.0
        self._set_rcvtimeo(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))

    def _set_rcvtimeo(self, seconds: float) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
        self._rcvtimeo = seconds

    # -- sending

    def send_bytes(self, data: bytes, fds=(), kind: str = SENT) -> None:
        """``data`` in one sendmsg, with ``fds`` as SCM_RIGHTS."""
        t = _now()
        log = self.wire_log
        if log.enabled:  # logged first: an attempt that fails shows too
            log.append((log.next_seq(), t, kind, data, len(fds), 0))
            if len(data) > _LOG_BIG:
                log.account(len(data))
        try:
            if fds:
                n = self.sock.sendmsg([data], rights(fds), _MSG_NOSIGNAL)
            else:
                n = self._send_first(data)
            if n != len(data):  # the fds went with the first byte
                self._send_rest(data, n, t)
        except BlockingIOError:
            raise Timeout(f"the peer to accept {_what(data)}", self.timeout) from None
        except (BrokenPipeError, ConnectionResetError):
            self._peer_gone(data)

    def _send_first(self, data: bytes) -> int:
        """What one send without waiting took of ``data`` (0 if the buffer is full)."""
        try:
            return self._sock_send(data, _SEND_FLAGS)
        except BlockingIOError:
            return 0

    def _send_rest(self, data: bytes, n: int, started: float) -> None:
        """After a short write (a full socket buffer), the rest of ``data``, all of it
        within the timeout counted from ``started``; BlockingIOError if not.

        What the peer sends meanwhile is taken in, for the receives that follow: a peer
        that answers each piece it reads (an error reply per header of garbage) blocks
        on writing to us once our receive buffer is full, and then reads no more."""
        view = memoryview(data)[n:]
        poller = select.poll()
        poller.register(self.sock, select.POLLOUT | select.POLLIN)
        taking = True
        while view:
            remaining = started + self.timeout - _now()
            if remaining <= 0:
                raise BlockingIOError
            mask = 0
            for _, events in poller.poll(max(1, round(remaining * 1000))):
                mask |= events
            if taking and mask & select.POLLIN and self._take_in() is False:
                taking = False
                poller.modify(self.sock, select.POLLOUT)
            if mask & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                try:  # a closed peer: EPIPE, for the caller
                    view = view[self.sock.send(view, _SEND_FLAGS) :]
                except BlockingIOError:
                    pass

    def _take_in(self) -> bool | None:
        """Receive what is there without waiting (during a send, or after the peer left):
        True if bytes came, None if none were there, False when there is no more to take
        (the peer closed, an error, or _TAKE_IN_LIMIT bytes wait to be framed)."""
        if self._end == len(self._buf):
            if self._end - self._start >= _TAKE_IN_LIMIT:
                return False
            self._make_room(self._end - self._start + _BUF_SIZE)
        try:
            n, anc, flags, _ = self.sock.recvmsg_into(
                [self._view[self._end :]], _CMSG_SPACE, _RECV_FLAGS | socket.MSG_DONTWAIT
            )
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return False
        if n == 0:
            return False  # the close is seen again by the next receive
        self._received(n, anc, flags, "")
        return True

    def wait_peer_read(self, timeout: float, discard: bool = False) -> bool:
        """Wait up to ``timeout`` s until the server has read every byte sent; whether it
        has. Between the pieces of a message cut into writes, so that it gets them apart;
        before a close (``discard``: what the server sends meanwhile is read and dropped,
        fds closed, so that a server blocked on writing to us gets to read)."""
        if not discard:
            return wait_read(self.sock, timeout)
        deadline = _now() + timeout
        while not wait_read(self.sock, min(0.01, max(0.0, deadline - _now()))):
            if _now() >= deadline:
                return False
            try:
                _, anc, _, _ = self.sock.recvmsg(_BUF_SIZE, _CMSG_SPACE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return True  # the peer is gone: nothing of ours is left unread
            self.close_fds(fds_of(anc))
        return True

    def send_many(self, frames: list[bytes]) -> None:
        """Each of ``frames`` in its own sendmsg (a pipeline's requests); one log entry."""
        send = self._send_first
        t = _now()
        total = 0
        data = b""
        try:
            for data in frames:
                n = send(data)
                if n != len(data):  # the wait for this one was at most one timeout
                    self._send_rest(data, n, _now())
                total += len(data)
        except BlockingIOError:
            raise Timeout(f"the peer to accept {_what(data)}", self.timeout) from None
        except (BrokenPipeError, ConnectionResetError):
            self._peer_gone(data)
        finally:
            log = self.wire_log
            if log.enabled and frames:
                sent = frames if data is frames[-1] else frames[: frames.index(data) + 1]
                log.append((log.next_seq(), t, SENT_BATCH, sent, 0, 0))
                if total > _LOG_BIG:
                    log.account(total)

    # -- receiving

    def exchange(self, data: bytes, fds, timeout: float | None, waiting_for) -> tuple:
        """Send ``data`` (one message), then receive the next message: a round trip.

        Everything the receive needs is ready before the send (the log entry is
        written first), so that recvmsg follows the send at once. Measured: work
        between the two lets the peer the send woke preempt this process on a
        shared CPU, which costs microseconds more than the work itself.
        """
        # _end 0: nothing buffered (a broken stream always leaves bytes there).
        if fds or self._end:
            self.send_bytes(data, fds)
            return self.recv_frame(timeout, waiting_for)
        if timeout is None:
            timeout = self.timeout
        now = _now()
        deadline = now + timeout
        log = self.wire_log
        if log.enabled:
            log.append((log.next_seq(), now, SENT, data, 0, 0))
            if len(data) > _LOG_BIG:
                log.account(len(data))
        if timeout != self._rcvtimeo:  # changed by a per-call timeout or a partial receive
            self._set_rcvtimeo(timeout)
        iov = [self._view]
        try:
            try:  # _send_first, inline: this is the hot path
                n = self._sock_send(data, _SEND_FLAGS)
            except BlockingIOError:
                n = 0
            if n != len(data):
                self._send_rest(data, n, now)
        except BlockingIOError:
            raise Timeout(f"the peer to accept {_what(data)}", self.timeout) from None
        except (BrokenPipeError, ConnectionResetError):
            self._peer_gone(data)
        if n != len(data):  # a short write took a while: the reply may be in already
            return self._frame_until(deadline, timeout, waiting_for)
        try:
            n, anc, flags, _ = self.busy_poll.recvmsg_into(self.sock, iov, _CMSG_SPACE, _RECV_FLAGS)
        except BlockingIOError:
            self._timed_out(waiting_for, timeout)
        except ConnectionResetError:
            n, anc, flags = 0, None, 0
        if n >= HEADER_SIZE and not anc and not flags & _MSG_CTRUNC:
            hdr = _HDR_UNPACK(self._buf, 0)
            if hdr[MSG_SIZE] == n and n <= self.max_msg_size:
                # The common case, one whole message and nothing else: what
                # _received, _frame_until and _take do, without the calls.
                self._stream += n
                payload = self._view[HEADER_SIZE:n].tobytes() if n > HEADER_SIZE else b""
                if log.enabled:  # the header tuple stands for the bytes: no copy
                    log.append((log.next_seq(), _now(), RECEIVED, payload, 0, hdr))
                    if n > _LOG_BIG:
                        log.account(n)
                return hdr, payload, None
        self._received(n, anc, flags, waiting_for)
        return self._frame_until(deadline, timeout, waiting_for)

    def recv_frame(self, timeout: float | None, waiting_for) -> tuple:
        """The next message: (header tuple, payload, fds or None).

        ``waiting_for`` names what is awaited, for the exceptions: a string, or
        (msg_id, command) to format only if needed.
        """
        start = self._start
        if self._end - start >= HEADER_SIZE:
            # Already buffered (pipelined replies): no syscall, no clock.
            hdr = _HDR_UNPACK(self._buf, start)
            size = hdr[MSG_SIZE]
            if HEADER_SIZE <= size <= self.max_msg_size and self._end - start >= size:
                return self._take(hdr, start, size)
        if timeout is None:
            timeout = self.timeout
        return self._frame_until(_now() + timeout, timeout, waiting_for)

    def _frame_until(self, deadline: float, timeout: float, waiting_for) -> tuple:
        if self.broken is not None:
            raise self.broken
        while True:
            start = self._start
            end = self._end
            need = HEADER_SIZE
            if end - start >= HEADER_SIZE:
                hdr = _HDR_UNPACK(self._buf, start)
                size = hdr[MSG_SIZE]
                if size < HEADER_SIZE or size > self.max_msg_size:
                    self._refuse(hdr)
                if end - start >= size:
                    return self._take(hdr, start, size)
                need = size
            if start + need > len(self._buf):
                self._make_room(need)
            self._receive(deadline, timeout, waiting_for)

    def _receive(self, deadline: float, timeout: float, waiting_for) -> None:
        """One recvmsg into the buffer after _end, or Timeout/ConnectionClosed."""
        remaining = deadline - _now()
        if remaining <= 0:
            self._timed_out(waiting_for, timeout)
        # Keep the kernel's timeout within the deadline, without a syscall per receive.
        if remaining > self._rcvtimeo or remaining < self._rcvtimeo - 0.01:
            self._set_rcvtimeo(remaining)
        try:
            n, anc, flags, _ = self.busy_poll.recvmsg_into(
                self.sock, [self._view[self._end :]], _CMSG_SPACE, _RECV_FLAGS
            )
        except BlockingIOError:
            self._timed_out(waiting_for, timeout)
        except ConnectionResetError:
            n, anc, flags = 0, None, 0
        self._received(n, anc, flags, waiting_for)

    def _received(self, n: int, anc, flags: int, waiting_for) -> None:
        """Account for ``n`` bytes just received at _end (0: the peer closed)."""
        start, end = self._start, self._end
        nfds = self._ancillary(anc, flags, n) if anc or flags & _MSG_CTRUNC else 0
        if n == 0:
            partial = end - start
            header = Header(*_HDR_UNPACK(self._buf, start)) if partial >= HEADER_SIZE else None
            self.wire_log.note(
                f"the peer closed the connection ({partial} bytes of a message had arrived)"
            )
            raise ConnectionClosed(waiting_for, partial, header)
        self._end = end + n
        self._stream += n
        log = self.wire_log
        if log.enabled:
            lead = self._lead(end - start, n) if end != start else 0
            log.append(
                (log.next_seq(), _now(), RECEIVED, self._view[end : end + n].tobytes(), nfds, lead)
            )
            if n > _LOG_BIG:
                log.account(n)

    def _lead(self, before: int, n: int) -> int:
        """How many of the ``n`` bytes just received (after ``before`` unframed ones)
        finish a message begun earlier: for the wire log."""
        if before + n < HEADER_SIZE:
            return n
        size = _HDR_UNPACK(self._buf, self._start)[2]
        return min(n, max(0, size - before)) if size >= HEADER_SIZE else n

    def _peer_gone(self, data: bytes):
        """A send found the peer gone: take in what it sent before closing (without
        waiting), so that it can still be read with recv_message() and the like,
        and raise ConnectionClosed with the count of bytes not yet framed."""
        self.wire_log.note("the peer closed the connection before accepting a message")
        while self._take_in():
            pass
        partial = self._end - self._start
        header = Header(*_HDR_UNPACK(self._buf, self._start)) if partial >= HEADER_SIZE else None
        raise ConnectionClosed(f"the peer to accept {_what(data)}", partial, header) from None

    def _timed_out(self, waiting_for, timeout: float):
        partial = self._end - self._start
        err = Timeout(waiting_for, timeout, partial)
        self.wire_log.note(str(err))
        raise err

    def _take(self, hdr: tuple, start: int, size: int) -> tuple:
        end = start + size
        payload = self._view[start + HEADER_SIZE : end].tobytes() if size > HEADER_SIZE else b""
        fds = self._claim_fds(self._stream - (self._end - end)) if self._pending_fds else None
        if end == self._end:
            self._start = self._end = 0
            if len(self._buf) > _BUF_SIZE:
                self._shrink_buffer()
        else:
            self._start = end
        return hdr, payload, fds

    def take_buffered_replies(self, expected: list[tuple[int, int]], replies: list, make) -> None:
        """Frame replies already buffered, as long as each is the plain reply (no fds)
        to the next (msg_id, command) of ``expected``; append ``make(hdr, payload)``.

        The pipelining fast path: what _take does, for a run of messages, without
        a call per message. Anything else is left to recv_frame.
        """
        buf, view = self._buf, self._view
        start, end = self._start, self._end
        i = len(replies)
        limit = self.max_msg_size
        while i < len(expected) and end - start >= HEADER_SIZE and not self._pending_fds:
            hdr = _HDR_UNPACK(buf, start)
            size = hdr[MSG_SIZE]
            msg_id, command = expected[i]
            if (
                size < HEADER_SIZE
                or size > limit
                or end - start < size
                or hdr[FLAGS] & TYPE_MASK != _REPLY
                or hdr[MSG_ID] != msg_id
                or hdr[COMMAND] != command
            ):
                break
            replies.append(make(hdr, view[start + HEADER_SIZE : start + size].tobytes()))
            start += size
            i += 1
        if start == end:
            start = end = 0
        self._start, self._end = start, end

    # -- fds

    def _ancillary(self, anc: list | None, flags: int, n: int) -> int:
        """Keep the fds of a receive; their count."""
        if flags & _MSG_CTRUNC:
            self.ctrunc += 1
            self.wire_log.note("the kernel dropped fds: no room for them (MSG_CTRUNC)")
        # The fds belong to the message holding the last byte of this receive.
        return self._keep_fds(anc, self._stream + max(n, 1) - 1) if anc else 0

    def _keep_fds(self, anc: list, offset: int) -> int:
        fds = fds_of(anc)
        self.owned_fds.update(fds)
        if fds:
            self._pending_fds.append((offset, fds))
        return len(fds)

    def _claim_fds(self, stream_end: int) -> list[int] | None:
        """The fds that arrived with bytes before stream offset ``stream_end``."""
        fds: list[int] = []
        pending = self._pending_fds
        while pending and pending[0][0] < stream_end:
            fds.extend(pending.popleft()[1])
        return fds or None

    def close_fds(self, fds) -> None:
        """Close fds the connection still owns (ones a caller took are left alone)."""
        for fd in fds:
            if fd in self.owned_fds:
                self.owned_fds.discard(fd)
                os.close(fd)

    # -- the buffer

    def _refuse(self, hdr: tuple) -> None:
        header = Header(*hdr)
        try:
            check_msg_size(header, self.max_msg_size)
        except CodecError as e:
            self.broken = MalformedReply.wrap(e, header)
        else:  # not reached: the caller saw the size out of bounds
            self.broken = MalformedReply("header", "msg_size", "out of bounds", header)
        self.wire_log.note(f"unframeable stream: {self.broken}")
        raise self.broken

    def _make_room(self, need: int) -> None:
        """Move unframed bytes to the front; grow the buffer (up to max_msg_size,
        checked by the caller) if one message needs more."""
        avail = self._end - self._start
        if need > len(self._buf):
            buf = bytearray(max(need, _BUF_SIZE))
            buf[:avail] = self._view[self._start : self._end]
            self._view.release()
            self._buf, self._view = buf, memoryview(buf)
        else:
            # Through a copy: the ranges may overlap.
            self._buf[:avail] = self._buf[self._start : self._end]
        self._start, self._end = 0, avail

    def _shrink_buffer(self) -> None:
        """Drop a buffer grown for one large message, once it is empty."""
        self._view.release()
        self._buf = bytearray(_BUF_SIZE)
        self._view = memoryview(self._buf)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed into a message."""
        return self._end - self._start

    # -- teardown

    def close(self) -> None:
        """Close the socket and every received fd no caller took."""
        for _, fds in self._pending_fds:
            self.owned_fds.update(fds)
        self._pending_fds.clear()
        for fd in self.owned_fds:
            try:
                os.close(fd)
            except OSError as e:
                if e.errno != errno.EBADF:
                    raise
        self.owned_fds.clear()
        self.sock.close()


def _timeval(seconds: float) -> bytes:
    # 0 would mean "wait forever" to the kernel: the shortest real wait instead.
    usec = max(1, round(seconds * 1e6))
    return _TIMEVAL.pack(usec // 1000000, usec % 1000000)


def _what(data: bytes) -> str:
    return describe(data)["header"] if len(data) >= HEADER_SIZE else f"{len(data)} raw bytes"
