"""The 16-byte header that precedes every message."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._constants import FLAG_ERROR, FLAG_NO_REPLY, HEADER_SIZE, TYPE_MASK, MsgType, command_name
from ._errors import CodecError

# The header's layout, stated once: msg_id, command, msg_size, flags, error.
# Hot paths (client, wire log, fuzzing) pack and unpack with it directly.
HEADER_STRUCT = struct.Struct("<HHIII")
assert HEADER_STRUCT.size == HEADER_SIZE
# Positions in the unpacked tuple, for code that skips building a Header.
MSG_ID, COMMAND, MSG_SIZE, FLAGS, ERROR = range(5)


@dataclass(slots=True)
class Header:
    msg_id: int
    command: int
    msg_size: int
    flags: int = 0
    error: int = 0

    def pack(self) -> bytes:
        try:
            return HEADER_STRUCT.pack(
                self.msg_id, self.command, self.msg_size, self.flags, self.error
            )
        except struct.error as e:
            raise CodecError("header", "fields", str(e)) from None

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        if len(data) != HEADER_SIZE:
            raise CodecError("header", "size", f"is {len(data)} bytes, expected {HEADER_SIZE}")
        return cls(*HEADER_STRUCT.unpack(data))

    @property
    def type(self) -> int:
        return self.flags & TYPE_MASK

    @property
    def is_reply(self) -> bool:
        return self.type == MsgType.REPLY

    @property
    def no_reply(self) -> bool:
        return bool(self.flags & FLAG_NO_REPLY)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    def describe(self) -> str:
        kind = {MsgType.COMMAND: "command", MsgType.REPLY: "reply"}.get(
            self.type, f"type {self.type}"
        )
        extra = (" no_reply" if self.no_reply else "") + (
            f" ERROR errno={self.error}" if self.is_error else ""
        )
        return f"{command_name(self.command)} {kind} id={self.msg_id} size={self.msg_size}{extra}"


def encode(
    msg_id: int, command: int, payload: bytes = b"", flags: int = 0, error: int = 0
) -> bytes:
    """A whole message: header with msg_size computed, then the payload."""
    try:
        return (
            HEADER_STRUCT.pack(msg_id, command, HEADER_SIZE + len(payload), flags, error) + payload
        )
    except struct.error:  # Header.pack names the field
        return Header(msg_id, command, HEADER_SIZE + len(payload), flags, error).pack() + payload


# Plain ints: enum arithmetic costs more than packing the header.
_REPLY = int(MsgType.REPLY)
_REPLY_ERROR = int(MsgType.REPLY | FLAG_ERROR)


def encode_reply(msg_id: int, command: int, payload: bytes = b"") -> bytes:
    return encode(msg_id, command, payload, _REPLY)


def encode_error(msg_id: int, command: int, errno_value: int) -> bytes:
    """An error reply: the header only, as the spec requires."""
    return encode(msg_id, command, b"", _REPLY_ERROR, errno_value)
