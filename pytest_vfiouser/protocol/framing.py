"""Sans-I/O framing: bytes in, (Header, payload) out.

Whoever owns the socket feeds what it received; the reader hands back whole
messages. It refuses a ``msg_size`` below 16 (the stream cannot be framed any
more) or above ``max_msg_size`` without allocating it.
"""

from __future__ import annotations

from .constants import HEADER_SIZE
from .errors import CodecError
from .header import Header


class MessageReader:
    def __init__(self, max_msg_size: int):
        self.max_msg_size = max_msg_size
        self._buf = bytearray()
        self._header: Header | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received that are not yet part of a whole message."""
        return len(self._buf)

    @property
    def pending_header(self) -> Header | None:
        """The header of a message whose body has not fully arrived."""
        return self._header

    def next_message(self) -> tuple[Header, bytes] | None:
        """The next whole message, or None until more bytes arrive."""
        if self._header is None:
            if len(self._buf) < HEADER_SIZE:
                return None
            header = Header.unpack(bytes(self._buf[:HEADER_SIZE]))
            check_msg_size(header, self.max_msg_size)
            del self._buf[:HEADER_SIZE]
            self._header = header
        need = self._header.msg_size - HEADER_SIZE
        if len(self._buf) < need:
            return None
        payload = bytes(self._buf[:need])
        del self._buf[:need]
        header, self._header = self._header, None
        return header, payload


def check_msg_size(header: Header, max_msg_size: int) -> None:
    if header.msg_size < HEADER_SIZE:
        raise CodecError("header", "msg_size",
                         f"{header.msg_size} is below the header size {HEADER_SIZE}")
    if header.msg_size > max_msg_size:
        raise CodecError("header", "msg_size",
                         f"{header.msg_size} is above the limit {max_msg_size}")
