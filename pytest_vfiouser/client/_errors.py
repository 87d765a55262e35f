"""The client's exceptions: one base class, one subclass per way a wait can end badly.

Tests catch the specific class to assert on server behaviour (a Timeout is a
server that did not answer, a ConnectionClosed one that hung up), so each
carries what was being waited for and what had arrived.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING

from pytest_vfiouser.protocol import CodecError, Header, command_name

if TYPE_CHECKING:
    from ._reply import Reply


class ClientError(Exception):
    """Base of every error the client raises."""


class Timeout(ClientError):
    """Nothing (or not enough) arrived in time.

    ``waiting_for`` says what was awaited, ``timeout`` the seconds allowed,
    ``partial_bytes`` how much of a message had arrived when time ran out.
    """

    def __init__(self, waiting_for, timeout: float, partial_bytes: int = 0):
        self.waiting_for = waiting_for = awaited(waiting_for)
        self.timeout = timeout
        self.partial_bytes = partial_bytes
        extra = f" ({partial_bytes} bytes of a message had arrived)" if partial_bytes else ""
        super().__init__(f"timed out after {timeout:.3f}s waiting for {waiting_for}{extra}")


class ConnectionClosed(ClientError):
    """The peer closed the connection (or reset it) while a message was awaited or sent.

    ``partial_bytes`` counts the bytes of an incomplete message that had
    arrived (0: it closed between messages), ``partial_header`` is that
    message's header when all 16 bytes of it had arrived.
    """

    def __init__(self, waiting_for, partial_bytes: int = 0, partial_header: Header | None = None):
        self.waiting_for = waiting_for = awaited(waiting_for)
        self.partial_bytes = partial_bytes
        self.partial_header = partial_header
        detail = ""
        if partial_bytes:
            detail = f" after {partial_bytes} bytes of a message"
            if partial_header is not None:
                detail += f" ({partial_header.describe()})"
        super().__init__(f"connection closed by the peer while waiting for {waiting_for}{detail}")


class MalformedReply(ClientError):
    """A message that does not decode: which message, which field, what is wrong.

    Wraps the codec's CodecError (``codec_error``, also ``__cause__``).
    ``header`` is the message's header when it was readable.
    """

    def __init__(
        self,
        message: str,
        field: str,
        detail: str,
        header: Header | None = None,
        codec_error: CodecError | None = None,
    ):
        self.message = message
        self.field = field
        self.detail = detail
        self.header = header
        self.codec_error = codec_error
        where = f" [{header.describe()}]" if header is not None else ""
        super().__init__(f"malformed {message}: {field}: {detail}{where}")

    @classmethod
    def wrap(cls, err: CodecError, header: Header | None = None) -> MalformedReply:
        return cls(err.message, err.field, err.detail, header, err)


class UnexpectedReply(ClientError):
    """A message that is not the one awaited (wrong msg_id or command), or any
    message where none was expected. ``reply`` is what arrived (may be None for
    a partial message)."""

    def __init__(self, reason: str, reply: Reply | None = None):
        self.reason = reason
        self.reply = reply
        got = f": got {reply.header.describe()}" if reply is not None else ""
        super().__init__(f"{reason}{got}")


class ErrorReply(ClientError):
    """The server answered with the Error flag set. ``errno`` is its error field."""

    def __init__(self, errno: int, command: int, reply: Reply | None = None):
        self.errno = errno
        self.command = command
        self.reply = reply
        super().__init__(f"{command_name(command)} failed: {errno_text(errno)}")


def errno_text(value: int) -> str:
    name = _errno.errorcode.get(value)
    if name is None:
        return f"errno {value}"
    return f"errno {value} ({name}: {os.strerror(value)})"


def awaited(what) -> str:
    """What a wait was for. The hot path passes (msg_id, command) rather than
    formatting a string it almost never needs."""
    if isinstance(what, str):
        return what
    msg_id, command = what
    if command is not None:
        return f"the {command_name(command)} reply to msg_id {msg_id}"
    return "a reply" if msg_id is None else f"the reply to msg_id {msg_id}"
