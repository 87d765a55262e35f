"""The server's exceptions: a refused request, a lost client, a termination."""

from __future__ import annotations

import errno as _errno


class VfioError(Exception):
    """A request refused with ``errno``; becomes a header-only error reply."""

    def __init__(self, errno_value: int, reason: str):
        super().__init__(f"{_errno.errorcode.get(errno_value, errno_value)}: {reason}")
        self.errno = errno_value
        self.reason = reason


class ClientGone(Exception):
    """The connection is over: EOF, a socket error, or a stream that cannot be framed."""


class Terminate(BaseException):
    """Raised by the SIGTERM/SIGINT handler; a BaseException so no handler swallows it."""
