"""What the client cases share: the messages of every session, the limits the server
stated, and how to say that a session had nothing to judge."""

from __future__ import annotations

import pytest

from pytest_vfiouser.protocol import (
    DEFAULT_MAX_DATA_XFER_SIZE,
    DEFAULT_MAX_MSG_FDS,
    CodecError,
)


def sent(sessions, command: int) -> list:
    """(session, message) for each of the client's ``command`` commands, in order."""
    return [(s, m) for s in sessions for m in s.sent(command)]


def need(items: list, what: str) -> list:
    """``items``, or the case cannot be judged: the client never sent ``what``."""
    if not items:
        pytest.skip(f"cannot judge: the client sent no {what} in this run")
    return items


def server_limit(session, name: str) -> int:
    """The server's ``name`` as its VERSION reply stated it, else the spec's default
    ("If not specified then the receiver must assume a value of 1"; 1 MiB)."""
    _, reply = session.version()
    default = {"max_msg_fds": DEFAULT_MAX_MSG_FDS}.get(name, DEFAULT_MAX_DATA_XFER_SIZE)
    if reply is None or reply.json is None:
        return default
    return reply.capabilities.raw.get(name, default)


def decode(cls, message, what: str):
    """The message's payload as ``cls``; the case fails where it does not decode."""
    try:
        return cls.unpack(message.payload)
    except CodecError as e:
        raise AssertionError(f"{what} ({message.describe()}) does not decode: {e}") from None


def listed(problems: list[str], most: int = 5) -> str:
    more = f" (and {len(problems) - most} more)" if len(problems) > most else ""
    return "; ".join(problems[:most]) + more
