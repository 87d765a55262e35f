"""What the client cases share: the messages of every session, the limits the server
stated, and how to say that a session had nothing to judge."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from pytest_vfiouser.protocol import (
    DEFAULT_MAX_DATA_XFER_SIZE,
    DEFAULT_MAX_MSG_FDS,
    CodecError,
    Command,
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
    return _stated(session.version()[1], name)


def client_limit(session) -> int:
    """The client's max_data_xfer_size as its VERSION proposal stated it, else 1 MiB."""
    return _stated(session.version()[0], "max_data_xfer_size")


def _stated(version, name: str) -> int:
    default = {"max_msg_fds": DEFAULT_MAX_MSG_FDS}.get(name, DEFAULT_MAX_DATA_XFER_SIZE)
    if version is None or version.json is None:
        return default
    return version.capabilities.raw.get(name, default)


def decode(cls, message, what: str):
    """The message's payload as ``cls``; the case fails where it does not decode."""
    try:
        return cls.unpack(message.payload)
    except CodecError as e:
        raise AssertionError(f"{what} ({message.describe()}) does not decode: {e}") from None


FEATURE_HEAD = struct.Struct("<II")  # DEVICE_FEATURE: argsz, flags


def features(sessions) -> list[tuple]:
    """(message, argsz, flags) of each DEVICE_FEATURE the client sent whole enough to read."""
    return [
        (m, *FEATURE_HEAD.unpack_from(m.payload))
        for _, m in need(sent(sessions, Command.DEVICE_FEATURE), "DEVICE_FEATURE")
        if len(m.payload) >= FEATURE_HEAD.size
    ]


def listed(problems: list[str], most: int = 5) -> str:
    more = f" (and {len(problems) - most} more)" if len(problems) > most else ""
    return "; ".join(problems[:most]) + more


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int  # [start, end) of client addresses
    fd: bool  # mapped with a file descriptor (the server may reach it directly)

    def holds(self, address: int, count: int) -> bool:
        return self.start <= address and address + count <= self.end


_MAP_AT = {Command.DMA_MAP: 16, Command.DMA_UNMAP: 8}  # where address and size are


def span(message) -> tuple[int, int] | None:
    """[start, end) of the client addresses a DMA_MAP or DMA_UNMAP names (None: too short
    to name any, or another command)."""
    at = _MAP_AT.get(message.command)
    if at is None or len(message.payload) < at + 16:
        return None
    address, size = struct.unpack_from("<QQ", message.payload, at)
    return address, address + size


def mappings(session, upto: int | None = None) -> list[Mapping]:
    """The DMA mappings the session holds before message ``upto`` (at its end if None):
    DMA_MAPs the server accepted, less the DMA_UNMAPs it accepted."""
    live: list[Mapping] = []
    for m in session.sent():
        if upto is not None and m.index >= upto:
            break
        named = span(m)
        reply = session.reply_to(m) if named is not None else None
        if reply is None or reply.is_error:
            continue
        if m.command == Command.DMA_MAP:
            live.append(Mapping(*named, m.fds > 0))
        else:
            live = [x for x in live if (x.start, x.end) != named]
    return live


def dma_requests(session) -> list:
    """The server's DMA_READ and DMA_WRITE requests in the session (either socket), with
    (address, count): [(message, address, count)]."""
    return [
        (m, *struct.unpack_from("<QQ", m.payload))
        for m in session.server_requests()
        if m.command in (Command.DMA_READ, Command.DMA_WRITE) and len(m.payload) >= 16
    ]
