"""One received message: header fields, payload bytes, fds, and a lazily decoded body.

Named Reply because that is what callers mostly get, but recv_message()
returns server requests (DMA_READ/DMA_WRITE) in the same shape.
"""

from __future__ import annotations

import os

from pytest_vfiouser.protocol import (
    COMMAND,
    ERROR,
    FLAG_ERROR,
    FLAG_NO_REPLY,
    FLAGS,
    MSG_ID,
    MSG_SIZE,
    TYPE_MASK,
    CodecError,
    Header,
    MsgType,
    decode,
)

from ._errors import ErrorReply, MalformedReply


class Reply:
    # Built once per message on the hot path: two slots set, the header kept as
    # the unpacked tuple, everything else derived on access. Messages that came
    # with fds (or had some closed) are a subclass with slots for them.
    __slots__ = ("hdr", "payload", "_body")
    _fds: list[int] | None = None
    _owned: set[int] | None = None
    closed_fds = 0  # fds the client closed because this message should not carry them

    def __init__(self, hdr: tuple, payload: bytes):
        self.hdr = hdr  # (msg_id, command, msg_size, flags, error) as on the wire
        self.payload = payload

    @staticmethod
    def with_fds(
        hdr: tuple,
        payload: bytes,
        fds: list[int] | None,
        owned: set[int] | None,
        closed_fds: int = 0,
    ) -> Reply:
        """A message with fds: ``owned`` is the client's set of fds it still owns."""
        return _ReplyWithFds(hdr, payload, fds, owned, closed_fds)

    msg_id = property(lambda self: self.hdr[MSG_ID])
    command = property(lambda self: self.hdr[COMMAND])
    msg_size = property(lambda self: self.hdr[MSG_SIZE])
    flags = property(lambda self: self.hdr[FLAGS])
    # The header's error field, whatever the flags say (``error`` is 0 unless flagged).
    errno = property(lambda self: self.hdr[ERROR])

    @property
    def header(self) -> Header:
        return Header(*self.hdr)

    @property
    def is_reply(self) -> bool:
        return self.hdr[FLAGS] & TYPE_MASK == MsgType.REPLY

    @property
    def no_reply(self) -> bool:
        return bool(self.hdr[FLAGS] & FLAG_NO_REPLY)

    @property
    def ok(self) -> bool:
        return not self.hdr[FLAGS] & FLAG_ERROR

    @property
    def error(self) -> int:
        """The errno of an error reply (may be 0: the spec makes it optional), else 0."""
        return self.hdr[ERROR] if self.hdr[FLAGS] & FLAG_ERROR else 0

    def check(self) -> Reply:
        """Self, or ErrorReply if the Error flag is set."""
        if self.hdr[FLAGS] & FLAG_ERROR:
            raise ErrorReply(self.hdr[ERROR], self.hdr[COMMAND], self)
        return self

    @property
    def body(self):
        """The payload decoded by protocol.decode (None for an error reply without payload).

        Raises MalformedReply naming the message and field.
        """
        try:
            return self._body
        except AttributeError:  # not decoded yet
            pass
        if self.hdr[FLAGS] & FLAG_ERROR and not self.payload:
            self._body = None
        else:
            try:
                self._body = decode(self.hdr[COMMAND], self.is_reply, self.payload)
            except CodecError as e:
                raise MalformedReply.wrap(e, self.header) from e
        return self._body

    # -- fds: the client owns them until the caller takes them

    @property
    def fd_count(self) -> int:
        """How many fds came with the message (taking none)."""
        return len(self._fds) if self._fds else 0

    @property
    def fds(self) -> list[int]:
        """The fds that came with the message. Reading this hands them to the caller,
        who must close them; the client no longer will."""
        if self._fds and self._owned is not None:
            self._owned.difference_update(self._fds)
            self._owned = None
        return self._fds if self._fds is not None else []

    def take_fds(self) -> list[int]:
        return self.fds

    def close_fds(self) -> None:
        """Close fds not yet taken (taken ones are the caller's)."""
        if self._fds and self._owned is not None:
            for fd in self._fds:
                if fd in self._owned:
                    self._owned.discard(fd)
                    os.close(fd)
            self._owned = None
            self._fds = []

    def __repr__(self) -> str:
        fds = f" fds={self.fd_count}" if self._fds else ""
        return f"<Reply {self.header.describe()} payload={len(self.payload)}B{fds}>"


class _ReplyWithFds(Reply):
    __slots__ = ("_fds", "_owned", "closed_fds")

    def __init__(
        self,
        hdr: tuple,
        payload: bytes,
        fds: list[int] | None,
        owned: set[int] | None,
        closed_fds: int,
    ):
        self.hdr = hdr
        self.payload = payload
        self._fds = fds
        self._owned = owned if fds else None
        self.closed_fds = closed_fds
