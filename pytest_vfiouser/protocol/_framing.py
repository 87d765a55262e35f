"""Sans-I/O framing: bytes in, (Header, payload) out.

Whoever owns the socket feeds what it received; the reader hands back whole
messages. It refuses a ``msg_size`` below 16 (the stream cannot be framed any
more) or above ``max_msg_size`` without allocating it.
"""

from __future__ import annotations

from ._constants import HEADER_SIZE
from ._errors import CodecError
from ._header import HEADER_STRUCT, Header


class MessageReader:
    def __init__(self, max_msg_size: int):
        self.max_msg_size = max_msg_size
        self._buf = bytearray()
        self._pos = 0  # the first byte of _buf not yet handed out
        self._header: Header | None = None

    def feed(self, data: bytes) -> None:
        # Consumed bytes are dropped here, once per feed, not once per message.
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received that are not yet part of a whole message."""
        return len(self._buf) - self._pos

    @property
    def pending_header(self) -> Header | None:
        """The header of a message whose body has not fully arrived."""
        return self._header

    @property
    def unread(self) -> bytes:
        """The bytes received and not handed out (a pending header's included)."""
        pos = self._pos - (HEADER_SIZE if self._header is not None else 0)
        return bytes(self._buf[pos:])

    def next_message(self) -> tuple[Header, bytes] | None:
        """The next whole message, or None until more bytes arrive."""
        buf, pos, header = self._buf, self._pos, self._header
        if header is None:
            if len(buf) - pos < HEADER_SIZE:
                return None
            header = Header(*HEADER_STRUCT.unpack_from(buf, pos))
            check_msg_size(header, self.max_msg_size)
            pos += HEADER_SIZE
            self._pos = pos
        end = pos + header.msg_size - HEADER_SIZE
        if len(buf) < end:
            self._header = header
            return None
        self._header = None
        self._pos = end
        return header, bytes(buf[pos:end])


def check_msg_size(header: Header, max_msg_size: int) -> None:
    if header.msg_size < HEADER_SIZE:
        raise CodecError(
            "header", "msg_size", f"{header.msg_size} is below the header size {HEADER_SIZE}"
        )
    if header.msg_size > max_msg_size:
        raise CodecError(
            "header", "msg_size", f"{header.msg_size} is above the limit {max_msg_size}"
        )
